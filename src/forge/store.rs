//! An OCI registry as the artifact store (`--store oci://REGISTRY/NAMESPACE/NAME`): the tag list
//! read as a release listing (one release per driver version, one asset per identity), a
//! driver pushed as an OCI artifact, and pulled with its manifest checked. `StoreForge` puts
//! the store in place of a forge's releases, so every command that reads releases reads it.

use super::{
    BoxFuture, CancelOutcome, ClientStats, DispatchGuard, Forge, ForgeError, Inputs, Job, Listing,
    WorkflowRun,
};
use crate::artifacts::oci::{self as layout, DriverManifest, TagName};
use crate::artifacts::{AssetTemplate, Release, ReleaseAsset};
use crate::oci::{Client, Credentials, OciError, Reference};
use crate::text::Cause;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Digest tags whose manifests are read per listing at most (their identity is only in the
/// manifest); the rest wait for the next listing.
const MAX_HASHED_READS: usize = 2000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Oci(#[from] OciError),
    #[error("{store}: {source}")]
    Refused { store: String, source: Cause },
    #[error("{store}: {tag} is not the driver asked for: {source}; nothing was installed from it")]
    Untrusted {
        store: String,
        tag: String,
        source: Cause,
    },
}

/// What is pushed with a driver package, each as a layer of its manifest.
#[derive(Clone, Debug, Default)]
pub struct Attached {
    /// The build's Sigstore bundle (`NAME.sigstore.json`).
    pub bundle: Option<bytes::Bytes>,
    /// The package's kABI record (`NAME.kabi.json`, [`crate::kabi::PackageAbi`] as JSON).
    pub kabi: Option<bytes::Bytes>,
}

/// What `push` stored.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Pushed {
    pub tag: String,
    pub manifest_digest: String,
    #[serde(flatten)]
    pub driver: DriverManifest,
    /// The tag already held this very artifact: nothing was written.
    pub unchanged: bool,
}

/// One repository of a registry holding drivers.
pub struct OciStore {
    client: Client,
    template: AssetTemplate,
    /// Digest tags already read: their driver version and identity key (none: not a driver).
    hashed: std::sync::Mutex<HashMap<String, Option<(String, String)>>>,
}

impl std::fmt::Debug for OciStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OciStore({})", self.label())
    }
}

impl OciStore {
    /// The store at `store` (`oci://…`), with the registry login of the environment if any.
    pub fn open(
        store: &str,
        template: AssetTemplate,
        credentials: Option<Credentials>,
    ) -> Result<Self, StoreError> {
        let reference = Reference::parse(store)?;
        if !template.template().contains("{driver_version}") {
            return Err(StoreError::Refused {
                store: reference.display(),
                source: Cause::from(format!(
                    "the asset template {} lacks {{driver_version}}; every driver version shares one OCI repository, so its tags must name it",
                    template.template()
                )),
            });
        }
        let client = Client::new(reference, credentials, std::time::Duration::from_secs(60))?;
        Ok(Self {
            client,
            template,
            hashed: std::sync::Mutex::new(HashMap::new()),
        })
    }

    pub fn label(&self) -> String {
        self.client.reference().display()
    }

    pub fn reference(&self) -> &Reference {
        self.client.reference()
    }

    /// The tag of (identity key, driver version), from the asset name kfleet's template gives.
    pub fn tag(&self, key: &str, driver_version: &str) -> Result<(String, String), StoreError> {
        let identity =
            crate::identity::KernelIdentity::from_key(key).map_err(|e| StoreError::Refused {
                store: self.label(),
                source: Cause::of(e),
            })?;
        let name = self.template.render(&identity, driver_version);
        Ok((layout::tag_for(&name, driver_version, key), name))
    }

