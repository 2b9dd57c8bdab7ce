//! Command-line interface: clap definitions and the commands behind them.

#[cfg(feature = "fleet")]
use crate::builds::build_states;
#[cfg(feature = "fleet")]
use crate::builds::ledger::Ledger;
use crate::builds::{Decision, Planner, PlannerConfig};
use crate::config::{Config, DEFAULT_MODULE, default_state_dir};
#[cfg(feature = "fleet")]
use crate::coverage::{self, BuildStates, CoverageOptions, CoverageStatus};
use crate::forge::{
    CancelOutcome, Faults, Forge, GITHUB_API, GithubClient, RepoRef, RetryPolicy, Sandbox,
    SandboxForge, SandboxOptions, Simulation, WorkflowRun, load_releases, select_release,
    token_from_environment,
};
#[cfg(feature = "fleet")]
use crate::forge::{Release, index_assets, read_release_file};
use crate::headers::{Chain, Resolver, ResolverOptions, plan};
use crate::identity::{
    AssetTemplate, DEFAULT_ASSET_TEMPLATE, RawIdentity, Verdict, check, local_identity,
};
#[cfg(feature = "fleet")]
use crate::inventory::{FleetGroups, read_inventory};
#[cfg(feature = "fleet")]
use crate::report::Format;
#[cfg(feature = "fleet")]
use crate::report::View;
use crate::report::{self, ListFormat, write_atomic};
#[cfg(feature = "fleet")]
use crate::sample::{FleetSpec, generate};
use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Which kernels in your fleet have a prebuilt driver, which are missing, and what to build.
#[derive(Debug, Parser)]
#[command(name = "kfleet", version)]
pub struct Cli {
    /// Config file (default: ./kfleet.toml, then $XDG_CONFIG_HOME/kfleet/kfleet.toml).
    #[arg(long, global = true, value_name = "FILE", env = "KFLEET_CONFIG")]
    pub config: Option<PathBuf>,
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
}

#[cfg(feature = "fleet")]
#[derive(Debug, Args)]
pub struct TuiArgs {
    /// Fleet inventory (repeatable); default: the built-in sample fleet.
    #[arg(long, short = 'i', value_name = "FILE")]
    pub inventory: Vec<PathBuf>,
    /// Release listing file, served by an in-process sandbox forge.
    #[arg(long, short = 'r', value_name = "FILE", conflicts_with_all = ["repo", "sandbox"])]
    pub releases: Option<PathBuf>,
    #[command(flatten)]
    pub build: BuildArgs,
    /// Release to report on (default: newest published).
    #[arg(long, value_name = "TAG")]
    pub driver_version: Option<String>,
    #[command(flatten)]
    pub naming: NamingArgs,
    #[command(flatten)]
    pub shares: ShareArgs,
    /// Header sources file replacing the built-in chain (assets/header-sources.toml).
    #[arg(long, value_name = "FILE", env = "KFLEET_HEADER_SOURCES")]
    pub sources: Option<PathBuf>,
}

#[cfg(feature = "fleet")]
impl Default for TuiArgs {
    fn default() -> Self {
        Self {
            inventory: Vec::new(),
            releases: None,
            build: BuildArgs::for_repo(None, None, None, None),
            driver_version: None,
            naming: NamingArgs::default(),
            shares: ShareArgs::default(),
            sources: std::env::var_os("KFLEET_HEADER_SOURCES").map(PathBuf::from),
        }
    }
}

/// The head and the batch plan's target, shared by the commands that compute coverage.
#[derive(Debug, Args, Default, Clone, Copy)]
pub struct ShareArgs {
    /// Share of nodes the head holds, 0 < x <= 1 [config: head_share; default 0.90].
    #[arg(long, value_name = "SHARE", value_parser = share)]
    pub head_share: Option<f64>,
    /// Node coverage the batch plan aims for, in percent [config: target; default 99].
    #[arg(long, value_name = "PCT", value_parser = percent)]
    pub target: Option<f64>,
}

impl ShareArgs {
    /// Flags, then config, then the defaults (0.90 and 99%).
    pub fn resolve(&self, config: &Config) -> (f64, f64) {
        (
            self.head_share.or(config.head_share).unwrap_or(0.90),
            self.target.or(config.target).unwrap_or(99.0),
        )
    }
}

/// `--head-share`: above 0 and at most 1.
fn share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x > 0.0 && x <= 1.0 => Ok(x),
        _ => Err(format!(
            "'{s}' is not a share: give a number above 0 and at most 1 (0.90 means 90%)"
        )),
    }
}

