//! The command line as clap definitions: every command's flags with typed value parsers (shares,
//! percentages, rates and durations are checked by clap, not later).

#[cfg(feature = "fleet")]
use crate::coverage::CoverageStatus;
use crate::environment;
#[cfg(feature = "fleet")]
use crate::report::Format;
use crate::report::ListFormat;
use anyhow::Result;
use clap::Args;
use clap::Subcommand;
use std::path::PathBuf;
use std::time::Duration;

#[cfg(feature = "fleet")]
#[derive(Debug, Args)]
pub struct TuiArgs {
    /// Fleet inventory (repeatable): a file, or `kube:`/`kube:CONTEXT` for a live cluster the
    /// dashboard watches; default: the built-in sample fleet.
    #[arg(long, short = 'i', value_name = "FILE")]
    pub inventory: Vec<PathBuf>,
    /// Release listing file, served by an in-process sandbox forge.
    #[arg(long, short = 'r', value_name = "FILE", conflicts_with_all = ["repo", "sandbox", "store"])]
    pub releases: Option<PathBuf>,
    #[command(flatten)]
    pub build: BuildArgs,
    /// Release to report on (default: newest published).
    #[arg(long, value_name = "TAG")]
    pub driver_version: Option<String>,
    #[command(flatten)]
    pub naming: NamingArgs,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub shares: ShareArgs,
    /// Header sources file replacing the built-in chain (assets/header-sources.toml).
    #[arg(long, value_name = "FILE", env = environment::KFLEET_HEADER_SOURCES)]
    pub sources: Option<PathBuf>,
    /// The Upcoming view reads this many of the fleet's most-run kernel lines.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub upcoming_lines: usize,
    /// Show kernels another artifact of their line loads into as `compatible` (as `report
    /// --kabi`).
    #[arg(long)]
    pub kabi: bool,
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
    /// Settled builds are deleted from the build state this long after they settled.
    #[arg(long, value_name = "DURATION", default_value = "30d", value_parser = duration)]
    pub retention: Duration,
    /// A build whose run failed is not dispatched again for the same kernel and driver version
    /// for this long; nodes asking meanwhile are answered `failed` with the run and the time.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = duration)]
    pub retry_failed_after: Duration,
    /// New builds each client token may start in an hour (429 with Retry-After beyond).
    #[arg(long, value_name = "N", default_value_t = 200)]
    pub client_builds_per_hour: u32,
    /// File holding the secret GitHub signs webhook deliveries with (env KFLEET_WEBHOOK_SECRET):
    /// POST /webhooks/github then settles builds from workflow_run events as they happen.
    #[arg(long, value_name = "FILE")]
    pub webhook_secret: Option<PathBuf>,
    /// Serve HTTPS with this certificate chain (PEM), read again when it changes.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    #[command(flatten)]
    pub build: BuildArgs,
    #[command(flatten)]
    pub naming: NamingArgs,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct EnsureArgs {
    /// Base URL of the build service (env KFLEET_SERVICE).
    #[arg(
        long,
        env = environment::KFLEET_SERVICE,
        value_name = "URL",
        required_unless_present = "repo"
    )]
    pub service: Option<String>,
    /// Without a service: ask GitHub directly with the same planner (needs GITHUB_TOKEN).
    #[arg(long, value_name = "OWNER/NAME", conflicts_with = "service")]
    pub repo: Option<String>,
    #[arg(long, value_name = "URL", requires = "repo")]
    pub api_url: Option<String>,
    /// State directory for --repo (the build state, kfleet.db) [default $XDG_STATE_HOME/kfleet].
    #[arg(long, env = environment::KFLEET_STATE_DIR, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// File holding the service's bearer token (else env KFLEET_SERVICE_TOKEN).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Driver release to fetch.
    #[arg(long, env = environment::KFLEET_DRIVER_VERSION)]
    pub driver_version: String,
    /// Directory for the verified artifact.
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
    /// Longest wait for a build.
    #[arg(long, default_value = "15m", value_parser = duration)]
    pub deadline: Duration,
    /// Allow plain http:// to a service that is not on loopback (the token travels in the clear).
    #[arg(long)]
    pub insecure_http: bool,
    /// Also trust this CA certificate (PEM) for the service and downloads: a service whose
    /// certificate a private CA signed.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Largest artifact accepted, in MiB.
    #[arg(long, default_value_t = 512, value_name = "MIB")]
    pub max_download: u64,
    #[command(flatten)]
    pub naming: NamingArgs,
    #[command(flatten)]
    pub store: StoreArgs,
    /// This identity instead of the machine's own (/etc/os-release and the running kernel).
    #[arg(long, requires_all = ["distro_version", "architecture", "kernel_version"])]
    pub distribution: Option<String>,
    #[arg(long)]
    pub distro_version: Option<String>,
    #[arg(long)]
    pub architecture: Option<String>,
    /// This kernel of the machine's own distribution (a kernel being installed, not yet running).
    #[arg(long)]
    pub kernel_version: Option<String>,
    /// Every kernel installed on the machine (under --host-root): each `lib/modules/VERSION` with
    /// its kernel image; those not running are installed with --no-load. Exit 0 when every one has
    /// its driver, else the first other code.
    #[arg(long, conflicts_with_all = ["distribution", "kernel_version"])]
    pub all_installed: bool,
    /// After the download: install the module and load it (see `kfleet install`).
    #[arg(long)]
    pub install: bool,
    /// Then mark this Kubernetes node: the label kfleet.io/driver-ready=VERSION (or a word
    /// saying why not), the annotation kfleet.io/driver-status, and, once the driver is loaded,
    /// no kfleet.io/driver-missing taint. Uses the pod's service account; the node is NODE_NAME
    /// (the downward API's spec.nodeName) or --node-name.
    #[arg(long, conflicts_with = "all_installed")]
    pub mark_node: bool,
    #[arg(long, value_name = "NAME", requires = "mark_node")]
    pub node_name: Option<String>,
    /// The API server [default: the pod's, from KUBERNETES_SERVICE_HOST and _PORT].
    #[arg(long, value_name = "URL", requires = "mark_node")]
    pub kube_api: Option<String>,
    /// [default: the service account's token]
    #[arg(long, value_name = "FILE", requires = "mark_node")]
    pub kube_token_file: Option<PathBuf>,
    /// [default: the service account's ca.crt]
    #[arg(long, value_name = "FILE", requires = "mark_node")]
    pub kube_ca_file: Option<PathBuf>,
    #[command(flatten)]
    pub node: NodeArgs,
    #[command(flatten)]
    pub provenance: ProvenanceArgs,
}

