//! The last mile on the node: a verified driver package (`.tar.xz` with `MANIFEST` and `.ko`
//! files) installed under `{root}/lib/modules/{kernel}/{extra|updates}/`, `depmod` run, and the
//! module loaded. On an image-based OS (a read-only `/lib/modules`) the modules go to
//! `{root}/var/lib/kfleet/modules/{kernel}/` instead and are loaded by path, in dependency order.
//! The package is read in memory: only regular files at plain relative paths are taken (no
//! links, no absolute paths, no `..`), and nothing is written until every module's vermagic
//! names the target kernel and, where signatures are required, carries one.

use crate::bounded::{Limits, read_to_end};
use crate::text::Cause;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where and how to install.
#[derive(Clone, Debug)]
pub struct InstallOptions {
    /// The file system the modules go into (`/`, or the host's root mounted in a container).
    pub root: PathBuf,
    /// The kernel the package must be for (`uname -r` of the target).
    pub kernel_version: String,
    /// The running kernel: modules are loaded only when it is the target.
    pub running_kernel: Option<String>,
    /// `extra` or `updates` under the kernel's module directory.
    pub subdir: String,
    /// Load the module after installing it.
    pub load: bool,
    /// Replace a different version that is loaded (rmmod, then load).
    pub replace: bool,
    /// Refuse unsigned modules even where the kernel does not enforce signatures.
    pub require_signed: bool,
    /// Where signatures are required, refuse a module whose signer the machine's trust stores
    /// (UEFI `db`, shim's `MokListRT`, `/proc/keys`) do not hold, when they can be read.
    pub check_signer: bool,
    /// The `depmod` to run.
    pub depmod: PathBuf,
    /// Accept a module built for another release of the kernel when the kernel exports every
    /// symbol it imports with the same CRC (modversions, as EL's weak-modules does); such a
    /// module goes into `weak-updates/`.
    pub kabi: bool,
}

/// The module the kernel has loaded, as `/sys/module/NAME` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loaded {
    pub srcversion: Option<String>,
    pub version: Option<String>,
}

/// Loading and unloading modules, and what the kernel says about signatures. The real one runs
/// `modprobe`/`rmmod` and reads `/sys`; tests use a double.
pub trait Loader {
    /// The loaded module called `name`, if any.
    fn loaded(&self, name: &str) -> Option<Loaded>;
    fn load(&self, name: &str) -> Result<(), String>;
    /// Loads the module file at `path` (`insmod`), for modules outside `/lib/modules`.
    fn load_file(&self, path: &Path) -> Result<(), String> {
        Err(format!(
            "this loader cannot load {} by path",
            path.display()
        ))
    }
    fn unload(&self, name: &str) -> Result<(), String>;
    /// Why unsigned modules would be refused (lockdown, `sig_enforce`), if they would.
    fn signatures_enforced(&self) -> Option<String>;
    /// The keys the machine trusts for modules, when its trust stores can be read.
    fn trusted_keys(&self) -> Option<TrustStore> {
        None
    }
}

/// The certificates and key identifiers a machine trusts for modules, and where they were read.
#[derive(Clone, Debug, Default)]
pub struct TrustStore {
    pub certificates: Vec<crate::modsign::Trusted>,
    pub key_ids: Vec<Vec<u8>>,
    pub sources: Vec<String>,
}

impl TrustStore {
    pub fn trusts(&self, signer: &crate::modsign::Signer) -> bool {
        self.certificates.iter().any(|c| c.vouches_for(signer))
            || matches!(signer, crate::modsign::Signer::KeyId(id) if self.key_ids.contains(id))
    }

