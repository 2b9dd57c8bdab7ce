//! Command-line interface: the clap definitions (`args`), the settings they resolve to
//! (`settings`), and `run`, which hands each command to its file under `commands/`.

mod args;
mod settings;

pub use args::*;
pub use settings::*;

use crate::commands;
use crate::commands::prelude::*;

/// Which kernels in your fleet have a prebuilt driver, which are missing, and what to build.
#[derive(Debug, Parser)]
#[command(name = "kfleet", version)]
pub struct Cli {
    /// Config file (default: ./kfleet.toml, then $XDG_CONFIG_HOME/kfleet/kfleet.toml).
    #[arg(long, global = true, value_name = "FILE", env = "KFLEET_CONFIG")]
    pub config: Option<PathBuf>,
    /// Notices (retries, waits, warnings) on standard error: `text` lines, or one JSON object
    /// per line (`serve` under a log collector).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t = crate::notice::LogFormat::Text,
        env = "KFLEET_LOG_FORMAT"
    )]
    pub log_format: crate::notice::LogFormat,
    /// Without a command: the dashboard on the built-in sample fleet and sandbox forge.
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The terminal dashboard: coverage, dispatch, live runs, header chains.
    #[cfg(feature = "fleet")]
    Tui(TuiArgs),
    /// Coverage of the fleet by a release's artifacts: statuses, summary, batch plan.
    #[cfg(feature = "fleet")]
    Report(ReportArgs),
    /// Check or show kernel identities.
    #[command(subcommand)]
    Identity(IdentityCommand),
    /// Write a deterministic synthetic fleet (fleet.csv) and matching releases.json.
    #[cfg(feature = "fleet")]
    GenFleet(GenFleetArgs),
    /// Serve a GitHub-compatible sandbox forge on loopback (releases from DIR/releases.json).
    Sandbox(SandboxArgs),
    /// Dispatch builds for identities without an artifact, after checking the release, the
    /// running builds and the ledger; prints what it did for each and why.
    Dispatch(DispatchArgs),
    /// Show build runs: identity, status, conclusion, elapsed against the deadline, URL.
    Runs(RunsArgs),
    /// Cancel a build run.
    Cancel(CancelArgs),
    /// Kernel headers through the fallback chain.
    #[command(subcommand)]
    Headers(HeadersCommand),
    /// The GitHub Actions workflows that build the driver.
    #[command(subcommand)]
    Workflow(WorkflowCommand),
    /// Run the build service nodes ask for their driver (POST /build, GET /status/{id}).
    Serve(ServeArgs),
    /// On a node: get the driver for this kernel from the build service, verified.
    Ensure(EnsureArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `kfleet man > /usr/local/share/man/man1/kfleet.1`.
    Man,
}

/// Standard output could not be written. A closed pipe (`kfleet report | head`) ends the command
/// quietly; anything else is an error.
#[derive(Debug, thiserror::Error)]
#[error("cannot write to standard output: {0}")]
pub struct StdoutError(pub std::io::Error);

/// What `main` does with a command's error: the exit code, and the message for standard error
/// (`None`: nothing to say). Each cause is shown once, even where a message already quotes it.
pub fn on_error(err: &anyhow::Error) -> (ExitCode, Option<String>) {
    if let Some(StdoutError(e)) = err.downcast_ref::<StdoutError>()
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        return (ExitCode::SUCCESS, None);
    }
    let mut message = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !message.contains(&cause) {
            message = format!("{message}: {cause}");
        }
    }
    (ExitCode::from(1), Some(message))
}

/// Runs the parsed command line; the exit code says how it went.
pub fn run(cli: Cli) -> Result<ExitCode> {
    let _runtime = runtime()?.enter();
    let (config, _) = Config::load(cli.config.as_deref())?;
    let Some(command) = cli.command else {
        #[cfg(feature = "fleet")]
        return commands::tui::tui_cmd(TuiArgs::default(), &config);
        #[cfg(not(feature = "fleet"))]
        bail!(
            "no command given, and this kfleet was built without the dashboard (the fleet feature); see kfleet --help"
        );
    };
    match command {
        #[cfg(feature = "fleet")]
        Command::Tui(args) => commands::tui::tui_cmd(args, &config),
        #[cfg(feature = "fleet")]
        Command::Report(args) => commands::report::report_cmd(args, &config),
        Command::Identity(cmd) => commands::identity::identity_cmd(cmd, &config),
        #[cfg(feature = "fleet")]
        Command::GenFleet(args) => commands::gen_fleet::gen_fleet_cmd(args, &config),
        Command::Sandbox(args) => commands::sandbox::sandbox_cmd(args, &config),
        Command::Dispatch(args) => commands::dispatch::dispatch_cmd(args, &config),
        Command::Runs(args) => commands::runs::runs_cmd(args, &config),
        Command::Cancel(args) => commands::cancel::cancel_cmd(args, &config),
        Command::Headers(cmd) => commands::headers::headers_cmd(cmd, &config),
        Command::Workflow(WorkflowCommand::Init { dir, force }) => {
            commands::workflow::workflow_init(&dir, force)
        }
        Command::Serve(args) => commands::serve::serve_cmd(args, &config),
        Command::Ensure(args) => commands::ensure::ensure_cmd(args, &config),
        Command::Completions { shell } => commands::docs::completions(shell),
        Command::Man => commands::docs::man(),
    }
}
