//! Kernel headers through one fallback chain: the sources of `assets/header-sources.toml` tried in
//! order with a timeout each, every attempt recorded, the first hit wins; results cached with a
//! TTL; `fetch` downloads and verifies the packages. The build workflow runs the same code.

pub mod chain;
pub mod credentials;
mod kernel_abi;
pub mod parts;
mod releases;
pub mod rhsm;
mod rpm_payload;
pub mod scc;
mod sources;
pub mod spec;
pub mod trust;
pub mod upcoming;

pub use chain::{Chain, ChainError, PlannedSource, plan};
pub use credentials::{CredentialError, Credentials};
pub use parts::KernelParts;
pub use spec::{Protocol, SourceKind, SourceSpec};
pub use upcoming::{FleetLine, ListingPass, Upcoming, compare_kernels, fleet_lines, line_of};

use crate::identity::KernelIdentity;
use crate::text::Cause;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use trust::Vouch;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checksum {
    /// `sha256`, `sha1` or `sha512`.
    pub algorithm: String,
    pub hex: String,
}

impl Checksum {
    /// `body`'s digest by this checksum's algorithm, as lower-case hex; `None` for an algorithm
    /// kfleet does not compute.
    pub(crate) fn of(&self, body: &[u8]) -> Option<String> {
        Some(match self.algorithm.as_str() {
            "sha256" => crate::fsio::hex(&sha2::Sha256::digest(body)),
            "sha512" => crate::fsio::hex(&sha2::Sha512::digest(body)),
            "sha1" => crate::fsio::hex(&sha1_digest(body)),
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderPackage {
    /// File name to save it as.
    pub name: String,
    pub url: String,
    pub checksum: Option<Checksum>,
    /// What vouches for it; a cached resolution without one is resolved again.
    #[serde(default)]
    pub vouch: Option<trust::Vouch>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub source: String,
    pub kind: SourceKind,
    pub url: String,
    pub outcome: String,
    pub millis: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    pub key: String,
    /// The source that held the packages; `None`: the chain is exhausted.
    pub resolved_by: Option<String>,
    pub packages: Vec<HeaderPackage>,
    pub attempts: Vec<Attempt>,
    pub resolved_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("no header sources for {0}: the chain has none for this distribution")]
    NoSources(String),
    #[error("kernel headers for {key} are unresolvable; tried:\n{attempts}")]
    Unresolvable { key: String, attempts: String },
    /// Every source of a line was tried and none could be listed (down, refused, timed out):
    /// not "no newer kernels".
    #[error("{line}: no repository could be read; tried:\n{attempts}")]
    Unlisted { line: String, attempts: String },
    /// A rolling release (Tumbleweed): a newer kernel arrives with a snapshot not yet published,
    /// whose number the node's identity would carry.
    #[error(
        "{0}: a rolling release; its next kernel comes with a snapshot that is not published yet, so it is built when a node runs it"
    )]
    Rolling(String),
    #[error("{url}: {source}")]
    Download { url: String, source: Cause },
    #[error("{name}: {algorithm} is {actual} but the source says {expected}; nothing was kept")]
    ChecksumMismatch {
        name: String,
        algorithm: String,
        expected: String,
        actual: String,
    },
    /// A package whose own signature does not vouch for it (unsigned, another key, altered):
    /// the chain moves on to the next source.
    #[error("{name} from source {from}: {reason}; nothing was kept")]
    Unvouched {
        name: String,
        from: String,
        reason: String,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot set up HTTP: {0}")]
    Setup(String),
}

/// How the resolver talks to sources.
#[derive(Clone, Debug)]
pub struct ResolverOptions {
    /// Longest time one source may take, all its requests together.
    pub source_timeout: Duration,
    /// Cache directory and how long a result stays fresh; `None`: no cache. Repository metadata
    /// is kept there too (`metadata/`) and asked for again only conditionally (ETag,
    /// Last-Modified), so an unchanged index costs a 304.
    pub cache: Option<(PathBuf, Duration)>,
    /// Upcoming kernels include those of pockets before release (Ubuntu's `-proposed`,
    /// Debian's `proposed-updates`, Fedora's `updates-testing`): earlier builds, opted in.
    pub proposed: bool,
    /// Logins for the sources that name a credential (Ubuntu Pro's archives).
    pub credentials: Credentials,
    /// When signatures, keys and `Valid-Until` are judged; `None`: now. A replay of metadata
    /// recorded on a past day (an archive's signed index, kept) sets that day.
    pub verify_at: Option<std::time::SystemTime>,
}

impl Default for ResolverOptions {
    fn default() -> Self {
        Self {
            source_timeout: Duration::from_secs(60),
            cache: None,
            proposed: false,
            credentials: Credentials::default(),
            verify_at: None,
        }
    }
}

pub struct Resolver {
    chain: Chain,
    http: reqwest::Client,
    /// Clients that present a credential's TLS client certificate (Red Hat's CDN), by name:
    /// used only for the sources that name it.
    presenting: std::collections::BTreeMap<String, reqwest::Client>,
    options: ResolverOptions,
}

fn format_attempts(attempts: &[Attempt]) -> String {
    attempts
        .iter()
        .map(|a| {
            format!(
                "  {} ({}): {} -> {} [{} ms]",
                a.source,
                a.kind.as_str(),
                a.url,
                a.outcome,
                a.millis
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl Resolver {
    pub fn new(chain: Chain, options: ResolverOptions) -> Result<Self, HeaderError> {
        let http = crate::net::http_client(
            options.source_timeout,
            crate::net::Redirects::Limited(10),
            None,
        )
        .map_err(HeaderError::Setup)?;
        let mut presenting = std::collections::BTreeMap::new();
        for name in options.credentials.certificate_names() {
            let builder = crate::net::client_builder(
                options.source_timeout,
                crate::net::Redirects::SameHost(10),
            );
            let client = options
                .credentials
                .with_certificate(name, builder)
                .and_then(|b| b.build().map_err(|e| crate::text::error_chain(&e)))
                .map_err(HeaderError::Setup)?;
            presenting.insert(name.to_string(), client);
        }
        Ok(Self {
            chain,
            http,
            presenting,
            options,
        })
    }

    /// The client a source's requests go through: one presenting its credential's client
    /// certificate where it names one, else the shared one.
    fn client_for(&self, source: &SourceSpec) -> &reqwest::Client {
        source
            .credential
            .as_deref()
            .and_then(|name| self.presenting.get(name))
            .unwrap_or(&self.http)
    }

    pub fn chain(&self) -> &Chain {
        &self.chain
    }

    /// What a source's client works with: the HTTP client, the kernel's parts, the attempts so
    /// far, and where repository metadata is kept with its validators (in the cache directory).
    fn context<'a>(
        &'a self,
        parts: &'a KernelParts,
        source: &'a SourceSpec,
        attempts: &'a mut Vec<Attempt>,
    ) -> sources::Ctx<'a> {
        self.listing_context(parts, source, attempts, None)
    }

    /// [`Self::context`] sharing the indexes read in one listing pass.
    fn listing_context<'a>(
        &'a self,
        parts: &'a KernelParts,
        source: &'a SourceSpec,
        attempts: &'a mut Vec<Attempt>,
        listings: Option<&'a sources::ListingMemo>,
    ) -> sources::Ctx<'a> {
        sources::Ctx {
            listings,
            deadline: Instant::now() + self.options.source_timeout,
            http: self.client_for(source),
            credentials: &self.options.credentials,
            parts,
            source,
            attempts,
            metadata: self
                .options
                .cache
                .as_ref()
                .map(|(dir, _)| dir.join("metadata")),
            keyring: None,
            verify_at: self
                .options
                .verify_at
                .unwrap_or_else(std::time::SystemTime::now),
        }
    }

    fn cache_path(&self, id: &KernelIdentity) -> Option<(PathBuf, Duration)> {
        let (dir, ttl) = self.options.cache.as_ref()?;
        let name: String = id
            .key()
            .chars()
            .map(|c| if c == '/' { '_' } else { c })
            .collect();
        Some((dir.join(format!("{name}.json")), *ttl))
    }

    /// Tries the chain for `id` until a source holds its headers. An exhausted chain is a
    /// resolution without packages, with every attempt.
    pub async fn resolve(&self, id: &KernelIdentity) -> Result<Resolution, HeaderError> {
        self.resolve_except(id, &[]).await
    }

    /// [`Self::resolve`] without the sources named in `excluded` (whose packages did not verify).
    async fn resolve_except(
        &self,
        id: &KernelIdentity,
        excluded: &[String],
    ) -> Result<Resolution, HeaderError> {
        if let Some((path, ttl)) = self.cache_path(id)
            && excluded.is_empty()
            && let Ok(text) = std::fs::read(&path)
            && let Ok(cached) = serde_json::from_slice::<Resolution>(&text)
            && cached.resolved_by.is_some()
            && cached.packages.iter().all(|p| p.vouch.is_some())
            && chrono::Utc::now()
                .signed_duration_since(cached.resolved_at)
                .to_std()
                .is_ok_and(|age| age < ttl)
        {
            return Ok(cached);
        }
        self.learn_release(id).await;
        let specs = self.chain.for_identity(id);
        if specs.is_empty() {
            return Err(HeaderError::NoSources(id.key()));
        }
        let parts = KernelParts::of(id);
        let mut attempts = Vec::new();
        let specs: Vec<&SourceSpec> = specs
            .into_iter()
            .filter(|s| !excluded.contains(&s.name))
            .collect();
        let mut found = None;
        for spec in specs {
            let started = Instant::now();
            let before = attempts.len();
            let mut ctx = self.context(&parts, spec, &mut attempts);
            let outcome =
                tokio::time::timeout(self.options.source_timeout, sources::try_source(&mut ctx))
                    .await;
            match outcome {
                Ok(Some(packages)) => {
                    found = Some((spec.name.clone(), packages));
                    break;
                }
                Ok(None) => {
                    if attempts.len() == before {
                        attempts.push(Attempt {
                            source: spec.name.clone(),
                            kind: spec.kind(),
                            url: String::new(),
                            outcome: "no URL to try".into(),
                            millis: started.elapsed().as_millis() as u64,
                        });
                    }
                }
                Err(_) => attempts.push(Attempt {
                    source: spec.name.clone(),
                    kind: spec.kind(),
                    url: String::new(),
                    outcome: format!(
                        "timed out after {:?}; moving on",
                        self.options.source_timeout
                    ),
                    millis: started.elapsed().as_millis() as u64,
                }),
            }
        }
        let (resolved_by, packages) = match found {
            Some((name, packages)) => (Some(name), packages),
            None => (None, Vec::new()),
        };
        let resolution = Resolution {
            key: id.key(),
            resolved_by,
            packages,
            attempts,
            resolved_at: chrono::Utc::now(),
        };
        if resolution.resolved_by.is_some()
            && let Some((path, _)) = self.cache_path(id)
        {
            // A cache that cannot be written only costs a lookup next time.
            if let Ok(json) = serde_json::to_vec_pretty(&resolution) {
                let _ = crate::fsio::off_runtime(move || {
                    if let Some(dir) = path.parent() {
                        crate::fsio::create_private_dir(dir)?;
                    }
                    crate::fsio::write_private(&path, &json)
                })
                .await;
            }
        }
        Ok(resolution)
    }

    /// Resolves and downloads every package into `out`, verifying checksums. Each file is written
    /// through a temporary file and renamed only after its checksum matched.
    pub async fn fetch(
        &self,
        id: &KernelIdentity,
        out: &Path,
    ) -> Result<(Resolution, Vec<PathBuf>), HeaderError> {
        crate::fsio::create_private_dir(out).map_err(|source| HeaderError::Write {
            path: out.display().to_string(),
            source,
        })?;
        let parts = KernelParts::of(id);
        // Sources whose packages did not verify, with why: the chain goes on without them.
        let mut excluded: Vec<String> = Vec::new();
        let mut refusals: Vec<Attempt> = Vec::new();
        'resolving: loop {
            let mut resolution = match self.resolved(id, &excluded).await {
                Ok(r) => r,
                Err(HeaderError::Unresolvable { key, attempts }) if !refusals.is_empty() => {
                    return Err(HeaderError::Unresolvable {
                        key,
                        attempts: format!("{}\n{attempts}", format_attempts(&refusals)),
                    });
                }
                Err(e) => return Err(e),
            };
            let mut written = Vec::new();
            for package in &resolution.packages {
                match self.download(&resolution, package, &parts, out).await {
                    Ok(path) => written.push(path),
                    Err(HeaderError::Unvouched {
                        name,
                        from: source,
                        reason,
                    }) => {
                        for path in written {
                            let _ = std::fs::remove_file(path);
                        }
                        refusals.push(Attempt {
                            kind: self
                                .chain
                                .sources
                                .iter()
                                .find(|s| s.name == source)
                                .map_or(SourceKind::Url, SourceSpec::kind),
                            source: source.clone(),
                            url: package.url.clone(),
                            outcome: format!("{name} refused: {reason}"),
                            millis: 0,
                        });
                        excluded.push(source);
                        continue 'resolving;
                    }
                    Err(e) => return Err(e),
                }
            }
            refusals.append(&mut resolution.attempts);
            resolution.attempts = refusals;
            return Ok((resolution, written));
        }
    }

    /// The resolution of `id` without the `excluded` sources, or why the chain is exhausted.
    async fn resolved(
        &self,
        id: &KernelIdentity,
        excluded: &[String],
    ) -> Result<Resolution, HeaderError> {
        let resolution = self.resolve_except(id, excluded).await?;
        if resolution.resolved_by.is_none() {
            return Err(HeaderError::Unresolvable {
                key: resolution.key.clone(),
                attempts: format_attempts(&resolution.attempts),
            });
        }
        Ok(resolution)
    }

    /// Downloads one package of a resolution `resolution` found, with the login of the source
    /// that found it where that source names a credential.
    async fn download(
        &self,
        resolution: &Resolution,
        package: &HeaderPackage,
        parts: &KernelParts,
        out: &Path,
    ) -> Result<PathBuf, HeaderError> {
        let err = |message: String| HeaderError::Download {
            url: package.url.clone(),
            source: Cause::from(message),
        };
        // The request's URL may carry a registered repository's token: errors are told with
        // the package's own URL.
        let failed = |e: reqwest::Error| HeaderError::Download {
            url: package.url.clone(),
            source: Cause::of(e.without_url()),
        };
        if package.name.contains('/') || package.name.contains("..") || package.name.is_empty() {
            return Err(err(format!(
                "refusing to save under the name '{}'",
                package.name
            )));
        }
        let found_by = resolution
            .resolved_by
            .as_deref()
            .and_then(|name| self.chain.sources.iter().find(|s| s.name == name));
        let request = match found_by {
            Some(source) => sources::authorized(
                &self.options.credentials,
                source,
                self.client_for(source).get(&package.url),
                &package.url,
            )
            .map_err(err)?,
            None => self.http.get(&package.url),
        };
        let response = request.send().await.map_err(failed)?;
        if !response.status().is_success() {
            return Err(err(format!("HTTP {}", response.status().as_u16())));
        }
        let limit = sources::MAX_DOWNLOAD;
        if response.content_length().is_some_and(|n| n > limit) {
            return Err(err(format!("larger than {limit} bytes; nothing was kept")));
        }
        let mut response = response;
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(failed)? {
            if body.len() as u64 + chunk.len() as u64 > limit {
                return Err(err(format!("larger than {limit} bytes; nothing was kept")));
            }
            body.extend_from_slice(&chunk);
        }
        if let Some(expected) = &package.checksum {
            let actual = expected
                .of(&body)
                .ok_or_else(|| err(format!("unknown checksum algorithm {}", expected.algorithm)))?;
            if actual != expected.hex {
                return Err(HeaderError::ChecksumMismatch {
                    name: package.name.clone(),
                    algorithm: expected.algorithm.clone(),
                    expected: expected.hex.clone(),
                    actual,
                });
            }
        }
        self.vouched(resolution, package, found_by, parts, &body)?;
        let path = out.join(&package.name);
        let target = path.clone();
        crate::fsio::off_runtime(move || crate::fsio::write_private(&target, &body))
            .await
            .map_err(|source| HeaderError::Write {
                path: path.display().to_string(),
                source,
            })?;
        Ok(path)
    }
}

impl Resolver {
    /// Whether what vouches for `package` holds for the bytes downloaded (the checksum, already
    /// compared, or the package's own signature); warns for a source used unverified.
    fn vouched(
        &self,
        resolution: &Resolution,
        package: &HeaderPackage,
        found_by: Option<&SourceSpec>,
        parts: &KernelParts,
        body: &[u8],
    ) -> Result<(), HeaderError> {
        let source = resolution.resolved_by.clone().unwrap_or_default();
        let refuse = |reason: String| HeaderError::Unvouched {
            name: package.name.clone(),
            from: source.clone(),
            reason,
        };
        match &package.vouch {
            None => Err(refuse("nothing vouches for it".into())),
            Some(Vouch::Unverified) => {
                tracing::warn!(
                    source = source.as_str(),
                    "{} is NOT VERIFIED: source {source} has unverified = true",
                    package.name
                );
                Ok(())
            }
            Some(Vouch::SignedIndex(_) | Vouch::DistributionApi(_))
                if package.checksum.is_none() =>
            {
                Err(refuse("no checksum to check it against".into()))
            }
            Some(Vouch::SignedIndex(_) | Vouch::DistributionApi(_)) => Ok(()),
            Some(Vouch::OwnSignature(_)) => {
                let spec = found_by
                    .ok_or_else(|| refuse("its source is no longer in the chain".into()))?;
                let keyring = trust::keyring_for(spec, parts).map_err(&refuse)?;
                trust::verify_rpm(body, &keyring)
                    .map(|_| ())
                    .map_err(|e| refuse(format!("its signature does not vouch for it: {e}")))
            }
        }
    }
}

/// SHA-1, for snapshot.debian.org's content addresses (and old repositories' checksums).
fn sha1_digest(data: &[u8]) -> [u8; 20] {
    use sha1::Digest as _;
    sha1::Sha1::digest(data).into()
}
