//! The OCI distribution API as far as kfleet needs it: a repository named `oci://HOST/PATH`,
//! the registry's authentication challenges (Basic, and Bearer tokens from the realm the
//! registry names), tag lists page by page, manifests and blobs checked against their digests,
//! and pushes (blob uploads, then the manifest). GHCR, Harbor, ECR, Artifactory, Docker Hub and
//! CNCF distribution all speak it.

use crate::text::Cause;
use sha2::Digest as _;
use std::time::Duration;

/// Largest manifest read (a driver's manifest is under 2 KiB; image indexes stay far below this).
pub const MAX_MANIFEST: usize = 256 << 10;
/// Largest tag-list page or token answer read.
const MAX_JSON: usize = 4 << 20;
/// Tags asked per page.
const PAGE: usize = 1000;
/// Pages of tags read at most (a million tags).
pub const MAX_TAG_PAGES: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error(
        "'{0}' is not an OCI repository: write oci://REGISTRY/NAMESPACE/NAME (oci://ghcr.io/acme/kdriver)"
    )]
    BadReference(String),
    #[error("{url}: {source}")]
    Transport { url: String, source: Cause },
    #[error("{url} answered {status}{detail}")]
    Status {
        url: String,
        status: u16,
        detail: String,
    },
    #[error(
        "{url}: the registry refused the credentials ({status}); set KFLEET_REGISTRY_USERNAME and KFLEET_REGISTRY_PASSWORD (a token with read access, write access to push)"
    )]
    Unauthorized { url: String, status: u16 },
    #[error("{url}: {source}")]
    Invalid { url: String, source: Cause },
}

/// A repository in a registry: `oci://ghcr.io/acme/kdriver` is `https://ghcr.io` and
/// `acme/kdriver`. A loopback registry is reached over plain http, as container tools do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// `https://HOST[:PORT]` (`http://` on loopback).
    pub base: String,
    /// `HOST[:PORT]` as written.
    pub host: String,
    /// The repository path inside the registry.
    pub repository: String,
}

impl Reference {
    pub fn parse(store: &str) -> Result<Self, OciError> {
        let bad = || OciError::BadReference(crate::text::clean(store).into_owned());
        let rest = store.strip_prefix("oci://").ok_or_else(bad)?;
        let (host, repository) = rest.split_once('/').ok_or_else(bad)?;
        let repository = repository.trim_end_matches('/');
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
                })
                && c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
                && c.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
        };
        let host_ok = !host.is_empty()
            && host.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
            });
        if !host_ok || repository.len() > 255 || !repository.split('/').all(component_ok) {
            return Err(bad());
        }
        let bare = host
            .rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(host, |(h, _)| h);
        let bare = bare.trim_start_matches('[').trim_end_matches(']');
        let loopback = bare.eq_ignore_ascii_case("localhost")
            || bare
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        let scheme = if loopback { "http" } else { "https" };
        Ok(Self {
            base: format!("{scheme}://{host}"),
            host: host.to_string(),
            repository: repository.to_string(),
        })
    }

    /// `oci://HOST/REPOSITORY`.
    pub fn display(&self) -> String {
        format!("oci://{}/{}", self.host, self.repository)
    }

    pub fn manifest_url(&self, reference: &str) -> String {
        format!("{}/v2/{}/manifests/{reference}", self.base, self.repository)
    }

    pub fn blob_url(&self, digest: &str) -> String {
        format!("{}/v2/{}/blobs/{digest}", self.base, self.repository)
    }
}

/// A registry login. The password (often a token) is never printed.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <redacted>)", self.username)
    }
}

impl Credentials {
    /// `KFLEET_REGISTRY_USERNAME` and `KFLEET_REGISTRY_PASSWORD`, when both are set.
    pub fn from_environment() -> Option<Self> {
        use crate::environment::{KFLEET_REGISTRY_PASSWORD, KFLEET_REGISTRY_USERNAME, var};
        Some(Self {
            username: var(KFLEET_REGISTRY_USERNAME)?,
            password: var(KFLEET_REGISTRY_PASSWORD)?,
        })
    }
}

