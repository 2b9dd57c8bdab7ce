//! Per-family grammars for distro versions and `uname -r` strings, with their cross-checks.

use super::{Architecture, Distribution};
use regex::Regex;
use std::sync::LazyLock;

pub(super) enum VersionProblem {
    Invalid(String),
    Unsupported(String),
}

#[expect(
    clippy::expect_used,
    reason = "only built-in patterns, each compiled by the unit tests"
)]
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
            if matches!(
                lower.as_str(),
                "testing" | "unstable" | "sid" | "trixie/sid" | "forky/sid"
            ) {
                return Err(VersionProblem::Unsupported(format!(
                    "Debian {text} has no release number (no VERSION_ID in os-release); kfleet builds numbered releases such as 12 or 13"
                )));
            }
            if let Some(v) = crate::distros::version_of_codename("debian", &lower) {
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
            if major == 6 {
                return Err(VersionProblem::Unsupported(format!(
                    "CentOS 6 ({text}) is end of life and its kernels are not built"
                )));
            }
            if !(7..=12).contains(&major) {
                return Err(bad("a major release between 7 and 12"));
            }
            Ok(major.to_string())
        }
        Distribution::Amazonlinux => {
            let major = numeric_major(&lower).ok_or_else(|| bad("2 or 2023"))?;
            match major {
                2 | 2023 => Ok(major.to_string()),
                2022 => Err(VersionProblem::Unsupported(
                    "Amazon Linux 2022 was a preview, replaced by Amazon Linux 2023; its kernels are not built".into(),
                )),
                1 | 2017 | 2018 => Err(VersionProblem::Unsupported(format!(
                    "Amazon Linux 1 ({text}) is end of life and not built"
                ))),
                _ => Err(bad("2, 2022 or 2023")),
            }
        }
        Distribution::Azurelinux => match numeric_major(&lower) {
            Some(3) => Ok("3.0".to_string()),
            Some(2) | Some(1) => Err(VersionProblem::Unsupported(format!(
                "Azure Linux {text} (CBL-Mariner) reached its end of life; kfleet builds Azure Linux 3.0"
            ))),
            _ => Err(bad("3.0")),
        },
        Distribution::Leap => {
            let (major, minor) = major_minor(&lower).ok_or_else(|| bad("15.6 or 16.0"))?;
            match (major, minor) {
                (15, 6) | (16, _) => Ok(format!("{major}.{minor}")),
                (15, _) | (42, _) => Err(VersionProblem::Unsupported(format!(
                    "openSUSE Leap {text} reached its end of life; kfleet builds Leap 15.6 and 16"
                ))),
                _ => Err(bad("15.6 or 16.0")),
            }
        }
        Distribution::Tumbleweed => {
            let snapshot = TUMBLEWEED_SNAPSHOT.is_match(&lower);
            if !snapshot {
                return Err(bad(
                    "its snapshot, YYYYMMDD such as 20261201 (VERSION_ID in /etc/os-release): the same uname -r is rebuilt from snapshot to snapshot",
                ));
            }
            Ok(lower)
        }
        Distribution::Sles => {
            // os-release VERSION `15-SP6`, VERSION_ID `15.6`.
            let dotted = SLES_SERVICE_PACK.replace(&lower, "$1.$2").into_owned();
            let (major, minor) = major_minor(&dotted)
                .or_else(|| (dotted == "16").then_some((16, 0)))
                .ok_or_else(|| bad("15.6 (15 SP6), 15.7 or 16.0"))?;
            match (major, minor) {
                (15, 6..) | (16, _) => Ok(format!("{major}.{minor}")),
                (11..=15, _) => Err(VersionProblem::Unsupported(format!(
                    "SUSE Linux Enterprise {text} is past its general support (LTSS only); kfleet builds 15 SP6 and later"
                ))),
                _ => Err(bad("15.6 (15 SP6), 15.7 or 16.0")),
            }
        }
        Distribution::Oraclelinux if numeric_major(&lower).is_some_and(|m| m < 8) => {
            Err(VersionProblem::Unsupported(format!(
                "Oracle Linux {text} is in extended support only; kfleet builds Oracle Linux 8, 9 and 10"
            )))
        }
        Distribution::Almalinux
        | Distribution::Rocky
        | Distribution::Oraclelinux
        | Distribution::Rhel => {
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

static TUMBLEWEED_SNAPSHOT: LazyLock<Regex> =
    LazyLock::new(|| re(r"^20\d{2}(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])$"));
static SLES_SERVICE_PACK: LazyLock<Regex> = LazyLock::new(|| re(r"^(\d+)[- ]?sp(\d+)$"));

/// `MAJOR.MINOR` exactly (`15.6`).
fn major_minor(text: &str) -> Option<(u32, u32)> {
    let (major, minor) = text.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

fn numeric_major(text: &str) -> Option<u32> {
    let caps = NUMERIC_VERSION.captures(text)?;
    caps[1].parse().ok()
}

static UBUNTU_KERNEL: LazyLock<Regex> =
    LazyLock::new(|| re(r"^(\d+)\.(\d+)\.(\d+)-(\d+)-([a-z][a-z0-9]*(?:-[a-z0-9]+)*)$"));

/// Ubuntu flavours built for armhf only: no kfleet architecture runs them.
const UBUNTU_ARMHF_ONLY: &[&str] = &["generic-lpae", "lpae", "raspi2", "raspi-nolpae"];
/// Flavours certainly built for arm64 only (besides every `*-64k` flavour).
const UBUNTU_ARM64_ONLY: &[&str] = &[
    "raspi",
    "raspi-realtime",
    "xilinx-zynqmp",
    "snapdragon",
    "bluefield",
    "nvidia-tegra",
    "nvidia-tegra-igx",
    "nvidia-tegra-rt",
];
/// Flavours certainly built for amd64 only.
const UBUNTU_X86_ONLY: &[&str] = &["oem", "intel", "intel-iotg", "intel-iot-realtime", "kvm"];

/// Debian's stock kernel series per release, for the plain `X.Y.0-ABI-flavour` form.
fn debian_series(release: u32) -> Option<(u32, u32)> {
    crate::distros::debian_kernel_series(&release.to_string())
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
        r"^(\d+)\.(\d+)\.(\d+)\+deb(\d+)(?:[.+](\d+))?-{DEBIAN_FLAVOUR}$"
    ))
});

