//! The node side (`kfleet ensure`): ask the build service for this kernel's driver, wait for it
//! with backoff up to the deadline, download it, verify its sha256, and say where it is.

use crate::identity::KernelIdentity;
use crate::protocol::{BuildRequest, BuildStatus, ServiceStatus};
use crate::text::Cause;
use sha2::Digest;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct EnsureOptions {
    /// Base URL of `kfleet serve`.
    pub service: String,
    pub token: String,
    pub driver_version: String,
    /// Where the artifact is written.
    pub out: PathBuf,
    /// Longest wait for a build.
    pub deadline: Duration,
    /// First and longest pause between status polls.
    pub poll_min: Duration,
    pub poll_max: Duration,
    /// The file name the artifact is written under: kfleet's asset template for this identity
    /// and driver version, never a name that came from the network.
    pub asset_name: String,
    /// Largest artifact accepted, in bytes.
    pub max_download: u64,
    /// Allow plain `http://` to a service or download that is not on loopback.
    pub insecure_http: bool,
    /// A CA certificate (PEM) trusted besides the system's, for a service a private CA signed.
    pub ca_file: Option<PathBuf>,
    /// The OCI store the driver is pulled from (the registry, or a mirror of it near the node),
    /// by the tag this node computes for its own identity.
    pub store: Option<std::sync::Arc<crate::forge::OciStore>>,
    /// Signed provenance the artifact must carry (`--require-provenance`): its Sigstore bundle
    /// is verified before anything is written.
    pub provenance: Option<std::sync::Arc<crate::provenance::Requirement>>,
}

/// The HTTP client `ensure` talks through: the system's roots, and `ca_file` when given.
fn http_client(options: &EnsureOptions) -> Result<reqwest::Client, EnsureError> {
    crate::net::http_client(
        Duration::from_secs(60),
        crate::net::Redirects::Limited(10),
        options.ca_file.as_deref(),
    )
    .map_err(|message| EnsureError::Http {
        url: options.service.clone(),
        source: message.into(),
    })
}

/// Largest artifact `ensure` downloads by default (a driver package is a few MiB).
pub const DEFAULT_MAX_DOWNLOAD: u64 = 512 << 20;
/// Largest answer from the build service (a build status is a few hundred bytes).
const MAX_STATUS_BODY: usize = 64 << 10;

/// A verified artifact: where it was written, and the very bytes whose sha256 was checked (an
/// install uses these, never a second read of a file another process could have replaced).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Artifact {
    pub path: PathBuf,
    pub bytes: bytes::Bytes,
}

/// How it ended, each with its own exit code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnsureOutcome {
    /// The verified artifact.
    Available(Artifact),
    TimedOut(String),
    Failed(String),
    /// The service refused the identity (invalid or unsupported).
    Rejected(String),
}