    /// Reads the UEFI variables `db` and `MokListRT` under `efivars` and the key identifiers of
    /// `proc_keys`; `None` when no certificate store could be read.
    pub fn read(efivars: &Path, proc_keys: Option<&Path>) -> Option<Self> {
        let mut store = Self::default();
        for var in [
            "db-d719b2cb-3d3a-4596-a3bc-dad00e67656f",
            "MokListRT-605dab50-e046-4300-abb6-3dd810dd8b23",
        ] {
            let path = efivars.join(var);
            if let Ok(bytes) = std::fs::read(&path) {
                match crate::modsign::efi_certificates(&bytes) {
                    Ok(certs) => {
                        store.certificates.extend(certs);
                        store.sources.push(path.display().to_string());
                    }
                    Err(e) => tracing::warn!("{}: {e}; its keys are not counted", path.display()),
                }
            }
        }
        if store.sources.is_empty() {
            return None;
        }
        if let Some(proc_keys) = proc_keys
            && let Ok(text) = std::fs::read_to_string(proc_keys)
        {
            store.key_ids = crate::modsign::proc_keys_ids(&text);
            store.sources.push(proc_keys.display().to_string());
        }
        Some(store)
    }
}

/// `modprobe`, `rmmod` and `/sys` of the machine kfleet runs on; `modprobe` looks for modules
/// under `root` (`-d`, for a container with the host's root mounted there).
pub struct SystemLoader {
    pub root: PathBuf,
}

impl Loader for SystemLoader {
    fn loaded(&self, name: &str) -> Option<Loaded> {
        let dir = Path::new("/sys/module").join(name);
        if !dir.is_dir() {
            return None;
        }
        let read = |f: &str| {
            std::fs::read_to_string(dir.join(f))
                .ok()
                .map(|s| s.trim().to_string())
        };
        Some(Loaded {
            srcversion: read("srcversion"),
            version: read("version"),
        })
    }

    fn load(&self, name: &str) -> Result<(), String> {
        let mut modprobe = Command::new("modprobe");
        if self.root != Path::new("/") {
            modprobe.arg("-d").arg(&self.root);
        }
        run(modprobe.arg(name))
    }

    fn unload(&self, name: &str) -> Result<(), String> {
        run(Command::new("rmmod").arg(name))
    }

    fn load_file(&self, path: &Path) -> Result<(), String> {
        run(Command::new("insmod").arg(path))
    }

    fn signatures_enforced(&self) -> Option<String> {
        // Inside a container securityfs is often not mounted: read it under the host's root.
        let lockdown = std::fs::read_to_string(self.root.join("sys/kernel/security/lockdown"))
            .or_else(|_| std::fs::read_to_string("/sys/kernel/security/lockdown"))
            .unwrap_or_default();
        if let Some(mode) = lockdown
            .split_whitespace()
            .find(|w| w.starts_with('[') && *w != "[none]")
        {
            return Some(format!("the kernel is in lockdown {mode}"));
        }
        let enforce = std::fs::read_to_string("/sys/module/module/parameters/sig_enforce")
            .unwrap_or_default();
        (enforce.trim() == "Y")
            .then(|| "the kernel enforces module signatures (sig_enforce)".into())
    }

    /// The trust stores of the root the module goes into: this machine's, or the host's
    /// mounted at `--host-root` (its `/sys`); an image root (`--root`) has none.
    fn trusted_keys(&self) -> Option<TrustStore> {
        let own = self.root == Path::new("/");
        TrustStore::read(
            &self.root.join("sys/firmware/efi/efivars"),
            own.then_some(Path::new("/proc/keys")),
        )
    }
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{shown} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

/// Where a root's modules go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModulePlace {
    /// `lib/modules/KERNEL/SUBDIR`, indexed by depmod, loaded by name.
    Tree,
    /// An image-based OS (`os`) whose `/lib/modules` is read-only: `var/lib/kfleet/modules/KERNEL`,
    /// loaded by path; `route` is how that OS makes a module part of its image.
    Writable { os: String, route: String },
}

/// Where modules in the image-based route go, under the root.
pub const WRITABLE_MODULES: &str = "var/lib/kfleet/modules";

