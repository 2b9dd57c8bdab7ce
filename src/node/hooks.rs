//! Hooks where kernels are installed: the script a distribution's kernel tooling runs when a
//! kernel is installed (`/etc/kernel/postinst.d/` on Debian and Ubuntu, a `kernel-install` plugin
//! in `/etc/kernel/install.d/` on Fedora, EL and other systemd-based systems), which gets that
//! kernel's driver before the reboot into it within a time bound, and the systemd unit that tries
//! again at boot for the running kernel. Written and removed under a root; each file carries a
//! marker so that only kfleet's own files are ever removed.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The line every file kfleet writes here carries.
pub const MARKER: &str = "# Written by `kfleet hook install`; `kfleet hook remove` removes it.";

/// Which kernel tooling calls the hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookKind {
    /// Debian's and Ubuntu's `run-parts /etc/kernel/postinst.d VERSION IMAGE`.
    Postinst,
    /// systemd's `kernel-install add VERSION ENTRY-DIR IMAGE`.
    KernelInstall,
}

impl HookKind {
    /// The tooling a distribution uses: `postinst.d` for Debian and Ubuntu, `kernel-install`
    /// elsewhere.
    pub fn for_distribution(distribution: Option<crate::identity::Distribution>) -> Self {
        use crate::identity::Distribution;
        match distribution {
            Some(Distribution::Debian | Distribution::Ubuntu) => Self::Postinst,
            _ => Self::KernelInstall,
        }
    }

    /// Where the hook goes, relative to the root.
    pub fn path(self) -> &'static str {
        match self {
            Self::Postinst => "etc/kernel/postinst.d/zz-kfleet",
            Self::KernelInstall => "etc/kernel/install.d/50-kfleet.install",
        }
    }
}

/// The boot unit and the link that enables it, relative to the root.
pub const UNIT: &str = "etc/systemd/system/kfleet-ensure.service";
pub const UNIT_LINK: &str = "etc/systemd/system/multi-user.target.wants/kfleet-ensure.service";

/// What the hook runs and within how long.
#[derive(Clone, Debug)]
pub struct HookSettings {
    /// The kfleet binary the hook and the unit run.
    pub kfleet: PathBuf,
    /// The longest the hook holds the package manager.
    pub timeout: Duration,
    /// `KEY=value` lines read before `ensure` runs: `KFLEET_SERVICE`, `KFLEET_DRIVER_VERSION`,
    /// `KFLEET_SERVICE_TOKEN` (the file is the node's, 0600).
    pub env_file: PathBuf,
}

fn quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

/// The hook script.
pub fn script(kind: HookKind, settings: &HookSettings) -> String {
    let take_version = match kind {
        HookKind::Postinst => "version=\"${1:?kernel version}\"",
        HookKind::KernelInstall => {
            "[ \"${1:-}\" = add ] || exit 0\nversion=\"${2:?kernel version}\""
        }
    };
    let secs = settings.timeout.as_secs().max(1);
    format!(
        r#"#!/bin/sh
{MARKER}
# Gets the driver for a kernel being installed, before the reboot into it, and never holds the
# package manager longer than {secs} s: a kernel still without its driver then is tried again at
# boot by kfleet-ensure.service.
set -u
{take_version}
env_file={env_file}
if [ -r "$env_file" ]; then
  set -a
  . "$env_file"
  set +a
fi
if timeout --kill-after=5 {secs} {kfleet} ensure --kernel-version "$version" --install --no-load; then
  echo "kfleet: the driver for $version is installed" >&2
else
  echo "kfleet: no driver for $version within {secs} s (exit $?); kfleet-ensure.service tries again at boot" >&2
fi
exit 0
"#,
        env_file = quote(&settings.env_file),
        kfleet = quote(&settings.kfleet),
    )
}