impl EnsureOutcome {
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Available(_) => 0,
            Self::TimedOut(_) => 3,
            Self::Failed(_) => 4,
            Self::Rejected(_) => 5,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EnsureError {
    #[error("the build service at {0} rejected the token (401)")]
    Unauthorized(String),
    #[error("{url}: {source}")]
    Http { url: String, source: Cause },
    #[error("{name}: sha256 is {actual} but the release says {expected}; nothing was kept")]
    ChecksumMismatch {
        name: String,
        expected: String,
        actual: String,
    },
    #[error(
        "{name}: GitHub's digest of the stored asset is {digest} but the release's .sha256 says {file}; nothing was kept"
    )]
    ChecksumsDisagree {
        name: String,
        digest: String,
        file: String,
    },
    #[error("{url}: {source}; nothing was kept")]
    ChecksumFile { url: String, source: Cause },
    #[error("the service said available but gave no {0}")]
    Incomplete(&'static str),
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Insecure(#[source] crate::net::TransportError),
    #[error("{url}: the download is larger than {max} bytes; refusing it")]
    TooLarge { url: String, max: u64 },
    #[error("{url}: {status} (the asset may be being replaced)")]
    Gone { url: String, status: u16 },
    #[error("the asset name '{0}' is not a plain file name; nothing was written")]
    BadName(String),
    #[error("the driver is in an OCI registry ({0}), which the node was not told to pull from")]
    NeedsStore(String),
    #[error("{0}")]
    Store(#[from] crate::forge::StoreError),
    #[error(
        "{name} has no signed provenance beside it ({name}{suffix}) and provenance is required; nothing was written"
    )]
    NoProvenance { name: String, suffix: &'static str },
    #[error("{0}; nothing was written")]
    Provenance(#[from] crate::provenance::ProvenanceError),
}

impl EnsureError {
    /// What an asset being replaced looks like for a moment (a 404 or a digest that no longer
    /// matches), or one whose companions are still being uploaded (the bundle follows the
    /// package): worth asking again until the deadline, which then names it.
    fn passing(&self) -> bool {
        matches!(
            self,
            Self::Gone { .. }
                | Self::ChecksumMismatch { .. }
                | Self::ChecksumsDisagree { .. }
                | Self::NoProvenance { .. }
        )
    }
}

/// Temporary downloads older than this in `--out` were left by an `ensure` that was killed.
const STALE_DOWNLOAD: Duration = Duration::from_secs(600);

/// Removes what killed downloads left in `dir` (`.kfleet-download-*` not written to for
/// [`STALE_DOWNLOAD`]); one still being written by another `ensure` is younger and kept.
fn remove_stale_downloads(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let stale = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(".kfleet-download-"))
            && entry.metadata().is_ok_and(|m| {
                m.is_file()
                    && m.modified()
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age >= STALE_DOWNLOAD)
            });
        if stale {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => tracing::info!(
                    "removed {} (a download that was cut off)",
                    entry.path().display()
                ),
                Err(e) => tracing::warn!("cannot remove {}: {e}", entry.path().display()),
            }
        }
    }
}

/// A name that stays inside `--out`: one path component, not hidden, no separators.
fn plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name.len() <= 255
        && !name.contains(['/', '\\', '\0'])
}

struct Client<'a> {
    http: reqwest::Client,
    options: &'a EnsureOptions,
    deadline_at: Instant,
}

impl Client<'_> {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.options.service.trim_end_matches('/'))
    }

    /// Sends a request; `Ok(None)` for answers worth retrying (5xx, 429, transport errors).
    async fn call(
        &self,
        request: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<Option<(u16, BuildStatus)>, EnsureError> {
        let response = match request.bearer_auth(&self.options.token).send().await {
            Ok(r) => r,
            Err(e) => {
                tracing::info!("waiting: {url}: {e}; retrying");
                return Ok(None);
            }
        };
        let code = response.status().as_u16();
        if code == 401 {
            return Err(EnsureError::Unauthorized(self.options.service.clone()));
        }
        if code == 429 || code >= 500 {
            tracing::info!("waiting: {url} answered {code}; retrying");
            return Ok(None);
        }
        let body = match crate::net::read_capped(response, MAX_STATUS_BODY).await {
            Ok(body) => body,
            Err(crate::net::BodyError::TooLarge(_)) => {
                return Err(EnsureError::Http {
                    url: url.to_string(),
                    source: format!(
                        "answered {code} with more than {MAX_STATUS_BODY} bytes; not a build status"
                    )
                    .into(),
                });
            }
            Err(crate::net::BodyError::Transport(e)) => {
                tracing::info!("waiting: {url}: {e}; retrying");
                return Ok(None);
            }
        };
        let status: BuildStatus = serde_json::from_slice(&body).map_err(|e| EnsureError::Http {
            url: url.to_string(),
            source: Cause::text(format!(
                "answered {code} with a body that is not a build status: {e}"
            )),
        })?;
        Ok(Some((code, status)))
    }

    async fn download(&self, status: &BuildStatus, key: &str) -> Result<Artifact, EnsureError> {
        if let Some(store) = &self.options.store {
            // The store answers for this node's own identity, whatever the service named.
            return pull_from_store(store, key, self.options)
                .await?
                .ok_or_else(|| EnsureError::Gone {
                    url: store.label(),
                    status: 404,
                });
        }
        let url = status
            .download_url
            .clone()
            .ok_or(EnsureError::Incomplete("download_url"))?;
        if status.sha256.is_none() && status.sha256_url.is_none() && is_oci_manifest_url(&url) {
            return Err(EnsureError::NeedsStore(
                crate::text::clean(&url).into_owned(),
            ));
        }
        let expected = Expected {
            digest: status.sha256.clone(),
            checksum_url: status.sha256_url.clone(),
            provenance_url: status.provenance_url.clone(),
        };
        download_verified(&self.http, &url, &expected, self.options, self.deadline_at).await
    }
}

