//! The GitHub REST client (octocrab for auth, base URI, timeouts and transport; own models and
//! retry policy): release listings with `Link` pagination and `If-None-Match`, rate-limit waits,
//! capped exponential backoff with jitter on 5xx and dropped connections.

mod actions;
mod assets;

use super::runs::{Job, JobList, RunList, WorkflowRun};
use crate::artifacts::{Release, parse_release_listing};
use crate::locks::Lock;
use crate::text::Cause;
pub use actions::CancelOutcome;
pub use assets::MAX_UPLOAD;
use backon::{BackoffBuilder, ExponentialBuilder};
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::BodyExt;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub const GITHUB_API: &str = "https://api.github.com";

#[derive(Debug, thiserror::Error)]
pub enum ForgeError {
    #[error(
        "no GitHub token: set GITHUB_TOKEN or GH_TOKEN (a token with read access to the repository; actions:write to dispatch), or log in with `gh auth login`"
    )]
    NoToken,
    #[error(
        "GitHub rejected the token (401) for {url}: check that GITHUB_TOKEN/GH_TOKEN is current and can read the repository"
    )]
    Unauthorized { url: String },
    #[error(
        "not found (404): {url}; check the repository and the API URL, and that the token can see the repository"
    )]
    NotFound { url: String },
    #[error("{url} answered {status}: {source}")]
    Http {
        url: String,
        status: u16,
        source: Cause,
    },
    #[error("{url}: the response is not the JSON GitHub sends: {source}")]
    Malformed { url: String, source: Cause },
    #[error("{url}: gave up after {attempts} attempts: {last}")]
    GaveUp {
        url: String,
        attempts: u32,
        last: String,
    },
    #[error(
        "rate limited on {url} until {wait_secs}s from now, longer than the {max_secs}s kfleet may wait"
    )]
    RateLimitTooLong {
        url: String,
        wait_secs: u64,
        max_secs: u64,
    },
    #[error("bad repository '{0}': expected OWNER/NAME")]
    BadRepo(String),
    #[error("cannot set up the GitHub client: {0}")]
    Setup(#[source] Cause),
    /// The API base URL cannot be used.
    #[error("the GitHub API URL {url}: {source}")]
    ApiUrl { url: String, source: Cause },
    /// The GitHub App's private key is not an RSA key in PEM.
    #[error(
        "the GitHub App key is not an RSA private key in PEM ({0}); use the .pem file GitHub generated for the App"
    )]
    AppKey(#[source] Cause),
    /// The dispatch's guard said the caller no longer holds the right to send it.
    #[error("{url}: not sent: {why}")]
    ClaimLost { url: String, why: String },
    /// The artifact store (an OCI registry) in place of the releases failed.
    #[error("{0}")]
    Store(#[source] Box<crate::forge::StoreError>),
}

/// `OWNER/NAME`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoRef {
    pub owner: String,
    pub name: String,
}

impl std::str::FromStr for RepoRef {
    type Err = ForgeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = |p: &str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                && p != "."
                && p != ".."
        };
        match s.split_once('/') {
            Some((o, n)) if ok(o) && ok(n) => Ok(Self {
                owner: o.to_string(),
                name: n.to_string(),
            }),
            _ => Err(ForgeError::BadRepo(s.to_string())),
        }
    }
}

impl std::fmt::Display for RepoRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

/// How the client retries and waits.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Retries after the first attempt for 5xx and transport errors.
    pub max_retries: u32,
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// Longest rate-limit wait accepted; longer is an error.
    pub max_rate_limit_wait: Duration,
    /// Per-request timeout (connect and read).
    pub timeout: Duration,
    /// Looking up a dispatched run by its request id: attempts and the pause between them.
    pub run_lookup_attempts: u32,
    pub run_lookup_interval: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 4,
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(20),
            max_rate_limit_wait: Duration::from_secs(15 * 60),
            timeout: Duration::from_secs(30),
            run_lookup_attempts: 15,
            run_lookup_interval: Duration::from_secs(2),
        }
    }
}

