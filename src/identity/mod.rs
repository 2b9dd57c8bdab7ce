//! Kernel identities: the `(distribution, distro_version, architecture, kernel_version)` tuple a
//! driver artifact is built for, with alias normalisation and per-family validation.

mod families;
mod os_release;
mod osimage;

pub use os_release::parse_os_release;
pub use osimage::distribution_from_os_image;

use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest field kfleet accepts; real `uname -r` strings stay far below this.
const MAX_FIELD_LEN: usize = 128;

/// Distributions kfleet recognises, under their canonical (build-service wire format) names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    Ubuntu,
    Debian,
    Fedora,
    Centos,
    Amazonlinux,
    Almalinux,
    Rocky,
    Oraclelinux,
    Azurelinux,
    /// openSUSE Leap (os-release `opensuse-leap`): 15.6 and 16.x, built from SUSE Linux
    /// Enterprise's own binaries.
    Leap,
    /// openSUSE Tumbleweed, keyed by its snapshot (`VERSION_ID`, `20261201`).
    Tumbleweed,
    Sles,
    Rhel,
}

impl Distribution {
    pub const ALL: [Distribution; 13] = [
        Self::Ubuntu,
        Self::Debian,
        Self::Fedora,
        Self::Centos,
        Self::Amazonlinux,
        Self::Almalinux,
        Self::Rocky,
        Self::Oraclelinux,
        Self::Azurelinux,
        Self::Leap,
        Self::Tumbleweed,
        Self::Sles,
        Self::Rhel,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ubuntu => "ubuntu",
            Self::Debian => "debian",
            Self::Fedora => "fedora",
            Self::Centos => "centos",
            Self::Amazonlinux => "amazonlinux",
            Self::Almalinux => "almalinux",
            Self::Rocky => "rocky",
            Self::Oraclelinux => "oraclelinux",
            Self::Azurelinux => "azurelinux",
            Self::Leap => "leap",
            Self::Tumbleweed => "tumbleweed",
            Self::Sles => "sles",
            Self::Rhel => "rhel",
        }
    }

    /// Resolves a distribution name or alias (os-release `ID`, `amzn`, `al2023`, ...).
    /// The second value is the distro version the alias implies, if any.
    pub fn from_alias(name: &str) -> Option<(Self, Option<&'static str>)> {
        let lower = name.trim().to_ascii_lowercase();
        let found = match lower.as_str() {
            "ubuntu" => (Self::Ubuntu, None),
            "debian" => (Self::Debian, None),
            // Fedora CoreOS runs Fedora's kernels.
            "fedora" | "fedora-coreos" | "fcos" => (Self::Fedora, None),
            "centos" | "centos-stream" | "centos_stream" | "centosstream" => (Self::Centos, None),
            "amazonlinux" | "amzn" | "amazon" | "amazon-linux" => (Self::Amazonlinux, None),
            "al2" | "amzn2" => (Self::Amazonlinux, Some("2")),
            "al2023" | "amzn2023" => (Self::Amazonlinux, Some("2023")),
            "almalinux" | "alma" => (Self::Almalinux, None),
            "rocky" | "rockylinux" | "rocky-linux" => (Self::Rocky, None),
            // os-release ID=ol.
            "oraclelinux" | "ol" | "oracle" | "oracle-linux" => (Self::Oraclelinux, None),
            // AKS's node OS; os-release ID=azurelinux.
            "azurelinux" | "azure-linux" | "azl" => (Self::Azurelinux, None),
            // os-release IDs: opensuse-leap, opensuse-tumbleweed, sles (`opensuse` before 2017).
            "leap" | "opensuse-leap" | "opensuse" => (Self::Leap, None),
            "tumbleweed" | "opensuse-tumbleweed" => (Self::Tumbleweed, None),
            "sles" | "sle" | "suse" | "sled" | "sles_sap" => (Self::Sles, None),
            "rhel" | "redhat" | "red-hat" => (Self::Rhel, None),
            _ => return None,
        };
        Some(found)
    }

    /// SUSE's families (Leap, Tumbleweed, SLES): `VERSION-RELEASE-FLAVOUR` kernels packaged per
    /// flavour, with a rebuild counter on the package's release.
    pub fn suse(self) -> bool {
        matches!(self, Self::Leap | Self::Tumbleweed | Self::Sles)
    }

    /// The directory under `/lib/modules/KERNEL` an out-of-tree module goes to: Debian's and
    /// Ubuntu's depmod configuration searches `updates/` before the kernel's own modules and
    /// `extra/` after them, so only `updates/` wins over an in-tree module of the same name;
    /// the EL family's weak-modules and kmods use `extra/`.
    pub fn module_dir(self) -> &'static str {
        // SUSE's depmod configuration ranks `updates/` first too; its KMPs install there.
        if self.suse() || matches!(self, Self::Ubuntu | Self::Debian) {
            "updates"
        } else {
            "extra"
        }
    }
}

