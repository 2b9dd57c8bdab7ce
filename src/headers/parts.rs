//! The pieces of a kernel identity that URL templates and package names use: RPM version and
//! release, Debian/Ubuntu ABI and flavour, codename, CentOS vault directory, variant, series and
//! source package. Facts about releases come from `assets/distro-releases.toml` (`distros`).

use crate::identity::{Distribution, KernelIdentity};
use serde::Serialize;

/// The pieces of a kernel identity that URL templates and package names use.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KernelParts {
    pub kernel: String,
    /// RPM version (`5.14.0`) or upstream version for Debian/Ubuntu (`6.1.0`).
    pub version: String,
    /// RPM release without the arch (`427.13.1.el9_4`); Debian/Ubuntu ABI (`18`, `91`).
    pub release: String,
    pub arch: String,
    pub deb_arch: String,
    pub distro_version: String,
    pub major: String,
    pub minor: String,
    /// Debian/Ubuntu suite codename (empty where `assets/distro-releases.toml` has none).
    pub codename: String,
    pub distribution: String,
    /// Debian/Ubuntu flavour (`amd64`, `cloud-arm64`, `generic`, `aws`).
    pub flavour: String,
    /// Debian/Ubuntu kernel without the flavour (`6.1.0-18`, `5.15.0-91`, `6.12.57+deb13`).
    pub abi: String,
    /// CentOS: the vault directory that holds the kernel (`8.5.2111` for `4.18.0-348.7.1.el8_5`,
    /// `7.9.2009` for `3.10.0-1160.*`, `8-stream` past the last point release); Alma/Rocky: the
    /// kernel's own MAJOR.MINOR (a node pinned to an older minor's kernel finds it in that
    /// minor's repositories); other families: the distro version.
    pub vault_release: String,
    /// RPM kernel variant (`64k`, `rt`, `debug`, `64k-debug`, ...; EL 8's real-time kernels carry
    /// `rt` in their release): its packages are `kernel-{variant}-devel` and so on.
    pub variant: String,
    /// `MAJOR.MINOR` of the kernel (`6.12`).
    pub series: String,
    /// RPM families: the source package the kernel is built from (`kernel`; `kernel-rt` for EL 8's
    /// real-time kernels; `kernel6.12` for Amazon Linux 2023's 6.12): Koji builds and package
    /// names follow it.
    pub srpm: String,
    /// The release is past its end of life (`assets/distro-releases.toml`).
    pub end_of_life: bool,
    /// Its packages moved for good to the archive of old releases.
    pub archived: bool,
    /// SUSE (Leap, Tumbleweed, SLES): a package's release adds a rebuild counter to the uname's
    /// (`150600.23.25` is packaged as `150600.23.25.1`), and package names are written out per
    /// flavour (`kernel-{flavour}-devel`).
    #[serde(skip)]
    pub suse: bool,
}

/// CentOS Linux point releases by the kernel release's first number (each point release rebased
/// the kernel; its updates kept that number): (major, first release number, vault directory).
/// Only the stock kernels: 3.10.0 on 7, 4.18.0 on 8.
const CENTOS_POINT_RELEASES: &[(&str, u32, &str)] = &[
    ("7", 123, "7.0.1406"),
    ("7", 229, "7.1.1503"),
    ("7", 327, "7.2.1511"),
    ("7", 514, "7.3.1611"),
    ("7", 693, "7.4.1708"),
    ("7", 862, "7.5.1804"),
    ("7", 957, "7.6.1810"),
    ("7", 1062, "7.7.1908"),
    ("7", 1127, "7.8.2003"),
    ("7", 1160, "7.9.2009"),
    ("8", 80, "8.0.1905"),
    ("8", 147, "8.1.1911"),
    ("8", 193, "8.2.2004"),
    ("8", 240, "8.3.2011"),
    ("8", 305, "8.4.2105"),
    ("8", 348, "8.5.2111"),
];

