//! One client per source kind, each speaking the real protocol: DNF repository metadata
//! (`rpm_repo`), APT indexes (`apt_repo`), plain package URLs (`url`), Koji XML-RPC (`koji`),
//! snapshot.debian.org (`snapshot`) and Launchpad (`launchpad`). Each module computes its first
//! requests once, and both the offline plan and the resolver use them.

mod apt_repo;
mod koji;
mod launchpad;
mod rpm_repo;
mod snapshot;
mod url;
mod xmlrpc;

use super::parts::KernelParts;
use super::spec::{Protocol, SourceSpec};
use super::trust::Vouch;
use super::{Attempt, HeaderPackage};
use std::time::Instant;

/// Why one request of a source did not give what was wanted.
pub(super) type Outcome<T> = Result<T, String>;

pub(super) struct Ctx<'a> {
    pub http: &'a reqwest::Client,
    /// Logins for sources that name a credential.
    pub credentials: &'a super::Credentials,
    pub parts: &'a KernelParts,
    pub source: &'a SourceSpec,
    pub attempts: &'a mut Vec<Attempt>,
    /// Where fetched metadata and its validators are kept; `None`: every GET is plain.
    pub metadata: Option<std::path::PathBuf>,
    /// Indexes already read in this listing pass (upcoming kernels over many lines).
    pub listings: Option<&'a ListingMemo>,
    /// When this source's time is up: work on blocking threads (reading a SQLite index) stops
    /// there too.
    pub deadline: std::time::Instant,
    /// The keys that vouch for what the source serves (`signed_by`), once loaded; `None` for a
    /// source used unverified, or of a kind vouched for otherwise.
    pub keyring: Option<std::sync::Arc<crate::openpgp::Keyring>>,
    /// When signatures, keys and `Valid-Until` are judged.
    pub verify_at: std::time::SystemTime,
}

/// What each APT suite read so far lists, by the suite's index URLs.
pub(crate) type ListingMemo =
    std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<apt_repo::SuiteListing>>>;

