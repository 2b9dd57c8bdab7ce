use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = kfleet::cli::Cli::parse();
    let format = cli.log_format;
    let most = if cli.quiet {
        tracing::Level::WARN
    } else if cli.verbose {
        tracing::Level::DEBUG
    } else {
        tracing::Level::INFO
    };
    kfleet::notice::install_at(format, most);
    match kfleet::commands::run(cli) {
        Ok(code) => code,
        Err(err) => {
            let (code, message) = kfleet::commands::on_error(&err);
            if let Some(message) = message {
                kfleet::notice::print_error(format, &message);
            }
            code
        }
    }
}