/// The place for modules under `root`: an image-based OS (its os-release's `ID` and `VARIANT_ID`
/// in `assets/distro-releases.toml`, or an ostree deployment) keeps them out of its read-only
/// `/lib/modules`; any other root takes them in its module tree.
pub fn module_place(root: &Path) -> ModulePlace {
    let os_release = ["etc/os-release", "usr/lib/os-release"]
        .iter()
        .find_map(|p| std::fs::read_to_string(root.join(p)).ok())
        .map(|text| crate::identity::parse_os_release(&text))
        .unwrap_or_default();
    let id = os_release.get("ID").map(String::as_str).unwrap_or_default();
    let variant = os_release.get("VARIANT_ID").map(String::as_str);
    if let Some(image) = crate::distros::image_based(id, variant) {
        return ModulePlace::Writable {
            os: image.name.clone(),
            route: image.route.clone(),
        };
    }
    if root.join("run/ostree-booted").exists() {
        let name = os_release
            .get("PRETTY_NAME")
            .cloned()
            .unwrap_or_else(|| "an ostree-based OS".into());
        return ModulePlace::Writable {
            os: crate::text::clean(&name).into_owned(),
            route: "layer the module with rpm-ostree or build it into a derived image".into(),
        };
    }
    ModulePlace::Tree
}

/// The package's modules in an order each can be loaded in: after the package's modules it
/// depends on (`.modinfo` `depends=`); a cycle keeps the package's order.
fn load_order(modules: &[Module]) -> Vec<usize> {
    let mut order: Vec<usize> = Vec::with_capacity(modules.len());
    while order.len() < modules.len() {
        let ready = (0..modules.len()).find(|&i| {
            !order.contains(&i)
                && modules[i].depends.iter().all(|d| {
                    modules
                        .iter()
                        .position(|m| &m.name == d)
                        .is_none_or(|j| order.contains(&j))
                })
        });
        match ready {
            Some(i) => order.push(i),
            None => order.extend(
                (0..modules.len())
                    .filter(|i| !order.contains(i))
                    .collect::<Vec<_>>(),
            ),
        }
    }
    order
}

/// One module of a package.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    /// The file's name without `.ko`: `amd-uncore` for `amd-uncore.ko`.
    pub file: String,
    /// The name the kernel knows it by (`/sys/module/NAME`, `modprobe`, `rmmod`): the `.modinfo`
    /// `name=`, else the file's, with `-` as `_` as the kernel writes it.
    pub name: String,
    pub bytes: Vec<u8>,
    pub vermagic: String,
    pub srcversion: Option<String>,
    /// `MODULE_VERSION`, where the module declares one.
    pub version: Option<String>,
    pub signed: bool,
    /// The modules it needs loaded first (`.modinfo` `depends=`, kernel names).
    pub depends: Vec<String>,
}

/// What `install` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InstallOutcome {
    /// Written (and `depmod` run); `loaded` says whether the modules were loaded too.
    Installed {
        paths: Vec<PathBuf>,
        loaded: bool,
        place: ModulePlace,
    },
    /// The same modules were already installed (and loaded, where loading was asked for).
    AlreadyInstalled {
        paths: Vec<PathBuf>,
        place: ModulePlace,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("the package {}: {source}", path.display())]
    Package { path: PathBuf, source: Cause },
    #[error(
        "{module}.ko is built for {built}, not {kernel} (vermagic '{vermagic}'); nothing was installed"
    )]
    VermagicMismatch {
        module: String,
        built: String,
        kernel: String,
        vermagic: String,
    },
    #[error(
        "{module}.ko is not signed and {why}; nothing was installed. Sign the module in the build (KFLEET_SIGN_KEY and KFLEET_SIGN_CERT secrets) and enrol the certificate with `mokutil --import CERT`, or install on a machine that does not require signatures"
    )]
    SignatureRequired { module: String, why: String },
    #[error(
        "{module}.ko is signed by {signer}, which this machine does not trust ({sources} hold no such key), and {why}; nothing was installed. Enrol the signing certificate with `mokutil --import CERT.der` and confirm it at the next boot, or sign with a key the machine trusts"
    )]
    UntrustedSigner {
        module: String,
        signer: String,
        sources: String,
        why: String,
    },
    #[error("{module} version {loaded} is loaded (nothing was installed)")]
    OtherVersionLoaded { module: String, loaded: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{module}.ko is built for {built}, and its symbol versions do not fit {kernel}: {reason}; nothing was installed"
    )]
    KabiMismatch {
        module: String,
        built: String,
        kernel: String,
        reason: String,
    },
    #[error("depmod: {0}")]
    Depmod(String),
    #[error("cannot load {module}: {message}")]
    Load { module: String, message: String },
}