    /// The store as a release listing: a release per driver version, an asset per identity.
    /// Tags that are not drivers are listed under their name, so a report shows them as
    /// unrecognised.
    pub async fn list(&self) -> Result<Listing, StoreError> {
        let tags = self.client.tags().await?;
        let mut by_version: BTreeMap<String, Vec<ReleaseAsset>> = BTreeMap::new();
        let mut reads = 0;
        for tag in tags {
            let (driver_version, name) = match layout::parse_tag(&tag) {
                TagName::Asset(name) => match self.template.parse(&name) {
                    Some(parsed) => match parsed.driver_version {
                        Some(dv) => (dv, name),
                        None => continue,
                    },
                    None => continue,
                },
                TagName::Hashed => {
                    let known = self.hashed.lock().ok().and_then(|h| h.get(&tag).cloned());
                    let found = match known {
                        Some(found) => found,
                        None if reads < MAX_HASHED_READS => {
                            reads += 1;
                            let found = self.read_hashed(&tag).await?;
                            if let Ok(mut h) = self.hashed.lock() {
                                h.insert(tag.clone(), found.clone());
                            }
                            found
                        }
                        None => continue,
                    };
                    let Some((dv, key)) = found else { continue };
                    let Ok((_, name)) = self.tag(&key, &dv) else {
                        continue;
                    };
                    (dv, name)
                }
                TagName::Foreign => continue,
            };
            by_version
                .entry(driver_version)
                .or_default()
                .push(ReleaseAsset {
                    id: None,
                    browser_download_url: Some(self.reference().manifest_url(&tag)),
                    name,
                    size: None,
                    digest: None,
                    updated_at: None,
                });
        }
        let releases = by_version
            .into_iter()
            .map(|(tag_name, assets)| Release {
                id: None,
                tag_name,
                name: None,
                draft: false,
                prerelease: false,
                created_at: None,
                published_at: None,
                html_url: None,
                immutable: false,
                assets,
            })
            .collect();
        Ok(Listing {
            releases,
            pages: 1,
            not_modified: false,
        })
    }

    /// The driver version and identity a digest tag's manifest names, checked to hash to it.
    async fn read_hashed(&self, tag: &str) -> Result<Option<(String, String)>, StoreError> {
        let Some((_, bytes)) = self.client.manifest(tag).await? else {
            return Ok(None);
        };
        let Ok(driver) = layout::read_driver_manifest(&bytes) else {
            return Ok(None);
        };
        let (expected, _) = match self.tag(&driver.identity, &driver.driver_version) {
            Ok(t) => t,
            Err(_) => return Ok(None),
        };
        Ok((expected == tag).then_some((driver.driver_version, driver.identity)))
    }

    /// Pushes a driver package for (identity key, driver version): the package as the first
    /// layer, the build's Sigstore bundle and the package's kABI record (when given) as further
    /// layers, the empty config, then the manifest under the driver's tag. A tag that holds
    /// another artifact is never overwritten.
    pub async fn push(
        &self,
        key: &str,
        driver_version: &str,
        package: bytes::Bytes,
        vermagic: Option<String>,
        attached: Attached,
    ) -> Result<Pushed, StoreError> {
        let blob = |b: &bytes::Bytes| layout::Blob {
            digest: crate::oci::sha256_digest(b),
            size: b.len() as u64,
        };
        let (tag, name) = self.tag(key, driver_version)?;
        let layer_digest = crate::oci::sha256_digest(&package);
        let driver = DriverManifest {
            identity: key.to_string(),
            driver_version: driver_version.to_string(),
            title: name,
            layer_digest: layer_digest.clone(),
            size: package.len() as u64,
            vermagic,
            created: Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            provenance: attached.bundle.as_ref().map(blob),
            kabi: attached.kabi.as_ref().map(blob),
        };
        if let Some((digest, bytes)) = self.client.manifest(&tag).await? {
            let existing = layout::read_driver_manifest(&bytes).ok();
            if existing
                .as_ref()
                .is_some_and(|e| e.layer_digest == layer_digest && e.is_for(key, driver_version))
            {
                return Ok(Pushed {
                    tag,
                    manifest_digest: digest,
                    driver: existing.unwrap_or(driver),
                    unchanged: true,
                });
            }
            return Err(StoreError::Refused {
                store: self.label(),
                source: Cause::from(format!(
                    "tag {tag} already holds another artifact ({digest}); a pushed driver is never replaced: bump the driver version"
                )),
            });
        }
        let pushed = self.client.push_blob(package).await?;
        if pushed != layer_digest {
            return Err(StoreError::Refused {
                store: self.label(),
                source: Cause::from(format!(
                    "the layer was stored as {pushed}, not {layer_digest}"
                )),
            });
        }
        for (what, bytes, blob) in [
            ("the provenance bundle", attached.bundle, &driver.provenance),
            ("the kABI record", attached.kabi, &driver.kabi),
        ] {
            let (Some(bytes), Some(blob)) = (bytes, blob) else {
                continue;
            };
            let stored = self.client.push_blob(bytes).await?;
            if stored != blob.digest {
                return Err(StoreError::Refused {
                    store: self.label(),
                    source: Cause::from(format!(
                        "{what} was stored as {stored}, not {}",
                        blob.digest
                    )),
                });
            }
        }
        let config = self
            .client
            .push_blob(bytes::Bytes::from_static(layout::EMPTY_CONFIG))
            .await?;
        let manifest =
            layout::driver_manifest(&driver, &config).map_err(|e| StoreError::Refused {
                store: self.label(),
                source: Cause::of(e),
            })?;
        let manifest_digest = self
            .client
            .put_manifest(&tag, layout::MANIFEST_MEDIA_TYPE, manifest.into())
            .await?;
        // Read back what the registry now serves under the tag.
        match self.client.manifest(&tag).await? {
            Some((digest, _)) if digest == manifest_digest => {}
            other => {
                return Err(StoreError::Refused {
                    store: self.label(),
                    source: Cause::from(format!(
                        "after the push, {tag} names {}, not the pushed manifest {manifest_digest}",
                        other.map(|(d, _)| d).unwrap_or_else(|| "nothing".into())
                    )),
                });
            }
        }
        Ok(Pushed {
            tag,
            manifest_digest,
            driver,
            unchanged: false,
        })
    }

