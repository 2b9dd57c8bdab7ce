//! The last mile on the node: a verified driver package (`.tar.xz` with `MANIFEST` and `.ko`
//! files) installed under `{root}/lib/modules/{kernel}/{extra|updates}/`, `depmod` run, and the
//! module loaded. The package is read in memory: only regular files at plain relative paths are
//! taken (no links, no absolute paths, no `..`), and nothing is written until every module's
//! vermagic names the target kernel and, where signatures are required, carries one.

use crate::bounded::{Limits, read_to_end};
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
    /// The `depmod` to run.
    pub depmod: PathBuf,
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
    fn unload(&self, name: &str) -> Result<(), String>;
    /// Why unsigned modules would be refused (lockdown, `sig_enforce`), if they would.
    fn signatures_enforced(&self) -> Option<String>;
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

    fn signatures_enforced(&self) -> Option<String> {
        let lockdown = std::fs::read_to_string("/sys/kernel/security/lockdown").unwrap_or_default();
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

/// One module of a package.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    /// `kdriver` for `kdriver.ko`.
    pub name: String,
    pub bytes: Vec<u8>,
    pub vermagic: String,
    pub srcversion: Option<String>,
    /// `MODULE_VERSION`, where the module declares one.
    pub version: Option<String>,
    pub signed: bool,
}

/// What `install` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InstallOutcome {
    /// Written (and `depmod` run); `loaded` says whether the modules were loaded too.
    Installed { paths: Vec<PathBuf>, loaded: bool },
    /// The same modules were already installed (and loaded, where loading was asked for).
    AlreadyInstalled { paths: Vec<PathBuf> },
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("the package {path}: {message}")]
    Package { path: String, message: String },
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
        "{module} version {loaded} is loaded; pass --replace to unload it and load the new one (nothing was installed)"
    )]
    OtherVersionLoaded { module: String, loaded: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("depmod: {0}")]
    Depmod(String),
    #[error("cannot load {module}: {message}")]
    Load { module: String, message: String },
}

impl InstallError {
    /// Exit codes beside `ensure`'s (0 installed, 3 timed out, 4 failed, 5 rejected).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::VermagicMismatch { .. } => 6,
            Self::SignatureRequired { .. } => 7,
            Self::Load { .. } | Self::OtherVersionLoaded { .. } => 8,
            Self::Package { .. } | Self::Write { .. } | Self::Depmod(_) => 1,
        }
    }
}

/// The marker the kernel's `sign-file` appends after a module's signature.
const SIGNATURE_MARKER: &[u8] = b"~Module signature appended~\n";

/// Largest package unpacked (a driver package is a few MiB).
const MAX_UNPACKED: u64 = 256 << 20;

/// Reads a package's modules: every `.ko` at a plain relative path, nothing else but `MANIFEST`
/// and directories; any other entry (a link, a device, an absolute or `..` path) refuses it.
pub fn read_package(path: &Path) -> Result<Vec<Module>, InstallError> {
    let bad = |message: String| InstallError::Package {
        path: path.display().to_string(),
        message,
    };
    let compressed = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let limits = Limits::by_ratio(compressed.len() as u64, 50, 64 << 20, MAX_UNPACKED);
    let tar = read_to_end(
        liblzma::read::XzDecoder::new_multi_decoder(compressed.as_slice()),
        limits,
    )
    .map_err(|e| bad(format!("not a readable .tar.xz: {e}")))?;
    let mut archive = tar::Archive::new(tar.as_slice());
    let mut modules = Vec::new();
    for entry in archive.entries().map_err(|e| bad(e.to_string()))? {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        let name = entry
            .path()
            .map_err(|e| bad(e.to_string()))?
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
        std::io::Read::read_to_end(&mut entry, &mut bytes).map_err(|e| bad(e.to_string()))?;
        let info = crate::kmod::modinfo(&bytes).map_err(|e| bad(format!("{name}: {e}")))?;
        let field = |k: &str| {
            info.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        let vermagic = field("vermagic").ok_or_else(|| bad(format!("{name} has no vermagic")))?;
        modules.push(Module {
            name: module,
            signed: bytes.ends_with(SIGNATURE_MARKER),
            srcversion: field("srcversion"),
            version: field("version"),
            vermagic,
            bytes,
        });
    }
    if modules.is_empty() {
        return Err(bad("holds no .ko file".into()));
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
    let modules = read_package(package)?;
    for m in &modules {
        let built = m.vermagic.split_whitespace().next().unwrap_or_default();
        if built != options.kernel_version {
            return Err(InstallError::VermagicMismatch {
                module: m.name.clone(),
                built: built.to_string(),
                kernel: options.kernel_version.clone(),
                vermagic: m.vermagic.clone(),
            });
        }
    }
    let running = options.running_kernel.as_deref() == Some(options.kernel_version.as_str());
    let load = options.load && running;
    let enforced = if options.require_signed {
        Some("--require-signed was given".to_string())
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
    let dir = options
        .root
        .join("lib/modules")
        .join(&options.kernel_version)
        .join(&options.subdir);
    let paths: Vec<PathBuf> = modules
        .iter()
        .map(|m| dir.join(format!("{}.ko", m.name)))
        .collect();
    let loaded: Vec<Option<Loaded>> = modules.iter().map(|m| loader.loaded(&m.name)).collect();
    let in_place = modules
        .iter()
        .zip(&paths)
        .all(|(m, p)| std::fs::read(p).is_ok_and(|b| b == m.bytes));
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
        return Ok(InstallOutcome::AlreadyInstalled { paths });
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
    for (m, p) in modules.iter().zip(&paths) {
        crate::fsio::write_atomic(p, &m.bytes).map_err(|source| InstallError::Write {
            path: p.display().to_string(),
            source,
        })?;
    }
    let mut depmod = Command::new(&options.depmod);
    depmod.arg("-a");
    if options.root != Path::new("/") {
        depmod.arg("-b").arg(&options.root);
    }
    depmod.arg(&options.kernel_version);
    run(&mut depmod).map_err(InstallError::Depmod)?;
    if load {
        for (m, l) in modules.iter().zip(&loaded) {
            if same_loaded(m, l) {
                continue;
            }
            let failed = |message: String| InstallError::Load {
                module: m.name.clone(),
                message,
            };
            if l.is_some() {
                loader.unload(&m.name).map_err(failed)?;
            }
            loader.load(&m.name).map_err(failed)?;
        }
    }
    Ok(InstallOutcome::Installed {
        paths,
        loaded: load,
    })
}
