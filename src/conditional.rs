//! The one conditional-GET cache kfleet's HTTP readers share (the GitHub client's listings, the
//! header chain's repository metadata): per URL, the body and its validators (`ETag`,
//! `Last-Modified`) kept in 0600 files of a 0700 directory, so even a new process's first request
//! is conditional and an unchanged answer costs a 304. A damaged or unreadable entry is a miss,
//! never an error; an entry that cannot be written only costs a full download next time.

use std::path::{Path, PathBuf};

/// A kept answer: its body and the validators to ask again with.
#[derive(Clone, Debug)]
pub struct Kept {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub body: bytes::Bytes,
}

impl Kept {
    /// The request headers that ask for the answer again only when it changed.
    pub fn conditions(&self) -> Vec<(http::HeaderName, http::HeaderValue)> {
        let mut out = Vec::new();
        for (name, value) in [
            (http::header::IF_NONE_MATCH, &self.etag),
            (http::header::IF_MODIFIED_SINCE, &self.last_modified),
        ] {
            if let Some(value) = value.as_deref().and_then(|v| v.parse().ok()) {
                out.push((name, value));
            }
        }
        out
    }
}

/// What is kept beside a body: the URL it answers (a guard against hash collisions) and its
/// validators.
#[derive(serde::Serialize, serde::Deserialize)]
struct Validators {
    url: String,
    etag: Option<String>,
    last_modified: Option<String>,
}

/// A directory of kept answers.
#[derive(Clone, Debug)]
pub struct ConditionalCache {
    dir: PathBuf,
}

impl ConditionalCache {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The files that keep one URL's answer: validators and body.
    fn files(&self, url: &str) -> (PathBuf, PathBuf) {
        use sha2::Digest;
        let hash = crate::fsio::hex(&sha2::Sha256::digest(url.as_bytes())[..16]);
        (
            self.dir.join(format!("{hash}.json")),
            self.dir.join(format!("{hash}.body")),
        )
    }

    /// The kept answer of `url`, when its validators and body are there and belong to it.
    pub fn read(&self, url: &str) -> Option<Kept> {
        let (meta, body) = self.files(url);
        let validators: Validators = serde_json::from_slice(&std::fs::read(meta).ok()?).ok()?;
        if validators.url != url {
            return None;
        }
        Some(Kept {
            etag: validators.etag,
            last_modified: validators.last_modified,
            body: bytes::Bytes::from(std::fs::read(body).ok()?),
        })
    }

    /// Keeps `body` as the answer of `url` when `headers` carry a validator (off the async
    /// workers: the writes are fsync'd). The body is written before the validators that point at
    /// it, so a crash between the two leaves a miss, not a wrong answer.
    pub async fn keep(&self, url: &str, headers: &http::HeaderMap, body: bytes::Bytes) {
        let header = |name| {
            headers
                .get(name)
                .and_then(|v: &http::HeaderValue| v.to_str().ok())
                .map(str::to_string)
        };
        let validators = Validators {
            url: url.to_string(),
            etag: header(http::header::ETAG),
            last_modified: header(http::header::LAST_MODIFIED),
        };
        if validators.etag.is_none() && validators.last_modified.is_none() {
            return;
        }
        let (meta, body_path) = self.files(url);
        let dir = self.dir.clone();
        let written = crate::fsio::off_runtime(move || {
            crate::fsio::create_private_dir(&dir)?;
            crate::fsio::write_private(&body_path, &body)?;
            let json = serde_json::to_vec(&validators).map_err(std::io::Error::other)?;
            crate::fsio::write_private(&meta, &json)
        })
        .await;
        if let Err(e) = written {
            tracing::warn!("cannot keep {url} in {}: {e}", self.dir.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_kept_answer_comes_back_with_its_validators_and_damage_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ConditionalCache::new(dir.path().join("kept"));
        let url = "https://example.test/dists/noble/Release";
        assert!(cache.read(url).is_none());
        let mut headers = http::HeaderMap::new();
        cache
            .keep(url, &headers, bytes::Bytes::from_static(b"no validator"))
            .await;
        assert!(cache.read(url).is_none(), "nothing to ask again with");
        headers.insert(http::header::ETAG, "\"v1\"".parse().unwrap());
        cache
            .keep(url, &headers, bytes::Bytes::from_static(b"body"))
            .await;
        let kept = cache.read(url).unwrap();
        assert_eq!(kept.body.as_ref(), b"body");
        assert_eq!(
            kept.conditions(),
            vec![(http::header::IF_NONE_MATCH, "\"v1\"".parse().unwrap())]
        );
        assert!(cache.read("https://example.test/other").is_none());
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(cache.dir()).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o700);
        let (meta, _) = cache.files(url);
        std::fs::write(&meta, b"{damaged").unwrap();
        assert!(cache.read(url).is_none());
    }
}