    /// Whether the store holds the driver of (identity key, driver version): one manifest read,
    /// not a listing of every tag.
    pub async fn has(&self, key: &str, driver_version: &str) -> Result<bool, StoreError> {
        let (tag, _) = self.tag(key, driver_version)?;
        Ok(self.client.manifest(&tag).await?.is_some_and(|(_, bytes)| {
            layout::read_driver_manifest(&bytes).is_ok_and(|d| d.is_for(key, driver_version))
        }))
    }

    /// The driver of (identity key, driver version), if the store has it: its manifest checked
    /// (kfleet's artifact, this identity and version, the layer digest its annotation repeats),
    /// then the package, checked against the layer digest, at most `max` bytes.
    pub async fn pull(
        &self,
        key: &str,
        driver_version: &str,
        max: u64,
    ) -> Result<Option<(DriverManifest, bytes::Bytes)>, StoreError> {
        let Some((tag, driver)) = self.driver(key, driver_version).await? else {
            return Ok(None);
        };
        if driver.size > max {
            return Err(self.untrusted(
                &tag,
                format!(
                    "its package is {} bytes, over the limit of {max}",
                    driver.size
                ),
            ));
        }
        let package = self.client.blob(&driver.layer_digest, max).await?;
        Ok(Some((driver, package)))
    }

    /// The kABI record of the driver the store holds under `asset_name` (an asset name of the
    /// store's template, for the identity `key`), checked against its digest and at most `max`
    /// bytes; `None` when there is no such driver or it was pushed without a record.
    pub async fn pull_kabi(
        &self,
        asset_name: &str,
        key: &str,
        max: u64,
    ) -> Result<Option<bytes::Bytes>, StoreError> {
        let Some(driver_version) = self
            .template
            .parse(asset_name)
            .and_then(|parsed| parsed.driver_version)
        else {
            return Ok(None);
        };
        let Some((tag, driver)) = self.driver(key, &driver_version).await? else {
            return Ok(None);
        };
        let Some(record) = driver.kabi else {
            return Ok(None);
        };
        if record.size > max {
            return Err(self.untrusted(
                &tag,
                format!(
                    "its kABI record is {} bytes, over the limit of {max}",
                    record.size
                ),
            ));
        }
        Ok(Some(self.client.blob(&record.digest, max).await?))
    }