/// The CentOS vault directory for a kernel release: the point release whose kernel it is, or
/// `{major}-stream` for Stream kernels. CentOS Linux 8 point releases carry only their own kernel
/// number (`305.*` in 8.4); Stream 8 built the numbers in between (`4.18.0-277.el8`) and went past
/// 348, so those live in the `8-stream` vault. 9 and later are Stream only.
fn centos_vault_release(major: &str, version: &str, release: &str) -> String {
    let stock = matches!((major, version), ("7", "3.10.0") | ("8", "4.18.0"));
    let number: Option<u32> = release
        .split('.')
        .next()
        .and_then(|n| n.parse().ok())
        .filter(|_| stock);
    let point = CENTOS_POINT_RELEASES
        .iter()
        .filter(|(m, _, _)| *m == major)
        .collect::<Vec<_>>();
    let stream_between = major == "8" && number.is_some_and(|n| point.iter().all(|p| p.1 != n));
    match (number, point.last()) {
        (Some(n), Some(last)) if n <= last.1 && !stream_between => point
            .iter()
            .rev()
            .find(|(_, first, _)| n >= *first)
            .map_or_else(|| point[0].2.to_string(), |(_, _, dir)| dir.to_string()),
        _ => format!("{major}-stream"),
    }
}

/// The minor release of an EL kernel's release (`427.13.1.el9_4` -> `4`).
fn el_minor(release: &str) -> Option<&str> {
    let (_, tail) = release.rsplit_once(".el")?;
    let (_, minor) = tail.split_once('_')?;
    minor.chars().all(|c| c.is_ascii_digit()).then_some(minor)
}

impl KernelParts {
    pub fn of(id: &KernelIdentity) -> Self {
        let kernel = id.kernel_version.clone();
        let arch = id.architecture.as_str().to_string();
        let (major, minor) = match id.distro_version.split_once('.') {
            Some((a, b)) => (a.to_string(), b.to_string()),
            None => (id.distro_version.clone(), String::new()),
        };
        let (version, release, flavour, abi) = match id.distribution {
            Distribution::Ubuntu | Distribution::Debian => {
                // 5.15.0-91-generic, 6.1.0-18-cloud-amd64, 5.10.0-0.deb10.30-amd64, 6.12.57+deb13-amd64
                let (head, rest) = kernel.split_once('-').unwrap_or((&kernel, ""));
                let (version, after_plus) = match head.split_once('+') {
                    Some((v, _)) => (v.to_string(), true),
                    None => (head.to_string(), false),
                };
                let (abi, flavour) = if after_plus {
                    (head.to_string(), rest.to_string())
                } else {
                    let (abi_tail, flavour) = rest.split_once('-').unwrap_or((rest, ""));
                    (format!("{head}-{abi_tail}"), flavour.to_string())
                };
                let release = abi
                    .split_once('-')
                    .map(|(_, r)| r.to_string())
                    .unwrap_or_default();
                (version, release, flavour, abi)
            }
            d if d.suse() => {
                // 6.4.0-150600.23.25-default
                let (head, flavour) = kernel.rsplit_once('-').unwrap_or((&kernel, ""));
                let (v, r) = head.split_once('-').unwrap_or((head, ""));
                (
                    v.to_string(),
                    r.to_string(),
                    flavour.to_string(),
                    String::new(),
                )
            }
            _ => {
                // VERSION-RELEASE.ARCH[+variant]
                let base = kernel.split('+').next().unwrap_or(&kernel);
                let no_arch = base.strip_suffix(&format!(".{arch}")).unwrap_or(base);
                let (v, r) = no_arch.split_once('-').unwrap_or((no_arch, ""));
                (v.to_string(), r.to_string(), String::new(), String::new())
            }
        };
        let vault_release = match id.distribution {
            Distribution::Centos => centos_vault_release(&major, &version, &release),
            Distribution::Almalinux
            | Distribution::Rocky
            | Distribution::Oraclelinux
            | Distribution::Rhel => match el_minor(&release) {
                Some(kminor) => format!("{major}.{kminor}"),
                None => id.distro_version.clone(),
            },
            _ => id.distro_version.clone(),
        };
        let rt_in_release = release.contains(".rt");
        // Oracle's UEK (`…el9uek`) is its own source package with its own repositories.
        let uek = id.distribution == Distribution::Oraclelinux && release.ends_with("uek");
        let suse = id.distribution.suse();
        let variant = match id.distribution {
            Distribution::Ubuntu | Distribution::Debian => String::new(),
            _ if suse => flavour.clone(),
            _ if uek => "uek".to_string(),
            _ => match kernel.split_once('+') {
                Some((_, v)) => v.to_string(),
                None if rt_in_release => "rt".to_string(),
                None => String::new(),
            },
        };
        let series = {
            let mut numbers = version.split('.');
            match (numbers.next(), numbers.next()) {
                (Some(a), Some(b)) => format!("{a}.{b}"),
                _ => version.clone(),
            }
        };
        let srpm = match id.distribution {
            Distribution::Ubuntu | Distribution::Debian => String::new(),
            _ if rt_in_release => "kernel-rt".to_string(),
            _ if uek => "kernel-uek".to_string(),
            // OBS builds each flavour from its own spec: kernel-default, kernel-azure, kernel-rt.
            _ if suse => format!("kernel-{flavour}"),
            d => crate::distros::kernel_source_package(d.as_str(), &id.distro_version, &series),
        };
        Self {
            vault_release,
            variant,
            series,
            srpm,
            end_of_life: crate::distros::end_of_life(id.distribution.as_str(), &id.distro_version),
            archived: crate::distros::archived(id.distribution.as_str(), &id.distro_version),
            suse,
            version,
            release,
            deb_arch: id.architecture.debian_name().to_string(),
            distro_version: id.distro_version.clone(),
            codename: crate::distros::codename(id.distribution.as_str(), &id.distro_version)
                .unwrap_or_default()
                .to_string(),
            distribution: id.distribution.as_str().to_string(),
            kernel,
            arch,
            major,
            minor,
            flavour,
            abi,
        }
    }