/// Counters a caller can show or assert on.
#[derive(Debug, Default)]
pub struct ClientStats {
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    pub rate_limit_waits: AtomicU64,
    pub not_modified: AtomicU64,
    /// The last `x-ratelimit-*` the forge sent.
    budget: Mutex<Option<Budget>>,
}

/// The token's request budget as the forge last stated it (`x-ratelimit-limit`, `-remaining`,
/// `-reset`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    pub limit: u64,
    pub remaining: u64,
    /// When the budget is renewed, in seconds since the Unix epoch.
    pub reset: u64,
}

impl Budget {
    /// Seconds from `now` until the window renews.
    pub fn renews_in(&self, now: chrono::DateTime<chrono::Utc>) -> u64 {
        self.reset.saturating_sub(now.timestamp().max(0) as u64)
    }
}

impl ClientStats {
    /// The budget the last answer stated, if any answer did.
    pub fn budget(&self) -> Option<Budget> {
        *self.budget.locked()
    }

    fn note_budget(&self, headers: &HeaderMap) {
        if let (Some(limit), Some(remaining), Some(reset)) = (
            header_u64(headers, "x-ratelimit-limit"),
            header_u64(headers, "x-ratelimit-remaining"),
            header_u64(headers, "x-ratelimit-reset"),
        ) {
            *self.budget.locked() = Some(Budget {
                limit,
                remaining,
                reset,
            });
        }
    }
}

/// A release listing and whether every page came back unchanged (304).
#[derive(Clone, Debug)]
pub struct Listing {
    pub releases: Vec<Release>,
    pub pages: usize,
    pub not_modified: bool,
}

type Notify = Box<dyn Fn(&str) + Send + Sync>;

pub struct GithubClient {
    octo: octocrab::Octocrab,
    /// The same client rooted at the upload base: octocrab puts its base's path (`/api/v3` on
    /// GitHub Enterprise) in front of every request it sends, absolute URLs included.
    upload_octo: octocrab::Octocrab,
    api: String,
    /// Where release assets are uploaded (see [`assets::upload_base`]).
    uploads: String,
    repo: RepoRef,
    policy: RetryPolicy,
    etags: Mutex<HashMap<String, (HeaderValue, bytes::Bytes)>>,
    /// Where validators and bodies outlive the process (see [`GithubClient::with_disk_cache`]).
    disk_cache: Option<crate::conditional::ConditionalCache>,
    stats: ClientStats,
    notify: Notify,
}

/// Pages of 100 runs read at most for one listing (GitHub itself returns at most 1,000 runs for a
/// filtered query).
pub const MAX_RUN_PAGES: usize = 50;

/// Finds a token: `GITHUB_TOKEN`, `GH_TOKEN`, then `gh auth token` when `gh` is installed.
pub fn token_from_environment() -> Option<String> {
    use crate::environment::{GH_TOKEN, GITHUB_TOKEN, var};
    if let Some(t) = var(GITHUB_TOKEN).or_else(|| var(GH_TOKEN)) {
        return Some(t.trim().to_string());
    }
    let out = std::process::Command::new("gh")
        .args(["auth", "token"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let token = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !token.is_empty()).then_some(token)
}

struct Call<'a> {
    url: &'a str,
    headers: HeaderMap,
    /// A JSON body makes the call a POST.
    body: Option<&'a serde_json::Value>,
}

struct Response {
    status: StatusCode,
    headers: HeaderMap,
    body: bytes::Bytes,
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// The API base without its trailing `/`; the credentials (`what` names them, with its verb) go
/// with every request, so never in the clear to a host off this machine.
fn checked_api(api: &str, what: &str) -> Result<String, ForgeError> {
    let api = api.trim_end_matches('/').to_string();
    crate::net::check_transport(&api, false).map_err(|_| ForgeError::ApiUrl {
        url: api.clone(),
        source: format!("{what} only sent over https:// (or http:// to loopback)").into(),
    })?;
    Ok(api)
}

/// `url` without `base` when it lies under it (`/repos/...`), for a client rooted at `base`.
fn relative<'a>(url: &'a str, base: &str) -> Option<&'a str> {
    url.strip_prefix(base)
        .filter(|rest| rest.starts_with('/') || rest.starts_with('?'))
}