impl Ctx<'_> {
    /// Loads the keyring that checks the source (apt-repo, rpm-repo, url, koji), or warns once
    /// per use where the operator opted out; `Err`: the source cannot be checked and is not
    /// tried.
    fn prepare_trust(&mut self) -> Result<(), String> {
        if !matches!(
            self.source.protocol,
            Protocol::AptRepo { .. }
                | Protocol::RpmRepo { .. }
                | Protocol::Url { .. }
                | Protocol::Koji { .. }
        ) {
            return Ok(());
        }
        if self.source.unverified {
            tracing::warn!(
                source = self.source.name.as_str(),
                "source {} is used UNVERIFIED (unverified = true): no signature checks what it serves",
                self.source.name
            );
            return Ok(());
        }
        let keyring = super::trust::keyring_for(self.source, self.parts)
            .map_err(|e| format!("not tried: {e}"))?;
        self.keyring = Some(std::sync::Arc::new(keyring));
        Ok(())
    }

    /// What vouches for a package of this source that its index does not vouch for: its own
    /// signature (RPMs), the distribution's API, or nothing where the operator opted out.
    fn default_vouch(&self, url: &str) -> Vouch {
        match (&self.source.protocol, &self.keyring) {
            (Protocol::Snapshot | Protocol::Launchpad, _) => Vouch::DistributionApi(
                reqwest::Url::parse(url)
                    .ok()
                    .and_then(|u| u.host_str().map(str::to_string))
                    .unwrap_or_default(),
            ),
            (_, Some(keyring)) if !self.source.unverified => {
                Vouch::OwnSignature(keyring.origin.clone())
            }
            _ => Vouch::Unverified,
        }
    }

    /// Why this source is not tried: it names a credential none is configured for.
    fn without_credential(&self) -> Option<String> {
        let name = self.source.credential.as_deref()?;
        (!self.credentials.has(name)).then(|| {
            format!(
                "not tried: it needs the {name} credential ({}), and none is set",
                super::credentials::what(name)
            )
        })
    }

    /// `request` to `url` with the source's login, if it names a credential: apt's HTTP Basic,
    /// only over https or to loopback.
    fn authorized(
        &self,
        request: reqwest::RequestBuilder,
        url: &str,
    ) -> Outcome<reqwest::RequestBuilder> {
        authorized(self.credentials, self.source, request, url)
    }

    /// Sets the outcome of the last attempt (a request that answered, but not with what was
    /// wanted).
    fn outcome(&mut self, outcome: String) {
        if let Some(last) = self.attempts.last_mut() {
            last.outcome = outcome;
        }
    }

    fn record(&mut self, url: &str, started: Instant, outcome: &str) {
        self.attempts.push(Attempt {
            source: self.source.name.clone(),
            kind: self.source.kind(),
            url: url.to_string(),
            outcome: outcome.to_string(),
            millis: started.elapsed().as_millis() as u64,
        });
    }

    /// GET a body; a non-2xx answer is recorded and returned as `Err`. With a metadata cache,
    /// a body kept from before is asked for conditionally and a 304 answers from it.
    async fn get(&mut self, url: &str) -> Outcome<bytes::Bytes> {
        let started = Instant::now();
        let cache = self
            .metadata
            .as_ref()
            .map(|dir| crate::conditional::ConditionalCache::new(dir.clone()));
        let previous = cache.as_ref().and_then(|c| c.read(url));
        let mut not_modified = false;
        let result = async {
            let mut request = self.authorized(self.http.get(url), url)?;
            for (name, value) in previous.iter().flat_map(|kept| kept.conditions()) {
                request = request.header(name, value);
            }
            let r = request.send().await.map_err(describe)?;
            let status = r.status();
            if status == reqwest::StatusCode::NOT_MODIFIED
                && let Some(kept) = &previous
            {
                not_modified = true;
                return Ok(kept.body.clone());
            }
            if !status.is_success() {
                return Err(format!("HTTP {}", status.as_u16()));
            }
            let headers = r.headers().clone();
            if r.content_length().is_some_and(|n| n > MAX_DOWNLOAD) {
                return Err(format!("larger than {MAX_DOWNLOAD} bytes"));
            }
            let mut r = r;
            let mut body = Vec::new();
            while let Some(chunk) = r.chunk().await.map_err(describe)? {
                if body.len() as u64 + chunk.len() as u64 > MAX_DOWNLOAD {
                    return Err(format!("larger than {MAX_DOWNLOAD} bytes"));
                }
                body.extend_from_slice(&chunk);
            }
            let body = bytes::Bytes::from(body);
            if let Some(cache) = &cache {
                cache.keep(url, &headers, body.clone()).await;
            }
            Ok(body)
        }
        .await;
        match &result {
            Ok(_) if not_modified => self.record(url, started, "ok (not modified)"),
            Ok(_) => self.record(url, started, "ok"),
            Err(e) => self.record(url, started, e),
        }
        result
    }

    /// Whether a package URL exists: HEAD, or a one-byte ranged GET where HEAD is refused.
    async fn probe(&mut self, url: &str) -> Outcome<()> {
        let started = Instant::now();
        let result = async {
            let head = self
                .authorized(self.http.head(url), url)?
                .send()
                .await
                .map_err(describe)?;
            let status = head.status();
            if status.is_success() {
                return Ok(());
            }
            if matches!(status.as_u16(), 403 | 405 | 501) {
                let ranged = self
                    .authorized(self.http.get(url), url)?
                    .header(reqwest::header::RANGE, "bytes=0-0")
                    .send()
                    .await
                    .map_err(describe)?;
                if ranged.status().is_success() {
                    return Ok(());
                }
                return Err(format!(
                    "HTTP {} (ranged GET after HEAD {})",
                    ranged.status().as_u16(),
                    status.as_u16()
                ));
            }
            Err(format!("HTTP {}", status.as_u16()))
        }
        .await;
        match &result {
            Ok(()) => self.record(url, started, "found"),
            Err(e) => self.record(url, started, e),
        }
        result
    }

    async fn json(&mut self, url: &str) -> Outcome<serde_json::Value> {
        let body = self.get(url).await?;
        serde_json::from_slice(&body).map_err(|e| {
            let msg = format!("not JSON: {e}");
            self.outcome(msg.clone());
            msg
        })
    }
}

