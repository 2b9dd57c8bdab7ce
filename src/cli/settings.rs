//! Settings resolved from flags, then `kfleet.toml`, then the defaults (which live here once).

use crate::artifacts::AssetTemplate;
use crate::artifacts::DEFAULT_ASSET_TEMPLATE;
use crate::builds::PlannerConfig;
use crate::cli::BuildArgs;
use crate::cli::ForgeArgs;
use crate::cli::HeaderChainArgs;
use crate::cli::IdentityArgs;
use crate::cli::NamingArgs;
use crate::cli::RunnerArgs;
use crate::cli::ShareArgs;
#[cfg(feature = "fleet")]
use crate::cli::TuiArgs;
use crate::config::Config;
use crate::config::DEFAULT_MODULE;
use crate::config::default_state_dir;
use crate::headers::Chain;
use crate::headers::Credentials;
use crate::headers::Resolver;
use crate::headers::ResolverOptions;
use crate::headers::credentials::{RHEL_ENTITLEMENT, SUSE_REGISTRATION, UBUNTU_PRO};
use anyhow::Context;
use anyhow::Result;
use std::path::PathBuf;
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
        header_resolver_options(state_root, source_timeout, cache_ttl)?,
    )?)
}

/// The header chain's credentials from the environment: Ubuntu Pro's login from
/// `KFLEET_UBUNTU_PRO_TOKEN`, else from the file `KFLEET_UBUNTU_PRO_TOKEN_FILE` names. Read once
/// per process, so the identity check's grant and every resolver see the same login.
pub(crate) fn header_credentials() -> Result<Credentials> {
    static READ: std::sync::OnceLock<Credentials> = std::sync::OnceLock::new();
    if let Some(credentials) = READ.get() {
        return Ok(credentials.clone());
    }
    let credentials = read_header_credentials()?;
    Ok(READ.get_or_init(|| credentials).clone())
}

fn read_header_credentials() -> Result<Credentials> {
    use crate::environment::{
        KFLEET_SUSE_REGISTRATION, KFLEET_UBUNTU_PRO_TOKEN, KFLEET_UBUNTU_PRO_TOKEN_FILE,
    };
    let mut credentials = Credentials::default();
    let text = crate::environment::secret(KFLEET_UBUNTU_PRO_TOKEN, KFLEET_UBUNTU_PRO_TOKEN_FILE)
        .map_err(anyhow::Error::msg)?;
    if let Some(text) = text {
        credentials.add(UBUNTU_PRO, &text).with_context(|| {
            format!("{KFLEET_UBUNTU_PRO_TOKEN} or {KFLEET_UBUNTU_PRO_TOKEN_FILE}")
        })?;
    }
    read_rhel_entitlement(&mut credentials)?;
    if let Some(file) = crate::environment::path(KFLEET_SUSE_REGISTRATION) {
        let text = crate::headers::scc::Registration::read_text(&file)
            .map_err(anyhow::Error::msg)
            .with_context(|| {
                format!(
                    "{KFLEET_SUSE_REGISTRATION}: kfleet suse register --out DIR writes DIR/registration.json"
                )
            })?;
        credentials
            .add_registration(SUSE_REGISTRATION, &text)
            .with_context(|| format!("{KFLEET_SUSE_REGISTRATION} {}", file.display()))?;
    }
    Ok(credentials)
}

/// The credentials the build workflow holds (`KFLEET_BUILD_CREDENTIALS`, comma-separated, else
/// the config's `build_credentials`): the kernels only they serve are buildable, though this
/// process cannot read their headers. Each must be a credential a header source names.
pub(crate) fn build_credentials(config: &crate::config::Config) -> Result<Vec<String>> {
    use crate::environment::KFLEET_BUILD_CREDENTIALS;
    use crate::headers::credentials::KNOWN;
    let (names, origin) = match crate::environment::var(KFLEET_BUILD_CREDENTIALS) {
        Some(list) => (
            list.split(',')
                .map(|n| n.trim().to_string())
                .filter(|n| !n.is_empty())
                .collect(),
            KFLEET_BUILD_CREDENTIALS,
        ),
        None => (
            config.build_credentials.clone().unwrap_or_default(),
            "build_credentials in the config",
        ),
    };
    for name in &names {
        if !KNOWN.contains(&name.as_str()) {
            anyhow::bail!(
                "{origin}: unknown credential '{}'; kfleet knows {}",
                crate::text::clean(name),
                KNOWN.join(", ")
            );
        }
    }
    Ok(names)
}