fn github_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned())
}

/// The `rel="next"` URL of a `Link` header.
pub fn next_link(headers: &HeaderMap) -> Option<String> {
    let link = headers.get(http::header::LINK)?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|p| p.trim() == "rel=\"next\"")
            .then(|| {
                url.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string()
            })
    })
}

impl GithubClient {
    /// A client for `repo` at `api` (GitHub, GitHub Enterprise `https://HOST/api/v3`, or the
    /// sandbox). `notify` is told what the client is waiting for.
    pub fn new(
        api: &str,
        repo: RepoRef,
        token: String,
        policy: RetryPolicy,
        notify: Option<Notify>,
    ) -> Result<Self, ForgeError> {
        let api = checked_api(api, "the GitHub token is")?;
        let uploads = assets::upload_base(&api);
        // octocrab sends the token only to these two hosts.
        let client = |base: &str| {
            Self::builder(&api, base, &uploads, &policy)?
                .personal_token(token.clone())
                .build()
                .map_err(|e| ForgeError::Setup(Cause::of(e)))
        };
        let octo = client(&api)?;
        let upload_octo = client(&uploads)?;
        Ok(Self::assemble(
            octo,
            upload_octo,
            api,
            uploads,
            repo,
            policy,
            notify,
        ))
    }

    /// A client that authenticates as a GitHub App: it signs the App's JWT with `key_pem` (the
    /// App's RSA private key), finds the App's installation on `repo`, and uses installation
    /// tokens scoped to that one repository, minted again before they expire. No person's token
    /// sits in the service.
    pub async fn new_app(
        api: &str,
        repo: RepoRef,
        app_id: u64,
        key_pem: &[u8],
        policy: RetryPolicy,
        notify: Option<Notify>,
    ) -> Result<Self, ForgeError> {
        let api = checked_api(api, "GitHub App credentials are")?;
        let key = octocrab::EncodingKey::from_rsa_pem(key_pem)
            .map_err(|e| ForgeError::AppKey(Cause::of(e)))?;
        let uploads = assets::upload_base(&api);
        let app = |base: &str| {
            Self::builder(&api, base, &uploads, &policy)?
                .app(octocrab::models::AppId(app_id), key.clone())
                .build()
                .map_err(|e| ForgeError::Setup(Cause::of(e)))
        };
        let as_app = app(&api)?;
        let url = format!("{api}/repos/{}/{}/installation", repo.owner, repo.name);
        let installation = as_app
            .apps()
            .get_repository_installation(&repo.owner, &repo.name)
            .await
            .map_err(|e| match &e {
                octocrab::Error::GitHub { source, .. } if source.status_code.as_u16() == 404 => {
                    ForgeError::Setup(Cause::text(format!(
                        "GitHub App {app_id} is not installed on {}/{}: install it on the repository (Settings, GitHub Apps)",
                        repo.owner, repo.name
                    )))
                }
                _ => ForgeError::Http {
                    url: url.clone(),
                    status: 0,
                    source: Cause::from(format!(
                        "cannot find GitHub App {app_id}'s installation: {}",
                        crate::text::error_chain(&e)
                    )),
                },
            })?;
        let scoped = |octo: &octocrab::Octocrab| {
            octo.installation_builder(installation.id)
                .repositories(vec![repo.name.clone()])
                .build()
                .map_err(|e| ForgeError::Setup(Cause::of(e)))
        };
        let octo = scoped(&as_app)?;
        let upload_octo = scoped(&app(&uploads)?)?;
        Ok(Self::assemble(
            octo,
            upload_octo,
            api,
            uploads,
            repo,
            policy,
            notify,
        ))
    }

