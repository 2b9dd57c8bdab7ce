//! The command layer: one file per command, each turning parsed flags into library calls and
//! printing what happened. Only this layer (and `cli`) prints; standard output goes through
//! `out!`/`outln!`, which report a write that fails instead of panicking.

/// `print!` to standard output; a failed write returns from the command with
/// [`StdoutError`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::commands::stdout(format_args!($($arg)*))?
    };
}

/// Whether `--json` asked for the result as JSON (set once, before the command runs).
static JSON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub(crate) fn json_wanted() -> bool {
    JSON.load(std::sync::atomic::Ordering::Relaxed)
}

/// Prints `value` as pretty JSON on standard output.
pub(crate) fn print_json(value: &serde_json::Value) -> Result<()> {
    stdout(format_args!("{}\n", serde_json::to_string_pretty(value)?))?;
    Ok(())
}

/// `println!` to standard output, as `out!`.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::commands::stdout(format_args!("{}\n", format_args!($($arg)*)))?
    };
}

pub(crate) mod build_plan;
pub(crate) mod cancel;
pub(crate) mod dispatch;
pub(crate) mod docs;
pub(crate) mod ensure;
#[cfg(feature = "fleet")]
pub(crate) mod gen_fleet;
pub(crate) mod headers;
mod hints;
pub(crate) mod identity;
pub(crate) mod kabi;
#[cfg(feature = "fleet")]
pub(crate) mod nodes;
pub(crate) mod release;
#[cfg(feature = "fleet")]
pub(crate) mod report;
pub(crate) mod rhel;
pub(crate) mod runs;
pub(crate) mod sandbox;
pub(crate) mod serve;
pub(crate) mod suse;
#[cfg(feature = "fleet")]
pub(crate) mod tui;
#[cfg(feature = "fleet")]
pub(crate) mod upcoming;
pub(crate) mod workflow;

#[cfg(feature = "fleet")]
use crate::cli::BuildArgs;
use crate::cli::Cli;
use crate::cli::Command;
#[cfg(feature = "fleet")]
use crate::cli::TuiArgs;
use crate::cli::WorkflowCommand;
use crate::cli::runtime;
use crate::config::Config;
#[cfg(feature = "fleet")]
use crate::forge::Forge;
#[cfg(feature = "fleet")]
use crate::forge::OciStore;
#[cfg(feature = "fleet")]
use crate::forge::StoreForge;
#[cfg(feature = "fleet")]
use crate::forge::read_release_file;
use crate::identity::RawIdentity;
use crate::identity::check;
#[cfg(feature = "fleet")]
use crate::inventory::FleetGroups;
#[cfg(feature = "fleet")]
use crate::inventory::read_inventory;
use crate::report::ListFormat;
#[cfg(feature = "fleet")]
use crate::report::write_atomic;
use anyhow::Context;
use anyhow::Result;
use anyhow::bail;
use std::path::PathBuf;
use std::process::ExitCode;
#[cfg(feature = "fleet")]
use std::sync::Arc;

/// Makes every thread allocate from one glibc arena (glibc gives each thread its own): a
/// command that reads a fleet on several threads, then reports through polars' pool, otherwise
/// keeps an arena of freed memory per thread. At 100M Parquet rows the process held 170 MB for
/// a 77 MB heap peak; with one arena, 135 MB at the same speed (the readers allocate little per
/// row). Called before such a command starts any thread; not for the service, whose workers
/// allocate per request and would contend for the one arena.
#[cfg(feature = "fleet")]
pub(crate) fn one_allocator_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a glibc tunable; M_ARENA_MAX with 1 is a documented value.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Writes to standard output and flushes, so a closed pipe or a full disk is seen here.
pub(crate) fn stdout(args: std::fmt::Arguments<'_>) -> std::result::Result<(), StdoutError> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_fmt(args)
        .and_then(|()| out.flush())
        .map_err(StdoutError)
}