/// Whether `url` names a manifest in an OCI registry (`…/v2/NAME/manifests/TAG`).
fn is_oci_manifest_url(url: &str) -> bool {
    reqwest::Url::parse(url)
        .is_ok_and(|u| u.path().starts_with("/v2/") && u.path().contains("/manifests/"))
}

/// The driver of `key` from the OCI store (its manifest checked: kfleet's artifact, this identity
/// and driver version, the layer digest; the package checked against that digest), written
/// into `options.out` like a download. `None`: the store has no such driver (yet).
async fn pull_from_store(
    store: &crate::forge::OciStore,
    key: &str,
    options: &EnsureOptions,
) -> Result<Option<Artifact>, EnsureError> {
    let pulled = store
        .pull(key, &options.driver_version, options.max_download)
        .await
        .map_err(EnsureError::Store)?;
    let Some((driver, package)) = pulled else {
        return Ok(None);
    };
    if let Some(required) = &options.provenance {
        let Some(bundle) = store.pull_bundle(&driver).await? else {
            return Err(EnsureError::NoProvenance {
                name: options.asset_name.clone(),
                suffix: crate::provenance::BUNDLE_SUFFIX,
            });
        };
        check_bundle(
            required,
            &options.asset_name,
            &bundle,
            &crate::provenance::sha256_hex(&package),
        )?;
    }
    tracing::info!(
        "pulled {key} {} from {} (layer {})",
        options.driver_version,
        store.label(),
        driver.layer_digest
    );
    write_artifact(&options.out, &options.asset_name, package).map(Some)
}

/// Writes verified bytes into `out` under `name`: a temporary file there, synced, then renamed.
fn write_artifact(
    out: &std::path::Path,
    name: &str,
    bytes: bytes::Bytes,
) -> Result<Artifact, EnsureError> {
    use std::io::Write as _;
    if !plain_file_name(name) {
        return Err(EnsureError::BadName(name.to_string()));
    }
    let write_err = |source| EnsureError::Write {
        path: out.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(out).map_err(write_err)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".kfleet-download-")
        .tempfile_in(out)
        .map_err(write_err)?;
    tmp.write_all(&bytes).map_err(write_err)?;
    keep(tmp, out, name, bytes)
}

/// Keeps a verified temporary download in `out` as `name`: synced, renamed, the directory
/// synced.
fn keep(
    tmp: tempfile::NamedTempFile,
    out: &std::path::Path,
    name: &str,
    bytes: bytes::Bytes,
) -> Result<Artifact, EnsureError> {
    let path = out.join(name);
    let write_err = |source| EnsureError::Write {
        path: path.clone(),
        source,
    };
    tmp.as_file().sync_all().map_err(write_err)?;
    tmp.persist(&path).map_err(|e| write_err(e.error))?;
    crate::fsio::sync_dir(out).map_err(write_err)?;
    Ok(Artifact { path, bytes })
}

/// What an artifact's bytes must hash to: GitHub's digest of the stored asset (from the release
/// listing) and the release's `.sha256` file beside it; either may be missing (assets uploaded
/// before GitHub kept digests; a release without checksum files), never both, and where both
/// are there they must agree.
#[derive(Clone, Debug, Default)]
pub struct Expected {
    pub digest: Option<String>,
    pub checksum_url: Option<String>,
    /// The artifact's Sigstore bundle, checked when the node requires provenance.
    pub provenance_url: Option<String>,
}

/// Largest `.sha256` file read (one line: 64 hex digits, two spaces, a file name).
const MAX_CHECKSUM_FILE: usize = 4096;