/// The kernel's name for a module: `-` becomes `_` (KBUILD_MODNAME).
pub fn kernel_module_name(name: &str) -> String {
    name.replace('-', "_")
}

impl InstallError {
    /// Exit codes beside `ensure`'s (0 installed, 3 timed out, 4 failed, 5 rejected).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::VermagicMismatch { .. } | Self::KabiMismatch { .. } => 6,
            Self::SignatureRequired { .. } | Self::UntrustedSigner { .. } => 7,
            Self::Load { .. } | Self::OtherVersionLoaded { .. } => 8,
            Self::Package { .. } | Self::Write { .. } | Self::Depmod(_) => 1,
        }
    }
}

/// What the kernel `kernel` under `root` exports and the vermagic its modules carry: its build
/// tree (`lib/modules/KERNEL/build`, where the headers package links it), else EL's
/// `boot/symvers-KERNEL.xz` (or `.gz`) with `boot/config-KERNEL`, else, for the running kernel,
/// the `__crc_` symbols of `proc/kallsyms` with `boot/config-KERNEL`.
fn target_abi(root: &Path, kernel: &str) -> Result<crate::kabi::KernelAbi, String> {
    let build = root.join("lib/modules").join(kernel).join("build");
    // The link names a path on the target system: read it under the root.
    let tree = match std::fs::read_link(&build) {
        Ok(target) if target.is_absolute() => {
            root.join(target.strip_prefix("/").unwrap_or(&target))
        }
        Ok(target) => build.parent().map(|p| p.join(&target)).unwrap_or(target),
        Err(_) => build.clone(),
    };
    if tree.join("Module.symvers").is_file() {
        return crate::kabi::KernelAbi::from_tree(&tree).map_err(|e| e.to_string());
    }
    let boot = root.join("boot");
    for name in [
        format!("symvers-{kernel}.xz"),
        format!("symvers-{kernel}.gz"),
    ] {
        let path = boot.join(&name);
        if !path.is_file() {
            continue;
        }
        let symvers = crate::kabi::Symvers::read(&path).map_err(|e| e.to_string())?;
        let config = std::fs::read_to_string(boot.join(format!("config-{kernel}")))
            .map_err(|e| format!("/boot/config-{kernel}: {e}"))?;
        return Ok(crate::kabi::KernelAbi::new(kernel, &config, None, symvers));
    }
    // The running kernel itself: /proc/kallsyms, with /boot/config-KERNEL for its vermagic.
    let running = std::fs::read_to_string(root.join("proc/sys/kernel/osrelease"))
        .is_ok_and(|release| release.trim() == kernel);
    let kallsyms = root.join("proc/kallsyms");
    if running && kallsyms.is_file() {
        let text = crate::bounded::read_file(&kallsyms, 256 << 20)
            .map_err(|e| format!("{}: {e}", kallsyms.display()))?;
        let symvers =
            crate::kabi::Symvers::from_kallsyms("/proc/kallsyms", &String::from_utf8_lossy(&text))
                .map_err(|e| e.to_string())?;
        let config =
            std::fs::read_to_string(boot.join(format!("config-{kernel}"))).map_err(|e| {
                format!("/boot/config-{kernel} (for the vermagic beside /proc/kallsyms): {e}")
            })?;
        return Ok(crate::kabi::KernelAbi::new(kernel, &config, None, symvers));
    }
    Err(format!(
        "no symbol versions of {kernel} to check against (neither lib/modules/{kernel}/build/Module.symvers nor /boot/symvers-{kernel}.xz under {}, and it is not the running kernel, whose /proc/kallsyms would do); install its headers package",
        root.display()
    ))
}