#[cfg(feature = "fleet")]
/// What coverage is computed from: the listing file, or the forge (and store) named on the
/// command line, whose runs and build state then give `building`, `failed` and `timed-out`.
pub(crate) fn load_listing(
    releases: Option<&PathBuf>,
    build: &BuildArgs,
    store: Option<Arc<OciStore>>,
    config: &Config,
) -> Result<crate::app::snapshot::Snapshot> {
    use crate::app::snapshot::Snapshot;
    if let Some(path) = releases {
        return Ok(Snapshot::releases_only(read_release_file(path)?));
    }
    let client: Arc<dyn Forge> = match (build.forge_client(config)?, store) {
        (Some(forge), Some(store)) => Arc::new(StoreForge::new(forge, store)),
        (Some(forge), None) => forge,
        // The store alone: coverage without build states.
        (None, Some(store)) => {
            let listing = runtime()?.block_on(store.list())?;
            return Ok(Snapshot::releases_only(listing.releases));
        }
        (None, None) => bail!(
            "no release listing: pass --releases FILE, --repo OWNER/NAME or --store oci://… (or set repo or store in kfleet.toml)"
        ),
    };
    let workflow = build.workflow(config);
    let deadline = build.deadline(config)?;
    let snapshot = runtime()?.block_on(async {
        let store = build.store(config).await?;
        anyhow::Ok(Snapshot::read(client.as_ref(), &store, &workflow, deadline).await?)
    })?;
    if let Some(e) = &snapshot.runs_unread {
        tracing::warn!(
            "cannot list runs of {workflow} ({e}); building, failed and timed-out are not shown"
        );
    }
    Ok(snapshot)
}

#[cfg(feature = "fleet")]
pub(crate) fn emit(output: Option<&PathBuf>, text: &str) -> Result<()> {
    match output {
        Some(path) => {
            write_atomic(path, text.as_bytes())?;
            tracing::info!("wrote {}", path.display());
        }
        None => out!("{text}"),
    }
    Ok(())
}

#[cfg(feature = "fleet")]
/// Reads the inventories and warns about bad rows on stderr.
pub(crate) fn read_fleet(paths: &[PathBuf], strict: bool, verbose: bool) -> Result<FleetGroups> {
    let fleet = with_read_progress(|| read_inventory(paths, strict))?;
    for bad in fleet
        .bad_rows
        .iter()
        .take(if verbose { usize::MAX } else { 10 })
    {
        tracing::warn!("skipped bad row {bad}");
    }
    if fleet.bad_row_count > 10 && !verbose {
        tracing::warn!(
            "{} bad rows in all; --verbose lists them (--strict fails on them)",
            fleet.bad_row_count
        );
    }
    Ok(fleet)
}

/// Runs `read`; on a terminal, when it takes longer than a moment (a 100M-node inventory takes
/// seconds), draws how many of the inventories' bytes are read, then clears it.
#[cfg(feature = "fleet")]
fn with_read_progress<T>(read: impl FnOnce() -> T) -> T {
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return read();
    }
    let progress = crate::inventory::progress();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let wait = |d: std::time::Duration| {
                let until = std::time::Instant::now() + d;
                while std::time::Instant::now() < until {
                    if done.load(std::sync::atomic::Ordering::Relaxed) {
                        return false;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                true
            };
            if !wait(std::time::Duration::from_millis(300)) {
                return;
            }
            let bar = indicatif::ProgressBar::with_draw_target(
                Some(progress.total()),
                indicatif::ProgressDrawTarget::stderr(),
            )
            .with_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {binary_bytes}/{binary_total_bytes} of the inventory read {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            while wait(std::time::Duration::from_millis(100)) {
                bar.set_length(progress.total());
                bar.set_position(progress.read().min(progress.total()));
            }
            bar.finish_and_clear();
        });
        // Set however `read` ends (a panic too), so the bar's thread always stops.
        struct Done<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let _done = Done(&done);
        read()
    })
}

/// Identity keys from a CSV with the four identity columns (a `report --format csv` file).
pub(crate) fn read_keys_csv(path: &PathBuf) -> Result<Vec<String>> {
    let mut rdr = ::csv::Reader::from_path(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let header = rdr.headers()?.clone();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h.trim() == name)
            .with_context(|| format!("{}: no {name} column", path.display()))
    };
    let idx = [
        col("distribution")?,
        col("distro_version")?,
        col("architecture")?,
        col("kernel_version")?,
    ];
    let mut keys = Vec::new();
    for record in rdr.records() {
        let record = record.with_context(|| format!("{}: unreadable row", path.display()))?;
        let field = |i: usize| record.get(idx[i]).unwrap_or("");
        let checked = check(&RawIdentity {
            distribution: field(0),
            distro_version: field(1),
            architecture: field(2),
            kernel_version: field(3),
        });
        keys.push(checked.key());
    }
    Ok(keys)
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
    let mut message = crate::text::error_chain(err.as_ref());
    if let Some(hint) = err.chain().find_map(hints::hint) {
        message = format!("{message}; {hint}");
    }
    (ExitCode::from(1), Some(message))
}