/// `--target`: a percentage above 0 and at most 100.
fn percent(s: &str) -> Result<f64, String> {
    match s.trim_end_matches('%').parse::<f64>() {
        Ok(x) if x > 0.0 && x <= 100.0 => Ok(x),
        _ => Err(format!(
            "'{s}' is not a percentage: give a number above 0 and at most 100"
        )),
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// File of client bearer tokens, one per line (env KFLEET_CLIENT_TOKENS: comma-separated).
    #[arg(long, value_name = "FILE")]
    pub client_tokens: Option<PathBuf>,
    /// Seconds the release listing is trusted before a conditional refresh.
    #[arg(long, default_value_t = 30)]
    pub listing_ttl: u64,
    /// New build requests per second each client token may make (burst: ten times that);
    /// answers from the release listing and status polls are not limited.
    #[arg(long, default_value_t = 50.0, value_parser = positive_rate)]
    pub client_rate: f64,
    /// Serve /metrics without a client token.
    #[arg(long)]
    pub metrics_public: bool,
    #[command(flatten)]
    pub build: BuildArgs,
    #[command(flatten)]
    pub naming: NamingArgs,
}

#[derive(Debug, Args)]
pub struct EnsureArgs {
    /// Base URL of the build service (env KFLEET_SERVICE).
    #[arg(
        long,
        env = "KFLEET_SERVICE",
        value_name = "URL",
        required_unless_present = "repo"
    )]
    pub service: Option<String>,
    /// Without a service: ask GitHub directly with the same planner (needs GITHUB_TOKEN).
    #[arg(long, value_name = "OWNER/NAME", conflicts_with = "service")]
    pub repo: Option<String>,
    #[arg(long, value_name = "URL", requires = "repo")]
    pub api_url: Option<String>,
    /// Ledger directory for --repo [default $XDG_STATE_HOME/kfleet].
    #[arg(long, env = "KFLEET_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// File holding the service's bearer token (else env KFLEET_SERVICE_TOKEN).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Driver release to fetch.
    #[arg(long, env = "KFLEET_DRIVER_VERSION")]
    pub driver_version: String,
    /// Directory for the verified artifact.
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
    /// Longest wait for a build.
    #[arg(long, default_value = "15m")]
    pub deadline: String,
    /// Allow plain http:// to a service that is not on loopback (the token travels in the clear).
    #[arg(long)]
    pub insecure_http: bool,
    /// Largest artifact accepted, in MiB.
    #[arg(long, default_value_t = 512, value_name = "MIB")]
    pub max_download: u64,
    #[command(flatten)]
    pub naming: NamingArgs,
    /// This identity instead of the machine's own (/etc/os-release and the running kernel).
    #[arg(long, requires_all = ["distro_version", "architecture", "kernel_version"])]
    pub distribution: Option<String>,
    #[arg(long)]
    pub distro_version: Option<String>,
    #[arg(long)]
    pub architecture: Option<String>,
    #[arg(long)]
    pub kernel_version: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum WorkflowCommand {
    /// Write build-driver.yml and build-batch.yml into a repository, and the build script they
    /// run into .github/kfleet/.
    Init {
        /// Where the workflows go.
        #[arg(long, value_name = "DIR", default_value = ".github/workflows")]
        dir: PathBuf,
        /// Replace files that already exist.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Args)]
pub struct IdentityArgs {
    /// Identity key DISTRIBUTION/VERSION/ARCH/KERNEL (or the four flags below).
    #[arg(value_name = "IDENTITY", required_unless_present = "kernel_version")]
    pub key: Option<String>,
    #[arg(long, requires_all = ["distro_version", "architecture", "kernel_version"], conflicts_with = "key")]
    pub distribution: Option<String>,
    #[arg(long)]
    pub distro_version: Option<String>,
    #[arg(long)]
    pub architecture: Option<String>,
    #[arg(long)]
    pub kernel_version: Option<String>,
}

impl IdentityArgs {
    fn identity(&self) -> Result<crate::identity::KernelIdentity> {
        let parsed = match &self.key {
            Some(key) => crate::identity::KernelIdentity::from_key(key),
            None => crate::identity::KernelIdentity::parse(
                self.distribution.as_deref().unwrap_or(""),
                self.distro_version.as_deref().unwrap_or(""),
                self.architecture.as_deref().unwrap_or(""),
                self.kernel_version.as_deref().unwrap_or(""),
            ),
        };
        Ok(parsed?)
    }
}

#[derive(Debug, Args)]
pub struct HeaderChainArgs {
    /// Header sources file replacing the built-in chain (assets/header-sources.toml).
    #[arg(long, value_name = "FILE", env = "KFLEET_HEADER_SOURCES")]
    pub sources: Option<PathBuf>,
    /// Longest time one source may take.
    #[arg(long, value_name = "DURATION", default_value = "60s")]
    pub source_timeout: String,
    /// How long a resolution stays cached in the state directory (0s: no cache).
    #[arg(long, value_name = "DURATION", default_value = "24h")]
    pub cache_ttl: String,
    /// State directory holding the cache [default $XDG_STATE_HOME/kfleet].
    #[arg(long, env = "KFLEET_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

impl HeaderChainArgs {
    fn chain(&self) -> Result<Chain> {
        Ok(match &self.sources {
            Some(path) => Chain::load(path)?,
            None => Chain::builtin(),
        })
    }

    fn resolver(&self, config: &Config) -> Result<Resolver> {
        let timeout = humantime::parse_duration(&self.source_timeout).with_context(|| {
            format!(
                "--source-timeout {}: write it like 60s",
                self.source_timeout
            )
        })?;
        let ttl = humantime::parse_duration(&self.cache_ttl)
            .with_context(|| format!("--cache-ttl {}: write it like 24h", self.cache_ttl))?;
        let dir = self
            .state_dir
            .clone()
            .or_else(|| config.state_dir.clone())
            .unwrap_or_else(default_state_dir)
            .join("headers");
        Ok(Resolver::new(
            self.chain()?,
            ResolverOptions {
                source_timeout: timeout,
                cache: (!ttl.is_zero()).then_some((dir, ttl)),
            },
        )?)
    }
}

#[derive(Debug, Subcommand)]
pub enum HeadersCommand {
    /// Show the chain for an identity and which source holds its headers (exit 1: none).
    Resolve {
        #[command(flatten)]
        identity: IdentityArgs,
        /// Only show the plan: each source with the URLs it would try; no network.
        #[arg(long)]
        offline: bool,
        /// Output format (table or json).
        #[arg(long, short = 'f', value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
        #[command(flatten)]
        chain: HeaderChainArgs,
    },
    /// Download the header packages into DIR, verifying their checksums (what the build job runs).
    Fetch {
        #[command(flatten)]
        identity: IdentityArgs,
        /// Directory to write the packages into.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[command(flatten)]
        chain: HeaderChainArgs,
    },
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    #[command(flatten)]
    pub forge: ForgeArgs,
    /// Workflow file that builds one identity [config: workflow; default build-driver.yml].
    #[arg(long, value_name = "FILE")]
    pub workflow: Option<String>,
    /// Git ref the workflow runs on [config: ref; default main].
    #[arg(long = "ref", value_name = "REF")]
    pub git_ref: Option<String>,
    /// Directory for the dispatch ledger and lock [config: state_dir; default $XDG_STATE_HOME/kfleet].
    #[arg(long, env = "KFLEET_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// A build unfinished this long after dispatch is timed out [config: deadline; default 15m].
    #[arg(long, value_name = "DURATION")]
    pub deadline: Option<String>,
    /// Cancel runs found past the deadline.
    #[arg(long)]
    pub cancel_on_timeout: bool,
    /// Workflow that builds a JSON list of identities as a matrix [default build-batch.yml].
    #[arg(long, value_name = "FILE", default_value = "build-batch.yml")]
    pub batch_workflow: String,
    /// Pause between dispatches (GitHub allows about 80 content-creating requests a minute).
    #[arg(long, value_name = "DURATION", default_value = "750ms")]
    pub dispatch_interval: String,
}

impl BuildArgs {
    /// The defaults for a repository named outside the build flags (dashboard, ensure).
    fn for_repo(
        repo: Option<String>,
        api_url: Option<String>,
        state_dir: Option<PathBuf>,
        deadline: Option<String>,
    ) -> Self {
        Self {
            forge: ForgeArgs {
                repo,
                api_url,
                sandbox: None,
            },
            workflow: None,
            git_ref: None,
            state_dir,
            deadline,
            cancel_on_timeout: false,
            batch_workflow: "build-batch.yml".into(),
            dispatch_interval: "750ms".into(),
        }
    }

    fn workflow(&self, config: &Config) -> String {
        self.workflow
            .clone()
            .or_else(|| config.workflow.clone())
            .unwrap_or_else(|| "build-driver.yml".into())
    }

    fn deadline(&self, config: &Config) -> Result<std::time::Duration> {
        let text = self
            .deadline
            .clone()
            .or_else(|| config.deadline.clone())
            .unwrap_or_else(|| "15m".into());
        humantime::parse_duration(&text)
            .with_context(|| format!("--deadline {text}: write it like 15m or 90s"))
    }

    /// The state directory the flags or config name (the ledger, the lock, the response cache).
    fn state_root(&self, config: &Config) -> PathBuf {
        self.state_dir
            .clone()
            .or_else(|| config.state_dir.clone())
            .unwrap_or_else(default_state_dir)
    }

    fn forge_client(&self, config: &Config) -> Result<Option<Arc<dyn Forge>>> {
        self.forge
            .client(config, &self.state_root(config).join("http-cache"))
    }

    fn client(&self, config: &Config) -> Result<Arc<dyn Forge>> {
        self.forge_client(config)?.ok_or_else(|| {
            anyhow::anyhow!("no repository: pass --repo OWNER/NAME (or set repo in kfleet.toml)")
        })
    }

    fn planner_config(&self, config: &Config, driver_version: String) -> Result<PlannerConfig> {
        Ok(PlannerConfig {
            workflow: self.workflow(config),
            git_ref: self
                .git_ref
                .clone()
                .or_else(|| config.git_ref.clone())
                .unwrap_or_else(|| "main".into()),
            driver_version,
            deadline: self.deadline(config)?,
            cancel_on_timeout: self.cancel_on_timeout,
            batch_workflow: self.batch_workflow.clone(),
            dispatch_interval: humantime::parse_duration(&self.dispatch_interval).with_context(
                || {
                    format!(
                        "--dispatch-interval {}: write it like 750ms",
                        self.dispatch_interval
                    )
                },
            )?,
            state_dir: {
                let dir = self.state_root(config);
                // Sandbox runs are make-believe: keep them out of the real ledger.
                if self.forge.sandbox.is_some() {
                    dir.join("sandbox")
                } else {
                    dir
                }
            },
        })
    }
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["identity", "missing", "long_tail", "from"])))]
pub struct DispatchArgs {
    /// Identity key DISTRIBUTION/VERSION/ARCH/KERNEL; repeatable.
    #[arg(long, value_name = "KEY")]
    pub identity: Vec<String>,
    /// Every `missing` identity of the inventory (the head without artifacts).
    #[arg(long, requires = "inventory")]
    pub missing: bool,
    /// Every `long-tail` identity of the inventory.
    #[arg(long, requires = "inventory")]
    pub long_tail: bool,
    /// Identities from a CSV with distribution,distro_version,architecture,kernel_version columns
    /// (such as `kfleet report --format csv`).
    #[arg(long, value_name = "FILE")]
    pub from: Option<PathBuf>,
    /// Fleet inventory for --missing / --long-tail; repeatable.
    #[arg(long, short = 'i', value_name = "FILE")]
    pub inventory: Vec<PathBuf>,
    /// Release the builds upload to (default: newest published release).
    #[arg(long, value_name = "TAG")]
    pub driver_version: Option<String>,
    /// Share of nodes the head holds, for --missing / --long-tail [config: head_share; default 0.90].
    #[arg(long, value_name = "SHARE", value_parser = share)]
    pub head_share: Option<f64>,
    /// Show what would happen without dispatching.
    #[arg(long)]
    pub dry_run: bool,
    /// Send the builds as matrix batches of at most 256 through the batch workflow.
    #[arg(long)]
    pub matrix: bool,
    /// Output format.
    #[arg(long, short = 'f', value_enum, default_value_t = ListFormat::Table)]
    pub format: ListFormat,
    #[command(flatten)]
    pub build: BuildArgs,
    #[command(flatten)]
    pub naming: NamingArgs,
}