/// `request` to `url` with the login of `source`'s credential (none when it names none): apt's
/// HTTP Basic, only over https or to loopback, only to a host of the source's own URLs (an
/// index's `Filename` may name any URL), and only where a login fits the URL.
pub(super) fn authorized(
    credentials: &super::Credentials,
    source: &SourceSpec,
    request: reqwest::RequestBuilder,
    url: &str,
) -> Outcome<reqwest::RequestBuilder> {
    let Some(name) = source.credential.as_deref() else {
        return Ok(request);
    };
    crate::net::check_transport(url, false)
        .map_err(|_| format!("the {name} credential is only sent over https"))?;
    if !source.urls.iter().any(|u| crate::net::same_origin(u, url)) {
        return Err(format!(
            "not sending the {name} credential to {}: not a host of source {}",
            crate::text::clean(url),
            source.name
        ));
    }
    if credentials.is_certificate(name) {
        // Presented in the TLS handshake by the source's own client.
        return Ok(request);
    }
    if credentials.is_registration(name) {
        use super::credentials::RepositoryAccess;
        let access = credentials.repository_access(name, url).ok_or_else(|| {
            format!("no repository of the {name} credential holds this URL (is the product that has it activated?)")
        })?;
        return Ok(match access {
            RepositoryAccess::Login { login, password } => {
                request.basic_auth(login, Some(password))
            }
            RepositoryAccess::Token(token) => {
                // zypper's way: the repository's query goes with every file under it.
                let (client, built) = request.build_split();
                let mut built = built.map_err(describe)?;
                built.url_mut().set_query(Some(token));
                reqwest::RequestBuilder::from_parts(client, built)
            }
        });
    }
    let (login, password) = credentials
        .for_url(name, url)
        .ok_or_else(|| format!("no {name} login fits this URL"))?;
    Ok(request.basic_auth(login, Some(password)))
}

/// A request's failure, without its URL (the attempt records the URL; a registered
/// repository's token may be in the request's).
fn describe(e: reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    crate::text::error_chain(&e.without_url())
}

/// Largest metadata file or package downloaded (compressed).
pub(super) const MAX_DOWNLOAD: u64 = 512 << 20;

/// Decompresses by file name: `.gz`, `.xz`, `.zst`, `.bz2`, or plain; at most 50 times the
/// compressed size (64 MiB to 2 GiB: real primary.xml and Packages expand about 10:1).
fn decompress(name: &str, body: &[u8]) -> Outcome<Vec<u8>> {
    use crate::bounded::{Limits, read_to_end};
    let limits = Limits::by_ratio(body.len() as u64, 50, 64 << 20, 2 << 30);
    let (kind, result) = if name.ends_with(".gz") {
        (
            "gzip",
            read_to_end(flate2::read::MultiGzDecoder::new(body), limits),
        )
    } else if name.ends_with(".xz") {
        // Every stream: Ubuntu's Packages.xz are two xz streams, the second one empty.
        let decoder = liblzma::read::XzDecoder::new_multi_decoder(body);
        ("xz", read_to_end(decoder, limits))
    } else if name.ends_with(".zst") {
        match zstd::stream::read::Decoder::new(body) {
            Ok(d) => ("zstd", read_to_end(d, limits)),
            Err(e) => return Err(format!("bad zstd: {e}")),
        }
    } else if name.ends_with(".bz2") {
        (
            "bzip2",
            read_to_end(bzip2::read::MultiBzDecoder::new(body), limits),
        )
    } else {
        return Ok(body.to_vec());
    };
    result.map_err(|e| match e {
        crate::bounded::BoundedError::Io(e) => format!("bad {kind}: {e}"),
        other => format!("{name}: {kind} content {other}"),
    })
}