/// The unit that gets the running kernel's driver at boot.
pub fn unit(settings: &HookSettings) -> String {
    format!(
        "{MARKER}\n[Unit]\nDescription=kfleet: the driver for the running kernel\nWants=network-online.target\nAfter=network-online.target\n\n[Service]\nType=oneshot\nEnvironmentFile=-{env}\nExecStart={kfleet} ensure --install\n\n[Install]\nWantedBy=multi-user.target\n",
        env = settings.env_file.display(),
        kfleet = settings.kfleet.display(),
    )
}

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("{0} exists and is not kfleet's (it lacks kfleet's marker line); move it away first")]
    NotOurs(String),
    #[error("cannot remove {path}: {source}")]
    Remove {
        path: String,
        source: std::io::Error,
    },
}

fn ours(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|text| text.contains(MARKER))
}

/// Writes the hook of `kind` and the boot unit (enabled) under `root`; returns the files written.
/// A file of the same path that is not kfleet's is never replaced.
pub fn install(
    root: &Path,
    kind: HookKind,
    settings: &HookSettings,
) -> Result<Vec<PathBuf>, HookError> {
    use std::os::unix::fs::PermissionsExt as _;
    let hook = root.join(kind.path());
    let unit_path = root.join(UNIT);
    for path in [&hook, &unit_path] {
        if path.exists() && !ours(path) {
            return Err(HookError::NotOurs(path.display().to_string()));
        }
    }
    let write = |path: &Path, text: &str, mode: u32| -> Result<(), HookError> {
        let err = |source| HookError::Write {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        crate::fsio::write_atomic(path, text.as_bytes()).map_err(err)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(err)
    };
    write(&hook, &script(kind, settings), 0o755)?;
    write(&unit_path, &unit(settings), 0o644)?;
    let link = root.join(UNIT_LINK);
    let link_err = |source| HookError::Write {
        path: link.display().to_string(),
        source,
    };
    if let Some(dir) = link.parent() {
        std::fs::create_dir_all(dir).map_err(link_err)?;
    }
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink("/etc/systemd/system/kfleet-ensure.service", &link)
            .map_err(link_err)?;
    }
    Ok(vec![hook, unit_path, link])
}

/// Removes what [`install`] wrote under `root` (both kinds of hook); files without kfleet's
/// marker stay. Returns the files removed and those left with the reason.
pub fn remove(root: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>), HookError> {
    let mut removed = Vec::new();
    let mut kept = Vec::new();
    let unit_path = root.join(UNIT);
    for path in [
        root.join(HookKind::Postinst.path()),
        root.join(HookKind::KernelInstall.path()),
        unit_path.clone(),
    ] {
        if std::fs::symlink_metadata(&path).is_err() {
            continue;
        }
        if !ours(&path) {
            kept.push(path);
            continue;
        }
        std::fs::remove_file(&path).map_err(|source| HookError::Remove {
            path: path.display().to_string(),
            source,
        })?;
        removed.push(path);
    }
    let link = root.join(UNIT_LINK);
    if !unit_path.exists() && std::fs::symlink_metadata(&link).is_ok() {
        std::fs::remove_file(&link).map_err(|source| HookError::Remove {
            path: link.display().to_string(),
            source,
        })?;
        removed.push(link);
    }
    Ok((removed, kept))
}

/// The kernels installed under `root`: each `lib/modules/VERSION` with a kernel image beside it
/// (`boot/vmlinuz-VERSION`, or `lib/modules/VERSION/vmlinuz` as Fedora and EL keep it), by
/// version; a directory without one (a kernel removed but for its extra modules) is skipped.
pub fn installed_kernels(root: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(root.join("lib/modules")) else {
        return Vec::new();
    };
    let mut kernels: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|v| {
            root.join("boot").join(format!("vmlinuz-{v}")).is_file()
                || root.join("lib/modules").join(v).join("vmlinuz").is_file()
        })
        .collect();
    kernels.sort_by(|a, b| crate::text::compare_versions(a, b));
    kernels
}
