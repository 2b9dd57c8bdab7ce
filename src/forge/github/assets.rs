//! One release's assets, for the build job: find a release by tag, list its assets (every page),
//! and upload a file in place of an asset of the same name, through the same client, token
//! handling and retry policy as everything else (so the job runs unchanged against the sandbox).

use super::*;
use crate::artifacts::ReleaseAsset;
use crate::text::Cause;

/// Largest file `upload_asset` sends (GitHub's own limit for a release asset is 2 GiB).
pub const MAX_UPLOAD: u64 = 2 << 30;

/// Where uploads go for an API base: GitHub's upload host, GitHub Enterprise's `/api/uploads`,
/// or the base itself (the sandbox).
pub(super) fn upload_base(api: &str) -> String {
    if api == GITHUB_API {
        "https://uploads.github.com".to_string()
    } else if let Some(host) = api.strip_suffix("/api/v3") {
        format!("{host}/api/uploads")
    } else {
        api.to_string()
    }
}

/// A query value with everything but RFC 3986's unreserved characters escaped.
fn query_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An asset name that is a plain file name: what GitHub would keep unchanged.
fn check_asset_name(name: &str) -> Result<(), ForgeError> {
    let plain = !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '+' | '~'));
    if plain {
        Ok(())
    } else {
        Err(ForgeError::Setup(Cause::text(format!(
            "asset name '{name}': use letters, digits and - . _ + ~ only (GitHub renames anything else)"
        ))))
    }
}

#[derive(serde::Deserialize)]
struct ReleaseId {
    id: u64,
    #[serde(default)]
    immutable: bool,
}

impl GithubClient {
    /// The id of the release tagged `tag`; a missing release says what to do.
    pub async fn release_id(&self, tag: &str) -> Result<u64, ForgeError> {
        Ok(self.release_by_tag(tag).await?.id)
    }

    async fn release_by_tag(&self, tag: &str) -> Result<ReleaseId, ForgeError> {
        let url = self.repo_url(&format!("/releases/tags/{}", query_value(tag)));
        match self.get_json::<ReleaseId>(&url).await {
            Ok(r) => Ok(r),
            Err(ForgeError::NotFound { .. }) => Err(ForgeError::Http {
                url,
                status: 404,
                source: Cause::from(format!(
                    "release {tag} does not exist in {} (or the token cannot read it): create it before building for it",
                    self.repo
                )),
            }),
            Err(e) => Err(e),
        }
    }

    /// Every asset of release `release_id`, following `Link` across pages of 100.
    pub async fn release_assets(&self, release_id: u64) -> Result<Vec<ReleaseAsset>, ForgeError> {
        let mut url = Some(self.repo_url(&format!("/releases/{release_id}/assets?per_page=100")));
        let mut assets = Vec::new();
        let mut pages = 0;
        while let Some(page_url) = url.take() {
            let (body, headers, _) = self.get_cached_in_memory(&page_url).await?;
            let page: Vec<ReleaseAsset> =
                serde_json::from_slice(&body).map_err(|e| ForgeError::Malformed {
                    url: page_url.clone(),
                    source: Cause::of(e),
                })?;
            assets.extend(page);
            pages += 1;
            if pages > 1000 {
                return Err(ForgeError::Malformed {
                    url: page_url,
                    source: Cause::from("more than 1000 pages; the Link headers loop"),
                });
            }
            url = next_link(&headers);
        }
        Ok(assets)
    }

    /// The asset `name` of release `tag`, if it is there.
    pub async fn find_asset(
        &self,
        tag: &str,
        name: &str,
    ) -> Result<Option<ReleaseAsset>, ForgeError> {
        check_asset_name(name)?;
        let id = self.release_id(tag).await?;
        Ok(self
            .release_assets(id)
            .await?
            .into_iter()
            .find(|a| a.name == name))
    }

