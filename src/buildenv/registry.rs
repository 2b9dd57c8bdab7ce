//! Image digests: the file that pins build images (`[digests]`, image reference -> `sha256:…`),
//! and reading a tag's digest from its registry (OCI distribution API: the manifest's
//! `Docker-Content-Digest`, after the anonymous bearer-token challenge registries answer with).

use crate::text::Cause;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// Pinned digests by image reference (`docker.io/library/debian:12`).
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Digests {
    #[serde(default)]
    digests: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{path}: {source}")]
    File { path: String, source: Cause },
    #[error("'{0}' is not an image reference HOST/REPOSITORY:TAG")]
    BadReference(String),
    #[error("{image}: {source}")]
    Registry { image: String, source: Cause },
}

use crate::oci::valid_digest;

impl Digests {
    /// Reads a digests file; every entry must be a plain reference and a sha256 digest.
    pub fn load(path: &Path) -> Result<Self, RegistryError> {
        let err = |source: Cause| RegistryError::File {
            path: path.display().to_string(),
            source,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(Cause::of(e)))?;
        let digests: Digests = toml::from_str(&text).map_err(|e| err(Cause::of(e)))?;
        for (image, digest) in &digests.digests {
            parse_image(image).map_err(|e| err(Cause::of(e)))?;
            if !valid_digest(digest) {
                return Err(err(Cause::text(format!(
                    "{image} = '{digest}': a digest is sha256: and 64 lowercase hex digits"
                ))));
            }
        }
        Ok(digests)
    }

    pub fn get(&self, image: &str) -> Option<&str> {
        self.digests.get(image).map(String::as_str)
    }

    pub fn insert(&mut self, image: String, digest: String) {
        self.digests.insert(image, digest);
    }

    pub fn len(&self) -> usize {
        self.digests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// The file's text, with a header saying where it came from.
    pub fn to_toml(&self) -> String {
        let body = toml::to_string(self).unwrap_or_default();
        format!(
            "# Build images pinned by digest, written by `kfleet images pin`; `kfleet build-plan --digests`\n# reads it (the build workflow: .github/kfleet/image-digests.toml).\n{body}"
        )
    }
}

/// A reference split into registry host, repository and tag.
pub fn parse_image(image: &str) -> Result<(String, String, String), RegistryError> {
    let bad = || RegistryError::BadReference(image.to_string());
    let (host, rest) = image.split_once('/').ok_or_else(bad)?;
    let (repo, tag) = rest.rsplit_once(':').ok_or_else(bad)?;
    let plain = |s: &str, extra: &[char]| {
        !s.is_empty()
            && s.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') || extra.contains(&c)
            })
    };
    let segments_ok = repo
        .split('/')
        .all(|seg| !seg.is_empty() && seg != "." && seg != "..");
    if !host.contains('.')
        || !plain(host, &[':'])
        || !plain(repo, &['/'])
        || !segments_ok
        || !plain(tag, &[])
    {
        return Err(bad());
    }
    Ok((host.to_string(), repo.to_string(), tag.to_string()))
}

/// Manifests a registry may answer with; the digest of the index is what a multi-arch pull uses.
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// The registry API base for a host: Docker Hub's is registry-1.docker.io; `overrides` maps a
/// host to another base (a mirror, or a test's registry on loopback).
fn base_for(host: &str, overrides: &BTreeMap<String, String>) -> String {
    match overrides.get(host) {
        Some(url) => url.trim_end_matches('/').to_string(),
        None if host == "docker.io" => "https://registry-1.docker.io".to_string(),
        None => format!("https://{host}"),
    }
}

/// Reads the digest of each image tag from its registry (anonymous pulls), within `timeout`
/// per request.
pub async fn pin(
    images: &[String],
    overrides: &BTreeMap<String, String>,
    timeout: Duration,
) -> Result<Digests, RegistryError> {
    let client = crate::net::http_client(timeout, crate::net::Redirects::Limited(3), None)
        .map_err(|message| RegistryError::Registry {
            image: String::new(),
            source: Cause::from(message),
        })?;
    let mut digests = Digests::default();
    for image in images {
        let digest = resolve(&client, image, overrides).await?;
        digests.insert(image.clone(), digest);
    }
    Ok(digests)
}