    /// An octocrab builder for `base` with the client's timeouts; the token goes to the API and
    /// upload hosts only.
    fn builder(
        api: &str,
        base: &str,
        uploads: &str,
        policy: &RetryPolicy,
    ) -> Result<
        octocrab::OctocrabBuilder<
            octocrab::NoSvc,
            octocrab::DefaultOctocrabBuilderConfig,
            octocrab::NoAuth,
            octocrab::NotLayerReady,
        >,
        ForgeError,
    > {
        Ok(octocrab::Octocrab::builder()
            .base_uri(base)
            .map_err(|e| ForgeError::ApiUrl {
                url: api.to_string(),
                source: Cause::of(e),
            })?
            .upload_uri(uploads)
            .map_err(|e| ForgeError::ApiUrl {
                url: api.to_string(),
                source: Cause::of(e),
            })?
            .set_connect_timeout(Some(policy.timeout))
            .set_read_timeout(Some(policy.timeout))
            .set_write_timeout(Some(policy.timeout)))
    }

    fn assemble(
        octo: octocrab::Octocrab,
        upload_octo: octocrab::Octocrab,
        api: String,
        uploads: String,
        repo: RepoRef,
        policy: RetryPolicy,
        notify: Option<Notify>,
    ) -> Self {
        Self {
            octo,
            upload_octo,
            api,
            uploads,
            repo,
            policy,
            etags: Mutex::new(HashMap::new()),
            disk_cache: None,
            stats: ClientStats::default(),
            notify: notify.unwrap_or_else(|| Box::new(|_| {})),
        }
    }

    pub fn stats(&self) -> &ClientStats {
        &self.stats
    }

