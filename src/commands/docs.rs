//! `kfleet completions SHELL` and `kfleet man`: generated from the same clap definition as the
//! parser, so they never drift from the flags.

use super::prelude::*;
use clap::CommandFactory;

pub(crate) fn completions(shell: clap_complete::Shell) -> Result<ExitCode> {
    let mut command = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command, "kfleet", &mut out);
    out!("{}", String::from_utf8_lossy(&out));
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn man() -> Result<ExitCode> {
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut out)
        .context("cannot render the man page")?;
    out!("{}", String::from_utf8_lossy(&out));
    Ok(ExitCode::SUCCESS)
}