/// The hex sha256 a `sha256sum` line states, checked to name `names` (when it names a file).
fn parse_checksum_line(text: &str, names: &[&str]) -> Result<String, String> {
    let line = text.lines().next().unwrap_or_default();
    let mut words = line.split_whitespace();
    let hex = words.next().unwrap_or_default();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("not a sha256sum line (64 hex digits, then the file name)".into());
    }
    if let Some(named) = words.next().map(|n| n.trim_start_matches('*'))
        && !names.contains(&named)
    {
        return Err(format!(
            "names {}, not the artifact {}",
            crate::text::clean(named),
            names.first().copied().unwrap_or_default()
        ));
    }
    Ok(hex.to_ascii_lowercase())
}

/// The sha256 the artifact at `url` must have: the listing's digest, the `.sha256` file's, or
/// both when they agree.
async fn expected_sha256(
    http: &reqwest::Client,
    url: &str,
    expected: &Expected,
    options: &EnsureOptions,
) -> Result<String, Attempt> {
    let digest = expected
        .digest
        .as_deref()
        .map(|d| d.trim_start_matches("sha256:").to_ascii_lowercase());
    let Some(checksum_url) = &expected.checksum_url else {
        return digest.ok_or(Attempt::Final(EnsureError::Incomplete("sha256")));
    };
    crate::net::check_transport(checksum_url, options.insecure_http)
        .map_err(|e| Attempt::Final(EnsureError::Insecure(e)))?;
    let file_err = |message: String| {
        Attempt::Final(EnsureError::ChecksumFile {
            url: checksum_url.clone(),
            source: message.into(),
        })
    };
    let response = fetch(http, checksum_url).await?;
    let body = match crate::net::read_capped(response, MAX_CHECKSUM_FILE).await {
        Ok(body) => body,
        Err(crate::net::BodyError::TooLarge(max)) => {
            return Err(file_err(format!(
                "larger than {max} bytes, not a checksum file"
            )));
        }
        Err(crate::net::BodyError::Transport(e)) => return Err(Attempt::Retry(e)),
    };
    let served = url.rsplit('/').next().unwrap_or_default();
    let names = [options.asset_name.as_str(), served];
    let file = parse_checksum_line(&String::from_utf8_lossy(&body), &names).map_err(file_err)?;
    match digest {
        Some(digest) if digest != file => Err(Attempt::Final(EnsureError::ChecksumsDisagree {
            name: options.asset_name.clone(),
            digest,
            file,
        })),
        _ => Ok(file),
    }
}

/// Downloads `url` into `options.out` under `options.asset_name`: streamed into a temporary file
/// there with a size cap, its sha256 checked against `expected`, then renamed. Transport errors
/// and 5xx answers are retried with backoff until `deadline_at`.
async fn download_verified(
    http: &reqwest::Client,
    url: &str,
    expected: &Expected,
    options: &EnsureOptions,
    deadline_at: Instant,
) -> Result<Artifact, EnsureError> {
    crate::net::check_transport(url, options.insecure_http).map_err(EnsureError::Insecure)?;
    let name = &options.asset_name;
    if !plain_file_name(name) {
        return Err(EnsureError::BadName(name.clone()));
    }
    let out = &options.out;
    std::fs::create_dir_all(out).map_err(|source| EnsureError::Write {
        path: out.clone(),
        source,
    })?;
    remove_stale_downloads(out);
    let mut pause = options.poll_min.max(Duration::from_millis(100));
    loop {
        let attempt = match expected_sha256(http, url, expected, options).await {
            Ok(sha256) => download_once(http, url, options.max_download, out)
                .await
                .map(|got| (sha256, got)),
            Err(e) => Err(e),
        };
        match attempt {
            Ok((wanted, (tmp, actual, bytes))) => {
                if actual != wanted {
                    return Err(EnsureError::ChecksumMismatch {
                        name: name.clone(),
                        expected: wanted,
                        actual,
                    });
                }
                if let Some(required) = &options.provenance {
                    match check_provenance(http, expected, required, options, &actual).await {
                        Ok(()) => {}
                        Err(Attempt::Final(e)) => return Err(e),
                        Err(Attempt::Retry(message)) => {
                            retry_or_give_up(url, message, deadline_at, &mut pause, options)
                                .await?;
                            continue;
                        }
                    }
                }
                return keep(tmp, out, name, bytes);
            }
            Err(Attempt::Final(e)) => return Err(e),
            Err(Attempt::Retry(message)) => {
                retry_or_give_up(url, message, deadline_at, &mut pause, options).await?;
            }
        }
    }
}