    /// A URL on the API as the path octocrab expects: it adds its base (and the base's path on
    /// GitHub Enterprise) and the credentials, which it sends only with paths of its own base.
    fn path_of<'a>(&self, url: &'a str) -> &'a str {
        relative(url, &self.api).unwrap_or(url)
    }

    /// Keeps each listing page's ETag and body in `dir`, so the next process's first request is
    /// conditional too and an unchanged listing costs no rate limit. A damaged or unreadable
    /// entry is a cache miss, never an error.
    pub fn with_disk_cache(mut self, dir: std::path::PathBuf) -> Self {
        self.disk_cache = Some(crate::conditional::ConditionalCache::new(dir));
        self
    }

    fn read_disk(&self, url: &str) -> Option<(HeaderValue, bytes::Bytes)> {
        let kept = self.disk_cache.as_ref()?.read(url)?;
        Some((
            HeaderValue::from_str(kept.etag.as_deref()?).ok()?,
            kept.body,
        ))
    }

    pub fn repo(&self) -> &RepoRef {
        &self.repo
    }

    fn repo_url(&self, path: &str) -> String {
        format!(
            "{}/repos/{}/{}{path}",
            self.api, self.repo.owner, self.repo.name
        )
    }

    /// The retry delays of the policy: capped exponential backoff with jitter.
    fn backoff(&self) -> backon::ExponentialBackoff {
        ExponentialBuilder::default()
            .with_min_delay(self.policy.min_delay)
            .with_max_delay(self.policy.max_delay)
            .with_max_times(self.policy.max_retries as usize)
            .with_jitter()
            .build()
    }

    /// Waits the next backoff delay after a failed attempt, saying what happens next; gives up
    /// when the policy's retries are spent.
    async fn pause(
        &self,
        backoff: &mut backon::ExponentialBackoff,
        url: &str,
        attempts: u32,
        last: String,
        next: &str,
    ) -> Result<(), ForgeError> {
        let Some(delay) = backoff.next() else {
            return Err(ForgeError::GaveUp {
                url: url.to_string(),
                attempts,
                last,
            });
        };
        (self.notify)(&format!(
            "{url}: {last}; {next} in {:.1}s",
            delay.as_secs_f64()
        ));
        self.stats.retries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(delay).await;
        Ok(())
    }

    async fn attempt(&self, call: &Call<'_>) -> Result<Response, String> {
        let send = async {
            match call.body {
                None => {
                    self.octo
                        ._get_with_headers(self.path_of(call.url), Some(call.headers.clone()))
                        .await
                }
                Some(body) => self.octo._post(self.path_of(call.url), Some(body)).await,
            }
        };
        self.exchange(send, self.policy.timeout).await
    }

    /// Counts a request, awaits its response and whole body within `timeout`.
    async fn exchange(
        &self,
        send: impl std::future::Future<
            Output = octocrab::Result<
                http::Response<http_body_util::combinators::BoxBody<bytes::Bytes, octocrab::Error>>,
            >,
        >,
        timeout: Duration,
    ) -> Result<Response, String> {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let read = async {
            let res = send.await.map_err(|e| crate::text::error_chain(&e))?;
            let (parts, body) = res.into_parts();
            self.stats.note_budget(&parts.headers);
            let body = body
                .collect()
                .await
                .map_err(|e| {
                    format!(
                        "the connection dropped while reading the body: {}",
                        crate::text::error_chain(&e)
                    )
                })?
                .to_bytes();
            Ok(Response {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(timeout, read).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {timeout:?}")),
        }
    }

    /// Sends with the retry policy; returns the final non-retryable response. Only for calls that
    /// are safe to repeat (GETs, cancel); dispatch decides itself whether to resend.
    async fn send(&self, call: &Call<'_>) -> Result<Response, ForgeError> {
        let url = call.url;
        let mut backoff = self.backoff();
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let outcome = self.attempt(call).await;
            let (retryable, wait_hint) = match &outcome {
                Err(e) => (Some(e.clone()), None),
                Ok(r) if r.status.is_server_error() => (
                    Some(format!("{} {}", r.status, github_message(&r.body))),
                    None,
                ),
                Ok(r) if is_rate_limited(r) => {
                    let wait = rate_limit_wait(&r.headers);
                    if wait > self.policy.max_rate_limit_wait {
                        return Err(ForgeError::RateLimitTooLong {
                            url: url.to_string(),
                            wait_secs: wait.as_secs(),
                            max_secs: self.policy.max_rate_limit_wait.as_secs(),
                        });
                    }
                    self.stats.rate_limit_waits.fetch_add(1, Ordering::Relaxed);
                    (notify_wait(&self.notify, url, r, wait), Some(wait))
                }
                Ok(_) => (None, None),
            };
            let Some(last) = retryable else {
                return outcome.map_err(|last| ForgeError::GaveUp {
                    url: url.to_string(),
                    attempts,
                    last,
                });
            };
            let delay = match wait_hint {
                // Rate-limit waits do not use up the retry budget: GitHub said when to come back.
                Some(wait) => wait,
                None => match backoff.next() {
                    Some(d) => {
                        (self.notify)(&format!(
                            "{url}: {last}; retrying in {:.1}s",
                            d.as_secs_f64()
                        ));
                        d
                    }
                    None => {
                        return Err(ForgeError::GaveUp {
                            url: url.to_string(),
                            attempts,
                            last,
                        });
                    }
                },
            };
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(delay).await;
        }
    }

    fn check_status(url: &str, r: &Response) -> Result<(), ForgeError> {
        match r.status {
            s if s.is_success() || s == StatusCode::NOT_MODIFIED => Ok(()),
            StatusCode::UNAUTHORIZED => Err(ForgeError::Unauthorized {
                url: url.to_string(),
            }),
            StatusCode::NOT_FOUND => Err(ForgeError::NotFound {
                url: url.to_string(),
            }),
            s => Err(ForgeError::Http {
                url: url.to_string(),
                status: s.as_u16(),
                source: Cause::from(github_message(&r.body)),
            }),
        }
    }

    /// GET one page, conditional on the ETag seen last time; a 304 returns the cached body.
    async fn get_cached(&self, url: &str) -> Result<(bytes::Bytes, HeaderMap, bool), ForgeError> {
        self.get_conditional(url, true).await
    }

    /// Like [`GithubClient::get_cached`], remembering validators in memory only: run listings
    /// change URL as their window moves, so they are not worth keeping on disk.
    async fn get_cached_in_memory(
        &self,
        url: &str,
    ) -> Result<(bytes::Bytes, HeaderMap, bool), ForgeError> {
        self.get_conditional(url, false).await
    }

    async fn get_conditional(
        &self,
        url: &str,
        persist: bool,
    ) -> Result<(bytes::Bytes, HeaderMap, bool), ForgeError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::ACCEPT,
            HeaderValue::from_static("application/vnd.github+json"),
        );
        headers.insert(
            "x-github-api-version",
            HeaderValue::from_static("2022-11-28"),
        );
        let in_memory = self.etags.locked().get(url).cloned();
        let cached = if persist {
            in_memory.or_else(|| self.read_disk(url))
        } else {
            in_memory
        };
        if let Some((etag, _)) = &cached {
            headers.insert(http::header::IF_NONE_MATCH, etag.clone());
        }
        let r = self
            .send(&Call {
                url,
                headers,
                body: None,
            })
            .await?;
        Self::check_status(url, &r)?;
        if r.status == StatusCode::NOT_MODIFIED
            && let Some((etag, body)) = cached
        {
            self.stats.not_modified.fetch_add(1, Ordering::Relaxed);
            self.etags
                .locked()
                .insert(url.to_string(), (etag, body.clone()));
            return Ok((body, r.headers, true));
        }
        if let Some(etag) = r.headers.get(http::header::ETAG) {
            if persist && let Some(cache) = &self.disk_cache {
                // Listings of a private repository are private: 0600 files in a 0700 directory.
                cache.keep(url, &r.headers, r.body.clone()).await;
            }
            let mut etags = self.etags.locked();
            // A run listing whose window moved on replaces the old window's pages.
            if let Some((base, _)) = url.split_once("&created=") {
                etags.retain(|k, _| !k.starts_with(base) || !k.contains("&created=") || k == url);
            }
            etags.insert(url.to_string(), (etag.clone(), r.body.clone()));
        }
        Ok((r.body, r.headers, false))
    }

    /// Every release, following `Link: rel="next"` across pages of 100.
    pub async fn list_releases(&self) -> Result<Listing, ForgeError> {
        let mut url = Some(self.repo_url("/releases?per_page=100"));
        let mut releases = Vec::new();
        let mut pages = 0;
        let mut all_cached = true;
        while let Some(page_url) = url.take() {
            let (body, headers, cached) = self.get_cached(&page_url).await?;
            all_cached &= cached;
            pages += 1;
            let page =
                parse_release_listing(&page_url, &body).map_err(|e| ForgeError::Malformed {
                    url: page_url.clone(),
                    source: Cause::of(e),
                })?;
            releases.extend(page);
            url = next_link(&headers);
            if pages > 1000 {
                return Err(ForgeError::Malformed {
                    url: page_url,
                    source: Cause::from("more than 1000 pages; the Link headers loop"),
                });
            }
        }
        Ok(Listing {
            releases,
            pages,
            not_modified: all_cached,
        })
    }
}

