//! Command-line interface: clap definitions and the commands behind them.

use crate::config::{Config, DEFAULT_MODULE};
use crate::coverage::{self, CoverageOptions, CoverageStatus};
use crate::forge::{
    Faults, GITHUB_API, GithubClient, Release, RepoRef, RetryPolicy, Sandbox, SandboxOptions,
    Simulation,
    index_assets, load_releases, read_release_file, select_release, token_from_environment,
};
use crate::identity::{
    AssetTemplate, DEFAULT_ASSET_TEMPLATE, RawIdentity, Verdict, check, local_identity,
};
use crate::inventory::read_inventory;
use crate::report::{self, Format, View, write_atomic};
use crate::sample::{FleetSpec, generate};
use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Which kernels in your fleet have a prebuilt driver, which are missing, and what to build.
#[derive(Debug, Parser)]
#[command(name = "kfleet", version, arg_required_else_help = true)]
pub struct Cli {
    /// Config file (default: ./kfleet.toml, then $XDG_CONFIG_HOME/kfleet/kfleet.toml).
    #[arg(long, global = true, value_name = "FILE", env = "KFLEET_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Coverage of the fleet by a release's artifacts: statuses, summary, batch plan.
    Report(ReportArgs),
    /// Check or show kernel identities.
    #[command(subcommand)]
    Identity(IdentityCommand),
    /// Write a deterministic synthetic fleet (fleet.csv) and matching releases.json.
    GenFleet(GenFleetArgs),
    /// Serve a GitHub-compatible sandbox forge on loopback (releases from DIR/releases.json).
    Sandbox(SandboxArgs),
}

#[derive(Debug, Args)]
pub struct ForgeArgs {
    /// Repository holding the driver's releases, OWNER/NAME [config: repo].
    #[arg(long, env = "KFLEET_REPO", value_name = "OWNER/NAME")]
    pub repo: Option<String>,
    /// GitHub API base URL [config: api_url; default https://api.github.com].
    #[arg(long, env = "KFLEET_API_URL", value_name = "URL")]
    pub api_url: Option<String>,
}

impl ForgeArgs {
    /// The GitHub client for the configured repository, if one is configured.
    fn client(&self, config: &Config) -> Result<Option<GithubClient>> {
        let Some(repo) = self.repo.clone().or_else(|| config.repo.clone()) else {
            return Ok(None);
        };
        let repo: RepoRef = repo.parse()?;
        let api = self
            .api_url
            .clone()
            .or_else(|| config.api_url.clone())
            .unwrap_or_else(|| GITHUB_API.to_string());
        let token = token_from_environment().ok_or(crate::forge::ForgeError::NoToken)?;
        let notify = Box::new(|msg: &str| eprintln!("waiting: {msg}"));
        Ok(Some(GithubClient::new(
            &api,
            repo,
            token,
            RetryPolicy::default(),
            Some(notify),
        )?))
    }
}

#[derive(Debug, Args)]
pub struct NamingArgs {
    /// Module name in asset names [config: module; default: kdriver].
    #[arg(long, env = "KFLEET_MODULE")]
    pub module: Option<String>,
    /// Asset naming template [config: asset_template].
    #[arg(long, env = "KFLEET_ASSET_TEMPLATE")]
    pub asset_template: Option<String>,
}

impl NamingArgs {
    fn template(&self, config: &Config) -> Result<AssetTemplate> {
        let module = self
            .module
            .clone()
            .or_else(|| config.module.clone())
            .unwrap_or_else(|| DEFAULT_MODULE.to_string());
        let template = self
            .asset_template
            .clone()
            .or_else(|| config.asset_template.clone())
            .unwrap_or_else(|| DEFAULT_ASSET_TEMPLATE.to_string());
        Ok(AssetTemplate::compile(&template, &module)?)
    }
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Fleet inventory: CSV, `kubectl get nodes -o json`, or JSON Lines; gzip accepted. Repeatable.
    #[arg(long, short = 'i', required = true, value_name = "FILE")]
    pub inventory: Vec<PathBuf>,
    /// GitHub release listing (`gh api repos/OWNER/REPO/releases --paginate > FILE`); instead of --repo.
    #[arg(long, short = 'r', value_name = "FILE", conflicts_with = "repo")]
    pub releases: Option<PathBuf>,
    #[command(flatten)]
    pub forge: ForgeArgs,
    /// Release tag to report on (default: newest published, not draft, not prerelease).
    #[arg(long, value_name = "TAG")]
    pub driver_version: Option<String>,
    #[command(flatten)]
    pub naming: NamingArgs,
    /// Share of nodes the head holds, 0 < x <= 1 [config: head_share; default 0.90].
    #[arg(long, value_name = "SHARE")]
    pub head_share: Option<f64>,
    /// Node coverage the batch plan aims for, in percent [config: target; default 99].
    #[arg(long, value_name = "PCT")]
    pub target: Option<f64>,
    /// Output format.
    #[arg(long, short = 'f', value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Only identities with these statuses (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub status: Vec<CoverageStatus>,
    /// Rows shown by the table format (0: all).
    #[arg(long, default_value_t = 40)]
    pub limit: usize,
    /// Write to FILE (atomically) instead of stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Exit 2 when node coverage is below PCT percent.
    #[arg(long, value_name = "PCT")]
    pub fail_under: Option<f64>,
    /// List the unused artifacts (built, but no node runs the kernel) instead.
    #[arg(long)]
    pub unused: bool,
    /// Fail on bad inventory rows instead of skipping them.
    #[arg(long)]
    pub strict: bool,
    /// Also list unrecognised asset names and every bad row.
    #[arg(long, short = 'v')]
    pub verbose: bool,
}

