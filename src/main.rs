use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    kfleet::notice::install();
    let cli = kfleet::cli::Cli::parse();
    match kfleet::cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            let (code, message) = kfleet::cli::on_error(&err);
            if let Some(message) = message {
                eprintln!("{message}");
            }
            code
        }
    }
}