/// The signed provenance a node requires before it keeps or installs an artifact.
#[derive(Clone, Debug, Args)]
pub struct ProvenanceArgs {
    /// Refuse an artifact without a Sigstore bundle (NAME.sigstore.json, made by the build job's
    /// actions/attest-build-provenance) that verifies: signed by the repository's build
    /// workflow, dated by a transparency log or timestamp authority, naming this artifact's
    /// sha256. Checked before anything is written.
    #[arg(long)]
    pub require_provenance: bool,
    /// The repository whose workflow must have signed [default: --repo].
    #[arg(long, value_name = "OWNER/NAME", requires = "require_provenance")]
    pub provenance_repo: Option<String>,
    /// The ref that workflow must have run from; `any` takes every ref.
    #[arg(
        long,
        value_name = "REF",
        default_value = "refs/heads/main",
        requires = "require_provenance"
    )]
    pub provenance_ref: String,
    /// The workflow file that must have signed.
    #[arg(
        long,
        value_name = "PATH",
        default_value = crate::provenance::BUILD_WORKFLOW,
        requires = "require_provenance"
    )]
    pub provenance_workflow: String,
    /// Trust this Sigstore trust root (trusted_root.json, or the lines `gh attestation
    /// trusted-root` prints) instead of the built-in ones: Sigstore's public instance (public
    /// repositories) and GitHub's (private and internal repositories).
    #[arg(long, value_name = "FILE", requires = "require_provenance")]
    pub trust_root: Option<PathBuf>,
}

impl ProvenanceArgs {
    /// What the flags require; `None` without `--require-provenance`. `repo` is the
    /// repository the command already names, if any.
    pub fn requirement(
        &self,
        repo: Option<&str>,
    ) -> Result<Option<std::sync::Arc<crate::provenance::Requirement>>> {
        if !self.require_provenance {
            return Ok(None);
        }
        let Some(repository) = self.provenance_repo.as_deref().or(repo) else {
            anyhow::bail!(
                "--require-provenance needs the repository whose build workflow signs: pass --provenance-repo OWNER/NAME"
            );
        };
        repository
            .parse::<crate::forge::RepoRef>()
            .map_err(|e| anyhow::anyhow!("--provenance-repo: {e}"))?;
        let roots = match &self.trust_root {
            Some(path) => crate::provenance::TrustRoots::from_file(path)
                .map_err(|e| anyhow::anyhow!("--trust-root: {e}"))?,
            None => crate::provenance::TrustRoots::builtin(),
        };
        let git_ref = (self.provenance_ref != "any").then_some(self.provenance_ref.as_str());
        let policy = crate::provenance::Policy {
            workflow: self.provenance_workflow.clone(),
            ..crate::provenance::Policy::github(repository, git_ref)
        };
        Ok(Some(std::sync::Arc::new(crate::provenance::Requirement {
            roots,
            policy,
        })))
    }
}

