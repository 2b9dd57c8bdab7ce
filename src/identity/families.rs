//! Per-family grammars for distro versions and `uname -r` strings, with their cross-checks.

use super::{Architecture, Distribution};
use regex::Regex;
use std::sync::LazyLock;

pub(super) enum VersionProblem {
    Invalid(String),
    Unsupported(String),
}

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("built-in identity pattern compiles")
}

static UBUNTU_VERSION: LazyLock<Regex> = LazyLock::new(|| re(r"^(\d{2})\.(\d{2})(?:\.\d+)?$"));
static NUMERIC_VERSION: LazyLock<Regex> =
    LazyLock::new(|| re(r"^(\d+)(?:\.(\d+))?(?:\.\d+)*(?:-stream)?$"));

/// Normalises a distro version to the canonical form of its family.
pub(super) fn normalise_version(dist: Distribution, text: &str) -> Result<String, VersionProblem> {
    let lower = text.trim().to_ascii_lowercase();
    let bad = |expected: &str| {
        VersionProblem::Invalid(format!(
            "distro_version '{text}' is not a {dist} version; expected {expected}"
        ))
    };
    match dist {
        Distribution::Ubuntu => {
            let caps = UBUNTU_VERSION
                .captures(&lower)
                .ok_or_else(|| bad("YY.MM such as 22.04"))?;
            let year: u32 = caps[1].parse().map_err(|_| bad("YY.MM such as 22.04"))?;
            let month = &caps[2];
            if !(month == "04" || month == "10") || !(6..=40).contains(&year) {
                return Err(bad("a release such as 20.04, 22.04 or 24.04"));
            }
            Ok(format!("{}.{}", &caps[1], month))
        }
        Distribution::Debian => {
            let from_codename = match lower.as_str() {
                "jessie" => Some("8"),
                "stretch" => Some("9"),
                "buster" => Some("10"),
                "bullseye" => Some("11"),
                "bookworm" => Some("12"),
                "trixie" => Some("13"),
                "forky" => Some("14"),
                _ => None,
            };
            if let Some(v) = from_codename {
                return Ok(v.to_string());
            }
            let major = numeric_major(&lower).ok_or_else(|| bad("a release number such as 12"))?;
            if !(7..=20).contains(&major) {
                return Err(bad("a release number between 7 and 20"));
            }
            Ok(major.to_string())
        }
        Distribution::Fedora => {
            let major = numeric_major(&lower).ok_or_else(|| bad("a release number such as 40"))?;
            if !(19..=60).contains(&major) {
                return Err(bad("a release number between 19 and 60"));
            }
            Ok(major.to_string())
        }
        Distribution::Centos => {
            let major = numeric_major(&lower).ok_or_else(|| bad("a major release such as 9"))?;
            if !(6..=12).contains(&major) {
                return Err(bad("a major release between 6 and 12"));
            }
            Ok(major.to_string())
        }
        Distribution::Amazonlinux => {
            let major = numeric_major(&lower).ok_or_else(|| bad("2 or 2023"))?;
            match major {
                2 | 2022 | 2023 => Ok(major.to_string()),
                1 | 2017 | 2018 => Err(VersionProblem::Unsupported(format!(
                    "Amazon Linux 1 ({text}) is end of life and not built"
                ))),
                _ => Err(bad("2, 2022 or 2023")),
            }
        }
        Distribution::Almalinux | Distribution::Rocky | Distribution::Rhel => {
            let caps = NUMERIC_VERSION
                .captures(&lower)
                .ok_or_else(|| bad("MAJOR.MINOR such as 9.4"))?;
            let major: u32 = caps[1]
                .parse()
                .map_err(|_| bad("MAJOR.MINOR such as 9.4"))?;
            if !(7..=12).contains(&major) {
                return Err(bad("a major release between 7 and 12"));
            }
            Ok(match caps.get(2) {
                Some(minor) => format!("{major}.{}", minor.as_str().parse::<u32>().unwrap_or(0)),
                None => major.to_string(),
            })
        }
    }
}

