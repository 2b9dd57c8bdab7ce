//! Facts about distribution releases (`assets/distro-releases.toml`, embedded): codenames,
//! stock kernel series, how other kernel series are packaged, end of life. Identities, the header
//! chain and the build job read them here, not from `match` arms of their own.
//!
//! The embedded facts are the offline fallback. A release they do not know yet (an Ubuntu release
//! published after this kfleet was built) is read from the archive itself by the header chain
//! (`headers::releases`) and [`learn`]ed here for the rest of the process.

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
    /// Past its end of life: the distribution no longer supports it (its packages may have
    /// moved to the archive of old releases; the header chain and the build job look there
    /// after the main archive).
    #[serde(default)]
    pub end_of_life: bool,
    /// Its packages moved for good to the archive of old releases: the main archive is not asked.
    #[serde(default)]
    pub archived: bool,
    /// SUSE: the products a registered system activates for the release's kernel headers
    /// (SUSE Customer Center identifiers), the base product first (it takes the registration
    /// code), then the free modules that hold `kernel-default-devel`.
    #[serde(default)]
    pub registration_products: Vec<String>,
}

/// Kernels only an entitled archive serves (Ubuntu Pro's ESM and FIPS pockets): which, and why.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Entitled {
    pub distribution: String,
    /// The releases it applies to; empty: every release.
    #[serde(default)]
    pub versions: Vec<String>,
    /// The kernel series (`5.4`); absent: every series.
    #[serde(default)]
    pub kernel_series: Option<String>,
    /// Only ABIs above this one (`5.4.0-217` and later after 216).
    #[serde(default)]
    pub after_abi: Option<u32>,
    /// The flavours it applies to; empty: every flavour.
    #[serde(default)]
    pub flavours: Vec<String>,
    /// What the kernel needs (`Ubuntu Pro`) and why.
    pub needs: String,
    pub reason: String,
    /// The header chain's credential that serves these kernels (`ubuntu-pro`): with it
    /// configured they are ordinary kernels.
    #[serde(default)]
    pub credential: Option<String>,
}

/// An image-based OS: its `/lib/modules` is read-only, and it has a route of its own for
/// modules that belong to the image.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ImageBased {
    /// os-release `ID`.
    pub os_id: String,
    /// os-release `VARIANT_ID`, where `ID` alone also names package-based systems.
    #[serde(default)]
    pub variant_id: Option<String>,
    pub name: String,
    /// How that OS makes a module part of its image.
    pub route: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DataFile {
    release: Vec<DistroRelease>,
    #[serde(default)]
    entitled: Vec<Entitled>,
    #[serde(default)]
    image_based: Vec<ImageBased>,
}

static DATA: LazyLock<DataFile> = LazyLock::new(|| {
    toml::from_str::<DataFile>(include_str!("../assets/distro-releases.toml"))
        // Embedded and checked by the unit test below: a parse failure is a build defect.
        .unwrap_or(DataFile {
            release: Vec::new(),
            entitled: Vec::new(),
            image_based: Vec::new(),
        })
});

static RELEASES: LazyLock<&'static [DistroRelease]> = LazyLock::new(|| DATA.release.as_slice());

/// Credentials this process holds (the header chain's, `grant`ed once at start): entitled
/// kernels they serve are ordinary kernels.
static GRANTED: std::sync::RwLock<Vec<String>> = std::sync::RwLock::new(Vec::new());

/// Records that the header chain holds `credential` (`ubuntu-pro`) for this process.
pub fn grant(credential: &str) {
    let mut granted = GRANTED.write().unwrap_or_else(|e| e.into_inner());
    if !granted.iter().any(|g| g == credential) {
        granted.push(credential.to_string());
    }
}

fn granted(credential: &str) -> bool {
    GRANTED
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .any(|g| g == credential)
}

/// What a kernel of this release needs beyond the public archive, and why: `None` for a public
/// kernel, or one a [`grant`]ed credential serves. Series, ABI and flavour are read from the
/// Debian-style `VERSION-ABI-FLAVOUR` (`5.4.0-217-generic`) where an entry asks for them.
pub fn entitlement(distribution: &str, version: &str, kernel: &str) -> Option<&'static Entitled> {
    let (upstream, rest) = kernel.split_once('-').unwrap_or((kernel, ""));
    let (abi, flavour) = rest.split_once('-').unwrap_or((rest, ""));
    let abi: Option<u32> = abi.parse().ok();
    let series = upstream
        .splitn(3, '.')
        .take(2)
        .collect::<Vec<_>>()
        .join(".");
    DATA.entitled.iter().find(|e| {
        e.distribution == distribution
            && (e.versions.is_empty() || e.versions.iter().any(|v| v == version))
            && e.kernel_series.as_ref().is_none_or(|s| *s == series)
            && e.after_abi
                .is_none_or(|after| abi.is_some_and(|abi| abi > after))
            && (e.flavours.is_empty() || e.flavours.iter().any(|f| f == flavour))
            && e.credential.as_deref().is_none_or(|c| !granted(c))
    })
}