#[derive(Debug, Args)]
pub struct RunsArgs {
    /// Redraw until every run has finished.
    #[arg(long)]
    pub watch: bool,
    /// Only unfinished runs.
    #[arg(long)]
    pub active: bool,
    /// Output format (table or json).
    #[arg(long, short = 'f', value_enum, default_value_t = ListFormat::Table)]
    pub format: ListFormat,
    #[command(flatten)]
    pub build: BuildArgs,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    /// Run id.
    pub run_id: u64,
    #[command(flatten)]
    pub build: BuildArgs,
}

#[derive(Debug, Args)]
pub struct ForgeArgs {
    /// Repository holding the driver's releases, OWNER/NAME [config: repo].
    #[arg(long, env = "KFLEET_REPO", value_name = "OWNER/NAME")]
    pub repo: Option<String>,
    /// GitHub API base URL [config: api_url; default https://api.github.com].
    #[arg(long, env = "KFLEET_API_URL", value_name = "URL")]
    pub api_url: Option<String>,
    /// Use an in-process sandbox forge serving DIR/releases.json instead of GitHub (a demo: its
    /// runs live as long as the command).
    #[arg(long, value_name = "DIR", conflicts_with = "repo")]
    pub sandbox: Option<PathBuf>,
}

impl ForgeArgs {
    /// The forge named by the flags or config: the sandbox, or GitHub for a repository, keeping
    /// its listing validators in `http_cache`.
    fn client(
        &self,
        config: &Config,
        http_cache: &std::path::Path,
    ) -> Result<Option<Arc<dyn Forge>>> {
        if let Some(dir) = &self.sandbox {
            let releases = load_releases(dir)?;
            let forge = runtime()?.block_on(SandboxForge::start(
                releases,
                SandboxOptions::default(),
                RetryPolicy::default(),
            ))?;
            eprintln!("{}", Forge::label(&forge));
            return Ok(Some(Arc::new(forge)));
        }
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
        let notify = Box::new(|msg: &str| tracing::info!("waiting: {msg}"));
        Ok(Some(Arc::new(
            GithubClient::new(&api, repo, token, RetryPolicy::default(), Some(notify))?
                .with_disk_cache(http_cache.to_path_buf()),
        )))
    }
}