/// Kernel variants of Fedora and EL 9/10 (`+rt`, `+64k`, ...), each with its own package.
const RPM_VARIANT: &str = r"(?:\+(debug|rt|rt-debug|64k|64k-debug|16k|16k-debug))?";
static FEDORA_KERNEL: LazyLock<Regex> = LazyLock::new(|| {
    re(&format!(
        r"^(\d+)\.(\d+)\.(\d+)-([0-9][0-9A-Za-z.]*?)\.fc(\d+)\.([a-z0-9_]+){RPM_VARIANT}$"
    ))
});
/// EL kernels; the release may carry a real-time marker (`553.16.1.rt7.357.el8_10`).
static EL_KERNEL: LazyLock<Regex> = LazyLock::new(|| {
    re(&format!(
        r"^(\d+)\.(\d+)\.(\d+)-([0-9][0-9.]*?(?:\.rt\d+\.\d+)?)\.el(\d+)(?:_(\d+))?\.([a-z0-9_]+){RPM_VARIANT}$"
    ))
});
/// EL kernels of side lines no header chain covers: CentOS Plus (`el7.centos.plus`) and RHEL
/// for ARM (`el7a`).
static EL_SIDE_LINE: LazyLock<Regex> = LazyLock::new(|| {
    re(r"^\d+\.\d+\.\d+-[0-9][0-9.]*\.el\d+(?:_\d+)?(\.centos\.plus|a)\.(x86_64|aarch64)$")
});
/// Oracle's Unbreakable Enterprise Kernel: `5.15.0-309.180.4.el9uek.x86_64` (UEK R7 on 9),
/// `6.12.0-203.76.7.1.el9uek.x86_64` (R8).
static UEK_KERNEL: LazyLock<Regex> =
    LazyLock::new(|| re(r"^(\d+)\.(\d+)\.(\d+)-([0-9][0-9.]*?)\.el(\d+)uek\.([a-z0-9_]+)$"));
/// Azure Linux 3: `6.6.92.2-2.azl3` (a four-part version, no architecture in `uname -r`);
/// `6.6.137.mshv1-1.azl3` is the Hyper-V (MSHV) guest kernel of Kata pods.
static AZURE_KERNEL: LazyLock<Regex> =
    LazyLock::new(|| re(r"^(\d+)\.(\d+)\.(\d+)\.([0-9a-z]+)-(\d+)\.azl(\d+)$"));