/// `sha256:` and the hex digest of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", crate::fsio::hex(&sha2::Sha256::digest(bytes)))
}

/// Whether `d` is `sha256:` and 64 lowercase hex digits.
pub fn valid_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// A registry challenge: its scheme (`basic`, `bearer`) and parameters.
pub fn challenge(header: &str) -> Option<(String, std::collections::BTreeMap<String, String>)> {
    let header = header.trim();
    let (scheme, params) = header.split_once(' ').unwrap_or((header, ""));
    let mut out = std::collections::BTreeMap::new();
    // Quoted values may hold commas (`scope="repository:a:pull,push"`).
    let mut rest = params.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let after = after.trim_start();
        let (value, tail) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        out.insert(key.trim().to_ascii_lowercase(), value.to_string());
        rest = tail.trim_start().trim_start_matches(',').trim_start();
    }
    Some((scheme.to_ascii_lowercase(), out))
}

/// A client for one repository of a registry.
pub struct Client {
    http: reqwest::Client,
    reference: Reference,
    credentials: Option<Credentials>,
    /// The `Authorization` value the last challenge called for, and whether it may push.
    auth: tokio::sync::Mutex<Option<(String, bool)>>,
}

impl Client {
    pub fn new(
        reference: Reference,
        credentials: Option<Credentials>,
        timeout: Duration,
    ) -> Result<Self, OciError> {
        crate::net::check_transport(&reference.base, false).map_err(|e| OciError::Transport {
            url: reference.base.clone(),
            source: Cause::of(e),
        })?;
        let http = crate::net::http_client(timeout, crate::net::Redirects::Limited(5), None)
            .map_err(|message| OciError::Transport {
                url: reference.base.clone(),
                source: Cause::from(message),
            })?;
        Ok(Self {
            http,
            reference,
            credentials,
            auth: tokio::sync::Mutex::new(None),
        })
    }

    pub fn reference(&self) -> &Reference {
        &self.reference
    }

