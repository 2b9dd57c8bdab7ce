//! Facts about distribution releases (`assets/distro-releases.toml`, embedded): codenames,
//! stock kernel series, how other kernel series are packaged, end of life. Identities, the header chain and the build job
//! read them here, not from `match` arms of their own.

use serde::Deserialize;
use std::sync::LazyLock;

/// Where these facts live, for messages that ask to extend them.
pub const DATA_FILE: &str = "assets/distro-releases.toml";

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DistroRelease {
    pub distribution: String,
    pub version: String,
    /// Debian/Ubuntu: the suite codename; empty for families without one.
    #[serde(default)]
    pub codename: String,
    /// The `MAJOR.MINOR` kernel series the release ships by default.
    #[serde(default)]
    pub kernel_series: Option<String>,
    /// The source package of kernels of another series (`kernel{series}` on Amazon Linux 2023:
    /// `kernel6.12`, whose headers are `kernel6.12-devel`); absent: they are packaged as `kernel`.
    #[serde(default)]
    pub series_package: Option<String>,
    /// Past its end of life: its packages moved to the distribution's archive.
    #[serde(default)]
    pub end_of_life: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DataFile {
    release: Vec<DistroRelease>,
}

static RELEASES: LazyLock<Vec<DistroRelease>> = LazyLock::new(|| {
    toml::from_str::<DataFile>(include_str!("../assets/distro-releases.toml"))
        .map(|f| f.release)
        // Embedded and checked by the unit test below: a parse failure is a build defect.
        .unwrap_or_default()
});

/// Every known release.
pub fn all() -> &'static [DistroRelease] {
    &RELEASES
}

/// One release of one distribution (canonical names: `debian`, `ubuntu`, ...).
pub fn release(distribution: &str, version: &str) -> Option<&'static DistroRelease> {
    RELEASES
        .iter()
        .find(|r| r.distribution == distribution && r.version == version)
}

/// The release's codename (`bookworm`, `noble`).
pub fn codename(distribution: &str, version: &str) -> Option<&'static str> {
    release(distribution, version)
        .map(|r| r.codename.as_str())
        .filter(|c| !c.is_empty())
}

/// Whether the release is past its end of life (unknown releases are not).
pub fn end_of_life(distribution: &str, version: &str) -> bool {
    release(distribution, version).is_some_and(|r| r.end_of_life)
}

/// The source package a kernel of `series` (`6.12`) is built from on this release: `kernel`,
/// unless the release packages other series under their own name (`kernel6.12`).
pub fn kernel_source_package(distribution: &str, version: &str, series: &str) -> String {
    release(distribution, version)
        .filter(|r| r.kernel_series.as_deref().is_some_and(|s| s != series))
        .and_then(|r| r.series_package.as_deref())
        .map_or_else(|| "kernel".to_string(), |p| p.replace("{series}", series))
}

/// The release a codename names (`bookworm` -> `12`).
pub fn version_of_codename(distribution: &str, codename: &str) -> Option<&'static str> {
    RELEASES
        .iter()
        .find(|r| {
            r.distribution == distribution && !r.codename.is_empty() && r.codename == codename
        })
        .map(|r| r.version.as_str())
}

/// Debian's stock kernel series for a release (`12` -> (6, 1)).
pub fn debian_kernel_series(version: &str) -> Option<(u32, u32)> {
    let series = release("debian", version)?.kernel_series.as_deref()?;
    let (major, minor) = series.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_data_parses_and_answers() {
        toml::from_str::<DataFile>(include_str!("../assets/distro-releases.toml")).unwrap();
        assert!(all().len() >= 25);
        assert_eq!(codename("ubuntu", "26.04"), Some("resolute"));
        assert_eq!(codename("ubuntu", "25.10"), Some("questing"));
        assert_eq!(codename("debian", "12"), Some("bookworm"));
        assert_eq!(version_of_codename("debian", "trixie"), Some("13"));
        assert_eq!(debian_kernel_series("12"), Some((6, 1)));
        assert_eq!(codename("ubuntu", "26.10"), None);
        assert_eq!(codename("amazonlinux", "2023"), None);
        assert!(end_of_life("debian", "10") && !end_of_life("debian", "12"));
        assert_eq!(
            kernel_source_package("amazonlinux", "2023", "6.12"),
            "kernel6.12"
        );
        assert_eq!(
            kernel_source_package("amazonlinux", "2023", "6.1"),
            "kernel"
        );
        assert_eq!(kernel_source_package("amazonlinux", "2", "5.10"), "kernel");
        assert_eq!(kernel_source_package("fedora", "41", "6.11"), "kernel");
        let mut seen = std::collections::HashSet::new();
        for r in all() {
            assert!(seen.insert((&r.distribution, &r.version)), "{r:?} twice");
        }
    }
}