/// SUSE kernels: `VERSION-RELEASE-FLAVOUR` (`6.4.0-150600.23.25-default`, Tumbleweed's
/// `6.17.7-1-default`); the package's release adds a rebuild counter (`150600.23.25.1`).
static SUSE_KERNEL: LazyLock<Regex> =
    LazyLock::new(|| re(r"^(\d+)\.(\d+)\.(\d+)-(\d+)((?:\.\d+)*)-([a-z0-9]+)$"));
static AMAZON_KERNEL: LazyLock<Regex> =
    LazyLock::new(|| re(r"^(\d+)\.(\d+)\.(\d+)-(\d+(?:\.\d+)*)\.amzn(\d+)\.([a-z0-9_]+)$"));

/// Validates `kernel_version` for the family and cross-checks it against the other fields.
/// Returns the distro version, refined where the kernel is more precise (Alma/Rocky `elN_M`).
pub(super) fn validate_kernel(
    dist: Distribution,
    distro_version: &str,
    arch: Architecture,
    kver: &str,
) -> Result<String, VersionProblem> {
    let invalid = VersionProblem::Invalid;
    match dist {
        Distribution::Ubuntu => ubuntu(arch, kver)
            .map(|()| distro_version.to_string())
            .map_err(invalid),
        Distribution::Debian => debian(distro_version, arch, kver)
            .map(|()| distro_version.to_string())
            .map_err(invalid),
        Distribution::Fedora => fedora(distro_version, arch, kver)
            .map(|()| distro_version.to_string())
            .map_err(invalid),
        Distribution::Amazonlinux => amazon(distro_version, arch, kver)
            .map(|()| distro_version.to_string())
            .map_err(invalid),
        Distribution::Azurelinux => azure(distro_version, kver),
        Distribution::Leap | Distribution::Tumbleweed | Distribution::Sles => {
            suse(dist, distro_version, arch, kver)
        }
        Distribution::Oraclelinux if kver.contains("uek.") => {
            uek(distro_version, arch, kver).map_err(invalid)
        }
        Distribution::Centos
        | Distribution::Almalinux
        | Distribution::Rocky
        | Distribution::Oraclelinux
        | Distribution::Rhel => {
            if let Some(caps) = EL_SIDE_LINE.captures(kver) {
                let line = if &caps[1] == "a" {
                    "RHEL for ARM (elNa)"
                } else {
                    "CentOS Plus (centos.plus)"
                };
                return Err(VersionProblem::Unsupported(format!(
                    "{kver} is a {line} kernel; no header source covers that line"
                )));
            }
            el(
                dist,
                distro_version,
                arch,
                kver,
                dist != Distribution::Centos,
            )
            .map_err(invalid)
        }
    }
}