/// A kernel a source's metadata lists, and when it was built where the metadata says.
pub(super) struct ListedKernel {
    pub kernel: String,
    pub published: Option<chrono::DateTime<chrono::Utc>>,
    /// The meta-package whose dependency names it (`linux-headers-aws`), where a node that
    /// follows the meta moves to it whatever its series.
    pub via: Option<String>,
}

/// Every kernel of the identity's flavour or package the source's indexes list (APT and RPM
/// repositories; other kinds list nothing).
pub(super) async fn list_kernels(ctx: &mut Ctx<'_>) -> Vec<ListedKernel> {
    if ctx.source.missing_codename(ctx.parts).is_some() || ctx.without_credential().is_some() {
        return Vec::new();
    }
    if let Err(problem) = ctx.prepare_trust() {
        ctx.record("", Instant::now(), &problem);
        return Vec::new();
    }
    match &ctx.source.protocol {
        Protocol::AptRepo { .. } => apt_repo::list(ctx)
            .await
            .into_iter()
            .map(|(kernel, via)| ListedKernel {
                kernel,
                published: None,
                via,
            })
            .collect(),
        Protocol::RpmRepo { .. } => {
            let parts = ctx.parts.clone();
            rpm_repo::list(ctx)
                .await
                .into_iter()
                .map(|l| ListedKernel {
                    kernel: parts.uname_of(&l.version, &l.release),
                    published: l.built.and_then(|t| chrono::DateTime::from_timestamp(t, 0)),
                    via: None,
                })
                .collect()
        }
        _ => Vec::new(),
    }
}

/// Tries one source; `None` when it does not hold the kernel (every attempt is recorded).
pub(super) async fn try_source(ctx: &mut Ctx<'_>) -> Option<Vec<HeaderPackage>> {
    if let Some(problem) = ctx
        .source
        .missing_codename(ctx.parts)
        .or_else(|| ctx.without_credential())
    {
        ctx.record("", Instant::now(), &problem);
        return None;
    }
    if let Err(problem) = ctx.prepare_trust() {
        ctx.record("", Instant::now(), &problem);
        return None;
    }
    let mut found = match &ctx.source.protocol {
        Protocol::RpmRepo { .. } => rpm_repo::resolve(ctx).await,
        Protocol::AptRepo { .. } => apt_repo::resolve(ctx).await,
        Protocol::Url { .. } => url::resolve(ctx).await,
        Protocol::Koji { .. } => koji::resolve(ctx).await,
        Protocol::Snapshot => snapshot::resolve(ctx).await,
        Protocol::Launchpad => launchpad::resolve(ctx).await,
    }?;
    for package in &mut found {
        if package.vouch.is_none() || ctx.source.unverified {
            package.vouch = Some(ctx.default_vouch(&package.url));
        }
    }
    Some(found)
}

/// The requests a source makes before any answer, as the offline plan shows them.
pub(super) fn first_requests(spec: &SourceSpec, parts: &KernelParts) -> Vec<String> {
    match &spec.protocol {
        Protocol::RpmRepo { .. } => rpm_repo::repositories(spec, parts)
            .into_iter()
            .map(|r| r.first_request())
            .collect(),
        // A checked suite is read from its signed Release (InRelease, else Release).
        Protocol::AptRepo { .. } if !spec.unverified => apt_repo::indexes(spec, parts)
            .into_iter()
            .flat_map(|i| {
                let dir = join(&i.base, &format!("dists/{}/", i.suite));
                [format!("{dir}InRelease"), format!("{dir}Release")]
            })
            .collect(),
        Protocol::AptRepo { .. } => apt_repo::indexes(spec, parts)
            .into_iter()
            .flat_map(|i| i.components.into_iter().flat_map(|(_, urls)| urls))
            .collect(),
        Protocol::Url { .. } => url::candidates(spec, parts)
            .into_iter()
            .flat_map(|(_, urls)| urls)
            .collect(),
        Protocol::Koji { .. } => koji::builds(spec, parts)
            .into_iter()
            .map(|(hub, nvr)| format!("{hub} getBuild({nvr})"))
            .collect(),
        Protocol::Snapshot => api_bases(spec, parts)
            .iter()
            .map(|base| snapshot::binary_url(base, &format!("linux-headers-{}", parts.kernel)))
            .collect(),
        Protocol::Launchpad => api_bases(spec, parts)
            .iter()
            .map(|api| {
                launchpad::published_binaries_url(
                    api,
                    &format!("linux-headers-{}", parts.kernel),
                    parts,
                )
            })
            .collect(),
    }
}