fn numeric_major(text: &str) -> Option<u32> {
    let caps = NUMERIC_VERSION.captures(text)?;
    caps[1].parse().ok()
}

static UBUNTU_KERNEL: LazyLock<Regex> =
    LazyLock::new(|| re(r"^(\d+)\.(\d+)\.(\d+)-(\d+)-([a-z][a-z0-9]*(?:-[a-z0-9]+)*)$"));

const UBUNTU_FLAVOURS: &[&str] = &[
    "generic",
    "generic-64k",
    "generic-lpae",
    "lowlatency",
    "lowlatency-64k",
    "aws",
    "aws-fips",
    "azure",
    "azure-fde",
    "azure-cvm",
    "azure-fips",
    "gcp",
    "gcp-fips",
    "gke",
    "gkeop",
    "oracle",
    "oracle-64k",
    "ibm",
    "raspi",
    "raspi2",
    "raspi-nolpae",
    "nvidia",
    "nvidia-64k",
    "nvidia-lowlatency",
    "kvm",
    "oem",
    "intel",
    "intel-iotg",
    "realtime",
    "fips",
    "virtual",
    "xilinx-zynqmp",
    "snapdragon",
    "bluefield",
];
const UBUNTU_ARM_ONLY: &[&str] = &[
    "generic-64k",
    "generic-lpae",
    "lowlatency-64k",
    "oracle-64k",
    "raspi",
    "raspi2",
    "raspi-nolpae",
    "nvidia-64k",
    "xilinx-zynqmp",
    "snapdragon",
    "bluefield",
];
const UBUNTU_X86_ONLY: &[&str] = &["oem", "intel", "intel-iotg", "kvm"];

/// Debian's stock kernel series per release, for the plain `X.Y.0-ABI-flavour` form.
fn debian_series(release: u32) -> Option<(u32, u32)> {
    match release {
        8 => Some((3, 16)),
        9 => Some((4, 9)),
        10 => Some((4, 19)),
        11 => Some((5, 10)),
        12 => Some((6, 1)),
        13 => Some((6, 12)),
        _ => None,
    }
}

const DEBIAN_FLAVOUR: &str = r"(?:(cloud|rt)-)?(amd64|arm64)(?:-16k)?";
static DEBIAN_PLAIN: LazyLock<Regex> =
    LazyLock::new(|| re(&format!(r"^(\d+)\.(\d+)\.(\d+)-(\d+)-{DEBIAN_FLAVOUR}$")));
static DEBIAN_BACKPORT_DEB: LazyLock<Regex> = LazyLock::new(|| {
    re(&format!(
        r"^(\d+)\.(\d+)\.(\d+)-0\.deb(\d+)\.(\d+)-{DEBIAN_FLAVOUR}$"
    ))
});
static DEBIAN_BACKPORT_BPO: LazyLock<Regex> = LazyLock::new(|| {
    re(&format!(
        r"^(\d+)\.(\d+)\.(\d+)(?:-0\.bpo\.(\d+)|\+bpo)-{DEBIAN_FLAVOUR}$"
    ))
});
static DEBIAN_PLUS_DEB: LazyLock<Regex> = LazyLock::new(|| {
    re(&format!(
        r"^(\d+)\.(\d+)\.(\d+)\+deb(\d+)(?:\+(\d+))?-{DEBIAN_FLAVOUR}$"
    ))
});

static FEDORA_KERNEL: LazyLock<Regex> = LazyLock::new(|| {
    re(r"^(\d+)\.(\d+)\.(\d+)-([0-9][0-9A-Za-z.]*?)\.fc(\d+)\.([a-z0-9_]+)(?:\+debug)?$")
});
static EL_KERNEL: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"^(\d+)\.(\d+)\.(\d+)-([0-9][0-9.]*?)\.el(\d+)(?:_(\d+))?\.([a-z0-9_]+)(?:\+(?:debug|rt|rt-debug|64k|64k-debug))?$",
    )
});
static AMAZON_KERNEL: LazyLock<Regex> =
    LazyLock::new(|| re(r"^(\d+)\.(\d+)\.(\d+)-(\d+(?:\.\d+)*)\.amzn(\d+)\.([a-z0-9_]+)$"));