fn ubuntu(arch: Architecture, kver: &str) -> Result<(), String> {
    let caps = UBUNTU_KERNEL.captures(kver).ok_or_else(|| {
        format!("'{kver}' is not an Ubuntu kernel; expected VERSION-ABI-FLAVOUR such as 5.15.0-91-generic")
    })?;
    // Flavours come and go with Ubuntu's kernel lines (nvidia-tegra-igx, azure-nvidia, mtk, ...):
    // any flavour of the right shape is accepted; only certain architecture facts are checked.
    let flavour = &caps[5];
    if UBUNTU_ARMHF_ONLY.contains(&flavour) {
        return Err(format!(
            "Ubuntu flavour '{flavour}' is built for armhf only, but architecture is {arch}"
        ));
    }
    let arm64_only = flavour.ends_with("-64k") || UBUNTU_ARM64_ONLY.contains(&flavour);
    if arch == Architecture::X86_64 && arm64_only {
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
    if kver.ends_with("amd64-16k") {
        return Err(format!(
            "'{kver}' is not a Debian kernel: 16k pages are an arm64 flavour (arm64-16k)"
        ));
    }
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

/// `+64k` and `+16k` are page sizes of arm64 kernels only.
fn check_variant(arch: Architecture, variant: Option<&str>, kver: &str) -> Result<(), String> {
    match variant {
        Some(v)
            if (v.starts_with("64k") || v.starts_with("16k")) && arch != Architecture::Aarch64 =>
        {
            Err(format!(
                "{kver} is a +{v} kernel, which only aarch64 has, but architecture is {arch}"
            ))
        }
        _ => Ok(()),
    }
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
    check_variant(arch, caps.get(7).map(|m| m.as_str()), kver)?;
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

/// An Azure Linux kernel: its `azlN` must be the release's major; the MSHV guest kernel (Kata
/// pods' VM) is not a node's kernel.
fn azure(distro_version: &str, kver: &str) -> Result<String, VersionProblem> {
    let caps = AZURE_KERNEL.captures(kver).ok_or_else(|| {
        VersionProblem::Invalid(format!(
            "'{kver}' is not an Azure Linux kernel; expected VERSION-RELEASE.azlN such as 6.6.92.2-2.azl3"
        ))
    })?;
    if caps[4].starts_with("mshv") {
        return Err(VersionProblem::Unsupported(format!(
            "{kver} is the Hyper-V (MSHV) guest kernel of Kata pods, not a node's kernel"
        )));
    }
    let major = &caps[6];
    if distro_version.split('.').next() != Some(major) {
        return Err(VersionProblem::Invalid(format!(
            "azl{major} in kernel_version but distro_version is {distro_version}"
        )));
    }
    Ok(distro_version.to_string())
}

/// A SUSE kernel. Leap and SLES kernels carry their code stream in the release's first number
/// (`150600` is 15 SP6, `160000` 16.0); Tumbleweed's is a plain build number. 64 KiB pages
/// (`64kb`) are an aarch64 flavour.
fn suse(
    dist: Distribution,
    distro_version: &str,
    arch: Architecture,
    kver: &str,
) -> Result<String, VersionProblem> {
    let invalid = |reason: String| Err(VersionProblem::Invalid(reason));
    let Some(caps) = SUSE_KERNEL.captures(kver) else {
        return invalid(format!(
            "'{kver}' is not a SUSE kernel; expected VERSION-RELEASE-FLAVOUR such as 6.4.0-150600.23.25-default"
        ));
    };
    let flavour = &caps[6];
    if flavour == "64kb" && arch != Architecture::Aarch64 {
        return invalid(format!(
            "{kver} is an aarch64 kernel (64 KiB pages) but architecture is {arch}"
        ));
    }
    let stream: u64 = caps[4].parse().unwrap_or(u64::MAX);
    if dist == Distribution::Tumbleweed {
        if stream >= 10_000 {
            return invalid(format!(
                "{kver} is a SUSE Linux Enterprise or Leap kernel (code stream {stream}), not Tumbleweed's"
            ));
        }
        return Ok(distro_version.to_string());
    }
    let (major, minor) = major_minor(distro_version).unwrap_or((0, 0));
    let expected = u64::from(major) * 10_000 + u64::from(minor) * 100;
    if stream != expected {
        return invalid(format!(
            "{kver} is not a kernel of {dist} {distro_version}: its release should start with {expected}"
        ));
    }
    Ok(distro_version.to_string())
}

/// An Oracle UEK kernel: its `elN` must be the release's major; the release keeps its minor
/// (UEK is one line for every minor of a major).
fn uek(distro_version: &str, arch: Architecture, kver: &str) -> Result<String, String> {
    let caps = UEK_KERNEL.captures(kver).ok_or_else(|| {
        format!("'{kver}' is not an Oracle UEK kernel; expected VERSION-RELEASE.elNuek.ARCH such as 5.15.0-309.180.4.el9uek.x86_64")
    })?;
    check_rpm_arch(arch, &caps[6], kver)?;
    let major = &caps[5];
    let want = distro_version.split('.').next().unwrap_or(distro_version);
    if major != want {
        return Err(format!(
            "el{major}uek in kernel_version but distro_version is {distro_version}"
        ));
    }
    Ok(distro_version.to_string())
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
    check_variant(arch, caps.get(8).map(|m| m.as_str()), kver)?;
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
    // A node may run an older minor's kernel than its os-release says (pinned, or not yet
    // rebooted): accepted, the key keeps the node's version and the build follows the kernel's.
    // A kernel newer than the release cannot be.
    match (caps.get(6).map(|m| m.as_str()), want_minor) {
        (Some(kminor), Some(vminor)) if parse_u32(kminor) > parse_u32(vminor) => Err(format!(
            "el{major}_{kminor} in kernel_version is newer than distro_version {distro_version}"
        )),
        (Some(kminor), None) => Ok(format!("{major}.{kminor}")),
        _ => Ok(distro_version.to_string()),
    }
}
