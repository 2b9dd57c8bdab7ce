//! Settings resolved from flags, then `kfleet.toml`, then the defaults (which live here once).

use crate::artifacts::AssetTemplate;
use crate::artifacts::DEFAULT_ASSET_TEMPLATE;
use crate::builds::PlannerConfig;
use crate::cli::BuildArgs;
use crate::cli::ForgeArgs;
use crate::cli::ForgeRepoArgs;
use crate::cli::HeaderChainArgs;
use crate::cli::IdentityArgs;
use crate::cli::NamingArgs;
use crate::cli::RunnerArgs;
use crate::cli::RunnerKind;
use crate::cli::ShareArgs;
use crate::cli::StoreArgs;
#[cfg(feature = "fleet")]
use crate::cli::TuiArgs;
use crate::cli::runtime;
use crate::config::Config;
use crate::config::DEFAULT_MODULE;
use crate::config::default_state_dir;
use crate::forge::Forge;
use crate::forge::GITHUB_API;
use crate::forge::GithubClient;
use crate::forge::OciStore;
use crate::forge::RepoRef;
use crate::forge::RetryPolicy;
use crate::forge::SandboxForge;
use crate::forge::SandboxOptions;
use crate::forge::Simulation;
use crate::forge::StoreForge;
use crate::forge::load_releases;
use crate::forge::token_from_environment;
use crate::headers::Chain;
use crate::headers::Resolver;
use crate::headers::ResolverOptions;
use crate::oci::Credentials;
use crate::state::StateSpec;
use crate::state::Store;
use anyhow::Context;
use anyhow::Result;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Share of nodes the head holds.
pub const DEFAULT_HEAD_SHARE: f64 = 0.90;
/// Node coverage the batch plan aims for, in percent.
pub const DEFAULT_TARGET: f64 = 99.0;
/// A build unfinished this long after dispatch is timed out.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(15 * 60);
/// Pause between dispatches (GitHub allows about 80 content-creating requests a minute).
pub const DEFAULT_DISPATCH_INTERVAL: Duration = Duration::from_millis(750);
/// How long a claim lets its holder dispatch before another process takes it over (longer than
/// a dispatch with its retries takes).
pub const DEFAULT_CLAIM_LEASE: Duration = Duration::from_secs(60);
pub const DEFAULT_WORKFLOW: &str = "build-driver.yml";
pub const DEFAULT_BATCH_WORKFLOW: &str = "build-batch.yml";
pub const DEFAULT_REF: &str = "main";
/// Longest time one header source may take.
pub const DEFAULT_SOURCE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long header resolutions and repository listings stay cached in the state directory.
pub const DEFAULT_HEADER_CACHE_TTL: Duration = Duration::from_secs(24 * 3600);

/// The header resolver of every command and the dashboard: the chain from `sources` (or the
/// built-in one), `source_timeout` per source, resolutions and listings cached under
/// `STATE/headers` for `cache_ttl` (zero: no cache); defaults above.
pub(crate) fn header_resolver(
    sources: Option<&std::path::Path>,
    state_root: &std::path::Path,
    source_timeout: Option<Duration>,
    cache_ttl: Option<Duration>,
) -> Result<Resolver> {
    Ok(Resolver::new(
        Chain::load_or_builtin(sources)?,
        header_resolver_options(state_root, source_timeout, cache_ttl),
    )?)
}

/// [`header_resolver`]'s options: the defaults above where a flag left one out.
fn header_resolver_options(
    state_root: &std::path::Path,
    source_timeout: Option<Duration>,
    cache_ttl: Option<Duration>,
) -> ResolverOptions {
    let ttl = cache_ttl.unwrap_or(DEFAULT_HEADER_CACHE_TTL);
    ResolverOptions {
        source_timeout: source_timeout.unwrap_or(DEFAULT_SOURCE_TIMEOUT),
        cache: (!ttl.is_zero()).then(|| (state_root.join("headers"), ttl)),
        proposed: false,
    }
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
            store: StoreArgs::default(),
            shares: ShareArgs::default(),
            sources: crate::environment::path(crate::environment::KFLEET_HEADER_SOURCES),
            upcoming_lines: 10,
            kabi: false,
        }
    }
}

impl ShareArgs {
    /// Flags, then config, then the defaults (0.90 and 99%).
    pub fn resolve(&self, config: &Config) -> (f64, f64) {
        (
            head_share(self.head_share, config),
            self.target.or(config.target).unwrap_or(DEFAULT_TARGET),
        )
    }
}