/// Where and how `install` (and `ensure --install`) puts a module on the node.
#[derive(Clone, Debug, Args)]
pub struct NodeArgs {
    /// The host's root file system, mounted in this container (an init container or DaemonSet):
    /// the identity comes from its os-release and the module is installed under it.
    #[arg(long, value_name = "DIR", conflicts_with = "root")]
    pub host_root: Option<PathBuf>,
    /// Install under this root instead of / (preparing an image); nothing is loaded.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// The directory under /lib/modules/KERNEL that takes the module [default: updates on Debian
    /// and Ubuntu, whose depmod ranks it above the kernel's own modules; extra elsewhere].
    #[arg(long, value_enum)]
    pub module_dir: Option<ModuleDir>,
    /// Install and run depmod, but do not load the module.
    #[arg(long)]
    pub no_load: bool,
    /// Unload a different loaded version of the module and load this one.
    #[arg(long)]
    pub replace: bool,
    /// Refuse an unsigned module even where the kernel does not require signatures.
    #[arg(long)]
    pub require_signed: bool,
    /// Where signatures are required, do not check the module's signer against the keys the
    /// machine trusts (UEFI db and MokListRT under the host's /sys, /proc/keys).
    #[arg(long)]
    pub no_signer_check: bool,
    /// Accept a module built for another release of this kernel when the kernel exports every
    /// symbol it imports with the same CRC (modversions; checked against the kernel's
    /// Module.symvers or /boot/symvers), into weak-updates/ as EL's weak-modules does.
    #[arg(long)]
    pub kabi: bool,
    /// The depmod to run.
    #[arg(
        long,
        env = environment::KFLEET_DEPMOD,
        default_value = "depmod",
        value_name = "PATH"
    )]
    pub depmod: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ModuleDir {
    Extra,
    Updates,
}