/// The packages a source looks for, as the plan names them.
pub(super) fn wanted(spec: &SourceSpec, parts: &KernelParts) -> Vec<String> {
    match &spec.protocol {
        Protocol::RpmRepo { .. } | Protocol::Url { .. } | Protocol::Koji { .. } => spec
            .rpm_packages_for(parts)
            .iter()
            .map(|p| parts.rpm_wanted(p))
            .collect(),
        Protocol::AptRepo { .. } | Protocol::Snapshot | Protocol::Launchpad => {
            vec![format!("linux-headers-{}", parts.kernel)]
        }
    }
}

/// A url source's templates for one package: those naming `{package}` with it filled in; a
/// template without `{package}` stands for the first package only.
pub(super) fn url_templates_for(spec: &SourceSpec, package: &str, first: bool) -> Vec<String> {
    spec.urls
        .iter()
        .filter(|u| first || u.contains("{package}"))
        .map(|u| u.replace("{package}", package))
        .collect()
}

/// The source's URLs expanded for this kernel.
fn expanded(spec: &SourceSpec, parts: &KernelParts) -> Vec<String> {
    spec.urls.iter().map(|u| parts.expand(u)).collect()
}

/// The same without trailing slashes, for APIs that append paths.
fn api_bases(spec: &SourceSpec, parts: &KernelParts) -> Vec<String> {
    expanded(spec, parts)
        .into_iter()
        .map(|u| u.trim_end_matches('/').to_string())
        .collect()
}

/// `path` resolved against the directory `base`, as a client would: repositories give relative
/// locations, Amazon Linux 2's with `../` up to a shared blob store.
/// Refuses a URL that repository metadata named (a package's `Filename`, a `location href`)
/// when it leaves the repository's scheme, host and port: metadata may name paths within the
/// repository, never another server, and never plain `http://` under an `https://` source.
fn on_base_host(base: &str, url: &str) -> Result<(), String> {
    if crate::net::same_origin(base, url) {
        return Ok(());
    }
    Err(format!(
        "the repository's metadata names {}, outside {}; refused",
        crate::text::clean(url),
        crate::text::clean(base)
    ))
}

fn join(base: &str, path: &str) -> String {
    let dir = if base.ends_with('/') {
        base.to_string()
    } else {
        format!("{base}/")
    };
    reqwest::Url::parse(&dir)
        .and_then(|d| d.join(path))
        .map_or_else(|_| format!("{dir}{path}"), String::from)
}

#[cfg(test)]
mod tests {
    #[test]
    fn metadata_may_name_paths_in_its_repository_only() {
        let base = "https://archive.example/debian/";
        for path in [
            "pool/main/l/linux/x.deb",
            "../pool/x.deb",
            "/debian/pool/x.deb",
        ] {
            let url = super::join(base, path);
            assert!(super::on_base_host(base, &url).is_ok(), "{path}: {url}");
        }
        for path in [
            "http://archive.example/debian/pool/x.deb",
            "https://evil.example/x.deb",
            "//evil.example/x.deb",
            "https://archive.example:8443/x.deb",
        ] {
            let url = super::join(base, path);
            let e = super::on_base_host(base, &url).unwrap_err();
            assert!(
                e.contains("outside https://archive.example/debian/"),
                "{path}: {e}"
            );
        }
    }
}
