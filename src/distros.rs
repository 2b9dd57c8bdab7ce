//! Facts about distribution releases (`assets/distro-releases.toml`, embedded): codenames,
//! Debian's stock kernel series, end of life. Identities, the header chain and the build job
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
    pub codename: String,
    /// Debian: the `MAJOR.MINOR` kernel series the release ships.
    #[serde(default)]
    pub kernel_series: Option<String>,
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
    release(distribution, version).map(|r| r.codename.as_str())
}

/// The release a codename names (`bookworm` -> `12`).
pub fn version_of_codename(distribution: &str, codename: &str) -> Option<&'static str> {
    RELEASES
        .iter()
        .find(|r| r.distribution == distribution && r.codename == codename)
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
        let mut seen = std::collections::HashSet::new();
        for r in all() {
            assert!(seen.insert((&r.distribution, &r.version)), "{r:?} twice");
        }
    }
}