    /// A kernel package's name for this kernel: `kernel-devel` is `kernel-64k-devel` for a `+64k`
    /// kernel and `kernel6.12-devel` for Amazon Linux 2023's 6.12; `kernel-headers` (userspace
    /// headers) is shared by every variant. `None` for a package the kernel's source package does
    /// not build: `kernel-rt` (EL 8's real-time kernels) builds no `kernel-headers`.
    pub fn rpm_package(&self, name: &str) -> Option<String> {
        if self.suse {
            return Some(self.expand(name));
        }
        let Some(rest) = name.strip_prefix("kernel-") else {
            return Some(name.to_string());
        };
        let base = if self.srpm.is_empty() {
            "kernel"
        } else {
            &self.srpm
        };
        if rest == "headers" {
            return (base != "kernel-rt").then(|| format!("{base}-headers"));
        }
        Some(match base {
            "kernel" | "kernel-rt" if !self.variant.is_empty() => {
                format!("kernel-{}-{rest}", self.variant)
            }
            _ => format!("{base}-{rest}"),
        })
    }

    /// A package's `NAME-VERSION-RELEASE.ARCH` for this kernel.
    pub fn rpm_file_stem(&self, name: &str) -> String {
        format!("{name}-{}-{}.{}", self.version, self.release, self.arch)
    }

    /// How a plan or an attempt names a wanted package (`rpm_packages_for`'s name): its file stem,
    /// on SUSE with `.N` for the rebuild counter and without the architecture (the source tree
    /// is `noarch`), alternatives joined with "or".
    pub fn rpm_wanted(&self, name: &str) -> String {
        name.split('|')
            .map(|n| {
                if self.suse {
                    format!("{n}-{}-{}.N", self.version, self.release)
                } else {
                    self.rpm_file_stem(n)
                }
            })
            .collect::<Vec<_>>()
            .join(" or ")
    }

    /// Whether a package release listed in a repository is this kernel's: the same, or on SUSE
    /// the same with a rebuild counter added. The rank orders several matches (the highest
    /// counter is the build the kernel's own update shipped last).
    pub fn rpm_release_rank(&self, listed: &str) -> Option<u64> {
        if listed == self.release {
            return Some(0);
        }
        let counter = listed
            .strip_prefix(self.release.as_str())?
            .strip_prefix('.')
            .filter(|_| self.suse)?;
        counter.parse::<u64>().ok().map(|n| n + 1)
    }

    /// The `uname -r` of another package version of this kernel's package, as a repository
    /// lists it: `VERSION-RELEASE.ARCH` with the variant after a `+` (`…aarch64+64k`); Azure
    /// Linux's `VERSION-RELEASE`; SUSE's `VERSION-RELEASE-FLAVOUR` without the rebuild counter.
    pub fn uname_of(&self, version: &str, release: &str) -> String {
        if self.suse {
            let release = match release.rsplit_once('.') {
                Some((head, counter)) if counter.chars().all(|c| c.is_ascii_digit()) => head,
                _ => release,
            };
            return format!("{version}-{release}-{}", self.flavour);
        }
        if self.distribution == Distribution::Azurelinux.as_str() {
            return format!("{version}-{release}");
        }
        let suffix = self
            .kernel
            .split_once('+')
            .map(|(_, v)| format!("+{v}"))
            .unwrap_or_default();
        format!("{version}-{release}.{}{suffix}", self.arch)
    }