#[derive(Debug, Args, Default)]
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

#[cfg(feature = "fleet")]
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Fleet inventory: CSV, `kubectl get nodes -o json`, or JSON Lines; gzip accepted. Repeatable.
    #[arg(long, short = 'i', required = true, value_name = "FILE")]
    pub inventory: Vec<PathBuf>,
    /// GitHub release listing (`gh api repos/OWNER/REPO/releases --paginate > FILE`); instead of --repo.
    #[arg(long, short = 'r', value_name = "FILE", conflicts_with = "repo")]
    pub releases: Option<PathBuf>,
    #[command(flatten)]
    pub build: BuildArgs,
    /// Release tag to report on (default: newest published, not draft, not prerelease).
    #[arg(long, value_name = "TAG")]
    pub driver_version: Option<String>,
    #[command(flatten)]
    pub naming: NamingArgs,
    #[command(flatten)]
    pub shares: ShareArgs,
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
    /// Drop the connection halfway through the body of the first N successful responses.
    #[arg(long, default_value_t = 0)]
    pub drop_connections: u32,
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
    /// The asset name of an identity's driver artifact under the naming template.
    AssetName {
        #[command(flatten)]
        identity: IdentityArgs,
        /// Release tag (driver version) in the name.
        #[arg(long)]
        driver_version: String,
        #[command(flatten)]
        naming: NamingArgs,
    },
    /// This machine's identity from /etc/os-release and the running kernel.
    Local {
        /// Read this os-release file instead.
        #[arg(long, value_name = "FILE")]
        os_release: Option<PathBuf>,
    },
}

#[cfg(feature = "fleet")]
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
    let _runtime = runtime()?.enter();
    let (config, _) = Config::load(cli.config.as_deref())?;
    let Some(command) = cli.command else {
        #[cfg(feature = "fleet")]
        return tui_cmd(TuiArgs::default(), &config);
        #[cfg(not(feature = "fleet"))]
        bail!(
            "no command given, and this kfleet was built without the dashboard (the fleet feature); see kfleet --help"
        );
    };
    match command {
        #[cfg(feature = "fleet")]
        Command::Tui(args) => tui_cmd(args, &config),
        #[cfg(feature = "fleet")]
        Command::Report(args) => report_cmd(args, &config),
        Command::Identity(cmd) => identity_cmd(cmd, &config),
        #[cfg(feature = "fleet")]
        Command::GenFleet(args) => gen_fleet_cmd(args, &config),
        Command::Sandbox(args) => sandbox_cmd(args, &config),
        Command::Dispatch(args) => dispatch_cmd(args, &config),
        Command::Runs(args) => runs_cmd(args, &config),
        Command::Cancel(args) => cancel_cmd(args, &config),
        Command::Headers(cmd) => headers_cmd(cmd, &config),
        Command::Workflow(WorkflowCommand::Init { dir, force }) => workflow_init(&dir, force),
        Command::Serve(args) => serve_cmd(args, &config),
        Command::Ensure(args) => ensure_cmd(args, &config),
    }
}

/// The one async runtime of the process; `run` enters it so clients can be built anywhere.
fn runtime() -> Result<&'static tokio::runtime::Runtime> {
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

/// Build states for the release a caller selects (runs and ledger are keyed by driver version).
#[cfg(feature = "fleet")]
type BuildStatesFor = Box<dyn Fn(&str) -> BuildStates>;