/// Red Hat's entitlement certificate, key and CDN CA from the files the environment names: the
/// key defaults to the certificate's file (one PEM holding both).
fn read_rhel_entitlement(credentials: &mut Credentials) -> Result<()> {
    use crate::environment::{
        KFLEET_RHEL_CDN_CA, KFLEET_RHEL_ENTITLEMENT_CERT, KFLEET_RHEL_ENTITLEMENT_KEY, path,
    };
    let (cert, key, ca) = (
        path(KFLEET_RHEL_ENTITLEMENT_CERT),
        path(KFLEET_RHEL_ENTITLEMENT_KEY),
        path(KFLEET_RHEL_CDN_CA),
    );
    let Some(cert) = cert else {
        if key.is_some() {
            anyhow::bail!(
                "{KFLEET_RHEL_ENTITLEMENT_KEY} is set without {KFLEET_RHEL_ENTITLEMENT_CERT}"
            );
        }
        return Ok(());
    };
    let read = |var: &str, file: &std::path::Path| {
        std::fs::read(file).with_context(|| format!("cannot read {var} {}", file.display()))
    };
    let certificate = read(KFLEET_RHEL_ENTITLEMENT_CERT, &cert)?;
    let key = match &key {
        Some(file) => read(KFLEET_RHEL_ENTITLEMENT_KEY, file)?,
        None => certificate.clone(),
    };
    let ca = ca.map(|file| read(KFLEET_RHEL_CDN_CA, &file)).transpose()?;
    credentials
        .add_certificate(RHEL_ENTITLEMENT, &certificate, &key, ca.as_deref())
        .with_context(|| {
            format!(
                "{KFLEET_RHEL_ENTITLEMENT_CERT}, {KFLEET_RHEL_ENTITLEMENT_KEY} or {KFLEET_RHEL_CDN_CA}"
            )
        })?;
    Ok(())
}

/// [`header_resolver`]'s options: the defaults above where a flag left one out.
fn header_resolver_options(
    state_root: &std::path::Path,
    source_timeout: Option<Duration>,
    cache_ttl: Option<Duration>,
) -> Result<ResolverOptions> {
    let ttl = cache_ttl.unwrap_or(DEFAULT_HEADER_CACHE_TTL);
    Ok(ResolverOptions {
        source_timeout: source_timeout.unwrap_or(DEFAULT_SOURCE_TIMEOUT),
        cache: (!ttl.is_zero()).then(|| (state_root.join("headers"), ttl)),
        proposed: false,
        credentials: header_credentials()?,
        verify_at: None,
    })
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
            store: crate::cli::StoreArgs::default(),
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
        )?;
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

/// `kfleet serve`, resolved: who may ask, how the service paces and keeps builds, where it
/// listens. The forge, the build state and the store are opened from the flags afterwards.
pub struct ServeSettings {
    pub template: AssetTemplate,
    pub planner: PlannerConfig,
    pub options: crate::service::ServiceOptions,
    pub listen: std::net::SocketAddr,
}

impl ServeSettings {
    pub fn resolve(args: &crate::cli::ServeArgs, config: &Config) -> Result<Self> {
        Ok(Self {
            template: args.naming.template(config)?,
            planner: args.build.planner_config(config, String::new())?,
            options: crate::service::ServiceOptions {
                client_tokens: client_tokens(args.client_tokens.as_ref())?,
                listing_ttl: Duration::from_secs(args.listing_ttl),
                deadline: args.build.deadline(config)?,
                rate_per_client: args.client_rate,
                metrics_public: args.metrics_public,
                // Claims whose holder stopped are found within half a lease.
                sweep_interval: (args.build.claim_lease / 2).min(Duration::from_secs(10)),
                retention: args.retention,
                retry_failed_after: args.retry_failed_after,
                builds_per_hour: args.client_builds_per_hour,
                webhook_secret: webhook_secret(args.webhook_secret.as_ref())?,
                tls: args
                    .tls_cert
                    .clone()
                    .zip(args.tls_key.clone())
                    .map(|(cert, key)| crate::service::tls::TlsFiles { cert, key }),
                ..crate::service::ServiceOptions::default()
            },
            listen: args.listen,
        })
    }
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
    if let Some(env) = crate::environment::var(crate::environment::KFLEET_CLIENT_TOKENS) {
        tokens.extend(
            env.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string),
        );
    }
    if tokens.is_empty() {
        anyhow::bail!(
            "no client tokens: pass --client-tokens FILE (one token per line) or set KFLEET_CLIENT_TOKENS"
        );
    }
    if let Some(short) = tokens.iter().find(|t| t.len() < 16) {
        anyhow::bail!(
            "a client token of {} characters is too short to be a secret; use at least 16",
            short.len()
        );
    }
    Ok(tokens)
}

