//! Kernels another artifact serves. For each kernel without an artifact of its own, the
//! artifacts of its line (same distribution, release, architecture and flavour) whose recorded
//! imports (`NAME.kabi.json` beside it in a release, or its manifest's kABI layer in an OCI
//! store, written by the build job) it exports with the same CRCs, and whose vermagic matches
//! apart from the release (`kabi::check`, the kernel's own rule). The kernel's ABI comes from its
//! headers package through the chain; records are downloaded once. Both are kept under the cache
//! directory.

use crate::artifacts::AssetIndex;
use crate::coverage::{CoverageReport, CoverageStatus};
use crate::forge::OciStore;
use crate::headers::{Resolver, compare_kernels, line_of};
use crate::identity::KernelIdentity;
use crate::kabi::PackageAbi;
use futures_util::StreamExt;
use std::collections::BTreeMap;
use std::path::Path;

/// The largest record read (a module imports a few hundred symbols).
const MAX_RECORD: usize = 4 << 20;
/// How many kernels' symbol versions are read at once.
const KERNELS_AT_ONCE: usize = 6;

/// What [`find`] found: the kernels another artifact serves (identity key, artifact), the
/// classes of the others that one build each serves, and what could not be checked.
#[derive(Debug, Default)]
pub struct Compatible {
    pub served: Vec<(String, String)>,
    /// Kernels no artifact serves that export the same CRCs for every symbol the driver imports
    /// (its line's newest record says which) and share the vermagic apart from the release.
    pub classes: Vec<Vec<String>>,
    pub notes: Vec<String>,
}

/// What the check reads: the header chain (each kernel's exports), where to keep what it read,
/// and the OCI store when the artifacts are there (their records are layers of their manifests).
#[derive(Clone, Copy)]
pub struct KabiCheck<'a> {
    pub resolver: &'a Resolver,
    pub cache: &'a Path,
    pub store: Option<&'a OciStore>,
}

/// Where an artifact's record is.
#[derive(Clone, Copy)]
enum Locator<'a> {
    /// `NAME.kabi.json` beside it in its release.
    Url(&'a str),
    /// The kABI layer of its manifest in the store: (store, asset name, identity key).
    Store(&'a OciStore, &'a str, &'a str),
}

impl Locator<'_> {
    /// What the record is kept under: the URL, or the store and asset name (a pushed tag is
    /// never replaced).
    fn id(&self) -> String {
        match self {
            Locator::Url(url) => url.to_string(),
            Locator::Store(store, name, _) => format!("oci://{}/{name}", store.label()),
        }
    }
}

/// What makes kernels of one line interchangeable for the driver: the vermagic apart from the
/// release, and the CRC each exports for every symbol the driver imports.
type ClassKey = (String, String, Vec<(String, u32)>);

/// The kernels of `report` without an artifact (missing, long tail, failed or timed out) that an
/// artifact of `index` on their line loads into; the newest such artifact serves each.
pub async fn find(report: &CoverageReport, index: &AssetIndex, check: KabiCheck<'_>) -> Compatible {
    let keys: Vec<&str> = report
        .identities
        .iter()
        .filter(|row| {
            matches!(
                row.status,
                CoverageStatus::Missing
                    | CoverageStatus::LongTail
                    | CoverageStatus::Failed
                    | CoverageStatus::TimedOut
            )
        })
        .map(|row| row.key.as_str())
        .collect();
    find_for(&keys, index, check).await
}