#[cfg(feature = "fleet")]
/// The release listing and build states, from the file or from the forge named on the command
/// line (whose runs and ledger then give `building`, `failed` and `timed-out`).
fn load_listing(
    releases: Option<&PathBuf>,
    build: &BuildArgs,
    config: &Config,
) -> Result<(Vec<Release>, BuildStatesFor)> {
    if let Some(path) = releases {
        return Ok((read_release_file(path)?, Box::new(|_| BuildStates::new())));
    }
    let Some(client) = build.forge_client(config)? else {
        bail!(
            "no release listing: pass --releases FILE, or --repo OWNER/NAME (or set repo in kfleet.toml)"
        );
    };
    let workflow = build.workflow(config);
    let deadline = build.deadline(config)?;
    let state_dir = build.planner_config(config, String::new())?.state_dir;
    runtime()?.block_on(async {
        let listing = client.list_releases().await?;
        let runs = match client
            .list_runs(&workflow, None, Some(crate::forge::run_history_start()))
            .await
        {
            Ok(runs) => runs,
            // Coverage still stands without build states (no such workflow, no actions:read).
            Err(e) => {
                eprintln!("warning: cannot list runs of {workflow} ({e}); building, failed and timed-out are not shown");
                Vec::new()
            }
        };
        let ledger = Ledger::open(&state_dir)?.load()?;
        let states: BuildStatesFor = Box::new(move |driver_version: &str| {
            build_states(&runs, Some(&ledger), driver_version, deadline)
        });
        Ok((listing.releases, states))
    })
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
            drop_connections: args.drop_connections,
            ..Faults::default()
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

#[cfg(feature = "fleet")]
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

#[cfg(feature = "fleet")]
fn report_cmd(args: ReportArgs, config: &Config) -> Result<ExitCode> {
    let (head_share, target) = args.shares.resolve(config);
    let template = args.naming.template(config)?;
    let (releases, builds) = load_listing(args.releases.as_ref(), &args.build, config)?;
    let release = select_release(&releases, args.driver_version.as_deref())?;
    let builds = builds(&release.tag_name);
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
        &builds,
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

#[cfg(feature = "fleet")]
/// Reads the inventories and warns about bad rows on stderr.
fn read_fleet(paths: &[PathBuf], strict: bool, verbose: bool) -> Result<FleetGroups> {
    let fleet = read_inventory(paths, strict)?;
    for bad in fleet
        .bad_rows
        .iter()
        .take(if verbose { usize::MAX } else { 10 })
    {
        eprintln!("warning: skipped bad row {bad}");
    }
    if fleet.bad_row_count > 10 && !verbose {
        eprintln!(
            "warning: {} bad rows in all; --verbose lists them (--strict fails on them)",
            fleet.bad_row_count
        );
    }
    Ok(fleet)
}

/// Identity keys from a CSV with the four identity columns (a `report --format csv` file).
fn read_keys_csv(path: &PathBuf) -> Result<Vec<String>> {
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

fn dispatch_cmd(args: DispatchArgs, config: &Config) -> Result<ExitCode> {
    let client = args.build.client(config)?;
    let template = args.naming.template(config)?;
    let mut keys = args.identity.clone();
    if let Some(path) = &args.from {
        keys.extend(read_keys_csv(path)?);
    }
    #[cfg(feature = "fleet")]
    let fleet = if args.missing || args.long_tail {
        Some(read_fleet(&args.inventory, false, false)?)
    } else {
        None
    };
    #[cfg(not(feature = "fleet"))]
    if args.missing || args.long_tail {
        bail!(
            "--missing and --long-tail read the fleet, and this kfleet was built without the fleet feature; name identities or use --from FILE"
        );
    }
    let decisions = runtime()?.block_on(async {
        let listing = client.list_releases().await?;
        let release = select_release(&listing.releases, args.driver_version.as_deref())?;
        #[cfg(feature = "fleet")]
        if let Some(fleet) = &fleet {
            let head_share = args.head_share.or(config.head_share).unwrap_or(0.90);
            let assets = index_assets(release, &template);
            let options = CoverageOptions {
                head_share,
                ..CoverageOptions::default()
            };
            let report = coverage::compute(
                fleet,
                &assets,
                &release.tag_name,
                options,
                &BuildStates::new(),
            )?;
            keys.extend(
                report
                    .identities
                    .iter()
                    .filter(|r| {
                        (args.missing && r.status == CoverageStatus::Missing)
                            || (args.long_tail && r.status == CoverageStatus::LongTail)
                    })
                    .map(|r| r.key.clone()),
            );
        }
        let mut planner = Planner::new(
            client.clone(),
            template,
            args.build
                .planner_config(config, release.tag_name.clone())?,
        )?;
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) && keys.len() > 1 {
            let bar = indicatif::ProgressBar::new(keys.len() as u64).with_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} identities checked, {elapsed} {msg}",
                )
                .expect("the progress template is valid"),
            );
            planner = planner.on_decided(move |key, _| {
                bar.inc(1);
                bar.set_message(key.to_string());
                if bar.position() == bar.length().unwrap_or(0) {
                    bar.finish_and_clear();
                }
            });
        }
        anyhow::Ok(if args.matrix {
            planner.plan_matrix(&keys, args.dry_run).await?
        } else {
            planner.plan_many(&keys, args.dry_run).await?
        })
    })?;
    let rejected = decisions
        .iter()
        .filter(|(_, d)| matches!(d, Decision::Invalid { .. } | Decision::Unsupported { .. }))
        .count();
    match args.format {
        ListFormat::Json => {
            let rows: Vec<serde_json::Value> = decisions
                .iter()
                .map(|(key, d)| {
                    let mut v = serde_json::to_value(d).expect("decisions serialise");
                    v["key"] = serde_json::Value::String(key.clone());
                    v
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&rows)?);
        }
        _ => {
            for (key, d) in &decisions {
                println!("{key}: {}", d.describe());
            }
        }
    }
    Ok(if rejected > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn elapsed_text(run: &WorkflowRun) -> (String, bool, std::time::Duration) {
    let end = if run.is_finished() {
        run.updated_at.unwrap_or_else(chrono::Utc::now)
    } else {
        chrono::Utc::now()
    };
    let elapsed = run
        .created_at
        .and_then(|c| end.signed_duration_since(c).to_std().ok())
        .unwrap_or_default();
    let secs = elapsed.as_secs();
    (
        format!("{}m{:02}s", secs / 60, secs % 60),
        !run.is_finished(),
        elapsed,
    )
}

fn runs_cmd(args: RunsArgs, config: &Config) -> Result<ExitCode> {
    let client = args.build.client(config)?;
    let workflow = args.build.workflow(config);
    let deadline = args.build.deadline(config)?;
    let interactive = std::io::IsTerminal::is_terminal(&std::io::stdout());
    runtime()?.block_on(async {
        loop {
            let mut runs = client
                .list_runs(&workflow, None, Some(crate::forge::run_history_start()))
                .await?;
            if args.active {
                runs.retain(|r| !r.is_finished());
            }
            let mut rows = Vec::new();
            let mut json = Vec::new();
            for run in &runs {
                let (elapsed, active, took) = elapsed_text(run);
                let overdue = active && took > deadline;
                let mut status = run.status.clone().unwrap_or_default();
                if overdue {
                    status = "timed-out".into();
                    if args.build.cancel_on_timeout {
                        client.cancel_run(run.id).await?;
                        status = "timed-out, cancel requested".into();
                    }
                }
                let identity = run
                    .identity()
                    .map(|(k, _)| k.to_string())
                    .unwrap_or_else(|| run.display_title.clone());
                json.push(serde_json::json!({
                    "id": run.id, "identity": identity, "status": status,
                    "conclusion": run.conclusion, "elapsed_secs": took.as_secs(),
                    "deadline_secs": deadline.as_secs(), "url": run.html_url,
                }));
                rows.push(vec![
                    run.id.to_string(),
                    identity,
                    status,
                    run.conclusion.clone().unwrap_or_default(),
                    format!("{elapsed} / {}m", deadline.as_secs() / 60),
                    run.html_url.clone().unwrap_or_default(),
                ]);
            }
            let active = runs.iter().any(|r| !r.is_finished());
            if args.format == ListFormat::Json {
                println!("{}", serde_json::to_string_pretty(&json)?);
            } else {
                if args.watch && interactive {
                    print!("\x1b[H\x1b[2J");
                }
                print!(
                    "{}",
                    report::grid(
                        &[
                            "RUN",
                            "IDENTITY",
                            "STATUS",
                            "CONCLUSION",
                            "ELAPSED / DEADLINE",
                            "URL"
                        ],
                        &rows,
                        &[]
                    )
                );
                if rows.is_empty() {
                    println!("no runs of {workflow}");
                }
            }
            if !args.watch || !active {
                return Ok(ExitCode::SUCCESS);
            }
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        }
    })
}

fn cancel_cmd(args: CancelArgs, config: &Config) -> Result<ExitCode> {
    let client = args.build.client(config)?;
    match runtime()?.block_on(client.cancel_run(args.run_id))? {
        CancelOutcome::Requested => println!("cancel requested for run {}", args.run_id),
        CancelOutcome::AlreadyFinished => {
            println!(
                "run {} had already finished; nothing to cancel",
                args.run_id
            )
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn headers_cmd(cmd: HeadersCommand, config: &Config) -> Result<ExitCode> {
    match cmd {
        HeadersCommand::Resolve {
            identity,
            offline,
            format,
            chain,
        } => {
            let id = identity.identity()?;
            if offline {
                let planned = plan(&chain.chain()?, &id);
                if planned.is_empty() {
                    bail!("no header sources for {}", id.key());
                }
                if format == ListFormat::Json {
                    println!("{}", serde_json::to_string_pretty(&planned)?);
                } else {
                    println!("plan for {} (offline: nothing was fetched)", id.key());
                    for (i, s) in planned.iter().enumerate() {
                        println!(
                            "{}. {} ({}) for {}",
                            i + 1,
                            s.name,
                            s.kind.as_str(),
                            s.packages.join(", ")
                        );
                        for url in &s.urls {
                            println!("   {url}");
                        }
                    }
                }
                return Ok(ExitCode::SUCCESS);
            }
            let resolver = chain.resolver(config)?;
            let resolution = runtime()?.block_on(resolver.resolve(&id))?;
            if format == ListFormat::Json {
                println!("{}", serde_json::to_string_pretty(&resolution)?);
            } else {
                let rows: Vec<Vec<String>> = resolution
                    .attempts
                    .iter()
                    .map(|a| {
                        vec![
                            a.source.clone(),
                            a.kind.as_str().to_string(),
                            format!("{} ms", a.millis),
                            a.outcome.clone(),
                            a.url.clone(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    report::grid(&["SOURCE", "KIND", "TIME", "OUTCOME", "URL"], &rows, &[2])
                );
                match &resolution.resolved_by {
                    Some(by) => {
                        println!("\nresolved by {by}:");
                        for p in &resolution.packages {
                            let sum = p
                                .checksum
                                .as_ref()
                                .map(|c| format!(" {}:{}", c.algorithm, c.hex))
                                .unwrap_or_default();
                            println!("  {}{sum}", p.url);
                        }
                    }
                    None => println!("\nunresolvable: every source was tried"),
                }
            }
            Ok(if resolution.resolved_by.is_some() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        HeadersCommand::Fetch {
            identity,
            out,
            chain,
        } => {
            let id = identity.identity()?;
            let resolver = chain.resolver(config)?;
            let (resolution, files) = runtime()?.block_on(resolver.fetch(&id, &out))?;
            eprintln!(
                "headers for {} from {}",
                id.key(),
                resolution.resolved_by.as_deref().unwrap_or("?")
            );
            for f in files {
                println!("{}", f.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(feature = "fleet")]
const SAMPLE_FLEET: &str = include_str!("../sample-data/fleet.csv");
#[cfg(feature = "fleet")]
const SAMPLE_RELEASES: &str = include_str!("../sample-data/releases.json");

#[cfg(feature = "fleet")]
fn tui_cmd(args: TuiArgs, config: &Config) -> Result<ExitCode> {
    let sample = args.inventory.is_empty();
    // The built-in sample fleet is read like any inventory, from a file.
    let sample_file = if sample {
        let mut f = tempfile::Builder::new()
            .prefix("kfleet-sample-")
            .suffix(".csv")
            .tempfile()?;
        std::io::Write::write_all(&mut f, SAMPLE_FLEET.as_bytes())?;
        Some(f)
    } else {
        None
    };
    let inventories = match &sample_file {
        Some(f) => vec![f.path().to_path_buf()],
        None => args.inventory.clone(),
    };
    let fleet = read_inventory(&inventories, false)?;
    let build = &args.build;
    let sandbox_releases = match (&args.releases, &build.forge.sandbox, &build.forge.repo) {
        (Some(file), _, _) => Some(read_release_file(file)?),
        (None, Some(dir), _) => Some(load_releases(dir)?),
        (None, None, None) if config.repo.is_none() => Some(crate::forge::parse_release_listing(
            "(built-in sample releases)",
            SAMPLE_RELEASES.as_bytes(),
        )?),
        _ => None,
    };
    let forge: Arc<dyn Forge> = match sandbox_releases {
        Some(releases) => Arc::new(runtime()?.block_on(SandboxForge::start(
            releases,
            SandboxOptions::default(),
            RetryPolicy::default(),
        ))?),
        None => build.client(config)?,
    };
    let template = args.naming.template(config)?;
    let deadline = build.deadline(config)?;
    let mut planner_config = build.planner_config(config, String::new())?;
    let state_root = build.state_root(config);
    if forge.label().starts_with("SANDBOX") && build.forge.sandbox.is_none() {
        planner_config.state_dir = planner_config.state_dir.join("sandbox");
    }
    let (head_share, target) = args.shares.resolve(config);
    let options = CoverageOptions {
        head_share,
        target: target / 100.0,
    };
    let chain = match &args.sources {
        Some(path) => Chain::load(path)?,
        None => Chain::builtin(),
    };
    runtime()?.block_on(async move {
        let listing = forge.list_releases().await?;
        let release = select_release(&listing.releases, args.driver_version.as_deref())?;
        planner_config.driver_version = release.tag_name.clone();
        let planner = Arc::new(Planner::new(
            forge.clone(),
            template.clone(),
            planner_config,
        )?);
        let dash = Arc::new(crate::tui::Dashboard {
            forge: forge.clone(),
            planner,
            fleet,
            template,
            options,
            workflow: build.workflow(config),
            deadline,
            driver_version: args.driver_version.clone(),
            resolver: crate::headers::Resolver::new(
                chain,
                ResolverOptions {
                    source_timeout: std::time::Duration::from_secs(30),
                    cache: Some((
                        state_root.join("headers"),
                        std::time::Duration::from_secs(86_400),
                    )),
                },
            )?,
        });
        let report = dash.report().await.map_err(|e| anyhow::anyhow!(e))?;
        let app = crate::tui::app::App::new(forge.label(), report, deadline.as_secs())
            .with_keys(config.keys.clone().unwrap_or_default());
        crate::tui::run(dash, app).await?;
        anyhow::Ok(ExitCode::SUCCESS)
    })
}

fn client_tokens(file: Option<&PathBuf>) -> Result<Vec<String>> {
    let mut tokens: Vec<String> = match file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read client tokens {}", path.display()))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect(),
        None => Vec::new(),
    };
    if let Ok(env) = std::env::var("KFLEET_CLIENT_TOKENS") {
        tokens.extend(
            env.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string),
        );
    }
    if tokens.is_empty() {
        bail!(
            "no client tokens: pass --client-tokens FILE (one token per line) or set KFLEET_CLIENT_TOKENS"
        );
    }
    if let Some(short) = tokens.iter().find(|t| t.len() < 16) {
        bail!(
            "a client token of {} characters is too short to be a secret; use at least 16",
            short.len()
        );
    }
    Ok(tokens)
}

/// `--client-rate`: a finite number of requests per second above zero.
fn positive_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!(
            "'{s}' is not a rate: give requests per second, a finite number above 0 (e.g. 50)"
        )),
    }
}

fn serve_cmd(args: ServeArgs, config: &Config) -> Result<ExitCode> {
    let tokens = client_tokens(args.client_tokens.as_ref())?;
    let forge = args.build.client(config)?;
    let template = args.naming.template(config)?;
    let planner = Planner::new(
        forge.clone(),
        template.clone(),
        args.build.planner_config(config, String::new())?,
    )?;
    let options = crate::service::ServiceOptions {
        client_tokens: tokens,
        listing_ttl: std::time::Duration::from_secs(args.listing_ttl),
        deadline: args.build.deadline(config)?,
        rate_per_client: args.client_rate,
        metrics_public: args.metrics_public,
        ..crate::service::ServiceOptions::default()
    };
    let state = crate::service::ServiceState::new(forge.clone(), planner, template, options)?;
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        eprintln!(
            "kfleet build service on http://{} for {}",
            listener.local_addr()?,
            forge.label()
        );
        crate::service::serve(listener, state, async {
            let ctrl_c = tokio::signal::ctrl_c();
            #[cfg(unix)]
            {
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(mut term) => {
                        tokio::select! {
                            _ = ctrl_c => {}
                            _ = term.recv() => {}
                        }
                    }
                    Err(_) => {
                        let _ = ctrl_c.await;
                    }
                }
            }
            #[cfg(not(unix))]
            let _ = ctrl_c.await;
        })
        .await
        .context("the build service stopped")?;
        Ok(ExitCode::SUCCESS)
    })
}

fn ensure_cmd(args: EnsureArgs, config: &Config) -> Result<ExitCode> {
    let token = match &args.token_file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the service token {}", path.display()))?
            .trim()
            .to_string(),
        None => std::env::var("KFLEET_SERVICE_TOKEN").unwrap_or_default(),
    };
    if token.is_empty() && args.service.is_some() {
        bail!("no service token: pass --token-file FILE or set KFLEET_SERVICE_TOKEN");
    }
    let identity = match &args.distribution {
        Some(d) => crate::identity::KernelIdentity::parse(
            d,
            args.distro_version.as_deref().unwrap_or(""),
            args.architecture.as_deref().unwrap_or(""),
            args.kernel_version.as_deref().unwrap_or(""),
        )?,
        None => {
            let local = local_identity(None).context("cannot determine this machine's identity")?;
            match (&local.verdict, local.identity.clone()) {
                (_, Some(id)) => id,
                (Verdict::Unsupported(r) | Verdict::Invalid(r), None) => {
                    eprintln!("this machine ({}) cannot get a driver: {r}", local.key());
                    return Ok(ExitCode::from(5));
                }
                (Verdict::Valid, None) => bail!("this machine's identity did not parse"),
            }
        }
    };
    crate::identity::check_driver_version(&args.driver_version)
        .map_err(|e| anyhow::anyhow!("--driver-version: {e}"))?;
    let template = args.naming.template(config)?;
    let options = crate::service::ensure::EnsureOptions {
        asset_name: template.render(&identity, &args.driver_version),
        max_download: args.max_download.saturating_mul(1 << 20),
        insecure_http: args.insecure_http,
        service: args.service.clone().unwrap_or_default(),
        token,
        driver_version: args.driver_version.clone(),
        out: args.out.clone(),
        deadline: humantime::parse_duration(&args.deadline)
            .with_context(|| format!("--deadline {}: write it like 15m", args.deadline))?,
        poll_min: std::time::Duration::from_secs(1),
        poll_max: std::time::Duration::from_secs(15),
    };
    let outcome = if args.service.is_some() {
        runtime()?.block_on(crate::service::ensure::ensure(&identity, &options))?
    } else {
        let build = BuildArgs::for_repo(
            args.repo.clone(),
            args.api_url.clone(),
            args.state_dir.clone(),
            Some(args.deadline.clone()),
        );
        let forge = build.client(config)?;
        let planner = Planner::new(
            forge.clone(),
            template.clone(),
            build.planner_config(config, args.driver_version.clone())?,
        )?;
        runtime()?.block_on(crate::service::ensure::ensure_direct(
            &identity, &*forge, &planner, &template, &options,
        ))?
    };
    match &outcome {
        crate::service::ensure::EnsureOutcome::Available(path) => println!("{}", path.display()),
        crate::service::ensure::EnsureOutcome::TimedOut(why)
        | crate::service::ensure::EnsureOutcome::Failed(why) => eprintln!("{why}"),
        crate::service::ensure::EnsureOutcome::Rejected(why) => eprintln!("rejected: {why}"),
    }
    Ok(ExitCode::from(outcome.exit_code()))
}

/// The files `workflow init` writes: the workflows, then the build script they run, which goes
/// to `.github/kfleet/` beside the workflows directory.
const WORKFLOWS: [(&str, &str); 2] = [
    (
        "build-driver.yml",
        include_str!("../assets/workflows/build-driver.yml"),
    ),
    (
        "build-batch.yml",
        include_str!("../assets/workflows/build-batch.yml"),
    ),
];
const BUILD_SCRIPT: &str = include_str!("../assets/build-module.sh");

fn workflow_init(dir: &std::path::Path, force: bool) -> Result<ExitCode> {
    let github = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let mut targets: Vec<(PathBuf, &str)> = WORKFLOWS
        .iter()
        .map(|(name, text)| (dir.join(name), *text))
        .collect();
    targets.push((github.join("kfleet").join("build-module.sh"), BUILD_SCRIPT));
    if !force {
        let existing: Vec<String> = targets
            .iter()
            .filter(|(p, _)| p.exists())
            .map(|(p, _)| p.display().to_string())
            .collect();
        if !existing.is_empty() {
            bail!(
                "{} already exist(s); pass --force to replace",
                existing.join(", ")
            );
        }
    }
    for (path, text) in &targets {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        write_atomic(path, text.as_bytes())?;
        #[cfg(unix)]
        if path.extension().is_some_and(|e| e == "sh") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
        }
        println!("wrote {}", path.display());
    }
    eprintln!(
        "set repository variables KFLEET_MODULE (module name), KFLEET_MODULE_DIR (where its Kbuild is) and, if needed, KFLEET_RUNNER_X86_64 / KFLEET_RUNNER_AARCH64"
    );
    Ok(ExitCode::SUCCESS)
}

fn identity_cmd(cmd: IdentityCommand, config: &Config) -> Result<ExitCode> {
    let checked = match &cmd {
        IdentityCommand::AssetName {
            identity,
            driver_version,
            naming,
        } => {
            let id = identity.identity()?;
            crate::identity::check_driver_version(driver_version)
                .map_err(|e| anyhow::anyhow!("--driver-version: {e}"))?;
            println!("{}", naming.template(config)?.render(&id, driver_version));
            return Ok(ExitCode::SUCCESS);
        }
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

#[cfg(feature = "fleet")]
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