#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Loopback address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8765")]
    pub listen: std::net::SocketAddr,
    /// Directory holding releases.json.
    #[arg(long, value_name = "DIR", default_value = "sample-data")]
    pub data: PathBuf,
    /// Repository served, OWNER/NAME.
    #[arg(long, default_value = "example/kdriver")]
    pub repo: String,
    /// Bearer token clients must present (env KFLEET_SANDBOX_TOKEN); none: any client.
    #[arg(long, env = "KFLEET_SANDBOX_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Share of requests answered 503 at random (0..1).
    #[arg(long, default_value_t = 0.0)]
    pub fail_rate: f64,
    /// Answer the first N requests with 502.
    #[arg(long, default_value_t = 0)]
    pub server_errors: u32,
    /// After N requests, answer one 429 with retry-after.
    #[arg(long, value_name = "N")]
    pub rate_limit_after: Option<u64>,
    /// Seconds in the retry-after header of that 429.
    #[arg(long, default_value_t = 1)]
    pub retry_after: u64,
    /// Delay added to every response, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Send a truncated JSON body for the first N successful responses.
    #[arg(long, default_value_t = 0)]
    pub malformed: u32,
    /// Seconds a simulated run stays queued.
    #[arg(long, default_value_t = 2.0)]
    pub queue_secs: f64,
    /// Seconds a simulated run stays in progress.
    #[arg(long, default_value_t = 8.0)]
    pub run_secs: f64,
    /// Share of simulated builds that fail (0..1); identities listed in DIR/unresolvable.txt always fail.
    #[arg(long, default_value_t = 0.05)]
    pub build_fail_rate: f64,
    /// Reject `return_run_details` in dispatches with 422, like servers that lack it.
    #[arg(long)]
    pub reject_run_details: bool,
    #[command(flatten)]
    pub naming: NamingArgs,
}

#[derive(Debug, Subcommand)]
pub enum IdentityCommand {
    /// Validate one identity: prints its canonical key (exit 0) or why it is rejected (exit 1).
    Check {
        #[arg(long)]
        distribution: String,
        #[arg(long)]
        distro_version: String,
        #[arg(long)]
        architecture: String,
        #[arg(long)]
        kernel_version: String,
    },
    /// This machine's identity from /etc/os-release and the running kernel.
    Local {
        /// Read this os-release file instead.
        #[arg(long, value_name = "FILE")]
        os_release: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct GenFleetArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3000)]
    pub nodes: u64,
    /// Seed; the same seed writes the same files.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Distinct kernel identities (default: 4 x sqrt(nodes)).
    #[arg(long)]
    pub identities: Option<usize>,
    /// Directory to write fleet.csv and releases.json into.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Repository named in download URLs.
    #[arg(long, default_value = "example/kdriver")]
    pub repo: String,
    #[command(flatten)]
    pub naming: NamingArgs,
}

