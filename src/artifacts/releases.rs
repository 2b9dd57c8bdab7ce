//! GitHub "list releases" documents (one array, or several concatenated arrays as
//! `gh api --paginate` prints them), release selection, and asset-to-identity matching.

use super::AssetTemplate;
use crate::identity::Verdict;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct Release {
    #[serde(default)]
    pub id: Option<u64>,
    pub tag_name: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub draft: bool,
    #[serde(default)]
    pub prerelease: bool,
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub published_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub html_url: Option<String>,
    /// GitHub's immutable releases (2025): once published, no asset can be added or replaced.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub immutable: bool,
    #[serde(default)]
    pub assets: Vec<ReleaseAsset>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct ReleaseAsset {
    #[serde(default)]
    pub id: Option<u64>,
    pub name: String,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub browser_download_url: Option<String>,
    /// `sha256:<hex>` as GitHub reports it (null for assets uploaded before digests existed).
    #[serde(default)]
    pub digest: Option<String>,
    #[serde(default)]
    pub updated_at: Option<DateTime<Utc>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("cannot read release listing {file}: {source}")]
    Io {
        file: String,
        source: std::io::Error,
    },
    #[error(
        "{file}:{line}:{column}: not a GitHub release listing: {message}. Expected the JSON of `gh api repos/OWNER/REPO/releases --paginate`"
    )]
    Parse {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("no release tagged '{wanted}'; releases here: {available}")]
    NoSuchTag { wanted: String, available: String },
    #[error("no published release that is neither draft nor prerelease (of {count})")]
    NoPublished { count: usize },
}

/// Reads a release listing file.
pub fn read_release_file(path: &Path) -> Result<Vec<Release>, ReleaseError> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| ReleaseError::Io {
        file: file.clone(),
        source,
    })?;
    parse_release_listing(&file, &bytes)
}