/// Of the kernels `keys` names (none with an artifact of its own), those an artifact of `index`
/// on their line loads into, and the classes of the others.
pub async fn find_for(keys: &[&str], index: &AssetIndex, check: KabiCheck<'_>) -> Compatible {
    let KabiCheck {
        resolver,
        cache,
        store,
    } = check;
    let mut found = Compatible::default();
    // The artifacts with a record (in a store: that may have one), per line, newest kernel
    // first.
    let mut lines: BTreeMap<String, Vec<(KernelIdentity, &str, String, Locator<'_>)>> =
        BTreeMap::new();
    for asset in &index.matched {
        let Ok(id) = KernelIdentity::from_key(&asset.key) else {
            continue;
        };
        let locator = match (&asset.kabi_url, store) {
            (Some(url), _) => Locator::Url(url),
            (None, Some(store)) => Locator::Store(store, &asset.name, &asset.key),
            (None, None) => continue,
        };
        lines.entry(line_of(&id)).or_default().push((
            id,
            asset.name.as_str(),
            locator.id(),
            locator,
        ));
    }
    for artifacts in lines.values_mut() {
        artifacts.sort_by(|a, b| compare_kernels(&b.0.kernel_version, &a.0.kernel_version));
    }
    let http = match crate::net::http_client(
        std::time::Duration::from_secs(30),
        crate::net::Redirects::Limited(10),
        None,
    ) {
        Ok(http) => http,
        Err(e) => {
            found.notes.push(format!("cannot set up HTTP: {e}"));
            return found;
        }
    };
    let mut records: BTreeMap<String, Option<PackageAbi>> = BTreeMap::new();
    let mut classes: BTreeMap<ClassKey, Vec<String>> = BTreeMap::new();
    // The kernels with an artifact on their line, their symbol versions read a few at a time
    // (each is a headers package from the archive on a cold cache), in order.
    let kernels_dir = cache.join("kernels");
    let mut reads = Vec::new();
    for key in keys {
        let Ok(id) = KernelIdentity::from_key(key) else {
            continue;
        };
        if let Some(artifacts) = lines.get(&line_of(&id)) {
            reads.push(kernel_abi(resolver, &kernels_dir, key, id, artifacts));
        }
    }
    let mut abis = futures_util::stream::iter(reads).buffered(KERNELS_AT_ONCE);
    while let Some((key, id, artifacts, abi)) = abis.next().await {
        let kernel = match abi {
            Ok(kernel) => kernel,
            Err(e) => {
                found
                    .notes
                    .push(format!("{}: its symbol versions cannot be read: {e}", key));
                continue;
            }
        };
        let mut served = false;
        for (_, name, id, locator) in artifacts {
            if !records.contains_key(id) {
                let dir = cache.join("records");
                let read = match locator {
                    Locator::Url(url) => record(&http, url, &dir).await.map(Some),
                    Locator::Store(store, name, key) => {
                        stored_record(store, name, key, id, &dir).await
                    }
                };
                let record = match read {
                    Ok(record) => record,
                    Err(e) => {
                        found.notes.push(format!("{name}: {e}"));
                        None
                    }
                };
                records.insert(id.clone(), record);
            }
            let Some(Some(record)) = records.get(id) else {
                continue;
            };
            let loads = !record.modules.is_empty()
                && record
                    .modules
                    .iter()
                    .all(|m| crate::kabi::check(&m.abi, &kernel.vermagic, &kernel.symvers).loads());
            if loads {
                found.served.push((key.to_string(), name.to_string()));
                served = true;
                break;
            }
        }
        // Not served: its class, by what the line's newest readable record imports.
        let imports = artifacts
            .iter()
            .find_map(|(_, _, id, _)| records.get(id).and_then(Option::as_ref));
        if let (false, Some(record)) = (served, imports)
            && let Some(crcs) = class_crcs(record, &kernel)
        {
            let rest = crate::kabi::Vermagic::parse(&kernel.vermagic).rest;
            classes
                .entry((line_of(&id), rest, crcs))
                .or_default()
                .push(key.to_string());
        }
    }
    found.classes = classes.into_values().filter(|c| c.len() > 1).collect();
    found
}

/// The symbol versions of the kernel `id` (`key`), passed along with what the caller needs
/// beside them once they are read.
async fn kernel_abi<'a, T>(
    resolver: &Resolver,
    dir: &Path,
    key: &'a str,
    id: KernelIdentity,
    artifacts: T,
) -> (
    &'a str,
    KernelIdentity,
    T,
    Result<crate::kabi::KernelAbi, crate::headers::HeaderError>,
) {
    let abi = resolver.kernel_abi(&id, dir).await;
    (key, id, artifacts, abi)
}