    /// The manifest under the tag of (identity key, driver version), with the tag, checked:
    /// kfleet's artifact, naming this identity and driver version. `None`: no such tag.
    async fn driver(
        &self,
        key: &str,
        driver_version: &str,
    ) -> Result<Option<(String, DriverManifest)>, StoreError> {
        let (tag, _) = self.tag(key, driver_version)?;
        let Some((_, bytes)) = self.client.manifest(&tag).await? else {
            return Ok(None);
        };
        let driver = layout::read_driver_manifest(&bytes)
            .map_err(|message| self.untrusted(&tag, message))?;
        if !driver.is_for(key, driver_version) {
            return Err(self.untrusted(
                &tag,
                format!(
                    "its manifest names {} {}, not {key} {driver_version}",
                    crate::text::clean(&driver.identity),
                    crate::text::clean(&driver.driver_version)
                ),
            ));
        }
        Ok(Some((tag, driver)))
    }

    fn untrusted(&self, tag: &str, message: String) -> StoreError {
        StoreError::Untrusted {
            store: self.label(),
            tag: tag.to_string(),
            source: Cause::from(message),
        }
    }

    /// The Sigstore bundle a driver's manifest points at, checked against its digest; `None`
    /// when the driver was pushed without one.
    pub async fn pull_bundle(
        &self,
        driver: &DriverManifest,
    ) -> Result<Option<bytes::Bytes>, StoreError> {
        let Some(blob) = &driver.provenance else {
            return Ok(None);
        };
        Ok(Some(
            self.client
                .blob(&blob.digest, crate::provenance::MAX_BUNDLE as u64)
                .await?,
        ))
    }
}

/// A forge whose releases come from an OCI store: runs and dispatches go to the forge, release
/// listings to the store.
pub struct StoreForge {
    forge: Arc<dyn Forge>,
    store: Arc<OciStore>,
}

impl StoreForge {
    pub fn new(forge: Arc<dyn Forge>, store: Arc<OciStore>) -> Self {
        Self { forge, store }
    }
}

impl Forge for StoreForge {
    fn label(&self) -> String {
        format!(
            "{}, artifacts in {}",
            self.forge.label(),
            self.store.label()
        )
    }
    fn is_sandbox(&self) -> bool {
        self.forge.is_sandbox()
    }
    fn stats(&self) -> &ClientStats {
        self.forge.stats()
    }
    fn list_releases(&self) -> BoxFuture<'_, Result<Listing, ForgeError>> {
        Box::pin(async move {
            self.store
                .list()
                .await
                .map_err(|e| ForgeError::Store(Box::new(e)))
        })
    }
    fn artifact_store(&self) -> Option<&OciStore> {
        Some(&self.store)
    }
    fn list_runs<'a>(
        &'a self,
        workflow: &'a str,
        status: Option<&'a str>,
        since: Option<chrono::DateTime<chrono::Utc>>,
    ) -> BoxFuture<'a, Result<Vec<WorkflowRun>, ForgeError>> {
        self.forge.list_runs(workflow, status, since)
    }
    fn get_run(&self, run_id: u64) -> BoxFuture<'_, Result<WorkflowRun, ForgeError>> {
        self.forge.get_run(run_id)
    }
    fn cancel_run(&self, run_id: u64) -> BoxFuture<'_, Result<CancelOutcome, ForgeError>> {
        self.forge.cancel_run(run_id)
    }
    fn list_jobs(&self, run_id: u64) -> BoxFuture<'_, Result<Vec<Job>, ForgeError>> {
        self.forge.list_jobs(run_id)
    }
    fn job_log_tail(&self, job_id: u64, lines: usize) -> BoxFuture<'_, Result<String, ForgeError>> {
        self.forge.job_log_tail(job_id, lines)
    }
    fn dispatch<'a>(
        &'a self,
        workflow: &'a str,
        git_ref: &'a str,
        inputs: &'a Inputs,
        request_id: &'a str,
        guard: &'a dyn DispatchGuard,
    ) -> BoxFuture<'a, Result<WorkflowRun, ForgeError>> {
        self.forge
            .dispatch(workflow, git_ref, inputs, request_id, guard)
    }
}
