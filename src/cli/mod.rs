//! Command-line interface: the clap definitions (`args`), the settings they resolve to
//! (`settings`), and the process's async runtime. `commands::run` carries the parsed line out.

mod args;
mod clients;
mod settings;
mod values;

pub use args::*;
pub use settings::*;

use crate::environment;
use anyhow::Context;
use anyhow::Result;
use clap::Parser;
use clap::Subcommand;
use std::path::PathBuf;

/// Which kernels in your fleet have a prebuilt driver, which are missing, and what to build.
#[derive(Debug, Parser)]
#[command(
    name = "kfleet",
    version = concat!(
        env!("CARGO_PKG_VERSION"),
        " (commit ",
        env!("KFLEET_COMMIT"),
        ", ",
        env!("KFLEET_COMMIT_DATE"),
        ")"
    )
)]
pub struct Cli {
    /// Config file (default: ./kfleet.toml, then $XDG_CONFIG_HOME/kfleet/kfleet.toml).
    #[arg(long, global = true, value_name = "FILE", env = environment::KFLEET_CONFIG)]
    pub config: Option<PathBuf>,
    /// Notices (retries, waits, warnings) on standard error: `text` lines, or one JSON object
    /// per line (`serve` under a log collector).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t = crate::notice::LogFormat::Text,
        env = environment::KFLEET_LOG_FORMAT
    )]
    pub log_format: crate::notice::LogFormat,
    /// Print the result as JSON (one document on standard output), for every command; the same
    /// as `--format json` where a command has one.
    #[arg(long, global = true)]
    pub json: bool,
    /// Only warnings and errors on standard error (what a command prints on standard output is
    /// unchanged).
    #[arg(long, short = 'q', global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// More on standard error: debug notices; `report` also lists unrecognised asset names and
    /// every bad row.
    #[arg(long, short = 'v', global = true)]
    pub verbose: bool,
    /// Honour `insecure-skip-tls-verify` in a kubeconfig (`-i kube:`): the API server's
    /// certificate is then not checked, with a warning. Without it such a context is refused.
    #[cfg(feature = "fleet")]
    #[arg(long, global = true)]
    pub kube_insecure_skip_tls_verify: bool,
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
    /// Kernels the distributions already publish on the lines the fleet runs, newer than the
    /// newest the fleet runs: what nodes will boot next, and whether the release has it.
    #[cfg(feature = "fleet")]
    Upcoming(UpcomingArgs),
    /// The nodes that run one kernel identity (name, inventory or kube context, labels).
    #[cfg(feature = "fleet")]
    Nodes(NodesArgs),
    /// Check or show kernel identities.
    #[command(subcommand)]
    Identity(IdentityCommand),
    /// Write a deterministic synthetic fleet (fleet.csv) and matching releases.json.
    #[cfg(feature = "fleet")]
    GenFleet(GenFleetArgs),
    /// Serve a GitHub-compatible sandbox forge on loopback (releases from DIR/releases.json).
    Sandbox(SandboxArgs),
    /// Dispatch builds for identities without an artifact, after checking the release, the
    /// running builds and the build state; prints what it did for each and why.
    Dispatch(DispatchArgs),
    /// Show build runs: identity, status, conclusion, elapsed against the deadline, URL.
    Runs(RunsArgs),
    /// Cancel a build run.
    Cancel(CancelArgs),
    /// Kernel headers through the fallback chain.
    #[command(subcommand)]
    Headers(HeadersCommand),
    /// The environment a kernel's build runs in: image, repositories, packages, compiler and
    /// commands (exit 1: unsupported, with the reason). `--format env` is what build-module.sh reads.
    BuildPlan(BuildPlanArgs),
    /// The build images: pin them by digest.
    #[command(subcommand)]
    Images(ImagesCommand),
    /// The GitHub Actions workflows that build the driver.
    #[command(subcommand)]
    Workflow(WorkflowCommand),
    /// The build job's calls on the driver's release: does an asset exist, upload assets.
    #[command(subcommand)]
    Release(ReleaseCommand),
    /// Before a fleet moves to new kernels: which target kernels lack a driver, dispatch their
    /// builds, and exit 2 until every one has its driver (an upgrade pipeline gates on it).
    Preflight(PreflightArgs),
    /// On a node: the hook that gets a kernel's driver when the kernel is installed.
    #[command(subcommand)]
    Hook(HookCommand),
    /// The build job's calls on an OCI registry holding the drivers (`--store oci://…`): push,
    /// is a driver there, list.
    #[command(subcommand)]
    Store(StoreCommand),
    /// A build job without a Red Hat entitlement certificate: register with the organisation's
    /// activation key and write the system's content access certificate; unregister after.
    #[command(subcommand)]
    Rhel(RhelCommand),
    /// A build job for SLES kernels: register with the organisation's registration code and
    /// write the repositories the system may read; deregister after.
    #[command(subcommand)]
    Suse(SuseCommand),
    /// Run the build service nodes ask for their driver (POST /build, GET /status/{id}).
    Serve(ServeArgs),
    /// Symbol versions (kABI): what a built module imports, and whether it loads into another
    /// kernel release (exit 2 when it does not, with the first reason).
    #[command(subcommand)]
    Kabi(KabiCommand),
    /// On a node: get the driver for this kernel from the build service, verified.
    Ensure(EnsureArgs),
    /// On a node: install a driver package's modules, run depmod and load them.
    Install(InstallArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `kfleet man > /usr/local/share/man/man1/kfleet.1`; with
    /// `--dir`, write one page per command there (kfleet.1, kfleet-report.1, ...).
    Man {
        /// Directory to write kfleet.1 and a page per command into.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// The one async runtime of the process; `run` enters it so clients can be built anywhere.
pub(crate) fn runtime() -> Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok(RUNTIME.get_or_init(|| rt))
}