/// The image-based OS an os-release's `ID` and `VARIANT_ID` name, if it is one.
pub fn image_based(os_id: &str, variant_id: Option<&str>) -> Option<&'static ImageBased> {
    DATA.image_based.iter().find(|i| {
        i.os_id == os_id
            && i.variant_id
                .as_deref()
                .is_none_or(|v| Some(v) == variant_id)
    })
}

/// Releases read from the archives during this process: each learned once, so the few leaked
/// entries are bounded by the releases that exist.
static LEARNED: std::sync::RwLock<Vec<&'static DistroRelease>> = std::sync::RwLock::new(Vec::new());

/// Every embedded release.
pub fn all() -> &'static [DistroRelease] {
    *RELEASES
}

/// Adds a release read from its archive, unless it is known already (embedded or learned).
pub fn learn(release: DistroRelease) {
    if self::release(&release.distribution, &release.version).is_some() {
        return;
    }
    let mut learned = LEARNED.write().unwrap_or_else(|e| e.into_inner());
    if !learned
        .iter()
        .any(|r| r.distribution == release.distribution && r.version == release.version)
    {
        learned.push(Box::leak(Box::new(release)));
    }
}

/// The first release `matches` takes: embedded, else learned from its archive.
fn find(matches: impl Fn(&DistroRelease) -> bool) -> Option<&'static DistroRelease> {
    RELEASES.iter().find(|r| matches(r)).or_else(|| {
        LEARNED
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .find(|r| matches(r))
    })
}

/// One release of one distribution (canonical names: `debian`, `ubuntu`, ...): embedded, or
/// learned from its archive.
pub fn release(distribution: &str, version: &str) -> Option<&'static DistroRelease> {
    find(|r| r.distribution == distribution && r.version == version)
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

/// Whether the release's packages moved for good to the archive of old releases.
pub fn archived(distribution: &str, version: &str) -> bool {
    release(distribution, version).is_some_and(|r| r.archived)
}

/// The source package a kernel of `series` (`6.12`) is built from on this release: `kernel`,
/// unless the release packages other series under their own name (`kernel6.12`).
pub fn kernel_source_package(distribution: &str, version: &str, series: &str) -> String {
    release(distribution, version)
        .filter(|r| r.kernel_series.as_deref().is_some_and(|s| s != series))
        .and_then(|r| r.series_package.as_deref())
        .map_or_else(|| "kernel".to_string(), |p| p.replace("{series}", series))
}

/// The products a registered system of this release activates for its kernel headers, base
/// product first (`SLES`, `sle-module-basesystem`); empty where the facts name none.
pub fn registration_products(distribution: &str, version: &str) -> &'static [String] {
    release(distribution, version).map_or(&[], |r| r.registration_products.as_slice())
}

/// The release a codename names (`bookworm` -> `12`).
pub fn version_of_codename(distribution: &str, codename: &str) -> Option<&'static str> {
    find(|r| r.distribution == distribution && !r.codename.is_empty() && r.codename == codename)
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
        let pro = |v: &str, k: &str| entitlement("ubuntu", v, k).map(|e| e.needs.as_str());
        assert_eq!(pro("20.04", "5.4.0-216-generic"), None);
        assert_eq!(pro("20.04", "5.4.0-217-generic"), Some("Ubuntu Pro"));
        assert_eq!(pro("20.04", "5.15.0-139-generic"), None);
        assert_eq!(pro("20.04", "5.15.0-140-generic"), Some("Ubuntu Pro"));
        assert_eq!(pro("22.04", "5.15.0-1060-azure-fips"), Some("Ubuntu Pro"));
        assert_eq!(pro("22.04", "5.15.0-1060-realtime"), Some("Ubuntu Pro"));
        assert_eq!(pro("22.04", "5.15.0-125-generic"), None);
        assert_eq!(pro("22.04", "5.15.0-1060-aws"), None);
        let suse = |v: &str| entitlement("sles", v, "6.4.0-150700.53.3-default").is_some();
        assert!(suse("15.7") && !suse("15.6"));
        assert_eq!(
            registration_products("sles", "15.7"),
            ["SLES", "sle-module-basesystem"]
        );
        assert_eq!(registration_products("sles", "16.0"), ["SLES"]);
        assert_eq!(codename("ubuntu", "25.10"), Some("questing"));
        assert_eq!(codename("debian", "12"), Some("bookworm"));
        assert_eq!(version_of_codename("debian", "trixie"), Some("13"));
        assert_eq!(debian_kernel_series("12"), Some((6, 1)));
        assert_eq!(codename("ubuntu", "26.10"), Some("stonking"));
        assert_eq!(codename("ubuntu", "27.10"), None);
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