fn is_rate_limited(r: &Response) -> bool {
    let exhausted = header_u64(&r.headers, "x-ratelimit-remaining") == Some(0);
    let has_retry_after = r.headers.contains_key(http::header::RETRY_AFTER);
    r.status == StatusCode::TOO_MANY_REQUESTS
        || (r.status == StatusCode::FORBIDDEN && (exhausted || has_retry_after))
}

/// How long GitHub asked us to wait: `retry-after` seconds, else until `x-ratelimit-reset`,
/// else a minute (GitHub's advice for secondary limits without headers).
fn rate_limit_wait(headers: &HeaderMap) -> Duration {
    if let Some(secs) = header_u64(headers, "retry-after") {
        return Duration::from_secs(secs);
    }
    if let Some(reset) = header_u64(headers, "x-ratelimit-reset") {
        let now = chrono::Utc::now().timestamp().max(0) as u64;
        return Duration::from_secs(reset.saturating_sub(now) + 1);
    }
    Duration::from_secs(60)
}

fn notify_wait(notify: &Notify, url: &str, r: &Response, wait: Duration) -> Option<String> {
    let msg = format!(
        "rate limited ({}) on {url}: waiting {}s as GitHub asks",
        r.status.as_u16(),
        wait.as_secs()
    );
    notify(&msg);
    Some(msg)
}