/// Runs the parsed command line; the exit code says how it went.
pub fn run(cli: Cli) -> Result<ExitCode> {
    // Before the runtime's threads exist: they would each make an arena of their own.
    #[cfg(feature = "fleet")]
    if matches!(cli.command, Some(Command::Report(_))) {
        one_allocator_arena();
    }
    let _runtime = runtime()?.enter();
    let (config, _) = Config::load(cli.config.as_deref())?;
    // Kernels only an entitled archive serves (Ubuntu Pro, Red Hat's CDN, SUSE's registered
    // repositories) are ordinary kernels when the header chain can read it, or the build
    // workflow holds the credential.
    for name in crate::cli::header_credentials()?.names() {
        crate::distros::grant(name);
    }
    for name in crate::cli::build_credentials(&config)? {
        crate::distros::grant(&name);
    }
    #[cfg(feature = "fleet")]
    crate::inventory::kube::allow_insecure_tls(cli.kube_insecure_skip_tls_verify);
    let Some(command) = cli.command else {
        #[cfg(feature = "fleet")]
        return tui::tui_cmd(TuiArgs::default(), &config);
        #[cfg(not(feature = "fleet"))]
        bail!(
            "no command given, and this kfleet was built without the dashboard (the fleet feature); see kfleet --help"
        );
    };
    JSON.store(cli.json, std::sync::atomic::Ordering::Relaxed);
    let list_format = |format: ListFormat| if cli.json { ListFormat::Json } else { format };
    match command {
        #[cfg(feature = "fleet")]
        Command::Tui(args) => tui::tui_cmd(args, &config),
        #[cfg(feature = "fleet")]
        Command::Report(mut args) => {
            args.verbose = cli.verbose;
            if cli.json {
                args.format = crate::report::Format::Json;
            }
            report::report_cmd(args, &config)
        }
        #[cfg(feature = "fleet")]
        Command::Upcoming(mut args) => {
            args.format = list_format(args.format);
            upcoming::upcoming_cmd(args, &config)
        }
        #[cfg(feature = "fleet")]
        Command::Nodes(mut args) => {
            args.format = list_format(args.format);
            nodes::nodes_cmd(args)
        }
        Command::Identity(cmd) => identity::identity_cmd(cmd, &config),
        #[cfg(feature = "fleet")]
        Command::GenFleet(args) => gen_fleet::gen_fleet_cmd(args, &config),
        Command::Sandbox(args) => sandbox::sandbox_cmd(args, &config),
        Command::Dispatch(mut args) => {
            args.format = list_format(args.format);
            dispatch::dispatch_cmd(args, &config)
        }
        Command::Runs(mut args) => {
            args.format = list_format(args.format);
            runs::runs_cmd(args, &config)
        }
        Command::Cancel(args) => cancel::cancel_cmd(args, &config),
        Command::Headers(cmd) => headers::headers_cmd(cmd, &config),
        Command::Workflow(WorkflowCommand::Init { dir, force }) => {
            workflow::workflow_init(&dir, force)
        }
        Command::BuildPlan(args) => build_plan::build_plan_cmd(args),
        Command::Images(cmd) => build_plan::images_cmd(cmd),
        Command::Release(cmd) => release::release_cmd(cmd, &config),
        Command::Store(cmd) => release::store_cmd(cmd, &config),
        Command::Rhel(cmd) => rhel::rhel_cmd(cmd),
        Command::Suse(cmd) => suse::suse_cmd(cmd),
        Command::Hook(cmd) => ensure::hook_cmd(cmd),
        Command::Preflight(mut args) => {
            args.format = list_format(args.format);
            dispatch::preflight_cmd(args, &config)
        }
        Command::Serve(args) => serve::serve_cmd(args, &config),
        Command::Kabi(cmd) => kabi::kabi_cmd(cmd, &config),
        Command::Ensure(args) => ensure::ensure_cmd(args, &config),
        Command::Install(args) => ensure::install_cmd(args),
        Command::Completions { shell } => docs::completions(shell),
        Command::Man { dir } => docs::man(dir.as_deref()),
    }
}