/// Validates `kernel_version` for the family and cross-checks it against the other fields.
/// Returns the distro version, refined where the kernel is more precise (Alma/Rocky `elN_M`).
pub(super) fn validate_kernel(
    dist: Distribution,
    distro_version: &str,
    arch: Architecture,
    kver: &str,
) -> Result<String, String> {
    match dist {
        Distribution::Ubuntu => ubuntu(arch, kver).map(|()| distro_version.to_string()),
        Distribution::Debian => {
            debian(distro_version, arch, kver).map(|()| distro_version.to_string())
        }
        Distribution::Fedora => {
            fedora(distro_version, arch, kver).map(|()| distro_version.to_string())
        }
        Distribution::Amazonlinux => {
            amazon(distro_version, arch, kver).map(|()| distro_version.to_string())
        }
        Distribution::Centos => el(dist, distro_version, arch, kver, false),
        Distribution::Almalinux | Distribution::Rocky | Distribution::Rhel => {
            el(dist, distro_version, arch, kver, true)
        }
    }
}

fn ubuntu(arch: Architecture, kver: &str) -> Result<(), String> {
    let caps = UBUNTU_KERNEL.captures(kver).ok_or_else(|| {
        format!("'{kver}' is not an Ubuntu kernel; expected VERSION-ABI-FLAVOUR such as 5.15.0-91-generic")
    })?;
    let flavour = &caps[5];
    if !UBUNTU_FLAVOURS.contains(&flavour) {
        return Err(format!(
            "unknown Ubuntu kernel flavour '{flavour}' in {kver}; known flavours include generic, lowlatency, aws, azure, gcp, gke, gkeop, oracle, raspi, nvidia, kvm"
        ));
    }
    if arch == Architecture::X86_64 && UBUNTU_ARM_ONLY.contains(&flavour) {
        return Err(format!(
            "Ubuntu flavour '{flavour}' is built for arm64 only but architecture is x86_64"
        ));
    }
    if arch == Architecture::Aarch64 && UBUNTU_X86_ONLY.contains(&flavour) {
        return Err(format!(
            "Ubuntu flavour '{flavour}' is built for amd64 only but architecture is aarch64"
        ));
    }
    Ok(())
}

fn check_debian_flavour_arch(
    arch: Architecture,
    flavour_arch: &str,
    kver: &str,
) -> Result<(), String> {
    if flavour_arch != arch.debian_name() {
        return Err(format!(
            "{kver} is a Debian {flavour_arch} kernel but architecture is {arch}"
        ));
    }
    Ok(())
}

fn parse_u32(text: &str) -> u32 {
    text.parse().unwrap_or(u32::MAX)
}

fn debian(distro_version: &str, arch: Architecture, kver: &str) -> Result<(), String> {
    let release = parse_u32(distro_version);
    // 6.12.57+deb13-amd64 and 5.10.0-0.deb10.30-amd64 both name their release.
    for pattern in [&*DEBIAN_PLUS_DEB, &*DEBIAN_BACKPORT_DEB] {
        if let Some(caps) = pattern.captures(kver) {
            check_debian_flavour_arch(arch, &caps[7], kver)?;
            let marker = parse_u32(&caps[4]);
            if marker != release {
                return Err(format!(
                    "deb{marker} in kernel_version but distro_version is {distro_version}"
                ));
            }
            return Ok(());
        }
    }
    if let Some(caps) = DEBIAN_BACKPORT_BPO.captures(kver) {
        check_debian_flavour_arch(arch, &caps[6], kver)?;
        return Ok(());
    }
    if let Some(caps) = DEBIAN_PLAIN.captures(kver) {
        check_debian_flavour_arch(arch, &caps[6], kver)?;
        let series = (parse_u32(&caps[1]), parse_u32(&caps[2]));
        if let Some(expected) = debian_series(release)
            && expected != series
        {
            let owner = (7..=14)
                .find(|r| debian_series(*r) == Some(series))
                .map(|r| format!("; {}.{} is Debian {r}'s series", series.0, series.1))
                .unwrap_or_default();
            return Err(format!(
                "Debian {release} ships {}.{} kernels, not {kver}{owner}",
                expected.0, expected.1
            ));
        }
        return Ok(());
    }
    Err(format!(
        "'{kver}' is not a Debian kernel; expected forms such as 6.1.0-18-amd64, 6.1.0-26-cloud-arm64, 5.10.0-0.deb10.30-amd64 or 6.12.57+deb13-amd64"
    ))
}