/// The head's share: the flag, else the config, else the default.
fn head_share(flag: Option<f64>, config: &Config) -> f64 {
    flag.or(config.head_share).unwrap_or(DEFAULT_HEAD_SHARE)
}

impl IdentityArgs {
    pub(crate) fn identity(&self) -> Result<crate::identity::KernelIdentity> {
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

impl HeaderChainArgs {
    pub(crate) fn chain(&self) -> Result<Chain> {
        Ok(Chain::load_or_builtin(self.sources.as_deref())?)
    }

    /// `--state-dir`, else the config's, else the default.
    pub(crate) fn state_root(&self, config: &Config) -> PathBuf {
        self.state_dir
            .clone()
            .or_else(|| config.state_dir.clone())
            .unwrap_or_else(default_state_dir)
    }

    pub(crate) fn resolver(&self, config: &Config) -> Result<Resolver> {
        header_resolver(
            self.sources.as_deref(),
            &self.state_root(config),
            self.source_timeout,
            self.cache_ttl,
        )
    }

    /// [`Self::resolver`] whose upcoming kernels include the pockets before release.
    #[cfg(feature = "fleet")]
    pub(crate) fn resolver_with_proposed(&self, config: &Config) -> Result<Resolver> {
        let mut options = header_resolver_options(
            &self.state_root(config),
            self.source_timeout,
            self.cache_ttl,
        );
        options.proposed = true;
        Ok(Resolver::new(
            Chain::load_or_builtin(self.sources.as_deref())?,
            options,
        )?)
    }
}

impl BuildArgs {
    /// The defaults for a repository named outside the build flags (dashboard, ensure).
    pub(crate) fn for_repo(
        repo: Option<String>,
        api_url: Option<String>,
        state_dir: Option<PathBuf>,
        deadline: Option<Duration>,
    ) -> Self {
        Self {
            forge: ForgeArgs {
                repo,
                api_url,
                github_app_id: None,
                github_app_key: None,
                sandbox: None,
                runner: RunnerArgs::default(),
            },
            workflow: None,
            git_ref: None,
            state_dir,
            state_url: None,
            claim_lease: DEFAULT_CLAIM_LEASE,
            deadline,
            cancel_on_timeout: false,
            batch_workflow: DEFAULT_BATCH_WORKFLOW.into(),
            dispatch_interval: DEFAULT_DISPATCH_INTERVAL,
            sandbox_state: std::sync::OnceLock::new(),
        }
    }

    pub(crate) fn workflow(&self, config: &Config) -> String {
        self.workflow
            .clone()
            .or_else(|| config.workflow.clone())
            .unwrap_or_else(|| DEFAULT_WORKFLOW.into())
    }

    pub(crate) fn deadline(&self, config: &Config) -> Result<std::time::Duration> {
        if let Some(d) = self.deadline {
            return Ok(d);
        }
        match &config.deadline {
            // Checked when the config was read.
            Some(text) => humantime::parse_duration(text)
                .with_context(|| format!("deadline = \"{text}\": write it like 15m or 90s")),
            None => Ok(DEFAULT_DEADLINE),
        }
    }

    /// The state directory the flags or config name (the build state, the response cache).
    pub(crate) fn state_root(&self, config: &Config) -> PathBuf {
        self.state_dir
            .clone()
            .or_else(|| config.state_dir.clone())
            .unwrap_or_else(default_state_dir)
    }

    pub(crate) fn forge_client(&self, config: &Config) -> Result<Option<Arc<dyn Forge>>> {
        self.forge
            .client(config, &self.state_root(config).join("http-cache"))
    }

    pub(crate) fn client(&self, config: &Config) -> Result<Arc<dyn Forge>> {
        self.forge_client(config)?.ok_or_else(|| {
            anyhow::anyhow!("no repository: pass --repo OWNER/NAME (or set repo in kfleet.toml)")
        })
    }

    pub(crate) fn planner_config(
        &self,
        config: &Config,
        driver_version: String,
    ) -> Result<PlannerConfig> {
        Ok(PlannerConfig {
            workflow: self.workflow(config),
            git_ref: self
                .git_ref
                .clone()
                .or_else(|| config.git_ref.clone())
                .unwrap_or_else(|| DEFAULT_REF.into()),
            driver_version,
            deadline: self.deadline(config)?,
            cancel_on_timeout: self.cancel_on_timeout,
            batch_workflow: self.batch_workflow.clone(),
            dispatch_interval: self.dispatch_interval,
            claim_lease: self.claim_lease,
        })
    }

    /// Where the build state lives: `--state`, else `kfleet.db` in the state directory. A
    /// sandbox forge's builds live only as long as the sandbox that runs them: without `--state`
    /// they go to a temporary directory of this command's own, so no later command sees a build
    /// "running" in a sandbox that has ended, and none mixes into the real build state.
    fn state_spec(&self, config: &Config, sandbox: bool) -> Result<StateSpec> {
        let url = self.state_url.as_deref().unwrap_or_default();
        let dir = if sandbox && url.is_empty() {
            if self.sandbox_state.get().is_none() {
                let made = tempfile::Builder::new()
                    .prefix("kfleet-sandbox-state-")
                    .tempdir()
                    .context("cannot make a directory for the sandbox's build state")?;
                let _ = self.sandbox_state.set(made);
            }
            self.sandbox_state
                .get()
                .map(|d| d.path().to_path_buf())
                .context("the sandbox's build state directory")?
        } else {
            self.state_root(config)
        };
        StateSpec::parse(url, &dir).map_err(|e| anyhow::anyhow!(e))
    }

    /// Opens the build state store.
    pub(crate) async fn store(&self, config: &Config) -> Result<Store> {
        self.store_for(config, self.forge.sandbox.is_some()).await
    }

    /// Opens the build state store; `sandbox`: the forge is a sandbox (the dashboard starts the
    /// built-in one without `--sandbox`).
    pub(crate) async fn store_for(&self, config: &Config, sandbox: bool) -> Result<Store> {
        let spec = self.state_spec(config, sandbox)?;
        Store::open(&spec)
            .await
            .context("cannot open the build state store")
    }
}

impl ForgeArgs {
    /// The forge named by the flags or config: the sandbox, or GitHub for a repository, keeping
    /// its listing validators in `http_cache`.
    pub(crate) fn client(
        &self,
        config: &Config,
        http_cache: &std::path::Path,
    ) -> Result<Option<Arc<dyn Forge>>> {
        if let Some(dir) = &self.sandbox {
            let releases = load_releases(dir)?;
            let forge = runtime()?.block_on(SandboxForge::start(
                releases,
                SandboxOptions {
                    // Other kfleet commands can read this sandbox with the token they are given.
                    token: crate::environment::var(crate::environment::KFLEET_SANDBOX_TOKEN),
                    assets_dir: Some(dir.join("assets")),
                    simulation: Simulation {
                        local: self.runner.local()?,
                        ..Simulation::default()
                    },
                    ..SandboxOptions::default()
                },
                RetryPolicy::default(),
            ))?;
            tracing::info!("{}", Forge::label(&forge));
            return Ok(Some(Arc::new(forge)));
        }
        let Some(repo) = self.repo.clone().or_else(|| config.repo.clone()) else {
            return Ok(None);
        };
        let client = match (self.github_app_id, &self.github_app_key) {
            (Some(app_id), Some(key_file)) => {
                github_app_client(&repo, self.api_url.as_deref(), config, app_id, key_file)?
            }
            _ => github_client(&repo, self.api_url.as_deref(), config)?,
        };
        Ok(Some(Arc::new(
            client.with_disk_cache(http_cache.to_path_buf()),
        )))
    }
}

impl RunnerArgs {
    /// The local runner, when asked for: jobs run in a work directory of this process, by default
    /// a new one with a random name and mode 0700 under the system's temp directory (kept
    /// afterwards for their logs), never one another user could have made first.
    pub(crate) fn local(&self) -> Result<Option<crate::localrun::RunnerConfig>> {
        if self.runner != RunnerKind::Local {
            return Ok(None);
        }
        let work = match &self.runner_dir {
            Some(dir) => dir.clone(),
            None => tempfile::Builder::new()
                .prefix("kfleet-runner-")
                .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
                .tempdir()
                .context("cannot create the local runner's work directory")?
                .keep(),
        };
        let runner = crate::localrun::RunnerConfig::for_sandbox(&self.checkout, &work)?;
        let mode = match &runner.host_only {
            Some((d, v)) => format!("on this host, {d} {v} kernels only (no docker or podman)"),
            None => "in containers".to_string(),
        };
        tracing::info!(
            "local runner: builds from {} run {mode}; work and logs in {}",
            runner.checkout.display(),
            work.display()
        );
        Ok(Some(runner))
    }
}

impl ForgeRepoArgs {
    /// The GitHub client for the repository of the flags, the config, or the job
    /// (`GITHUB_REPOSITORY`, `GITHUB_API_URL`).
    pub(crate) fn client(&self, config: &Config) -> Result<GithubClient> {
        use crate::environment::{GITHUB_API_URL, GITHUB_REPOSITORY, var as job};
        let repo = self
            .repo
            .clone()
            .or_else(|| config.repo.clone())
            .or_else(|| job(GITHUB_REPOSITORY))
            .context("no repository: pass --repo OWNER/NAME (a job has GITHUB_REPOSITORY)")?;
        let api = self.api_url.clone().or_else(|| job(GITHUB_API_URL));
        github_client(&repo, api.as_deref(), config)
    }
}

/// A GitHub client for `repo` at `api` (or the config's, or GitHub's) that authenticates as the
/// GitHub App `app_id` with the private key in `key_file`.
fn github_app_client(
    repo: &str,
    api: Option<&str>,
    config: &Config,
    app_id: u64,
    key_file: &std::path::Path,
) -> Result<GithubClient> {
    let repo: RepoRef = repo.parse()?;
    let api = api
        .map(str::to_string)
        .or_else(|| config.api_url.clone())
        .unwrap_or_else(|| GITHUB_API.to_string());
    let key = std::fs::read(key_file)
        .with_context(|| format!("cannot read --github-app-key {}", key_file.display()))?;
    let notify = Box::new(|msg: &str| tracing::info!("waiting: {msg}"));
    Ok(runtime()?.block_on(GithubClient::new_app(
        &api,
        repo,
        app_id,
        &key,
        RetryPolicy::default(),
        Some(notify),
    ))?)
}

/// A GitHub client for `repo` at `api` (or the config's, or GitHub's), with the token of the
/// environment.
fn github_client(repo: &str, api: Option<&str>, config: &Config) -> Result<GithubClient> {
    let repo: RepoRef = repo.parse()?;
    let api = api
        .map(str::to_string)
        .or_else(|| config.api_url.clone())
        .unwrap_or_else(|| GITHUB_API.to_string());
    let token = token_from_environment().ok_or(crate::forge::ForgeError::NoToken)?;
    let notify = Box::new(|msg: &str| tracing::info!("waiting: {msg}"));
    Ok(GithubClient::new(
        &api,
        repo,
        token,
        RetryPolicy::default(),
        Some(notify),
    )?)
}

impl StoreArgs {
    /// The OCI store the flags or config name, if any, opened with the registry login of the
    /// environment.
    pub(crate) fn open(
        &self,
        config: &Config,
        template: &AssetTemplate,
    ) -> Result<Option<Arc<OciStore>>> {
        let Some(url) = self.store.clone().or_else(|| config.store.clone()) else {
            return Ok(None);
        };
        let store = OciStore::open(&url, template.clone(), Credentials::from_environment())?;
        tracing::info!("artifacts in {}", store.label());
        Ok(Some(Arc::new(store)))
    }

    /// `forge` with its releases replaced by the OCI store, when one is named.
    pub(crate) fn wrap(
        &self,
        forge: Arc<dyn Forge>,
        config: &Config,
        template: &AssetTemplate,
    ) -> Result<Arc<dyn Forge>> {
        Ok(match self.open(config, template)? {
            Some(store) => Arc::new(StoreForge::new(forge, store)),
            None => forge,
        })
    }
}

impl NamingArgs {
    pub(crate) fn template(&self, config: &Config) -> Result<AssetTemplate> {
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

/// What every command that computes coverage resolves the same way, once: the head and target
/// shares, the asset template, the state directory and the release asked for.
#[cfg(feature = "fleet")]
pub struct CoverageSettings {
    pub options: crate::coverage::CoverageOptions,
    pub template: AssetTemplate,
    pub state_root: PathBuf,
    /// The release to report on; the newest published when `None`.
    pub driver_version: Option<String>,
}

#[cfg(feature = "fleet")]
impl CoverageSettings {
    pub fn resolve(
        shares: &ShareArgs,
        naming: &NamingArgs,
        build: &BuildArgs,
        driver_version: Option<&String>,
        config: &Config,
    ) -> Result<Self> {
        let (head_share, target) = shares.resolve(config);
        Ok(Self {
            options: crate::coverage::CoverageOptions {
                head_share,
                target: target / 100.0,
            },
            template: naming.template(config)?,
            state_root: build.state_root(config),
            driver_version: driver_version.cloned(),
        })
    }

    /// Where kernels' symbol versions and artifacts' records are kept for `--kabi`.
    pub fn kabi_cache(&self) -> PathBuf {
        self.state_root.join("kabi")
    }
}

/// `kfleet report`, resolved: what to read, what to compute, how to print it.
#[cfg(feature = "fleet")]
pub struct ReportSettings {
    pub coverage: CoverageSettings,
    pub inventories: Vec<PathBuf>,
    pub strict: bool,
    pub format: crate::report::Format,
    pub view: crate::report::View,
    pub output: Option<PathBuf>,
    pub fail_under: Option<f64>,
    pub unused: bool,
    /// `--upcoming`: how many of the fleet's most-run lines.
    pub upcoming_lines: Option<usize>,
    pub kabi: bool,
    /// The header chain, built once when `--kabi` or `--upcoming` reads it.
    pub resolver: Option<Resolver>,
}

#[cfg(feature = "fleet")]
impl ReportSettings {
    pub fn resolve(args: &crate::cli::ReportArgs, config: &Config) -> Result<Self> {
        let coverage = CoverageSettings::resolve(
            &args.shares,
            &args.naming,
            &args.build,
            args.driver_version.as_ref(),
            config,
        )?;
        let resolver = (args.kabi || args.upcoming)
            .then(|| header_resolver(args.sources.as_deref(), &coverage.state_root, None, None))
            .transpose()?;
        Ok(Self {
            coverage,
            inventories: args.inventory.clone(),
            strict: args.strict,
            format: args.format,
            view: crate::report::View {
                statuses: args.status.clone(),
                limit: args.limit,
                verbose: args.verbose,
            },
            output: args.output.clone(),
            fail_under: args.fail_under,
            unused: args.unused,
            upcoming_lines: args.upcoming.then_some(args.upcoming_lines),
            kabi: args.kabi,
            resolver,
        })
    }
}

/// `kfleet tui`, resolved: coverage as `report` computes it, and what the dashboard follows.
#[cfg(feature = "fleet")]
pub struct TuiSettings {
    pub coverage: CoverageSettings,
    /// Builds unfinished this long after dispatch are timed out.
    pub deadline: Duration,
    /// The workflow whose runs the Builds view lists.
    pub workflow: String,
    /// The header chain the Headers and Upcoming views read: the one `kfleet headers` resolves.
    pub resolver: Resolver,
    pub upcoming_lines: usize,
    pub kabi: bool,
    pub keys: crate::config::KeyMap,
}

#[cfg(feature = "fleet")]
impl TuiSettings {
    pub fn resolve(args: &TuiArgs, config: &Config) -> Result<Self> {
        let coverage = CoverageSettings::resolve(
            &args.shares,
            &args.naming,
            &args.build,
            args.driver_version.as_ref(),
            config,
        )?;
        let resolver = header_resolver(args.sources.as_deref(), &coverage.state_root, None, None)?;
        Ok(Self {
            deadline: args.build.deadline(config)?,
            workflow: args.build.workflow(config),
            resolver,
            upcoming_lines: args.upcoming_lines,
            kabi: args.kabi,
            keys: config.keys.clone().unwrap_or_default(),
            coverage,
        })
    }
}

/// `kfleet dispatch`, resolved.
pub struct DispatchSettings {
    pub template: AssetTemplate,
    /// The head's share for `--missing` and `--long-tail`.
    pub head_share: f64,
    /// Where `--kabi` keeps kernels' symbol versions and artifacts' records.
    pub kabi_cache: PathBuf,
    /// The header chain, built once when `--kabi` or `--upcoming` reads it.
    pub resolver: Option<Resolver>,
}

impl DispatchSettings {
    pub fn resolve(args: &crate::cli::DispatchArgs, config: &Config) -> Result<Self> {
        let state_root = args.build.state_root(config);
        Ok(Self {
            template: args.naming.template(config)?,
            head_share: head_share(args.head_share, config),
            resolver: (args.kabi || args.upcoming)
                .then(|| header_resolver(args.sources.as_deref(), &state_root, None, None))
                .transpose()?,
            kabi_cache: state_root.join("kabi"),
        })
    }
}

/// `kfleet preflight`, resolved.
pub struct PreflightSettings {
    pub template: AssetTemplate,
    /// The header chain the targets are read from (`-i` without targets, `--kernel-line`).
    pub resolver: Resolver,
}

impl PreflightSettings {
    pub fn resolve(args: &crate::cli::PreflightArgs, config: &Config) -> Result<Self> {
        Ok(Self {
            template: args.naming.template(config)?,
            resolver: header_resolver(
                args.sources.as_deref(),
                &args.build.state_root(config),
                None,
                None,
            )?,
        })
    }
}