/// `kfleet install`: a package file already on the node.
#[derive(Debug, Args)]
pub struct InstallArgs {
    /// The driver package (`.tar.xz` with MANIFEST and .ko files).
    pub package: PathBuf,
    /// The kernel to install for [default: the running kernel].
    #[arg(long)]
    pub kernel_version: Option<String>,
    /// The package's Sigstore bundle, for --require-provenance [default: PACKAGE.sigstore.json].
    #[arg(long, value_name = "FILE", requires = "require_provenance")]
    pub bundle: Option<PathBuf>,
    #[command(flatten)]
    pub node: NodeArgs,
    #[command(flatten)]
    pub provenance: ProvenanceArgs,
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

/// The build job's calls on the driver's release, through kfleet's GitHub client (so the job runs
/// unchanged against a sandbox).
#[derive(Debug, Subcommand)]
pub enum ReleaseCommand {
    /// Print `present` or `absent` for asset NAME of release TAG (a missing release is an error).
    Asset {
        /// Release tag (the driver version).
        #[arg(long, value_name = "TAG")]
        tag: String,
        /// Asset name.
        name: String,
        #[command(flatten)]
        forge: ForgeRepoArgs,
    },
    /// Upload FILEs to release TAG under their file names, replacing assets of the same name (a
    /// rerun repairs a partial upload).
    Upload {
        /// Release tag (the driver version).
        #[arg(long, value_name = "TAG")]
        tag: String,
        /// Files to upload.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        #[command(flatten)]
        forge: ForgeRepoArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum HookCommand {
    /// Write the hook the distribution's kernel tooling runs when a kernel is installed (it gets
    /// that kernel's driver before the reboot, within --timeout), and the systemd unit that tries
    /// again at boot.
    Install {
        /// The root to write under.
        #[arg(long, value_name = "DIR", default_value = "/")]
        root: PathBuf,
        /// postinst (Debian, Ubuntu: /etc/kernel/postinst.d) or kernel-install (Fedora, EL,
        /// systemd: /etc/kernel/install.d) [default: by the root's os-release].
        #[arg(long, value_enum)]
        kind: Option<HookKindArg>,
        /// The longest the hook holds the package manager.
        #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = duration)]
        timeout: Duration,
        /// The kfleet the hook runs, as the node sees it [default: this one].
        #[arg(long, value_name = "PATH")]
        kfleet: Option<PathBuf>,
        /// KEY=value lines the hook and the unit read (KFLEET_SERVICE, KFLEET_DRIVER_VERSION,
        /// KFLEET_SERVICE_TOKEN).
        #[arg(long, value_name = "FILE", default_value = "/etc/kfleet/ensure.env")]
        env_file: PathBuf,
    },
    /// Remove what `hook install` wrote (only files that carry its marker).
    Remove {
        #[arg(long, value_name = "DIR", default_value = "/")]
        root: PathBuf,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum HookKindArg {
    Postinst,
    KernelInstall,
}

#[derive(Debug, Subcommand)]
pub enum KabiCommand {
    /// The module's vermagic and the symbols it imports with their CRCs (`__versions`, and the
    /// extended modversions of 6.13+ kernels): what a build records beside its artifact.
    Imports {
        /// The module file (`.ko`), or a driver package (`.tar.xz`): then every module in it,
        /// as the record the build job uploads beside the artifact (`NAME.kabi.json`).
        module: PathBuf,
    },
    /// Whether the module loads into a kernel it was not built for: same vermagic apart from
    /// the release, modversions on both sides, every imported symbol exported with the same
    /// CRC. Exit 0 when it loads (exact or compatible), 2 when it does not.
    Check {
        /// The module file (`.ko`), or a driver package (`.tar.xz`: every module must load).
        module: PathBuf,
        /// The other kernel by its identity key: its headers package is fetched through the
        /// header chain and its built tree read (kept under the state directory).
        #[arg(long, value_name = "KEY", conflicts_with_all = ["kernel_tree", "symvers", "vermagic"])]
        kernel: Option<String>,
        /// The other kernel's built tree (a headers package's /usr/src/linux-headers-RELEASE, or
        /// /lib/modules/RELEASE/build): its Module.symvers, .config and release.
        #[arg(long, value_name = "DIR", conflicts_with_all = ["symvers", "vermagic"])]
        kernel_tree: Option<PathBuf>,
        /// The other kernel's Module.symvers (with --vermagic).
        #[arg(long, value_name = "FILE", requires = "vermagic")]
        symvers: Option<PathBuf>,
        /// The other kernel's vermagic (`modinfo -F vermagic` of any of its modules).
        #[arg(long, value_name = "STRING", requires = "symvers")]
        vermagic: Option<String>,
        #[command(flatten)]
        chain: HeaderChainArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum SuseCommand {
    /// Register this build as a system with the organisation's registration code
    /// (KFLEET_SUSE_REGCODE, or the file KFLEET_SUSE_REGCODE_FILE names), activate the products
    /// that hold the release's kernel headers, and write the system and its repositories (with
    /// their access tokens) to DIR/registration.json, the file KFLEET_SUSE_REGISTRATION names;
    /// `kfleet suse deregister DIR` removes the system again.
    Register {
        /// Directory for the registration (made private).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// The SLES release whose kernels are built (`15.7`, `16.0`).
        #[arg(long, value_name = "VERSION")]
        release: String,
        /// The architecture (`x86_64`, `aarch64`).
        #[arg(long, value_name = "ARCH", default_value = "x86_64")]
        arch: String,
        /// A further product to activate (`SLES-LTSS/15.6/x86_64`: an extension whose kernels
        /// the fleet runs); repeatable. Paid extensions take the same registration code.
        #[arg(long = "product", value_name = "IDENTIFIER/VERSION/ARCH")]
        products: Vec<crate::headers::scc::Product>,
        /// The system's host name at the registration service.
        #[arg(long, value_name = "NAME", default_value = "kfleet-build")]
        name: String,
        /// The registration service: SUSE Customer Center, or an RMT server.
        #[arg(long, value_name = "URL", env = environment::KFLEET_SCC_URL, default_value = crate::headers::scc::DEFAULT_URL)]
        scc_url: String,
    },
    /// Deregister the system `kfleet suse register --out DIR` registered, and remove its file.
    Deregister {
        /// The directory `register` wrote.
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum RhelCommand {
    /// Register this build as a system of the organisation with its activation key
    /// (KFLEET_RHEL_ACTIVATION_KEY, or the file KFLEET_RHEL_ACTIVATION_KEY_FILE names) and write
    /// its content access certificate to DIR/entitlement.pem and DIR/entitlement-key.pem (the
    /// files KFLEET_RHEL_ENTITLEMENT_CERT and _KEY name), and the system's identity to
    /// DIR/consumer.pem; `kfleet rhel unregister DIR` removes the system again.
    Register {
        /// Directory for the certificates (made private).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// The organisation (its id, as `subscription-manager register --org` takes it).
        #[arg(long, value_name = "ORG", env = environment::KFLEET_RHEL_ORG)]
        org: String,
        /// The system's name in the organisation's inventory.
        #[arg(long, value_name = "NAME", default_value = "kfleet-build")]
        name: String,
        /// Red Hat's subscription service.
        #[arg(long, value_name = "URL", env = environment::KFLEET_RHSM_URL, default_value = crate::headers::rhsm::DEFAULT_URL)]
        rhsm_url: String,
        /// The subscription service's CA, where the system's roots lack it.
        #[arg(long, value_name = "FILE", env = environment::KFLEET_RHSM_CA)]
        rhsm_ca: Option<PathBuf>,
    },
    /// Unregister the system `kfleet rhel register --out DIR` registered, and remove its files.
    Unregister {
        /// The directory `register` wrote.
        dir: PathBuf,
        /// The subscription service's CA, where the system's roots lack it.
        #[arg(long, value_name = "FILE", env = environment::KFLEET_RHSM_CA)]
        rhsm_ca: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Push driver packages to the OCI store as kfleet artifacts (what the build job runs): the
    /// identity is read from each file's name through the asset template; a tag that holds
    /// another artifact is never replaced.
    Push {
        /// The driver version the packages are (it is in their names as well).
        #[arg(long, value_name = "VERSION")]
        driver_version: String,
        /// Driver packages (`.tar.xz`, named by the asset template).
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        naming: NamingArgs,
    },
    /// Print `present` or `absent` for asset NAME of a driver version in the store.
    Has {
        #[arg(long, value_name = "VERSION")]
        driver_version: String,
        /// Asset name.
        name: String,
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        naming: NamingArgs,
    },
    /// List the drivers in the store: driver versions, identities, tags.
    List {
        /// Only this driver version.
        #[arg(long, value_name = "VERSION")]
        driver_version: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        naming: NamingArgs,
    },
}

#[derive(Debug, Args)]
pub struct BuildPlanArgs {
    #[command(flatten)]
    pub identity: IdentityArgs,
    /// Output format: text, json, or env (KEY=VALUE lines for build-module.sh --plan).
    #[arg(long, short = 'f', value_enum, default_value_t = PlanFormat::Text)]
    pub format: PlanFormat,
    /// Header sources file replacing the built-in chain (names the packages fetched).
    #[arg(long, value_name = "FILE", env = environment::KFLEET_HEADER_SOURCES)]
    pub sources: Option<PathBuf>,
    /// Image digests (`kfleet images pin` writes them): the plan names image@sha256:….
    #[arg(long, value_name = "FILE", env = environment::KFLEET_IMAGE_DIGESTS)]
    pub digests: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// Read the digests of the build images of these kernels from their registries and write
    /// them to a digests file (merged with what it holds), for `build-plan --digests`.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["identity", "from"])))]
    Pin {
        /// Identity key DISTRIBUTION/VERSION/ARCH/KERNEL; repeatable.
        #[arg(long, value_name = "KEY")]
        identity: Vec<String>,
        /// Identities from a CSV with distribution,distro_version,architecture,kernel_version
        /// columns (such as `kfleet report --format csv`).
        #[arg(long, value_name = "FILE")]
        from: Option<PathBuf>,
        /// The digests file to update (default: print it).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Reach a registry host at another URL (a mirror): HOST=URL; repeatable.
        #[arg(long, value_name = "HOST=URL")]
        registry: Vec<String>,
        /// Longest time one registry request may take.
        #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration)]
        timeout: Duration,
    },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum PlanFormat {
    #[default]
    Text,
    Json,
    Env,
}

/// A GitHub repository and API (no sandbox): what the build job talks to.
#[derive(Debug, Args)]
pub struct ForgeRepoArgs {
    /// Repository holding the driver's releases, OWNER/NAME [config: repo; in a job: $GITHUB_REPOSITORY].
    #[arg(long, env = environment::KFLEET_REPO, value_name = "OWNER/NAME")]
    pub repo: Option<String>,
    /// GitHub API base URL [config: api_url; in a job: $GITHUB_API_URL; default https://api.github.com].
    #[arg(long, env = environment::KFLEET_API_URL, value_name = "URL")]
    pub api_url: Option<String>,
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

#[derive(Debug, Args)]
pub struct HeaderChainArgs {
    /// Header sources file replacing the built-in chain (assets/header-sources.toml).
    #[arg(long, value_name = "FILE", env = environment::KFLEET_HEADER_SOURCES)]
    pub sources: Option<PathBuf>,
    /// Longest time one source may take [default: 60s].
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub source_timeout: Option<Duration>,
    /// How long a resolution stays cached in the state directory (0s: no cache) [default: 24h].
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub cache_ttl: Option<Duration>,
    /// State directory holding the cache [default $XDG_STATE_HOME/kfleet].
    #[arg(long, env = environment::KFLEET_STATE_DIR, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
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
    /// Download the header packages into DIR, verifying their checksums and what vouches for them
    /// (signed indexes, RPM signatures): what the build job runs.
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
    /// Directory for the build state (kfleet.db) and caches [config: state_dir; default $XDG_STATE_HOME/kfleet].
    #[arg(long, env = environment::KFLEET_STATE_DIR, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Shared build state for several service replicas: postgres://USER@HOST/DB (or sqlite:PATH)
    /// [default: kfleet.db in the state directory].
    #[arg(
        long = "state",
        env = environment::KFLEET_STATE_URL,
        value_name = "URL",
        hide_env_values = true
    )]
    pub state_url: Option<String>,
    /// How long a claim lets its holder dispatch before another process or replica takes it over.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = duration)]
    pub claim_lease: Duration,
    /// A build unfinished this long after dispatch is timed out [config: deadline; default 15m].
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub deadline: Option<Duration>,
    /// Cancel runs found past the deadline.
    #[arg(long)]
    pub cancel_on_timeout: bool,
    /// Workflow that builds a JSON list of identities as a matrix [default build-batch.yml].
    #[arg(long, value_name = "FILE", default_value = "build-batch.yml")]
    pub batch_workflow: String,
    /// Pause between dispatches (GitHub allows about 80 content-creating requests a minute).
    #[arg(long, value_name = "DURATION", default_value = "750ms", value_parser = duration)]
    pub dispatch_interval: Duration,
    /// The build state of a sandbox forge: a directory of this process's own, removed when the
    /// command ends, as the sandbox's runs are.
    #[arg(skip)]
    pub sandbox_state: std::sync::OnceLock<tempfile::TempDir>,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["identity", "missing", "long_tail", "from", "upcoming"])))]
pub struct DispatchArgs {
    /// Identity key DISTRIBUTION/VERSION/ARCH/KERNEL; repeatable.
    #[arg(long, value_name = "KEY")]
    pub identity: Vec<String>,
    /// Every `missing` identity of the inventory (the head without artifacts, and the kernels
    /// nodes have installed to boot next).
    #[arg(long, requires = "inventory")]
    pub missing: bool,
    /// Every `long-tail` identity of the inventory.
    #[arg(long, requires = "inventory")]
    pub long_tail: bool,
    /// Prebuild the kernels the distributions already publish on the inventory's most-run lines,
    /// newer than the newest the fleet runs (see `kfleet upcoming`).
    #[arg(long, requires = "inventory")]
    pub upcoming: bool,
    /// --upcoming: how many of the most-run lines.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub upcoming_lines: usize,
    /// --missing/--long-tail: skip kernels another artifact of their line loads into, and
    /// build one kernel per kABI class (kernels exporting the same CRCs for the driver's
    /// imports), as `report --kabi` plans.
    #[arg(long)]
    pub kabi: bool,
    /// --upcoming: how many of the newest kernels on each line.
    #[arg(long, value_name = "K", default_value_t = 1)]
    pub upcoming_kernels: usize,
    /// --upcoming and --kabi: header sources file replacing the built-in chain.
    #[arg(long, value_name = "FILE", env = environment::KFLEET_HEADER_SOURCES)]
    pub sources: Option<PathBuf>,
    /// Identities from a CSV with distribution,distro_version,architecture,kernel_version columns
    /// (such as `kfleet report --format csv`).
    #[arg(long, value_name = "FILE")]
    pub from: Option<PathBuf>,
    /// Fleet inventory for --missing / --long-tail (a file or `kube:CONTEXT`); repeatable.
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
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `kfleet preflight`: the gate before a fleet moves to new kernels.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("targets").required(true).multiple(true).args(["identity", "target_kernels", "inventory", "kernel_line"])))]
pub struct PreflightArgs {
    /// A target kernel's identity key DISTRIBUTION/VERSION/ARCH/KERNEL; repeatable.
    #[arg(long, value_name = "KEY")]
    pub identity: Vec<String>,
    /// The target kernels: one identity key per line, or a CSV with distribution,
    /// distro_version, architecture, kernel_version columns (such as `report --format csv`).
    #[arg(long, value_name = "FILE")]
    pub target_kernels: Option<PathBuf>,
    /// A kernel a line runs now (an identity key); the targets are the newer kernels its
    /// distribution publishes on that line (read from the archives, as `kfleet upcoming`);
    /// repeatable.
    #[arg(long, value_name = "KEY")]
    pub kernel_line: Vec<String>,
    /// The fleet that moves (a file or `kube:CONTEXT`; repeatable). Alone: the targets are the
    /// kernels published on its most-run lines, newer than the newest it runs. With --identity
    /// or --target-kernels: only those targets on a line the fleet runs.
    #[arg(long, short = 'i', value_name = "FILE")]
    pub inventory: Vec<PathBuf>,
    /// -i alone and --kernel-line: how many of the fleet's most-run lines.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub lines: usize,
    /// -i alone and --kernel-line: how many of the newest kernels on each line.
    #[arg(long, value_name = "K", default_value_t = 1)]
    pub kernels_per_line: usize,
    /// Header sources file replacing the built-in chain (where newer kernels are listed).
    #[arg(long, value_name = "FILE", env = environment::KFLEET_HEADER_SOURCES)]
    pub sources: Option<PathBuf>,
    /// The driver release the fleet will run (default: newest published release).
    #[arg(long, value_name = "TAG")]
    pub driver_version: Option<String>,
    /// Only say what is missing; dispatch nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Output format.
    #[arg(long, short = 'f', value_enum, default_value_t = ListFormat::Table)]
    pub format: ListFormat,
    #[command(flatten)]
    pub build: BuildArgs,
    #[command(flatten)]
    pub naming: NamingArgs,
    #[command(flatten)]
    pub store: StoreArgs,
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
    #[arg(long, env = environment::KFLEET_REPO, value_name = "OWNER/NAME")]
    pub repo: Option<String>,
    /// GitHub API base URL [config: api_url; default https://api.github.com].
    #[arg(long, env = environment::KFLEET_API_URL, value_name = "URL")]
    pub api_url: Option<String>,
    /// Authenticate as this GitHub App (with --github-app-key) instead of a personal token:
    /// installation tokens scoped to the repository, renewed before they expire.
    #[arg(
        long,
        env = environment::KFLEET_GITHUB_APP_ID,
        value_name = "ID",
        requires = "github_app_key"
    )]
    pub github_app_id: Option<u64>,
    /// The GitHub App's private key (the PEM file GitHub generated).
    #[arg(
        long,
        env = environment::KFLEET_GITHUB_APP_KEY,
        value_name = "FILE",
        requires = "github_app_id"
    )]
    pub github_app_key: Option<PathBuf>,
    /// Use an in-process sandbox forge serving DIR/releases.json instead of GitHub (a demo: its
    /// runs live as long as the command).
    #[arg(long, value_name = "DIR", conflicts_with = "repo")]
    pub sandbox: Option<PathBuf>,
    #[command(flatten)]
    pub runner: RunnerArgs,
}

/// How a sandbox runs the builds dispatched to it.
#[derive(Debug, Args, Default)]
pub struct RunnerArgs {
    /// `simulated`: runs take --queue/--run time and attach a placeholder asset; `local`: the
    /// driver checkout's build-driver.yml runs its own steps on this machine against the sandbox
    /// (headers, build, upload of the real artifact).
    #[arg(long, value_enum, default_value_t = RunnerKind::Simulated)]
    pub runner: RunnerKind,
    /// The driver repository the local runner checks out (it holds
    /// .github/workflows/build-driver.yml and .github/kfleet/build-module.sh).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub checkout: PathBuf,
    /// Where the local runner keeps its runs (a workspace while a run lasts, then its job.log);
    /// refused when it is a symbolic link, another user's, or writable by group or others
    /// [default: a new $TMPDIR/kfleet-runner-RANDOM, mode 0700].
    #[arg(long, value_name = "DIR")]
    pub runner_dir: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum RunnerKind {
    #[default]
    Simulated,
    Local,
}

/// Where the drivers are stored, when not in the repository's releases.
#[derive(Debug, Args, Default)]
pub struct StoreArgs {
    /// An OCI registry repository holding the drivers instead of the releases,
    /// oci://REGISTRY/NAMESPACE/NAME (login: KFLEET_REGISTRY_USERNAME, KFLEET_REGISTRY_PASSWORD)
    /// [config: store].
    #[arg(long, env = environment::KFLEET_STORE, value_name = "URL")]
    pub store: Option<String>,
}

#[derive(Debug, Args, Default)]
pub struct NamingArgs {
    /// Module name in asset names [config: module; default: kdriver].
    #[arg(long, env = environment::KFLEET_MODULE)]
    pub module: Option<String>,
    /// Asset naming template [config: asset_template].
    #[arg(long, env = environment::KFLEET_ASSET_TEMPLATE)]
    pub asset_template: Option<String>,
}

#[cfg(feature = "fleet")]
#[derive(Debug, Args)]
pub struct NodesArgs {
    /// Identity key DISTRIBUTION/VERSION/ARCH/KERNEL, as `report` and the dashboard show it.
    #[arg(value_name = "IDENTITY")]
    pub identity: String,
    /// Fleet inventory (a file or `kube:CONTEXT`); repeatable.
    #[arg(long, short = 'i', value_name = "FILE", required = true)]
    pub inventory: Vec<PathBuf>,
    /// Nodes listed at most (all are counted).
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub limit: usize,
    /// Output format (table or json).
    #[arg(long, short = 'f', value_enum, default_value_t = ListFormat::Table)]
    pub format: ListFormat,
}

#[cfg(feature = "fleet")]
#[derive(Debug, Args)]
pub struct UpcomingArgs {
    /// Fleet inventory (a file or `kube:CONTEXT`); repeatable.
    #[arg(long, short = 'i', value_name = "FILE", required = true)]
    pub inventory: Vec<PathBuf>,
    /// Release listing file the statuses are computed against.
    #[arg(long, short = 'r', value_name = "FILE", conflicts_with_all = ["repo", "store"])]
    pub releases: Option<PathBuf>,
    #[command(flatten)]
    pub forge: ForgeRepoArgs,
    /// Release to check (default: newest published).
    #[arg(long, value_name = "TAG")]
    pub driver_version: Option<String>,
    /// The most-run lines to look at.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub lines: usize,
    /// Also list kernels of the pockets before release (Ubuntu's -proposed, Debian's
    /// proposed-updates, Fedora's updates-testing): days earlier, not yet released.
    #[arg(long)]
    pub proposed: bool,
    /// An upcoming kernel without an artifact that another artifact of its line loads into
    /// (its recorded imports against the kernel's CRCs, read from its headers package) is
    /// `upcoming-compatible`, with the artifact; needs a release.
    #[arg(long)]
    pub kabi: bool,
    /// Output format (table or json).
    #[arg(long, short = 'f', value_enum, default_value_t = ListFormat::Table)]
    pub format: ListFormat,
    #[command(flatten)]
    pub chain: HeaderChainArgs,
    #[command(flatten)]
    pub naming: NamingArgs,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[cfg(feature = "fleet")]
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Fleet inventory: CSV, `kubectl get nodes -o json`, JSON Lines (gzip accepted), or
    /// `kube:`/`kube:CONTEXT` to list a cluster's nodes. Repeatable.
    #[arg(long, short = 'i', required = true, value_name = "FILE")]
    pub inventory: Vec<PathBuf>,
    /// GitHub release listing (`gh api repos/OWNER/REPO/releases --paginate > FILE`); instead of --repo.
    #[arg(long, short = 'r', value_name = "FILE", conflicts_with_all = ["repo", "store"])]
    pub releases: Option<PathBuf>,
    #[command(flatten)]
    pub build: BuildArgs,
    /// Release tag to report on (default: newest published, not draft, not prerelease).
    #[arg(long, value_name = "TAG")]
    pub driver_version: Option<String>,
    #[command(flatten)]
    pub naming: NamingArgs,
    #[command(flatten)]
    pub store: StoreArgs,
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
    /// Also list unrecognised asset names and every bad row: the global `-v`/`--verbose`.
    #[arg(skip)]
    pub verbose: bool,
    /// Also count the upcoming kernels on the fleet's most-run lines (read from the header
    /// chain's repositories), apart from coverage: covered, missing, and the unused artifacts
    /// that are prebuilt upcoming kernels.
    #[arg(long)]
    pub upcoming: bool,
    /// --upcoming: how many of the most-run lines.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub upcoming_lines: usize,
    /// Kernels without an artifact that another artifact of their line loads into (its
    /// recorded imports against the kernel's CRCs, read from the kernel's headers package
    /// through the header chain) are `compatible`: counted as covered, shown apart, with the
    /// artifact they use.
    #[arg(long)]
    pub kabi: bool,
    /// --upcoming and --kabi: header sources file replacing the built-in chain.
    #[arg(long, value_name = "FILE", env = environment::KFLEET_HEADER_SOURCES)]
    pub sources: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Loopback address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8765")]
    pub listen: std::net::SocketAddr,
    /// Directory holding releases.json (and assets/NAME: the bytes an asset downloads as, where
    /// a real package should be served).
    #[arg(long, value_name = "DIR", default_value = "sample-data")]
    pub data: PathBuf,
    /// Repository served, OWNER/NAME.
    #[arg(long, default_value = "example/kdriver")]
    pub repo: String,
    /// Bearer token clients must present (env KFLEET_SANDBOX_TOKEN) [default: a random one,
    /// printed at start].
    #[arg(long, env = environment::KFLEET_SANDBOX_TOKEN, hide_env_values = true)]
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
    pub runner: RunnerArgs,
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
        #[arg(long, value_name = "FILE", conflicts_with = "host_root")]
        os_release: Option<PathBuf>,
        /// The host's root file system, mounted in this container: its os-release.
        #[arg(long, value_name = "DIR")]
        host_root: Option<PathBuf>,
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
    /// Directory to write fleet.csv (or fleet.parquet) and releases.json into.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The fleet file's format.
    #[arg(long, value_enum, default_value_t = FleetFormat::Csv)]
    pub format: FleetFormat,
    /// Replace fleet and release files already in --out.
    #[arg(long)]
    pub force: bool,
    /// Repository named in download URLs.
    #[arg(long, default_value = "example/kdriver")]
    pub repo: String,
    #[command(flatten)]
    pub naming: NamingArgs,
}

/// What `gen-fleet` writes the fleet as.
#[cfg(feature = "fleet")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FleetFormat {
    Csv,
    Parquet,
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

/// `--client-rate`: a finite number of requests per second above zero.
fn positive_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!(
            "'{s}' is not a rate: give requests per second, a finite number above 0 (e.g. 50)"
        )),
    }
}

/// A duration written like `15m`, `90s`, `750ms` or `1h 30m`.
fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("'{s}' is not a duration ({e}): write it like 15m, 90s or 750ms"))
}