impl fmt::Display for Distribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Operating systems that are recognised but never built for, with the reason shown to the user.
fn known_unsupported_os(name: &str) -> Option<&'static str> {
    let lower = name.trim().to_ascii_lowercase();
    let reason = match lower.as_str() {
        "bottlerocket" => {
            "Bottlerocket is an immutable OS; it loads drivers through its own images"
        }
        "flatcar" | "coreos" | "rhcos" => "container OSes (Flatcar, CoreOS) are not a build target",
        "cos" | "container-optimized-os" => "Container-Optimized OS is not a build target",
        "talos" => "Talos is an immutable OS and not a build target",
        "sle-micro" | "sl-micro" | "opensuse-leap-micro" | "opensuse-microos" => {
            "SUSE's transactional systems (SLE Micro, Leap Micro, MicroOS) have a read-only root; their modules ship as packages in a transactional update"
        }
        "photon" => "Photon OS is not a build target",
        "mariner" | "cbl-mariner" => {
            "CBL-Mariner 2.0 reached its end of life in July 2025; Azure Linux 3.0 (azurelinux) is its successor"
        }
        "alpine" | "arch" | "gentoo" | "nixos" | "linuxmint" | "windows" => {
            "this OS is not a build target"
        }
        _ => return None,
    };
    Some(reason)
}

/// CPU architectures kfleet builds for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    #[serde(rename = "x86_64")]
    X86_64,
    Aarch64,
}

impl Architecture {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64",
            Self::Aarch64 => "aarch64",
        }
    }

    /// Debian's name for the architecture (`amd64`, `arm64`).
    pub fn debian_name(self) -> &'static str {
        match self {
            Self::X86_64 => "amd64",
            Self::Aarch64 => "arm64",
        }
    }

    pub fn from_alias(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "x86_64" | "amd64" | "x64" | "x86-64" => Some(Self::X86_64),
            "aarch64" | "arm64" | "armv8" => Some(Self::Aarch64),
            _ => None,
        }
    }
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn known_unsupported_arch(name: &str) -> bool {
    matches!(
        name.trim().to_ascii_lowercase().as_str(),
        "i386"
            | "i686"
            | "x86"
            | "386"
            | "armv7l"
            | "armv6l"
            | "armhf"
            | "arm"
            | "ppc64le"
            | "ppc64"
            | "s390x"
            | "riscv64"
            | "mips64"
            | "loongarch64"
    )
}

/// A validated kernel identity. `kernel_version` is exactly `uname -r`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KernelIdentity {
    pub distribution: Distribution,
    pub distro_version: String,
    pub architecture: Architecture,
    pub kernel_version: String,
}

impl KernelIdentity {
    /// Parses and validates the four fields; unsupported identities are an error here.
    pub fn parse(
        distribution: &str,
        distro_version: &str,
        architecture: &str,
        kernel_version: &str,
    ) -> Result<Self, Rejection> {
        let checked = check(&RawIdentity {
            distribution,
            distro_version,
            architecture,
            kernel_version,
        });
        match checked.verdict {
            Verdict::Valid(id) => Ok(id),
            Verdict::Unsupported(reason) => Err(Rejection::Unsupported(reason)),
            Verdict::Invalid(reason) => Err(Rejection::Invalid(reason)),
        }
    }

    /// Parses a canonical key `{distribution}/{distro_version}/{architecture}/{kernel_version}`.
    pub fn from_key(key: &str) -> Result<Self, Rejection> {
        let parts: Vec<&str> = key.split('/').collect();
        match parts.as_slice() {
            [d, v, a, k] => Self::parse(d, v, a, k),
            _ => Err(Rejection::Invalid(format!(
                "'{key}' is not an identity key; expected distribution/distro_version/architecture/kernel_version"
            ))),
        }
    }