    pub fn expand(&self, template: &str) -> String {
        template
            .replace("{kernel}", &self.kernel)
            .replace("{version}", &self.version)
            .replace("{release}", &self.release)
            .replace("{deb_arch}", &self.deb_arch)
            .replace("{arch}", &self.arch)
            .replace("{distro_version}", &self.distro_version)
            .replace("{major}", &self.major)
            .replace("{minor}", &self.minor)
            .replace("{codename}", &self.codename)
            .replace("{flavour}", &self.flavour)
            .replace("{abi}", &self.abi)
            .replace("{vault_release}", &self.vault_release)
            .replace("{series}", &self.series)
            .replace("{srpm}", &self.srpm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_of_each_family() {
        let p = |k: &str| KernelParts::of(&KernelIdentity::from_key(k).unwrap());
        let f = p("fedora/40/x86_64/6.8.9-300.fc40.x86_64");
        assert_eq!(
            (f.version.as_str(), f.release.as_str()),
            ("6.8.9", "300.fc40")
        );
        let a = p("almalinux/9.4/aarch64/5.14.0-427.13.1.el9_4.aarch64");
        assert_eq!(
            (a.release.as_str(), a.major.as_str(), a.minor.as_str()),
            ("427.13.1.el9_4", "9", "4")
        );
        let d = p("debian/12/aarch64/6.1.0-26-cloud-arm64");
        assert_eq!(
            (d.abi.as_str(), d.flavour.as_str(), d.codename.as_str()),
            ("6.1.0-26", "cloud-arm64", "bookworm")
        );
        let d13 = p("debian/13/x86_64/6.12.57+deb13-amd64");
        assert_eq!(
            (d13.abi.as_str(), d13.flavour.as_str(), d13.version.as_str()),
            ("6.12.57+deb13", "amd64", "6.12.57")
        );
        let security = p("debian/13/x86_64/6.12.115+deb13.1-amd64");
        assert_eq!(
            (security.abi.as_str(), security.flavour.as_str()),
            ("6.12.115+deb13.1", "amd64")
        );
        let u = p("ubuntu/22.04/x86_64/5.15.0-1034-aws");
        assert_eq!(
            (u.abi.as_str(), u.flavour.as_str(), u.codename.as_str()),
            ("5.15.0-1034", "aws", "jammy")
        );
    }

    #[test]
    fn centos_kernels_map_to_their_vault_directory() {
        let v = |k: &str| KernelParts::of(&KernelIdentity::from_key(k).unwrap()).vault_release;
        assert_eq!(v("centos/8/x86_64/4.18.0-348.el8.x86_64"), "8.5.2111");
        assert_eq!(v("centos/8/x86_64/4.18.0-348.7.1.el8_5.x86_64"), "8.5.2111");
        assert_eq!(
            v("centos/8/aarch64/4.18.0-80.1.2.el8_0.aarch64"),
            "8.0.1905"
        );
        assert_eq!(v("centos/8/x86_64/4.18.0-305.3.1.el8.x86_64"), "8.4.2105");
        assert_eq!(v("centos/8/x86_64/4.18.0-240.el8.x86_64"), "8.3.2011");
        assert_eq!(v("centos/8/x86_64/4.18.0-513.5.1.el8_9.x86_64"), "8-stream");
        // Stream 8 built the numbers between point releases: not in any point release's vault.
        assert_eq!(v("centos/8/x86_64/4.18.0-277.el8.x86_64"), "8-stream");
        assert_eq!(v("centos/8/aarch64/4.18.0-301.1.el8.aarch64"), "8-stream");
        assert_eq!(
            v("centos/7/x86_64/3.10.0-1160.119.1.el7.x86_64"),
            "7.9.2009"
        );
        assert_eq!(v("centos/7/x86_64/3.10.0-1062.el7.x86_64"), "7.7.1908");
        assert_eq!(v("centos/9/x86_64/5.14.0-404.el9.x86_64"), "9-stream");
        assert_eq!(
            v("almalinux/9.4/x86_64/5.14.0-427.13.1.el9_4.x86_64"),
            "9.4"
        );
    }
}