/// Waits `pause` (doubling it up to the longest poll) before another attempt, or gives up when
/// the deadline has passed.
async fn retry_or_give_up(
    url: &str,
    message: String,
    deadline_at: Instant,
    pause: &mut Duration,
    options: &EnsureOptions,
) -> Result<(), EnsureError> {
    let left = deadline_at.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(EnsureError::Http {
            url: url.to_string(),
            source: format!("{message}; gave up at the deadline").into(),
        });
    }
    tracing::info!("waiting: {url}: {message}; retrying");
    tokio::time::sleep((*pause).min(left)).await;
    *pause = (*pause * 2).min(options.poll_max.max(*pause));
    Ok(())
}

/// Downloads the artifact's Sigstore bundle and verifies it for the artifact whose sha256 is
/// `sha256`, before anything is kept.
async fn check_provenance(
    http: &reqwest::Client,
    expected: &Expected,
    required: &crate::provenance::Requirement,
    options: &EnsureOptions,
    sha256: &str,
) -> Result<(), Attempt> {
    let name = &options.asset_name;
    let missing = || {
        Attempt::Final(EnsureError::NoProvenance {
            name: name.clone(),
            suffix: crate::provenance::BUNDLE_SUFFIX,
        })
    };
    let Some(url) = &expected.provenance_url else {
        return Err(missing());
    };
    crate::net::check_transport(url, options.insecure_http)
        .map_err(|e| Attempt::Final(EnsureError::Insecure(e)))?;
    let response = match fetch(http, url).await {
        Err(Attempt::Final(EnsureError::Gone { .. })) => return Err(missing()),
        other => other?,
    };
    let bundle = match crate::net::read_capped(response, crate::provenance::MAX_BUNDLE).await {
        Ok(body) => body,
        Err(crate::net::BodyError::TooLarge(max)) => {
            return Err(Attempt::Final(EnsureError::Http {
                url: url.clone(),
                source: format!("larger than {max} bytes, not a Sigstore bundle").into(),
            }));
        }
        Err(crate::net::BodyError::Transport(e)) => return Err(Attempt::Retry(e)),
    };
    check_bundle(required, name, &bundle, sha256).map_err(|e| Attempt::Final(e.into()))
}

/// Verifies the bundle of the artifact `name` (sha256 `sha256`) and says who built it.
fn check_bundle(
    required: &crate::provenance::Requirement,
    name: &str,
    bundle: &[u8],
    sha256: &str,
) -> Result<(), crate::provenance::ProvenanceError> {
    let bundle_name = format!("{name}{}", crate::provenance::BUNDLE_SUFFIX);
    let verified = required.check(&bundle_name, bundle, sha256)?;
    tracing::info!("{name}: {}", verified.describe());
    Ok(())
}

/// How one download attempt failed.
enum Attempt {
    Retry(String),
    Final(EnsureError),
}

/// GET `url`: a transport error, a 5xx or a 429 is worth another try; a 404 or 410 is an asset
/// that is gone (or being replaced); any other answer but a success is final.
async fn fetch(http: &reqwest::Client, url: &str) -> Result<reqwest::Response, Attempt> {
    let response = http
        .get(url)
        .send()
        .await
        .map_err(|e| Attempt::Retry(crate::text::error_chain(&e)))?;
    let status = response.status().as_u16();
    match status {
        429 | 500..=599 => Err(Attempt::Retry(format!("{url}: HTTP {status}"))),
        404 | 410 => Err(Attempt::Final(EnsureError::Gone {
            url: url.to_string(),
            status,
        })),
        200..=299 => Ok(response),
        _ => Err(Attempt::Final(EnsureError::Http {
            url: url.to_string(),
            source: format!("HTTP {status}").into(),
        })),
    }
}