    /// The canonical key `{distribution}/{distro_version}/{architecture}/{kernel_version}`.
    pub fn key(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.distribution, self.distro_version, self.architecture, self.kernel_version
        )
    }
}

impl fmt::Display for KernelIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

/// Why an identity cannot be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("invalid: {0}")]
    Invalid(String),
}

/// Four fields as read from an inventory, before normalisation.
#[derive(Clone, Copy, Debug)]
pub struct RawIdentity<'a> {
    pub distribution: &'a str,
    pub distro_version: &'a str,
    pub architecture: &'a str,
    pub kernel_version: &'a str,
}

/// The outcome of checking one identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Valid(KernelIdentity),
    Unsupported(String),
    Invalid(String),
}

/// A checked identity: the fields normalised as far as they could be, and the verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    pub distribution: String,
    pub distro_version: String,
    pub architecture: String,
    pub kernel_version: String,
    pub verdict: Verdict,
}

impl Checked {
    pub fn key(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.distribution, self.distro_version, self.architecture, self.kernel_version
        )
    }

    /// The identity, when the verdict is valid.
    pub fn identity(&self) -> Option<&KernelIdentity> {
        match &self.verdict {
            Verdict::Valid(id) => Some(id),
            Verdict::Unsupported(_) | Verdict::Invalid(_) => None,
        }
    }
}

/// Characters that never appear in a real identity and could inject into a shell or workflow.
fn unsafe_char(field: &str, value: &str) -> Option<String> {
    if value.contains("..") {
        return Some(format!(
            "{field} contains '..', which could escape a path; identities never contain it"
        ));
    }
    let bad = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+' | '~')))?;
    let shown = match bad {
        '\n' => "a newline".to_string(),
        '\r' => "a carriage return".to_string(),
        '\t' => "a tab".to_string(),
        ' ' => "a space".to_string(),
        c if c.is_control() => format!("control character U+{:04X}", c as u32),
        c => format!("'{c}'"),
    };
    Some(format!(
        "{field} contains {shown}, which could inject into a shell or workflow; only letters, digits and . - _ + ~ are allowed"
    ))
}

/// Checks one identity: safety first, then distribution and architecture, then the family's
/// kernel-string grammar and cross-checks.
/// Longest driver version (a release tag) kfleet accepts.
pub const MAX_DRIVER_VERSION: usize = 100;

/// A driver version (release tag) is a plain token: letters, digits and `. _ + -`, starting with
/// a letter or digit, no `..`, at most [`MAX_DRIVER_VERSION`] characters. It reaches run titles,
/// asset names and the build job.
pub fn check_driver_version(v: &str) -> Result<(), String> {
    let shown: String = v.chars().take(40).flat_map(char::escape_debug).collect();
    if v.is_empty() || v.len() > MAX_DRIVER_VERSION {
        return Err(format!(
            "driver_version '{shown}' must be 1 to {MAX_DRIVER_VERSION} characters"
        ));
    }
    let plain = v
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-'));
    let starts = v.starts_with(|c: char| c.is_ascii_alphanumeric());
    if !plain || !starts || v.contains("..") {
        return Err(format!(
            "driver_version '{shown}' may only hold letters, digits and . _ + - (starting with a letter or digit, no ..)"
        ));
    }
    Ok(())
}

pub fn check(raw: &RawIdentity<'_>) -> Checked {
    check_with_os_image(raw, None)
}