fn check_rpm_arch(arch: Architecture, suffix: &str, kver: &str) -> Result<(), String> {
    if suffix != arch.as_str() {
        return Err(format!(
            "{kver} is built for {suffix} but architecture is {arch}"
        ));
    }
    Ok(())
}

/// Fedora and Amazon Linux: `VERSION-RELEASE.{prefix}N.ARCH`, where N must be the distro version.
fn rpm_with_marker(
    pattern: &Regex,
    prefix: &str,
    expected: &str,
    distro_version: &str,
    arch: Architecture,
    kver: &str,
) -> Result<(), String> {
    let caps = pattern
        .captures(kver)
        .ok_or_else(|| format!("'{kver}' is not {expected}"))?;
    check_rpm_arch(arch, &caps[6], kver)?;
    let marker = &caps[5];
    if marker != distro_version {
        return Err(format!(
            "{prefix}{marker} in kernel_version but distro_version is {distro_version}"
        ));
    }
    Ok(())
}

fn fedora(distro_version: &str, arch: Architecture, kver: &str) -> Result<(), String> {
    rpm_with_marker(
        &FEDORA_KERNEL,
        "fc",
        "a Fedora kernel; expected VERSION-RELEASE.fcN.ARCH such as 6.8.9-300.fc40.x86_64",
        distro_version,
        arch,
        kver,
    )
}

fn amazon(distro_version: &str, arch: Architecture, kver: &str) -> Result<(), String> {
    rpm_with_marker(
        &AMAZON_KERNEL,
        "amzn",
        "an Amazon Linux kernel; expected forms such as 5.10.205-195.807.amzn2.x86_64 or 6.1.66-91.160.amzn2023.x86_64",
        distro_version,
        arch,
        kver,
    )
}

fn el(
    dist: Distribution,
    distro_version: &str,
    arch: Architecture,
    kver: &str,
    minor_matters: bool,
) -> Result<String, String> {
    let caps = EL_KERNEL.captures(kver).ok_or_else(|| {
        format!("'{kver}' is not a {dist} kernel; expected VERSION-RELEASE.elN[_M].ARCH such as 5.14.0-427.13.1.el9_4.x86_64")
    })?;
    check_rpm_arch(arch, &caps[7], kver)?;
    let major = &caps[5];
    let (want_major, want_minor) = match distro_version.split_once('.') {
        Some((ma, mi)) => (ma, Some(mi)),
        None => (distro_version, None),
    };
    if major != want_major {
        let marker = match caps.get(6) {
            Some(m) => format!("el{major}_{}", m.as_str()),
            None => format!("el{major}"),
        };
        return Err(format!(
            "{marker} in kernel_version but distro_version is {distro_version}"
        ));
    }
    if !minor_matters {
        return Ok(major.to_string());
    }
    match (caps.get(6).map(|m| m.as_str()), want_minor) {
        (Some(kminor), Some(vminor)) if kminor != vminor => Err(format!(
            "el{major}_{kminor} in kernel_version but distro_version is {distro_version}"
        )),
        (Some(kminor), None) => Ok(format!("{major}.{kminor}")),
        _ => Ok(distro_version.to_string()),
    }
}