/// The CRCs `kernel` exports for every symbol `record` imports, sorted: what one build shares
/// with the other kernels of its class. `None` when one build cannot serve another kernel: the
/// kernel or the driver has no modversions (the whole vermagic, release included, must then
/// match), the record names no imports, or the kernel lacks one of them.
fn class_crcs(record: &PackageAbi, kernel: &crate::kabi::KernelAbi) -> Option<Vec<(String, u32)>> {
    let versioned = |vermagic: &str| crate::kabi::Vermagic::parse(vermagic).modversions();
    if !versioned(&kernel.vermagic)
        || record.modules.is_empty()
        || record
            .modules
            .iter()
            .any(|m| !versioned(&m.abi.vermagic) || m.abi.imports.is_empty())
    {
        return None;
    }
    let exported = kernel.symvers.crcs();
    let mut crcs = record
        .modules
        .iter()
        .flat_map(|m| &m.abi.imports)
        .map(|i| Some((i.symbol.clone(), *exported.get(&i.symbol)?)))
        .collect::<Option<Vec<_>>>()?;
    crcs.sort();
    crcs.dedup();
    Some(crcs)
}

/// `--kabi` for upcoming kernels: each `upcoming-missing` kernel an artifact of its line loads
/// into becomes `upcoming-compatible`, with the artifact that serves it. Says what could not be
/// checked.
pub async fn mark_upcoming(
    found: &mut crate::coverage::upcoming::UpcomingReport,
    index: &AssetIndex,
    check: KabiCheck<'_>,
) -> Compatible {
    use crate::coverage::upcoming::UpcomingStatus;
    let keys: Vec<String> = found.missing().map(|r| r.key()).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let compatible = find_for(&keys, index, check).await;
    for row in &mut found.rows {
        let key = row.key();
        if let Some((_, artifact)) = compatible.served.iter().find(|(k, _)| *k == key) {
            row.status = UpcomingStatus::UpcomingCompatible;
            row.served_by = Some(artifact.clone());
        }
    }
    compatible
}

/// Where the record known as `id` is kept under `dir`.
fn kept_path(dir: &Path, id: &str) -> std::path::PathBuf {
    dir.join(format!(
        "{}.json",
        &crate::fsio::hex(&<sha2::Sha256 as sha2::Digest>::digest(id.as_bytes()))[..32]
    ))
}

/// The record kept under `dir` as `id`, if one is.
fn kept(dir: &Path, id: &str) -> Option<PackageAbi> {
    let bytes = std::fs::read(kept_path(dir, id)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Keeps `body`, a record read as `id`; one that cannot be kept is only read again next time.
async fn keep(dir: &Path, id: &str, body: bytes::Bytes) {
    let (dir, kept) = (dir.to_path_buf(), kept_path(dir, id));
    let _ = crate::fsio::off_runtime(move || {
        crate::fsio::create_private_dir(&dir)?;
        crate::fsio::write_private(&kept, &body)
    })
    .await;
}

/// The record of the store's driver `name` (identity `key`), kept under `dir` as `id`; `None`
/// when it was pushed without one.
async fn stored_record(
    store: &OciStore,
    name: &str,
    key: &str,
    id: &str,
    dir: &Path,
) -> Result<Option<PackageAbi>, String> {
    if let Some(record) = kept(dir, id) {
        return Ok(Some(record));
    }
    let Some(body) = store
        .pull_kabi(name, key, MAX_RECORD as u64)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    let record: PackageAbi = serde_json::from_slice(&body)
        .map_err(|e| format!("{}: not a kABI record: {e}", store.label()))?;
    keep(dir, id, body).await;
    Ok(Some(record))
}

/// The record at `url`: kept under `dir` by the URL's digest (an uploaded asset does not change
/// under its URL), else downloaded (https, or http to loopback) and kept.
async fn record(http: &reqwest::Client, url: &str, dir: &Path) -> Result<PackageAbi, String> {
    if let Some(record) = kept(dir, url) {
        return Ok(record);
    }
    crate::net::check_transport(url, false).map_err(|e| e.to_string())?;
    let response = http.get(url).send().await.map_err(|e| {
        format!(
            "{}: {}",
            crate::text::clean(url),
            crate::text::error_chain(&e)
        )
    })?;
    if !response.status().is_success() {
        return Err(format!(
            "{}: HTTP {}",
            crate::text::clean(url),
            response.status().as_u16()
        ));
    }
    let body = crate::net::read_capped(response, MAX_RECORD)
        .await
        .map_err(|e| format!("{}: {e}", crate::text::clean(url)))?;
    let record: PackageAbi = serde_json::from_slice(&body)
        .map_err(|e| format!("{}: not a kABI record: {e}", crate::text::clean(url)))?;
    keep(dir, url, body.into()).await;
    Ok(record)
}