    /// Sends the request `build` makes, answering the registry's challenge once: Basic with the
    /// credentials, or a Bearer token from the challenge's realm for this repository's scope
    /// (`pull`, or `pull,push` when `push`).
    async fn send(
        &self,
        url: &str,
        push: bool,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, OciError> {
        let transport = |e: reqwest::Error| OciError::Transport {
            url: url.to_string(),
            source: Cause::of(e),
        };
        let current = self
            .auth
            .lock()
            .await
            .clone()
            .filter(|(_, may_push)| *may_push || !push)
            .map(|(value, _)| value);
        let mut request = build(&self.http);
        if let Some(value) = &current {
            request = request.header(reqwest::header::AUTHORIZATION, value);
        }
        let response = request.send().await.map_err(transport)?;
        if response.status() != reqwest::StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let header = response
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let value = self.answer(url, &header, push).await?;
        *self.auth.lock().await = Some((value.clone(), push));
        let response = build(&self.http)
            .header(reqwest::header::AUTHORIZATION, value)
            .send()
            .await
            .map_err(transport)?;
        match response.status().as_u16() {
            status @ (401 | 403) => Err(OciError::Unauthorized {
                url: url.to_string(),
                status,
            }),
            _ => Ok(response),
        }
    }

    /// The `Authorization` value a challenge asks for.
    async fn answer(&self, url: &str, header: &str, push: bool) -> Result<String, OciError> {
        let refused = || OciError::Unauthorized {
            url: url.to_string(),
            status: 401,
        };
        let Some((scheme, params)) = challenge(header) else {
            return Err(refused());
        };
        let basic = |c: &Credentials| {
            use base64::Engine as _;
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", c.username, c.password))
            )
        };
        match scheme.as_str() {
            "basic" => self.credentials.as_ref().map(basic).ok_or_else(refused),
            "bearer" => {
                let realm = params.get("realm").ok_or_else(|| OciError::Invalid {
                    url: url.to_string(),
                    source: Cause::from("the registry's bearer challenge names no realm"),
                })?;
                // The realm came over the network: credentials go only to https (or loopback).
                crate::net::check_transport(realm, false).map_err(|e| OciError::Transport {
                    url: realm.clone(),
                    source: Cause::of(e),
                })?;
                let actions = if push { "pull,push" } else { "pull" };
                let scope = format!("repository:{}:{actions}", self.reference.repository);
                let mut request = self.http.get(realm.as_str()).query(&[("scope", &scope)]);
                if let Some(service) = params.get("service") {
                    request = request.query(&[("service", service)]);
                }
                if let Some(c) = &self.credentials {
                    request = request.header(reqwest::header::AUTHORIZATION, basic(c));
                }
                let response = request.send().await.map_err(|e| OciError::Transport {
                    url: realm.clone(),
                    source: Cause::of(e),
                })?;
                if !response.status().is_success() {
                    return Err(OciError::Unauthorized {
                        url: realm.clone(),
                        status: response.status().as_u16(),
                    });
                }
                let body = read_json(response, realm).await?;
                let token = body
                    .get("token")
                    .or_else(|| body.get("access_token"))
                    .and_then(|t| t.as_str())
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| OciError::Invalid {
                        url: realm.clone(),
                        source: Cause::from("the token service answered without a token"),
                    })?;
                Ok(format!("Bearer {token}"))
            }
            _ => Err(refused()),
        }
    }

    /// Every tag of the repository, page by page (`Link: <…>; rel="next"`); a repository that
    /// does not exist yet has none.
    pub async fn tags(&self) -> Result<Vec<String>, OciError> {
        #[derive(serde::Deserialize)]
        struct Page {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let mut url = format!(
            "{}/v2/{}/tags/list?n={PAGE}",
            self.reference.base, self.reference.repository
        );
        let mut tags = Vec::new();
        for _ in 0..MAX_TAG_PAGES {
            let response = self.send(&url, false, |h| h.get(&url)).await?;
            if response.status() == reqwest::StatusCode::NOT_FOUND {
                return Ok(tags);
            }
            let response = success(response, &url).await?;
            let next = response
                .headers()
                .get(reqwest::header::LINK)
                .and_then(|v| v.to_str().ok())
                .map(|link| self.next_link(link, &url))
                .transpose()?
                .flatten();
            let body = read_capped(response, MAX_JSON, &url).await?;
            let page: Page = serde_json::from_slice(&body).map_err(|e| OciError::Invalid {
                url: url.clone(),
                source: Cause::from(format!("not a tag list: {e}")),
            })?;
            tags.extend(page.tags.unwrap_or_default());
            match next {
                Some(n) => url = n,
                None => return Ok(tags),
            }
        }
        Err(OciError::Invalid {
            url,
            source: Cause::from(format!("more than {MAX_TAG_PAGES} pages of tags")),
        })
    }

    /// The next page's URL from a `Link` header, which must stay on this registry.
    fn next_link(&self, link: &str, url: &str) -> Result<Option<String>, OciError> {
        for part in link.split(',') {
            let Some((target, params)) = part.split_once(';') else {
                continue;
            };
            if !params.replace(' ', "").contains("rel=\"next\"") {
                continue;
            }
            let target = target.trim().trim_start_matches('<').trim_end_matches('>');
            let next = if target.starts_with('/') {
                format!("{}{target}", self.reference.base)
            } else {
                target.to_string()
            };
            if !next.starts_with(&format!("{}/v2/", self.reference.base)) {
                return Err(OciError::Invalid {
                    url: url.to_string(),
                    source: Cause::from(format!(
                        "the next page is on another host ({}); not followed",
                        crate::text::clean(target)
                    )),
                });
            }
            return Ok(Some(next));
        }
        Ok(None)
    }

    /// The manifest a tag or digest names, with its digest (`None` when there is none). The
    /// bytes hash to the digest the registry states, and to `reference` when it is a digest.
    pub async fn manifest(&self, reference: &str) -> Result<Option<(String, Vec<u8>)>, OciError> {
        let url = self.reference.manifest_url(reference);
        let response = self
            .send(&url, false, |h| {
                h.get(&url).header(
                    reqwest::header::ACCEPT,
                    "application/vnd.oci.image.manifest.v1+json",
                )
            })
            .await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let response = success(response, &url).await?;
        let stated = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = read_capped(response, MAX_MANIFEST, &url).await?;
        let digest = sha256_digest(&body);
        for expected in stated
            .iter()
            .map(String::as_str)
            .chain(Some(reference).filter(|r| r.starts_with("sha256:")))
        {
            if expected != digest {
                return Err(OciError::Invalid {
                    url,
                    source: Cause::from(format!(
                        "the manifest hashes to {digest}, not {}",
                        crate::text::clean(expected)
                    )),
                });
            }
        }
        Ok(Some((digest, body)))
    }

    /// A blob's bytes, at most `max`, checked against `digest`.
    pub async fn blob(&self, digest: &str, max: u64) -> Result<bytes::Bytes, OciError> {
        let url = self.reference.blob_url(digest);
        let response = self.send(&url, false, |h| h.get(&url)).await?;
        let response = success(response, &url).await?;
        let body = read_capped(response, usize::try_from(max).unwrap_or(usize::MAX), &url).await?;
        let actual = sha256_digest(&body);
        if actual != digest {
            return Err(OciError::Invalid {
                url,
                source: Cause::from(format!("the blob hashes to {actual}, not {digest}")),
            });
        }
        Ok(body.into())
    }

    /// Uploads a blob unless the registry has it (one monolithic upload: POST, then PUT with
    /// the digest, which the registry checks).
    pub async fn push_blob(&self, bytes: bytes::Bytes) -> Result<String, OciError> {
        let digest = sha256_digest(&bytes);
        let url = self.reference.blob_url(&digest);
        let head = self.send(&url, true, |h| h.head(&url)).await?;
        if head.status().is_success() {
            return Ok(digest);
        }
        let start = format!(
            "{}/v2/{}/blobs/uploads/",
            self.reference.base, self.reference.repository
        );
        let response = self.send(&start, true, |h| h.post(&start)).await?;
        let response = success(response, &start).await?;
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| OciError::Invalid {
                url: start.clone(),
                source: Cause::from("the upload was accepted without a Location"),
            })?;
        let mut upload = if location.starts_with('/') {
            format!("{}{location}", self.reference.base)
        } else {
            location.to_string()
        };
        // Credentials go only where the repository is.
        if !upload.starts_with(&format!("{}/v2/", self.reference.base)) {
            return Err(OciError::Invalid {
                url: start,
                source: Cause::from(format!(
                    "the upload location is on another host ({}); not followed",
                    crate::text::clean(location)
                )),
            });
        }
        upload.push(if upload.contains('?') { '&' } else { '?' });
        upload.push_str("digest=");
        upload.push_str(&digest);
        let response = self
            .send(&upload, true, |h| {
                h.put(&upload)
                    .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                    .body(bytes.clone())
            })
            .await?;
        success(response, &url).await?;
        Ok(digest)
    }

    /// Stores a manifest under `tag`; returns its digest, checked against the registry's.
    pub async fn put_manifest(
        &self,
        tag: &str,
        media_type: &str,
        bytes: bytes::Bytes,
    ) -> Result<String, OciError> {
        let digest = sha256_digest(&bytes);
        let url = self.reference.manifest_url(tag);
        let response = self
            .send(&url, true, |h| {
                h.put(&url)
                    .header(reqwest::header::CONTENT_TYPE, media_type)
                    .body(bytes.clone())
            })
            .await?;
        let response = success(response, &url).await?;
        if let Some(stated) = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            && stated != digest
        {
            return Err(OciError::Invalid {
                url,
                source: Cause::from(format!(
                    "the registry stored the manifest as {}, not {digest}",
                    crate::text::clean(stated)
                )),
            });
        }
        Ok(digest)
    }
}