/// Refuses a module whose signer the root's trust stores do not hold; where they cannot be read
/// (no EFI variables), says that the signer was not checked.
fn check_signers(
    modules: &[Module],
    why: &str,
    package: &Path,
    loader: &dyn Loader,
) -> Result<(), InstallError> {
    let Some(store) = loader.trusted_keys() else {
        tracing::warn!(
            "the module's signer is not checked: no UEFI db or MokListRT under the install root (in a container, mount the host's /sys under --host-root)"
        );
        return Ok(());
    };
    for m in modules {
        let signer = crate::modsign::module_signer(&m.bytes)
            .map_err(|message| InstallError::Package {
                path: package.to_path_buf(),
                source: format!("{}.ko: {message}", m.file).into(),
            })?
            .ok_or_else(|| InstallError::SignatureRequired {
                module: m.name.clone(),
                why: why.to_string(),
            })?;
        if !store.trusts(&signer) {
            return Err(InstallError::UntrustedSigner {
                module: m.name.clone(),
                signer: signer.to_string(),
                sources: store.sources.join(", "),
                why: why.to_string(),
            });
        }
    }
    Ok(())
}

/// The marker the kernel's `sign-file` appends after a module's signature.
const SIGNATURE_MARKER: &[u8] = b"~Module signature appended~\n";

/// Largest package unpacked (a driver package is a few MiB).
const MAX_UNPACKED: u64 = 256 << 20;

/// Reads a package's modules: every `.ko` at a plain relative path, nothing else but `MANIFEST`
/// and directories; any other entry (a link, a device, an absolute or `..` path) refuses it.
pub fn read_package(path: &Path) -> Result<Vec<Module>, InstallError> {
    let compressed = std::fs::read(path).map_err(|e| InstallError::Package {
        path: path.to_path_buf(),
        source: Cause::of(e),
    })?;
    read_package_bytes(path, &compressed)
}

/// [`read_package`] of bytes already in memory (`path` names them in messages). Two modules the
/// kernel would know by one name, or two files that would be installed as one, refuse it.
pub fn read_package_bytes(path: &Path, compressed: &[u8]) -> Result<Vec<Module>, InstallError> {
    let bad = |message: String| InstallError::Package {
        path: path.to_path_buf(),
        source: message.into(),
    };
    let unreadable = |e: std::io::Error| InstallError::Package {
        path: path.to_path_buf(),
        source: Cause::of(e),
    };
    let limits = Limits::by_ratio(compressed.len() as u64, 50, 64 << 20, MAX_UNPACKED);
    let tar = read_to_end(
        liblzma::read::XzDecoder::new_multi_decoder(compressed),
        limits,
    )
    .map_err(|e| bad(format!("not a readable .tar.xz: {e}")))?;
    let mut archive = tar::Archive::new(tar.as_slice());
    let mut modules = Vec::new();
    for entry in archive.entries().map_err(unreadable)? {
        let mut entry = entry.map_err(unreadable)?;
        let name = entry
            .path()
            .map_err(unreadable)?
            .to_string_lossy()
            .into_owned();
        let plain = Path::new(&name).components().all(|c| {
            matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        });
        if !plain {
            return Err(bad(format!(
                "refusing the entry '{name}': it leaves the package"
            )));
        }
        match entry.header().entry_type() {
            tar::EntryType::Directory => continue,
            tar::EntryType::Regular | tar::EntryType::Continuous => {}
            other => {
                return Err(bad(format!(
                    "refusing the entry '{name}': a {other:?}, not a regular file"
                )));
            }
        }
        let Some(file) = name.strip_suffix(".ko") else {
            continue;
        };
        let module = Path::new(file)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        if module.is_empty()
            || !module
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(bad(format!("refusing the module name '{name}'")));
        }
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).map_err(unreadable)?;
        let info = crate::kmod::modinfo(&bytes).map_err(|e| bad(format!("{name}: {e}")))?;
        let field = |k: &str| {
            info.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        let vermagic = field("vermagic").ok_or_else(|| bad(format!("{name} has no vermagic")))?;
        let kernel_name = kernel_module_name(&field("name").unwrap_or_else(|| module.clone()));
        if kernel_name.is_empty()
            || !kernel_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(bad(format!(
                "{name}: refusing the module name '{kernel_name}' its .modinfo gives"
            )));
        }
        if let Some(twin) = modules
            .iter()
            .find(|m: &&Module| m.name == kernel_name || m.file == module)
        {
            return Err(bad(format!(
                "{name} and {}.ko are both the module {kernel_name}: one would silently replace the other; nothing was installed",
                twin.file
            )));
        }
        modules.push(Module {
            file: module,
            name: kernel_name,
            signed: bytes.ends_with(SIGNATURE_MARKER),
            srcversion: field("srcversion"),
            version: field("version"),
            depends: field("depends")
                .map(|d| {
                    d.split(',')
                        .filter(|n| !n.is_empty())
                        .map(kernel_module_name)
                        .collect()
                })
                .unwrap_or_default(),
            vermagic,
            bytes,
        });
    }
    if modules.is_empty() {
        return Err(bad("holds no .ko file".to_string()));
    }
    Ok(modules)
}