/// The webhook secret: `--webhook-secret FILE`, else `KFLEET_WEBHOOK_SECRET`; none turns webhooks
/// off.
fn webhook_secret(file: Option<&PathBuf>) -> Result<Option<crate::service::Secret>> {
    let secret = match file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the webhook secret {}", path.display()))?
            .trim()
            .to_string(),
        None => match crate::environment::var(crate::environment::KFLEET_WEBHOOK_SECRET) {
            Some(s) => s.trim().to_string(),
            None => return Ok(None),
        },
    };
    if secret.len() < 16 {
        anyhow::bail!(
            "the webhook secret has {} characters; use at least 16 (openssl rand -hex 32), the same as in the repository's webhook settings",
            secret.len()
        );
    }
    Ok(Some(crate::service::Secret::new(secret)))
}

/// `kfleet ensure`, resolved: the service token, the naming template, and what every identity's
/// `ensure` shares (`asset_name` and `store` are filled in per identity and per store).
pub struct EnsureSettings {
    /// `--token-file`, else `KFLEET_SERVICE_TOKEN`; empty without either (only `--repo` may).
    pub token: String,
    pub template: AssetTemplate,
    pub options: crate::node::ensure::EnsureOptions,
}

impl EnsureSettings {
    pub fn resolve(args: &crate::cli::EnsureArgs, config: &Config) -> Result<Self> {
        let token = match &args.token_file {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the service token {}", path.display()))?
                .trim()
                .to_string(),
            None => crate::environment::var(crate::environment::KFLEET_SERVICE_TOKEN)
                .unwrap_or_default(),
        };
        if token.is_empty() && args.service.is_some() {
            anyhow::bail!("no service token: pass --token-file FILE or set KFLEET_SERVICE_TOKEN");
        }
        crate::identity::check_driver_version(&args.driver_version)
            .map_err(|e| anyhow::anyhow!("--driver-version: {e}"))?;
        Ok(Self {
            template: args.naming.template(config)?,
            options: crate::node::ensure::EnsureOptions {
                asset_name: String::new(),
                max_download: args.max_download.saturating_mul(1 << 20),
                insecure_http: args.insecure_http,
                ca_file: args.ca_file.clone(),
                service: args.service.clone().unwrap_or_default(),
                token: token.clone(),
                driver_version: args.driver_version.clone(),
                out: args.out.clone(),
                deadline: args.deadline,
                poll_min: ENSURE_POLL_MIN,
                poll_max: ENSURE_POLL_MAX,
                store: None,
                provenance: args.provenance.requirement(args.repo.as_deref())?,
            },
            token,
        })
    }
}

/// `ensure` asks again after this at first, backing off to [`ENSURE_POLL_MAX`].
pub const ENSURE_POLL_MIN: Duration = Duration::from_secs(1);
pub const ENSURE_POLL_MAX: Duration = Duration::from_secs(15);

/// `kfleet runs`, resolved.
pub struct RunsSettings {
    pub workflow: String,
    pub deadline: Duration,
}

impl RunsSettings {
    pub fn resolve(args: &crate::cli::RunsArgs, config: &Config) -> Result<Self> {
        Ok(Self {
            workflow: args.build.workflow(config),
            deadline: args.build.deadline(config)?,
        })
    }
}

/// `kfleet upcoming`, resolved.
#[cfg(feature = "fleet")]
pub struct UpcomingSettings {
    pub template: AssetTemplate,
    /// The header chain the lines are read from (with the pockets before release for
    /// `--proposed`).
    pub resolver: Resolver,
    /// A repository is named (flags or config): the release is read from it.
    pub repo_named: bool,
    /// Where `--kabi` keeps kernels' symbol versions and artifacts' records.
    pub kabi_cache: PathBuf,
}

#[cfg(feature = "fleet")]
impl UpcomingSettings {
    pub fn resolve(args: &crate::cli::UpcomingArgs, config: &Config) -> Result<Self> {
        let repo_named = args.forge.repo.is_some() || config.repo.is_some();
        let store_named = args.store.store.is_some() || config.store.is_some();
        if args.kabi && args.releases.is_none() && !repo_named && !store_named {
            anyhow::bail!(
                "--kabi checks upcoming kernels against a release's artifacts: name one with --releases, --repo or --store"
            );
        }
        Ok(Self {
            template: args.naming.template(config)?,
            resolver: if args.proposed {
                args.chain.resolver_with_proposed(config)?
            } else {
                args.chain.resolver(config)?
            },
            repo_named,
            kabi_cache: args.chain.state_root(config).join("kabi"),
        })
    }
}