/// A success answer, or the error the registry gave (its `errors[0].message` when it has one).
async fn success(response: reqwest::Response, url: &str) -> Result<reqwest::Response, OciError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    if matches!(status.as_u16(), 401 | 403) {
        return Err(OciError::Unauthorized {
            url: url.to_string(),
            status: status.as_u16(),
        });
    }
    let body = crate::net::read_capped(response, 16 << 10)
        .await
        .unwrap_or_default();
    let message = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            let e = v.get("errors")?.get(0)?;
            Some(format!(
                "{} {}",
                e.get("code")?.as_str()?,
                e.get("message").and_then(|m| m.as_str()).unwrap_or("")
            ))
        })
        .map(|m| format!(": {}", crate::text::clean(m.trim())))
        .unwrap_or_default();
    Err(OciError::Status {
        url: url.to_string(),
        status: status.as_u16(),
        detail: message,
    })
}

async fn read_capped(
    response: reqwest::Response,
    max: usize,
    url: &str,
) -> Result<Vec<u8>, OciError> {
    crate::net::read_capped(response, max)
        .await
        .map_err(|e| match e {
            crate::net::BodyError::TooLarge(max) => OciError::Invalid {
                url: url.to_string(),
                source: Cause::from(format!("the answer is over {max} bytes")),
            },
            crate::net::BodyError::Transport(message) => OciError::Transport {
                url: url.to_string(),
                source: Cause::from(message),
            },
        })
}