/// Installs the package's modules (see the module doc). Idempotent: the same files already in
/// place, and loaded where loading was asked for, is [`InstallOutcome::AlreadyInstalled`].
pub fn install(
    package: &Path,
    options: &InstallOptions,
    loader: &dyn Loader,
) -> Result<InstallOutcome, InstallError> {
    let compressed = std::fs::read(package).map_err(|e| InstallError::Package {
        path: package.to_path_buf(),
        source: Cause::of(e),
    })?;
    install_bytes(package, &compressed, options, loader)
}

/// [`install`] of a package already in memory: the bytes whose digest was checked, never read
/// again from a file (`package` names them in messages). All or nothing: a file that cannot be
/// written, or a module that will not load, puts every file back as it was, runs `depmod` again
/// and reloads the modules that were loaded before.
pub fn install_bytes(
    package: &Path,
    compressed: &[u8],
    options: &InstallOptions,
    loader: &dyn Loader,
) -> Result<InstallOutcome, InstallError> {
    let modules = read_package_bytes(package, compressed)?;
    let mut subdir = options.subdir.as_str();
    let mut target: Option<Result<crate::kabi::KernelAbi, String>> = None;
    for m in &modules {
        let built = m.vermagic.split_whitespace().next().unwrap_or_default();
        if built == options.kernel_version {
            continue;
        }
        if !options.kabi {
            return Err(InstallError::VermagicMismatch {
                module: m.name.clone(),
                built: built.to_string(),
                kernel: options.kernel_version.clone(),
                vermagic: m.vermagic.clone(),
            });
        }
        let refuse = |reason: String| InstallError::KabiMismatch {
            module: m.name.clone(),
            built: built.to_string(),
            kernel: options.kernel_version.clone(),
            reason,
        };
        let abi = crate::kabi::ModuleAbi::read(&m.bytes).map_err(|e| refuse(e.to_string()))?;
        let kernel = target
            .get_or_insert_with(|| target_abi(&options.root, &options.kernel_version))
            .as_ref()
            .map_err(|e| refuse(e.clone()))?;
        match crate::kabi::check(&abi, &kernel.vermagic, &kernel.symvers) {
            crate::kabi::Verdict::Incompatible { reason } => return Err(refuse(reason)),
            _ => subdir = "weak-updates",
        }
    }
    let running = options.running_kernel.as_deref() == Some(options.kernel_version.as_str());
    let load = options.load && running;
    let enforced = if options.require_signed {
        Some("signatures were required".to_string())
    } else if running {
        loader.signatures_enforced()
    } else {
        None
    };
    if let (Some(why), Some(m)) = (&enforced, modules.iter().find(|m| !m.signed)) {
        return Err(InstallError::SignatureRequired {
            module: m.name.clone(),
            why: why.clone(),
        });
    }
    if let Some(why) = enforced.as_ref().filter(|_| options.check_signer) {
        check_signers(&modules, why, package, loader)?;
    }
    let place = module_place(&options.root);
    let dir = match place {
        ModulePlace::Tree => options
            .root
            .join("lib/modules")
            .join(&options.kernel_version)
            .join(subdir),
        ModulePlace::Writable { .. } => options
            .root
            .join(WRITABLE_MODULES)
            .join(&options.kernel_version),
    };
    let paths: Vec<PathBuf> = modules
        .iter()
        .map(|m| dir.join(format!("{}.ko", m.file)))
        .collect();
    let loaded: Vec<Option<Loaded>> = modules.iter().map(|m| loader.loaded(&m.name)).collect();
    // What is there now, to put back if the new modules cannot be installed or loaded.
    let previous: Vec<Option<Vec<u8>>> = paths.iter().map(|p| std::fs::read(p).ok()).collect();
    let in_place = modules
        .iter()
        .zip(&previous)
        .all(|(m, old)| old.as_deref() == Some(m.bytes.as_slice()));
    // The loaded module is this one when their srcversion (or else version) agree; a module that
    // declares neither is taken to be the file already in place, and to be another one otherwise.
    let same_loaded = |m: &Module, l: &Option<Loaded>| {
        l.as_ref().is_some_and(
            |l| match (&l.srcversion, &m.srcversion, &l.version, &m.version) {
                (Some(a), Some(b), _, _) => a == b,
                (_, _, Some(a), Some(b)) => a == b,
                _ => in_place,
            },
        )
    };
    if in_place && (!load || modules.iter().zip(&loaded).all(|(m, l)| same_loaded(m, l))) {
        return Ok(InstallOutcome::AlreadyInstalled { paths, place });
    }
    if load && !options.replace {
        for (m, l) in modules.iter().zip(&loaded) {
            if let Some(l) = l.as_ref().filter(|_| !same_loaded(m, l)) {
                return Err(InstallError::OtherVersionLoaded {
                    module: m.name.clone(),
                    loaded: l
                        .version
                        .clone()
                        .or_else(|| l.srcversion.clone())
                        .unwrap_or_else(|| "(unknown)".into()),
                });
            }
        }
    }
    std::fs::create_dir_all(&dir).map_err(|source| InstallError::Write {
        path: dir.display().to_string(),
        source,
    })?;
    let transaction = Transaction {
        paths: &paths,
        previous: &previous,
        options,
        place: &place,
    };
    for (i, (m, p)) in modules.iter().zip(&paths).enumerate() {
        if let Err(source) = crate::fsio::write_atomic(p, &m.bytes) {
            let restored = transaction.restore_files(i);
            return Err(InstallError::Write {
                path: p.display().to_string(),
                source: std::io::Error::other(format!("{source}; {restored}")),
            });
        }
    }
    if let Err(e) = transaction.depmod() {
        let restored = transaction.restore_files(paths.len());
        return Err(InstallError::Depmod(format!("{e}; {restored}")));
    }
    if load {
        // Modules switched so far: (index, whether an old one was unloaded for it).
        let mut switched: Vec<(usize, bool)> = Vec::new();
        for i in load_order(&modules) {
            let (m, l) = (&modules[i], &loaded[i]);
            if same_loaded(m, l) {
                continue;
            }
            let step = if l.is_some() {
                loader.unload(&m.name).map(|()| true)
            } else {
                Ok(false)
            };
            let step = step.and_then(|unloaded| {
                switched.push((i, unloaded));
                transaction.load(&modules, i, loader)
            });
            if let Err(message) = step {
                let rolled = transaction.roll_back(&modules, &switched, loader);
                return Err(InstallError::Load {
                    module: m.name.clone(),
                    message: format!("{message}; {rolled}"),
                });
            }
        }
    }
    Ok(InstallOutcome::Installed {
        paths,
        loaded: load,
        place,
    })
}