    /// Uploads `bytes` as asset `name` of release `tag`, replacing an asset of that name (a
    /// rerun repairs what an interrupted upload left). An attempt that fails on the way (5xx, a
    /// dropped connection, a half-made asset GitHub then refuses as a duplicate) is repeated
    /// from the listing, within the retry policy.
    pub async fn upload_asset(
        &self,
        tag: &str,
        name: &str,
        bytes: bytes::Bytes,
    ) -> Result<ReleaseAsset, ForgeError> {
        check_asset_name(name)?;
        if bytes.len() as u64 > MAX_UPLOAD {
            return Err(ForgeError::Setup(Cause::text(format!(
                "{name} is {} bytes; a release asset holds at most {MAX_UPLOAD}",
                bytes.len()
            ))));
        }
        let found = self.release_by_tag(tag).await?;
        if found.immutable {
            return Err(ForgeError::Setup(
                crate::artifacts::immutable_reason(tag).into(),
            ));
        }
        let release = found.id;
        let url = format!(
            "{}/repos/{}/{}/releases/{release}/assets?name={}",
            self.uploads,
            self.repo.owner,
            self.repo.name,
            query_value(name)
        );
        let mut backoff = self.backoff();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let existing = self
                .release_assets(release)
                .await?
                .into_iter()
                .filter(|a| a.name == name);
            for old in existing {
                if let Some(id) = old.id {
                    self.delete_asset(id).await?;
                }
            }
            // Uploads take longer than calls: the timeout grows by a second per MiB.
            let timeout = self.policy.timeout + Duration::from_secs(bytes.len() as u64 >> 20);
            let last = match self
                .raw(http::Method::POST, &url, Some(bytes.clone()), timeout)
                .await
            {
                Ok(r) if r.status == StatusCode::CREATED || r.status == StatusCode::OK => {
                    let stored: ReleaseAsset =
                        serde_json::from_slice(&r.body).map_err(|e| ForgeError::Malformed {
                            url: url.clone(),
                            source: Cause::of(e),
                        })?;
                    return self.verify_stored(&url, name, &bytes, stored).await;
                }
                Ok(r) if r.status.is_server_error() || r.status.as_u16() == 422 => {
                    format!("{} {}", r.status, github_message(&r.body))
                }
                Ok(r) => {
                    Self::check_status(&url, &r)?;
                    format!("unexpected {}", r.status)
                }
                Err(e) => e,
            };
            self.pause(&mut backoff, &url, attempts, last, "retrying the upload")
                .await?;
        }
    }

    /// The asset GitHub says it stored must be what was sent: its name, its size and (where the
    /// answer has one) its sha256 digest. Anything else is deleted and the upload fails.
    async fn verify_stored(
        &self,
        url: &str,
        name: &str,
        sent: &[u8],
        stored: ReleaseAsset,
    ) -> Result<ReleaseAsset, ForgeError> {
        use sha2::Digest as _;
        let digest = format!("sha256:{}", crate::fsio::hex(&sha2::Sha256::digest(sent)));
        let mut wrong = Vec::new();
        if stored.name != name {
            wrong.push(format!("its name is '{}', not '{name}'", stored.name));
        }
        if stored.size != Some(sent.len() as u64) {
            wrong.push(format!(
                "its size is {}, not the {} bytes sent",
                stored
                    .size
                    .map_or_else(|| "missing".to_string(), |s| s.to_string()),
                sent.len()
            ));
        }
        if let Some(d) = &stored.digest
            && !d.eq_ignore_ascii_case(&digest)
        {
            wrong.push(format!("its digest is {d}, not {digest}"));
        }
        if wrong.is_empty() {
            return Ok(stored);
        }
        let deleted = match stored.id {
            Some(id) => match self.delete_asset(id).await {
                Ok(()) => "it was deleted".to_string(),
                Err(e) => format!("deleting it failed too: {e}"),
            },
            None => "it has no id to delete".to_string(),
        };
        Err(ForgeError::Malformed {
            url: url.to_string(),
            source: Cause::from(format!(
                "the stored asset is not what was sent: {}; {deleted}",
                wrong.join(", ")
            )),
        })
    }

    /// Deletes asset `id`; one already gone is not an error.
    async fn delete_asset(&self, id: u64) -> Result<(), ForgeError> {
        let url = self.repo_url(&format!("/releases/assets/{id}"));
        let mut last = String::new();
        for _ in 0..=self.policy.max_retries {
            match self
                .raw(http::Method::DELETE, &url, None, self.policy.timeout)
                .await
            {
                Ok(r) if r.status.is_success() || r.status == StatusCode::NOT_FOUND => {
                    return Ok(());
                }
                Ok(r) if r.status.is_server_error() => last = r.status.to_string(),
                Ok(r) => {
                    Self::check_status(&url, &r)?;
                    return Ok(());
                }
                Err(e) => last = e,
            }
            tokio::time::sleep(self.policy.min_delay).await;
        }
        Err(ForgeError::GaveUp {
            url,
            attempts: self.policy.max_retries + 1,
            last,
        })
    }

    /// One request with a method and an optional raw body, once.
    async fn raw(
        &self,
        method: http::Method,
        url: &str,
        body: Option<bytes::Bytes>,
        timeout: Duration,
    ) -> Result<Response, String> {
        let (octo, path) = match relative(url, &self.uploads) {
            Some(path) => (&self.upload_octo, path),
            None => (&self.octo, relative(url, &self.api).unwrap_or(url)),
        };
        let mut builder = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::ACCEPT, "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28")
            .header(http::header::USER_AGENT, crate::net::USER_AGENT);
        let body = match body {
            Some(bytes) => {
                builder = builder
                    .header(http::header::CONTENT_TYPE, "application/octet-stream")
                    .header(http::header::CONTENT_LENGTH, bytes.len());
                octocrab::OctoBody::from(bytes)
            }
            None => {
                builder = builder.header(http::header::CONTENT_LENGTH, 0);
                octocrab::OctoBody::empty()
            }
        };
        let request = builder.body(body).map_err(|e| e.to_string())?;
        self.exchange(octo.execute(request), timeout).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_go_to_the_upload_host_of_the_api() {
        assert_eq!(upload_base(GITHUB_API), "https://uploads.github.com");
        assert_eq!(
            upload_base("https://ghe.example.com/api/v3"),
            "https://ghe.example.com/api/uploads"
        );
        assert_eq!(
            upload_base("http://127.0.0.1:8080"),
            "http://127.0.0.1:8080"
        );
    }

    #[test]
    fn names_are_escaped_and_checked() {
        assert_eq!(query_value("a+b c/d"), "a%2Bb%20c%2Fd");
        assert!(check_asset_name("kdriver-1.0-debian-12-x86_64-6.1.0-18-amd64.tar.xz").is_ok());
        for bad in ["", "..", "a/b", "a b", "x\u{e9}"] {
            assert!(check_asset_name(bad).is_err(), "{bad}");
        }
    }
}