async fn read_json(response: reqwest::Response, url: &str) -> Result<serde_json::Value, OciError> {
    let body = read_capped(response, MAX_JSON, url).await?;
    serde_json::from_slice(&body).map_err(|e| OciError::Invalid {
        url: url.to_string(),
        source: Cause::from(format!("not JSON: {e}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_name_a_registry_and_a_repository() {
        let r = Reference::parse("oci://ghcr.io/acme/kdriver").unwrap();
        assert_eq!(r.base, "https://ghcr.io");
        assert_eq!(r.repository, "acme/kdriver");
        assert_eq!(r.display(), "oci://ghcr.io/acme/kdriver");
        let local = Reference::parse("oci://127.0.0.1:5000/fleet/drivers/kdriver").unwrap();
        assert_eq!(local.base, "http://127.0.0.1:5000");
        assert_eq!(
            local.blob_url("sha256:ab"),
            "http://127.0.0.1:5000/v2/fleet/drivers/kdriver/blobs/sha256:ab"
        );
        for bad in [
            "ghcr.io/acme/kdriver",
            "oci://ghcr.io",
            "oci://ghcr.io/",
            "oci://ghcr.io/Acme/kdriver",
            "oci://ghcr.io/acme/../x",
            "oci://ghcr.io/acme//x",
            "oci://user@ghcr.io/acme/x",
            "oci://ghcr.io/acme/x?y",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn challenges_keep_quoted_commas() {
        let (scheme, p) = challenge(
            r#"Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:acme/k:pull,push""#,
        )
        .unwrap();
        assert_eq!(scheme, "bearer");
        assert_eq!(p["realm"], "https://ghcr.io/token");
        assert_eq!(p["scope"], "repository:acme/k:pull,push");
        assert_eq!(challenge(r#"Basic realm="x""#).unwrap().0, "basic");
    }

    #[test]
    fn credentials_never_print_the_password() {
        let c = Credentials {
            username: "bot".into(),
            password: "ghp_secret".into(),
        };
        assert!(!format!("{c:?}").contains("ghp_secret"));
    }
}