/// Runs the parsed command line; the exit code says how it went.
pub fn run(cli: Cli) -> Result<ExitCode> {
    let (config, _) = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Report(args) => report_cmd(args, &config),
        Command::Identity(cmd) => identity_cmd(cmd),
        Command::GenFleet(args) => gen_fleet_cmd(args, &config),
        Command::Sandbox(args) => sandbox_cmd(args, &config),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Reads the release listing from the file or the forge named on the command line.
fn load_listing(releases: Option<&PathBuf>, forge: &ForgeArgs, config: &Config) -> Result<Vec<Release>> {
    if let Some(path) = releases {
        return Ok(read_release_file(path)?);
    }
    let Some(client) = forge.client(config)? else {
        bail!("no release listing: pass --releases FILE, or --repo OWNER/NAME (or set repo in kfleet.toml)");
    };
    let listing = runtime()?.block_on(client.list_releases())?;
    Ok(listing.releases)
}

fn sandbox_cmd(args: SandboxArgs, config: &Config) -> Result<ExitCode> {
    let releases = load_releases(&args.data)?;
    let count = releases.len();
    let unresolvable_file = args.data.join("unresolvable.txt");
    let unresolvable = match std::fs::read_to_string(&unresolvable_file) {
        Ok(text) => text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Default::default(),
        Err(e) => bail!("cannot read {}: {e}", unresolvable_file.display()),
    };
    let seconds = |name: &str, v: f64| {
        std::time::Duration::try_from_secs_f64(v)
            .map_err(|_| anyhow::anyhow!("--{name} {v}: must be a non-negative number of seconds"))
    };
    let simulation = Simulation {
        queue_time: seconds("queue-secs", args.queue_secs)?,
        run_time: seconds("run-secs", args.run_secs)?,
        fail_rate: args.build_fail_rate,
        unresolvable,
        reject_run_details: args.reject_run_details,
        template: args.naming.template(config)?,
        ..Simulation::default()
    };
    let options = SandboxOptions {
        token: args.token,
        repo: args.repo.clone(),
        faults: Faults {
            server_errors: args.server_errors,
            error_rate: args.fail_rate,
            rate_limit_after: args.rate_limit_after,
            retry_after_secs: args.retry_after,
            latency: std::time::Duration::from_millis(args.latency_ms),
            malformed: args.malformed,
        },
        simulation,
    };
    runtime()?.block_on(async move {
        let sandbox = Sandbox::start(args.listen, releases, options).await?;
        println!("{}", sandbox.base_url());
        eprintln!(
            "sandbox forge serving {count} releases of {} at {} (Ctrl-C stops it); use --api-url {} --repo {}",
            args.repo,
            sandbox.base_url(),
            sandbox.base_url(),
            args.repo
        );
        tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
        sandbox.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}

fn emit(output: Option<&PathBuf>, text: &str) -> Result<()> {
    match output {
        Some(path) => {
            write_atomic(path, text.as_bytes())?;
            eprintln!("wrote {}", path.display());
        }
        None => print!("{text}"),
    }
    Ok(())
}

fn report_cmd(args: ReportArgs, config: &Config) -> Result<ExitCode> {
    let head_share = args.head_share.or(config.head_share).unwrap_or(0.90);
    if !(head_share > 0.0 && head_share <= 1.0) {
        bail!("--head-share {head_share}: must be above 0 and at most 1 (0.90 means 90%)");
    }
    let target = args.target.or(config.target).unwrap_or(99.0);
    if !(target > 0.0 && target <= 100.0) {
        bail!("--target {target}: must be a percentage above 0 and at most 100");
    }
    let template = args.naming.template(config)?;
    let releases = load_listing(args.releases.as_ref(), &args.forge, config)?;
    let release = select_release(&releases, args.driver_version.as_deref())?;
    let assets = index_assets(release, &template);
    let fleet = read_inventory(&args.inventory, args.strict)?;
    for bad in fleet
        .bad_rows
        .iter()
        .take(if args.verbose { usize::MAX } else { 10 })
    {
        eprintln!("warning: skipped bad row {bad}");
    }
    if fleet.bad_row_count > 10 && !args.verbose {
        eprintln!(
            "warning: {} bad rows in all; --verbose lists them (--strict fails on them)",
            fleet.bad_row_count
        );
    }
    let report = coverage::compute(
        &fleet,
        &assets,
        &release.tag_name,
        CoverageOptions {
            head_share,
            target: target / 100.0,
        },
    )?;
    let text = if args.unused {
        report::render_unused(&report.unused, args.format)?
    } else {
        let view = View {
            statuses: args.status.clone(),
            limit: args.limit,
            verbose: args.verbose,
        };
        report::render(&report, args.format, &view)?
    };
    emit(args.output.as_ref(), &text)?;
    if let Some(floor) = args.fail_under
        && report.summary.node_coverage_pct < floor
    {
        eprintln!(
            "node coverage {}% is below --fail-under {floor}%",
            report.summary.node_coverage_pct
        );
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}

fn identity_cmd(cmd: IdentityCommand) -> Result<ExitCode> {
    let checked = match &cmd {
        IdentityCommand::Check {
            distribution,
            distro_version,
            architecture,
            kernel_version,
        } => check(&RawIdentity {
            distribution,
            distro_version,
            architecture,
            kernel_version,
        }),
        IdentityCommand::Local { os_release } => local_identity(os_release.as_deref())
            .context("cannot determine this machine's identity")?,
    };
    match &checked.verdict {
        Verdict::Valid => {
            println!("{}", checked.key());
            Ok(ExitCode::SUCCESS)
        }
        Verdict::Unsupported(reason) => {
            println!("{}", checked.key());
            eprintln!("unsupported: {reason}");
            Ok(ExitCode::from(1))
        }
        Verdict::Invalid(reason) => {
            eprintln!("invalid: {reason}");
            Ok(ExitCode::from(1))
        }
    }
}

fn gen_fleet_cmd(args: GenFleetArgs, config: &Config) -> Result<ExitCode> {
    let spec = FleetSpec {
        nodes: args.nodes,
        seed: args.seed,
        identities: args.identities,
        template: args.naming.template(config)?,
        repo: args.repo,
    };
    let made = generate(&spec, &args.out)?;
    println!(
        "wrote {}/fleet.csv ({} nodes, {} identities, {} bad rows) and releases.json ({} releases)",
        args.out.display(),
        made.nodes,
        made.identities,
        made.bad_rows,
        made.releases
    );
    Ok(ExitCode::SUCCESS)
}