async fn resolve(
    client: &reqwest::Client,
    image: &str,
    overrides: &BTreeMap<String, String>,
) -> Result<String, RegistryError> {
    let (host, repo, tag) = parse_image(image)?;
    let err = |message: String| RegistryError::Registry {
        image: image.to_string(),
        source: Cause::from(message),
    };
    let failed = |e: reqwest::Error| RegistryError::Registry {
        image: image.to_string(),
        source: Cause::of(e),
    };
    let base = base_for(&host, overrides);
    crate::net::check_transport(&base, false).map_err(|e| err(e.to_string()))?;
    let url = format!("{base}/v2/{repo}/manifests/{tag}");
    let head = |token: Option<String>| {
        let mut req = client.head(&url).header(reqwest::header::ACCEPT, ACCEPT);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    let mut response = head(None).await.map_err(failed)?;
    if response.status() == reqwest::StatusCode::UNAUTHORIZED {
        let params = response
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::oci::challenge)
            .filter(|(scheme, _)| scheme == "bearer")
            .map(|(_, params)| params)
            .ok_or_else(|| err(format!("{url} answered 401 without a bearer challenge")))?;
        let realm = params
            .get("realm")
            .ok_or_else(|| err("the bearer challenge names no realm".into()))?;
        // The realm comes over the network: nothing but https (or loopback) is asked, and no
        // credential is sent to it.
        crate::net::check_transport(realm, false).map_err(|e| err(e.to_string()))?;
        let mut token_req = client.get(realm.as_str());
        for key in ["service", "scope"] {
            if let Some(v) = params.get(key) {
                token_req = token_req.query(&[(key, v)]);
            }
        }
        let reply = token_req.send().await.map_err(failed)?;
        if !reply.status().is_success() {
            return Err(err(format!(
                "the token service {realm} answered {}",
                reply.status()
            )));
        }
        let body = crate::net::read_capped(reply, 64 << 10)
            .await
            .map_err(|e| match e {
                crate::net::BodyError::TooLarge(_) => {
                    err(format!("the token from {realm} is over 64 KiB"))
                }
                crate::net::BodyError::Transport(e) => err(e),
            })?;
        let json: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| err(format!("the token from {realm} is not JSON: {e}")))?;
        let token = json
            .get("token")
            .or_else(|| json.get("access_token"))
            .and_then(|t| t.as_str())
            .ok_or_else(|| err(format!("{realm} gave no token")))?;
        response = head(Some(token.to_string())).await.map_err(failed)?;
    }
    match response.status() {
        s if s.is_success() => {}
        reqwest::StatusCode::NOT_FOUND => {
            return Err(err(format!("{url}: no such image or tag (404)")));
        }
        s => return Err(err(format!("{url} answered {s}"))),
    }
    let digest = response
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if !valid_digest(&digest) {
        return Err(err(format!(
            "{url} gave no sha256 digest (Docker-Content-Digest: '{}')",
            digest.chars().take(80).collect::<String>()
        )));
    }
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_and_odd_ones_are_refused() {
        assert_eq!(
            parse_image("docker.io/library/debian:12").unwrap(),
            ("docker.io".into(), "library/debian".into(), "12".into())
        );
        assert_eq!(
            parse_image("quay.io/centos/centos:stream9").unwrap().2,
            "stream9"
        );
        for bad in [
            "debian:12",
            "docker.io/debian",
            "docker.io/../x:1",
            "docker.io/a:b;rm",
            "x/y:z",
        ] {
            assert!(parse_image(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn docker_hub_is_reached_at_its_registry_host() {
        assert_eq!(
            base_for("docker.io", &BTreeMap::new()),
            "https://registry-1.docker.io"
        );
        assert_eq!(base_for("quay.io", &BTreeMap::new()), "https://quay.io");
    }
}