fn depmod(options: &InstallOptions) -> Result<(), String> {
    let mut depmod = Command::new(&options.depmod);
    depmod.arg("-a");
    if options.root != Path::new("/") {
        depmod.arg("-b").arg(&options.root);
    }
    depmod.arg(&options.kernel_version);
    run(&mut depmod)
}

/// What an install changed, to be put back when it cannot finish.
struct Transaction<'a> {
    paths: &'a [PathBuf],
    previous: &'a [Option<Vec<u8>>],
    options: &'a InstallOptions,
    place: &'a ModulePlace,
}

impl Transaction<'_> {
    /// Indexes the module tree; the image-based route has none to index.
    fn depmod(&self) -> Result<(), String> {
        match self.place {
            ModulePlace::Tree => depmod(self.options),
            ModulePlace::Writable { .. } => Ok(()),
        }
    }

    /// Loads module `i`: by name from the tree, or by path (after the modules it needs from
    /// outside the package, by name from the OS's own tree).
    fn load(&self, modules: &[Module], i: usize, loader: &dyn Loader) -> Result<(), String> {
        match self.place {
            ModulePlace::Tree => loader.load(&modules[i].name),
            ModulePlace::Writable { .. } => {
                for dep in &modules[i].depends {
                    if !modules.iter().any(|m| &m.name == dep) && loader.loaded(dep).is_none() {
                        loader.load(dep)?;
                    }
                }
                loader.load_file(&self.paths[i])
            }
        }
    }

    /// Puts the first `n` files back as they were (the old module, or no file); says how it went.
    fn restore_files(&self, n: usize) -> String {
        let mut failures = Vec::new();
        for (path, old) in self.paths.iter().zip(self.previous).take(n) {
            let result = match old {
                Some(bytes) => crate::fsio::write_atomic(path, bytes),
                None => std::fs::remove_file(path).or_else(|e| {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        Ok(())
                    } else {
                        Err(e)
                    }
                }),
            };
            if let Err(e) = result {
                failures.push(format!("cannot restore {}: {e}", path.display()));
            }
        }
        if failures.is_empty() {
            "the previous files were restored".to_string()
        } else {
            failures.join("; ")
        }
    }

    /// After a module would not load: the new ones loaded so far are unloaded, the old files put
    /// back, `depmod` run again, and the old modules that were loaded before loaded again.
    fn roll_back(
        &self,
        modules: &[Module],
        switched: &[(usize, bool)],
        loader: &dyn Loader,
    ) -> String {
        let mut said = Vec::new();
        // The last one switched did not load; the ones before it did.
        if let Some((_, earlier)) = switched.split_last() {
            for (i, _) in earlier {
                if let Err(e) = loader.unload(&modules[*i].name) {
                    said.push(format!("cannot unload the new {}: {e}", modules[*i].name));
                }
            }
        }
        said.push(self.restore_files(self.paths.len()));
        if *self.place == ModulePlace::Tree {
            match depmod(self.options) {
                Ok(()) => said.push("depmod ran again".to_string()),
                Err(e) => said.push(format!("depmod after the restore failed: {e}")),
            }
        }
        for (i, unloaded) in switched {
            if !unloaded {
                continue;
            }
            let name = &modules[*i].name;
            match self.load(modules, *i, loader) {
                Ok(()) => said.push(format!("the previous {name} is loaded again")),
                Err(e) => said.push(format!(
                    "the previous {name} could not be loaded again ({e}): the node has no {name} loaded"
                )),
            }
        }
        said.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In a container securityfs is often not mounted: the host's lockdown is read under its root.
    #[test]
    fn lockdown_is_read_under_the_host_root() {
        let host = tempfile::tempdir().unwrap();
        let security = host.path().join("sys/kernel/security");
        std::fs::create_dir_all(&security).unwrap();
        std::fs::write(
            security.join("lockdown"),
            "none [integrity] confidentiality\n",
        )
        .unwrap();
        let loader = SystemLoader {
            root: host.path().to_path_buf(),
        };
        assert_eq!(
            loader.signatures_enforced().as_deref(),
            Some("the kernel is in lockdown [integrity]")
        );
        assert!(loader.trusted_keys().is_none(), "no EFI variables there");
    }
}