/// One streamed download into a temporary file in `dir`; returns it with its sha256 and the
/// bytes that were hashed.
async fn download_once(
    http: &reqwest::Client,
    url: &str,
    max: u64,
    dir: &std::path::Path,
) -> Result<(tempfile::NamedTempFile, String, bytes::Bytes), Attempt> {
    use std::io::Write as _;
    let mut response = fetch(http, url).await?;
    let too_large = || {
        Attempt::Final(EnsureError::TooLarge {
            url: url.to_string(),
            max,
        })
    };
    if response.content_length().is_some_and(|n| n > max) {
        return Err(too_large());
    }
    let write_err = |source| {
        Attempt::Final(EnsureError::Write {
            path: dir.to_path_buf(),
            source,
        })
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".kfleet-download-")
        .tempfile_in(dir)
        .map_err(write_err)?;
    let mut hasher = sha2::Sha256::new();
    let mut kept = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| Attempt::Retry(crate::text::error_chain(&e)))?
    {
        if (kept.len() + chunk.len()) as u64 > max {
            return Err(too_large());
        }
        hasher.update(&chunk);
        tmp.write_all(&chunk).map_err(write_err)?;
        kept.extend_from_slice(&chunk);
    }
    Ok((tmp, crate::fsio::hex(&hasher.finalize()), kept.into()))
}

/// Without a service: the same planner against the forge directly (the node needs a GitHub
/// token), then the run is followed to the deadline and the artifact fetched from the release.
pub async fn ensure_direct(
    identity: &KernelIdentity,
    forge: &dyn crate::forge::Forge,
    planner: &crate::builds::Planner,
    template: &crate::artifacts::AssetTemplate,
    options: &EnsureOptions,
) -> Result<EnsureOutcome, EnsureError> {
    use crate::builds::Decision;
    let http = http_client(options)?;
    let forge_err = |e: Cause| EnsureError::Http {
        url: forge.label(),
        source: e,
    };
    let key = identity.key();
    let started = Instant::now();
    let decision = planner
        .plan_for_version(std::slice::from_ref(identity), &options.driver_version)
        .await
        .map_err(|e| forge_err(Cause::of(e)))?
        .remove(0)
        .1;
    let run_id = match decision {
        Decision::Available {
            url: Some(url),
            digest,
            checksum_url,
            provenance_url,
            ..
        } if digest.is_some() || checksum_url.is_some() => {
            let expected = Expected {
                digest,
                checksum_url,
                provenance_url,
            };
            match download_verified(&http, &url, &expected, options, started + options.deadline)
                .await
            {
                Ok(artifact) => return Ok(EnsureOutcome::Available(artifact)),
                Err(e) if e.passing() => {
                    tracing::info!("waiting: {e}; asking again");
                    None
                }
                Err(e) => return Err(e),
            }
        }
        Decision::Dispatched { run_id, .. } => Some(run_id),
        Decision::Building { run_id, .. } => run_id,
        Decision::Available { .. } => None,
        Decision::TimedOut { .. } => {
            return Ok(EnsureOutcome::TimedOut(format!(
                "the build for {key} passed the deadline"
            )));
        }
        Decision::Invalid { reason } | Decision::Unsupported { reason } => {
            return Ok(EnsureOutcome::Rejected(reason));
        }
        Decision::Refused { reason } => return Ok(EnsureOutcome::Failed(reason)),
        Decision::WouldDispatch => None,
    };
    tracing::info!(
        "building {key}{}",
        run_id.map(|r| format!(" (run {r})")).unwrap_or_default()
    );
    let mut pause = options.poll_min;
    loop {
        if let Some(run_id) = run_id {
            let run = forge
                .get_run(run_id)
                .await
                .map_err(|e| forge_err(Cause::of(e)))?;
            if run.is_finished() && !run.succeeded() {
                return Ok(EnsureOutcome::Failed(format!(
                    "the build for {key} failed{}",
                    run.html_url.map(|u| format!(": {u}")).unwrap_or_default()
                )));
            }
        }
        let listing = match &options.store {
            Some(store) => {
                if let Some(artifact) = pull_from_store(store, &key, options).await? {
                    return Ok(EnsureOutcome::Available(artifact));
                }
                None
            }
            None => Some(
                forge
                    .list_releases()
                    .await
                    .map_err(|e| forge_err(Cause::of(e)))?,
            ),
        };
        if let Some(listing) = listing
            && let Ok(release) =
                crate::artifacts::select_release(&listing.releases, Some(&options.driver_version))
            && let Some(asset) = crate::artifacts::index_assets(release, template)
                .matched
                .into_iter()
                .find(|a| a.key == key)
            && let Some(url) = asset.url
            && (asset.digest.is_some() || asset.checksum_url.is_some())
        {
            let expected = Expected {
                digest: asset.digest,
                checksum_url: asset.checksum_url,
                provenance_url: asset.provenance_url,
            };
            match download_verified(&http, &url, &expected, options, started + options.deadline)
                .await
            {
                Ok(artifact) => return Ok(EnsureOutcome::Available(artifact)),
                Err(e) if e.passing() && started.elapsed() < options.deadline => {
                    tracing::info!("waiting: {e}; asking again");
                }
                Err(e) => return Err(e),
            }
        }
        if started.elapsed() >= options.deadline {
            return Ok(EnsureOutcome::TimedOut(format!(
                "no driver for {key} within {:?}",
                options.deadline
            )));
        }
        let left = options.deadline.saturating_sub(started.elapsed());
        tokio::time::sleep(pause.min(left)).await;
        pause = (pause * 2).min(options.poll_max);
    }
}