/// Like [`check`], with the Kubernetes `osImage` the fields were derived from, so nodes on an OS
/// kfleet does not know are reported as unsupported with the osImage as reason.
pub fn check_with_os_image(raw: &RawIdentity<'_>, os_image: Option<&str>) -> Checked {
    let dist_in = raw.distribution.trim();
    let ver_in = raw.distro_version.trim();
    let arch_in = raw.architecture.trim();
    let kver = raw.kernel_version;
    let mut out = Checked {
        distribution: dist_in.to_ascii_lowercase(),
        distro_version: ver_in.to_string(),
        architecture: arch_in.to_ascii_lowercase(),
        kernel_version: kver.to_string(),
        // Replaced by every return below.
        verdict: Verdict::Invalid(String::new()),
    };
    let invalid = |mut out: Checked, reason: String| {
        out.verdict = Verdict::Invalid(reason);
        out
    };
    let unsupported = |mut out: Checked, reason: String| {
        out.verdict = Verdict::Unsupported(reason);
        out
    };

    for (field, value) in [
        ("distribution", dist_in),
        ("distro_version", ver_in),
        ("architecture", arch_in),
        ("kernel_version", kver),
    ] {
        if value.is_empty() {
            if field == "distro_version" {
                continue;
            }
            return invalid(out, format!("{field} is empty"));
        }
        if value.len() > MAX_FIELD_LEN {
            return invalid(
                out,
                format!(
                    "{field} is {} characters long; at most {MAX_FIELD_LEN} are accepted",
                    value.len()
                ),
            );
        }
        if let Some(reason) = unsafe_char(field, value) {
            return invalid(out, reason);
        }
    }

    if let Some(arch) = Architecture::from_alias(arch_in) {
        out.architecture = arch.as_str().to_string();
    }
    let Some((distribution, implied_version)) = Distribution::from_alias(dist_in) else {
        if let Some(why) = known_unsupported_os(dist_in) {
            let reason = match os_image {
                Some(image) => format!("{image}: {why}"),
                None => format!("{dist_in}: {why}"),
            };
            return unsupported(out, reason);
        }
        if let Some(image) = os_image {
            return unsupported(
                out,
                format!("{image}: not a distribution kfleet recognises or builds for"),
            );
        }
        return invalid(
            out,
            format!(
                "unknown distribution '{dist_in}'; expected one of ubuntu, debian, fedora, centos, amazonlinux, almalinux, rocky, oraclelinux, azurelinux, leap, tumbleweed, sles, rhel (or an alias such as amzn, al2023, centos-stream, ol, opensuse-leap)"
            ),
        );
    };
    out.distribution = distribution.as_str().to_string();

    let version_text = match (implied_version, ver_in.is_empty()) {
        (Some(implied), true) => implied,
        (None, true) if distribution == Distribution::Debian => {
            return unsupported(
                out,
                "Debian testing/unstable has no release number (no VERSION_ID in os-release); kfleet builds numbered releases such as 12 or 13".to_string(),
            );
        }
        (None, true) => return invalid(out, "distro_version is empty".to_string()),
        (_, false) => ver_in,
    };
    let distro_version = match families::normalise_version(distribution, version_text) {
        Ok(v) => v,
        Err(families::VersionProblem::Invalid(reason)) => return invalid(out, reason),
        Err(families::VersionProblem::Unsupported(reason)) => {
            out.distro_version = version_text.to_string();
            return unsupported(out, reason);
        }
    };
    if let Some(implied) = implied_version
        && distro_version != implied
    {
        return invalid(
            out,
            format!(
                "distribution '{dist_in}' means version {implied} but distro_version is {ver_in}"
            ),
        );
    }
    out.distro_version = distro_version.clone();

    let Some(architecture) = Architecture::from_alias(arch_in) else {
        if known_unsupported_arch(arch_in) {
            return unsupported(
                out,
                format!("architecture {arch_in} is not built; kfleet builds x86_64 and aarch64"),
            );
        }
        return invalid(
            out,
            format!("unknown architecture '{arch_in}'; expected x86_64 (amd64) or aarch64 (arm64)"),
        );
    };
    out.architecture = architecture.as_str().to_string();

    let distro_version =
        match families::validate_kernel(distribution, &distro_version, architecture, kver) {
            Ok(refined) => refined,
            Err(families::VersionProblem::Invalid(reason)) => return invalid(out, reason),
            Err(families::VersionProblem::Unsupported(reason)) => return unsupported(out, reason),
        };
    out.distro_version = distro_version.clone();

    if let Some(entitled) =
        crate::distros::entitlement(distribution.as_str(), &distro_version, kver)
    {
        return unsupported(
            out,
            format!("needs {}: {}", entitled.needs, entitled.reason),
        );
    }

    out.verdict = Verdict::Valid(KernelIdentity {
        distribution,
        distro_version,
        architecture,
        kernel_version: kver.to_string(),
    });
    out
}

#[cfg(test)]
mod tests;
