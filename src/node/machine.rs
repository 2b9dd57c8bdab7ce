//! This machine's identity, from `/etc/os-release` and the running kernel.

use crate::identity::{Checked, RawIdentity, check, parse_os_release};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("cannot read {path}: {source}; is this a Linux machine with os-release?")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} has no ID= line; cannot tell the distribution")]
    NoId { path: String },
    #[error("no os-release file was named")]
    NoOsRelease,
}

fn read_trimmed(path: &str) -> Result<String, LocalError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|source| LocalError::Read {
            path: path.to_string(),
            source,
        })
}

/// Reads the identity of the machine kfleet runs on. `os_release` defaults to `/etc/os-release`
/// (then `/usr/lib/os-release`); the kernel comes from `/proc/sys/kernel/osrelease` (`uname -r`).
pub fn local_identity(os_release: Option<&Path>) -> Result<Checked, LocalError> {
    let candidates: Vec<String> = match os_release {
        Some(p) => vec![p.display().to_string()],
        None => vec!["/etc/os-release".into(), "/usr/lib/os-release".into()],
    };
    identity_from(&candidates)
}

/// The identity of the host whose root is mounted at `host_root` (a container with the host's
/// `/` mounted): its `etc/os-release` (then `usr/lib/os-release`), and the running kernel, which
/// a container shares with its host.
pub fn host_identity(host_root: &Path) -> Result<Checked, LocalError> {
    let candidates: Vec<String> = ["etc/os-release", "usr/lib/os-release"]
        .iter()
        .map(|f| host_root.join(f).display().to_string())
        .collect();
    identity_from(&candidates)
}

fn identity_from(candidates: &[String]) -> Result<Checked, LocalError> {
    let mut found = Err(LocalError::NoOsRelease);
    for path in candidates {
        found = read_trimmed(path).map(|t| (path.clone(), t));
        if found.is_ok() {
            break;
        }
    }
    let (path, text) = found?;
    let fields = parse_os_release(&text);
    let id = fields.get("ID").cloned().ok_or(LocalError::NoId { path })?;
    let version = fields.get("VERSION_ID").cloned().unwrap_or_default();
    let kernel = read_trimmed("/proc/sys/kernel/osrelease")?;
    let arch = read_trimmed("/proc/sys/kernel/arch")
        .unwrap_or_else(|_| std::env::consts::ARCH.to_string());
    Ok(check(&RawIdentity {
        distribution: &id,
        distro_version: &version,
        architecture: &arch,
        kernel_version: &kernel,
    }))
}
