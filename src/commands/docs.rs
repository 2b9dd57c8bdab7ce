//! `kfleet completions SHELL` and `kfleet man`: generated from the same clap definition as the
//! parser, so they never drift from the flags.

use crate::cli::Cli;
use anyhow::Context;
use anyhow::Result;
use clap::CommandFactory;
use std::process::ExitCode;

pub(crate) fn completions(shell: clap_complete::Shell) -> Result<ExitCode> {
    let mut command = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command, "kfleet", &mut out);
    out!("{}", String::from_utf8_lossy(&out));
    Ok(ExitCode::SUCCESS)
}

/// The main page on standard output, or with `dir` every page (`kfleet.1`, which lists the
/// commands as `kfleet-report(1)` and so on, and one page per command and subcommand).
pub(crate) fn man(dir: Option<&std::path::Path>) -> Result<ExitCode> {
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        clap_mangen::generate_to(Cli::command(), dir)
            .with_context(|| format!("cannot write the man pages into {}", dir.display()))?;
        let mut pages: Vec<String> = std::fs::read_dir(dir)
            .with_context(|| format!("cannot list {}", dir.display()))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("kfleet") && n.ends_with(".1"))
            .collect();
        pages.sort();
        outln!("wrote {} man pages into {}", pages.len(), dir.display());
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut out)
        .context("cannot render the man page")?;
    out!("{}", String::from_utf8_lossy(&out));
    Ok(ExitCode::SUCCESS)
}
