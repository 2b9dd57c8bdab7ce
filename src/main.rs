use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    kfleet::notice::install();
    let cli = kfleet::cli::Cli::parse();
    match kfleet::cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}