/// Asks the service for `identity`'s driver and waits for it, at most `options.deadline`.
pub async fn ensure(
    identity: &KernelIdentity,
    options: &EnsureOptions,
) -> Result<EnsureOutcome, EnsureError> {
    crate::net::check_transport(&options.service, options.insecure_http)
        .map_err(EnsureError::Insecure)?;
    let started = Instant::now();
    let client = Client {
        http: http_client(options)?,
        options,
        deadline_at: started + options.deadline,
    };
    let request = BuildRequest {
        kernel_version: identity.kernel_version.clone(),
        architecture: identity.architecture.as_str().to_string(),
        distribution: identity.distribution.as_str().to_string(),
        distro_version: identity.distro_version.clone(),
        driver_version: options.driver_version.clone(),
    };
    let mut pause = options.poll_min;
    let build_url = client.url("/build");
    let mut id: Option<String> = None;
    loop {
        if started.elapsed() >= options.deadline {
            return Ok(EnsureOutcome::TimedOut(format!(
                "no driver for {} within {:?}",
                identity.key(),
                options.deadline
            )));
        }
        let answer = match &id {
            None => {
                client
                    .call(client.http.post(&build_url).json(&request), &build_url)
                    .await?
            }
            Some(id) => {
                let url = client.url(&format!("/status/{id}"));
                client.call(client.http.get(&url), &url).await?
            }
        };
        if let Some((code, status)) = answer {
            match (code, status.status) {
                (200, ServiceStatus::Available) => {
                    match client.download(&status, &identity.key()).await {
                        Ok(artifact) => return Ok(EnsureOutcome::Available(artifact)),
                        // Replaced while we read it: the service's next answer names the new one.
                        Err(e) if e.passing() && started.elapsed() < options.deadline => {
                            tracing::info!("waiting: {e}; asking the service again");
                            id = None;
                        }
                        Err(e) => return Err(e),
                    }
                }
                (400, _) => return Ok(EnsureOutcome::Rejected(status.reason.unwrap_or_default())),
                (_, ServiceStatus::Failed) => {
                    return Ok(EnsureOutcome::Failed(format!(
                        "the build for {} failed{}",
                        identity.key(),
                        status.run_url.map(|u| format!(": {u}")).unwrap_or_default()
                    )));
                }
                (_, ServiceStatus::TimedOut) => {
                    return Ok(EnsureOutcome::TimedOut(format!(
                        "the build for {} timed out",
                        identity.key()
                    )));
                }
                (200 | 202, _) => {
                    if id.is_none() {
                        id = status.id.clone();
                        tracing::info!(
                            "building {} (id {}){}",
                            identity.key(),
                            id.as_deref().unwrap_or("?"),
                            status.run_url.map(|u| format!(": {u}")).unwrap_or_default()
                        );
                    }
                }
                (code, _) => {
                    return Err(EnsureError::Http {
                        url: build_url,
                        source: format!(
                            "answered {code}: {}",
                            status
                                .reason
                                .unwrap_or_else(|| status.status.as_str().to_string())
                        )
                        .into(),
                    });
                }
            }
        }
        let left = options.deadline.saturating_sub(started.elapsed());
        tokio::time::sleep(pause.min(left)).await;
        pause = (pause * 2).min(options.poll_max);
    }
}