pub fn parse_release_listing(file: &str, bytes: &[u8]) -> Result<Vec<Release>, ReleaseError> {
    let mut out = Vec::new();
    for page in serde_json::Deserializer::from_slice(bytes).into_iter::<Vec<Release>>() {
        let page = page.map_err(|e| ReleaseError::Parse {
            file: file.to_string(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
        out.extend(page);
    }
    Ok(out)
}

fn strip_v(tag: &str) -> &str {
    tag.strip_prefix('v').unwrap_or(tag)
}

/// Picks the release for `driver_version` (its tag), or the newest published release that is
/// neither draft nor prerelease (in an OCI store's listing, whose releases have no id and no
/// publication time, the highest driver version).
pub fn select_release<'a>(
    releases: &'a [Release],
    driver_version: Option<&str>,
) -> Result<&'a Release, ReleaseError> {
    if let Some(wanted) = driver_version {
        return releases
            .iter()
            .find(|r| r.tag_name == wanted)
            .or_else(|| {
                releases
                    .iter()
                    .find(|r| strip_v(&r.tag_name) == strip_v(wanted))
            })
            .ok_or_else(|| ReleaseError::NoSuchTag {
                wanted: wanted.to_string(),
                available: releases
                    .iter()
                    .map(|r| r.tag_name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
    }
    let candidates = || releases.iter().filter(|r| !r.draft && !r.prerelease);
    candidates()
        .filter(|r| r.published_at.is_some())
        .max_by_key(|r| (r.published_at, r.id))
        // An OCI store's listing has no publication times: its highest driver version.
        .or_else(|| {
            candidates()
                .filter(|r| r.id.is_none())
                .max_by(|a, b| crate::text::compare_versions(&a.tag_name, &b.tag_name))
        })
        .ok_or(ReleaseError::NoPublished {
            count: releases.len(),
        })
}

/// An asset recognised as the artifact for one identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MatchedAsset {
    pub key: String,
    pub name: String,
    pub url: Option<String>,
    pub digest: Option<String>,
    /// Where the release's `NAME.sha256` beside it is downloaded from, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksum_url: Option<String>,
    /// Where the release's `NAME.kabi.json` beside it is downloaded from, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kabi_url: Option<String>,
    /// Where the release's `NAME.sigstore.json` beside it (the build's signed provenance) is
    /// downloaded from, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provenance_url: Option<String>,
}

/// An asset of the release that is not an artifact for any valid identity, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UnrecognisedAsset {
    pub name: String,
    pub reason: String,
}

#[derive(Clone, Debug, Default)]
pub struct AssetIndex {
    pub matched: Vec<MatchedAsset>,
    pub unrecognised: Vec<UnrecognisedAsset>,
    /// The release is immutable: nothing can be added to it any more.
    pub immutable: bool,
    /// Kernels without an artifact of their own that another artifact loads into (its symbol
    /// versions checked against the kernel's): identity key, and the artifact it uses.
    pub compatible: Vec<(String, String)>,
    /// Kernels without an artifact that export the same CRCs for everything the driver imports
    /// (and share the vermagic apart from the release): one build serves each class.
    pub kabi_classes: Vec<Vec<String>>,
}

/// Matches a release's assets to identities through the naming template.
pub fn index_assets(release: &Release, template: &AssetTemplate) -> AssetIndex {
    let mut index = AssetIndex {
        immutable: release.immutable,
        ..AssetIndex::default()
    };
    let mut seen: HashMap<String, String> = HashMap::new();
    // `NAME.sha256`, `NAME.kabi.json` and `NAME.sigstore.json` beside an asset NAME are its
    // checksum file, its symbol-version record and its signed provenance (the build job uploads
    // them with it), not artifacts of their own.
    let names: std::collections::HashSet<&str> =
        release.assets.iter().map(|a| a.name.as_str()).collect();
    let companions = |suffix: &str| -> HashMap<&str, Option<&String>> {
        release
            .assets
            .iter()
            .filter_map(|a| {
                let stem = a.name.strip_suffix(suffix)?;
                names
                    .contains(stem)
                    .then_some((stem, a.browser_download_url.as_ref()))
            })
            .collect()
    };
    let (checksums, kabi, provenance) = (
        companions(CHECKSUM_SUFFIX),
        companions(KABI_SUFFIX),
        companions(crate::provenance::BUNDLE_SUFFIX),
    );
    for asset in &release.assets {
        let companion = [
            (CHECKSUM_SUFFIX, &checksums),
            (KABI_SUFFIX, &kabi),
            (crate::provenance::BUNDLE_SUFFIX, &provenance),
        ]
        .iter()
        .any(|(suffix, of)| {
            asset
                .name
                .strip_suffix(suffix)
                .is_some_and(|stem| of.contains_key(stem))
        });
        if companion {
            continue;
        }
        let reject = |reason: String| UnrecognisedAsset {
            name: asset.name.clone(),
            reason,
        };
        let Some(parsed) = template.parse(&asset.name) else {
            index.unrecognised.push(reject(format!(
                "does not follow the naming template {}",
                template.template()
            )));
            continue;
        };
        if let Some(dv) = &parsed.driver_version
            && strip_v(dv) != strip_v(&release.tag_name)
        {
            index.unrecognised.push(reject(format!(
                "names driver version {dv} but belongs to release {}",
                release.tag_name
            )));
            continue;
        }
        match &parsed.checked.verdict {
            Verdict::Valid(_) => {}
            Verdict::Invalid(r) => {
                index
                    .unrecognised
                    .push(reject(format!("invalid identity: {r}")));
                continue;
            }
            Verdict::Unsupported(r) => {
                index
                    .unrecognised
                    .push(reject(format!("unsupported identity: {r}")));
                continue;
            }
        }
        let key = parsed.checked.key();
        if let Some(first) = seen.get(&key) {
            index.unrecognised.push(reject(format!(
                "a second artifact for {key} (first: {first})"
            )));
            continue;
        }
        seen.insert(key.clone(), asset.name.clone());
        index.matched.push(MatchedAsset {
            key,
            name: asset.name.clone(),
            url: asset.browser_download_url.clone(),
            digest: asset.digest.clone(),
            checksum_url: checksums
                .get(asset.name.as_str())
                .copied()
                .flatten()
                .cloned(),
            kabi_url: kabi.get(asset.name.as_str()).copied().flatten().cloned(),
            provenance_url: provenance
                .get(asset.name.as_str())
                .copied()
                .flatten()
                .cloned(),
        });
    }
    index
}

/// The suffix of the checksum file the build job uploads beside each artifact
/// (`sha256sum` output: the hex digest, two spaces, the artifact's name).
pub const CHECKSUM_SUFFIX: &str = ".sha256";

/// The suffix of the symbol-version record the build job uploads beside each artifact: the
/// vermagic and imported symbols with their CRCs of each module ([`crate::kabi::PackageAbi`]).
pub const KABI_SUFFIX: &str = ".kabi.json";

/// Why nothing is built into an immutable release, and what to do instead.
pub fn immutable_reason(tag: &str) -> String {
    format!(
        "release {tag} is immutable (GitHub refuses new assets once such a release is published): build into the next release while it is still a draft, before it is published"
    )
}
