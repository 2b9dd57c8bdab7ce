//! The build service (`kfleet serve`): nodes ask for their driver; the answer comes from a release
//! listing kept fresh with conditional requests, or one dispatch through the builds planner that
//! every later request for the same kernel joins.

pub mod ensure;
mod handlers;
mod server;
pub mod tls;
mod webhooks;

pub use server::{router, serve};

use crate::artifacts::AssetTemplate;
use crate::artifacts::{MatchedAsset, Release, index_assets, select_release};
use crate::builds::{Decision, Planner};
use crate::forge::Forge;
use crate::identity::KernelIdentity;
use crate::locks::{Lock, ReadWrite};
use crate::state::{BuildId, BuildRecord, Phase, Store};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Largest request body accepted; a build request is a few hundred bytes.
pub const MAX_BODY: usize = 4096;

#[derive(Clone, Debug)]
pub struct ServiceOptions {
    /// Bearer tokens clients may present.
    pub client_tokens: Vec<String>,
    /// How long the release listing is trusted before a conditional refresh.
    pub listing_ttl: Duration,
    /// How often the open builds' runs are read again: one conditional run listing for all of
    /// them (an unchanged one is a 304, which GitHub does not charge), however many builds are
    /// open and however often nodes poll `/status`.
    pub status_ttl: Duration,
    /// A build not done this long after dispatch is `timed_out`.
    pub deadline: Duration,
    /// New build requests (each may cost GitHub calls) per second each client token may make
    /// (burst: ten times that). Answers from the cached listing and status polls are not counted.
    pub rate_per_client: f64,
    /// Serve `/metrics` without a token.
    pub metrics_public: bool,
    /// Longest time one request may take, body included.
    pub request_timeout: Duration,
    /// Requests handled at once; more wait their turn (within the request timeout).
    pub max_concurrent_requests: usize,
    /// Open connections at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// A client must send its request headers within this time (also ends idle keep-alives).
    pub header_read_timeout: Duration,
    /// On SIGTERM, requests in flight get this long to finish.
    pub shutdown_grace: Duration,
    /// How often the service looks for claims whose holder stopped (another replica killed
    /// mid-dispatch, or this one before a restart) and settles them.
    pub sweep_interval: Duration,
    /// Settled builds are deleted from the state store this long after they settled.
    pub retention: Duration,
    /// The shared secret GitHub signs webhook deliveries with; `None`: `/webhooks/github` is off.
    pub webhook_secret: Option<Secret>,
    /// Serve HTTPS with this certificate and key (read again when they change); `None`: HTTP.
    pub tls: Option<tls::TlsFiles>,
    /// A build that failed is not dispatched again for the same kernel and driver version for
    /// this long: nodes asking meanwhile get `failed`, its run, and when a retry is allowed.
    pub retry_failed_after: Duration,
    /// New builds each client token may start in an hour.
    pub builds_per_hour: u32,
}

/// A secret that never shows in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Default for ServiceOptions {
    fn default() -> Self {
        Self {
            client_tokens: Vec::new(),
            listing_ttl: Duration::from_secs(30),
            status_ttl: Duration::from_secs(5),
            deadline: Duration::from_secs(15 * 60),
            rate_per_client: 50.0,
            metrics_public: false,
            request_timeout: Duration::from_secs(30),
            max_concurrent_requests: 512,
            max_connections: 2048,
            header_read_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
            sweep_interval: Duration::from_secs(10),
            retention: Duration::from_secs(30 * 24 * 3600),
            webhook_secret: None,
            tls: None,
            retry_failed_after: Duration::from_secs(3600),
            builds_per_hour: 200,
        }
    }
}

/// What a node sends.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BuildRequest {
    pub kernel_version: String,
    pub architecture: String,
    pub distribution: String,
    pub distro_version: String,
    pub driver_version: String,
}

/// Where a build stands, on the wire (`status` in every answer, `error` for a refused request).
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ServiceStatus {
    #[default]
    Queued,
    InProgress,
    Available,
    Failed,
    TimedOut,
    Error,
    /// A status a newer service sends that this client does not know.
    #[serde(other)]
    Unknown,
}

impl ServiceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::InProgress => "in_progress",
            Self::Available => "available",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
            Self::Error => "error",
            Self::Unknown => "unknown",
        }
    }
}

/// What the service answers to `POST /build` and `GET /status/{id}`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct BuildStatus {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub status: ServiceStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub download_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The release's `.sha256` file for the artifact: a node checks it as well as `sha256`
    /// (GitHub's own digest of the stored asset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A build the service knows of: its record in the state store, and the status of its run as
/// last fetched (trusted for the status TTL).
#[derive(Clone, Debug)]
struct Tracked {
    record: BuildRecord,
    status: Option<(RunState, Instant)>,
}

impl Tracked {
    /// How the build ended without a run to follow, by its record.
    fn settled(&self) -> Option<Settled> {
        let r = &self.record;
        let reason = || {
            r.conclusion
                .clone()
                .unwrap_or_else(|| "the build failed".into())
        };
        match r.phase {
            Phase::Claimed | Phase::Dispatched => None,
            Phase::Finished => match r.conclusion.as_deref() {
                Some("success" | AVAILABLE) => Some(Settled::Available),
                Some(crate::state::RUN_NOT_FOUND) => Some(Settled::Failed(format!(
                    "run {} is no longer known to the forge (deleted, or the forge restarted); ask again",
                    r.run_id
                        .map(|i| i.to_string())
                        .unwrap_or_else(|| "?".into())
                ))),
                _ => Some(Settled::Failed(format!(
                    "the build run ended: {}",
                    reason()
                ))),
            },
            Phase::TimedOut | Phase::Cancelled => Some(Settled::TimedOut),
            Phase::Failed => Some(Settled::Failed(reason())),
        }
    }
}

/// How long the service trusts that a build it saw open is still the one to join (another replica
/// may settle it meanwhile; a node that joins a build just settled sees that in its status).
const JOIN_TTL: Duration = Duration::from_secs(1);

/// The conclusion of a build settled because its artifact turned up without a run.
const AVAILABLE: &str = "available";

/// A run as the service last saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RunState {
    Queued,
    InProgress,
    Succeeded,
    Failed,
}

impl RunState {
    fn of(run: &crate::forge::WorkflowRun) -> Self {
        use crate::forge::RunStatus;
        if run.succeeded() {
            Self::Succeeded
        } else if run.is_finished() {
            Self::Failed
        } else if run.status == Some(RunStatus::InProgress) {
            Self::InProgress
        } else {
            Self::Queued
        }
    }
}

#[derive(Clone, Debug)]
enum Settled {
    Available,
    TimedOut,
    Failed(String),
}

/// One release listing as fetched; requests read it while a refresh runs in the background.
struct Listing {
    releases: Vec<Release>,
    /// Per release tag: its artifacts by identity key, built on first use.
    indexes: std::sync::Mutex<HashMap<String, Arc<ReleaseIndex>>>,
    fetched: Instant,
}

/// One release's artifacts by identity key, and whether it can take new ones.
struct ReleaseIndex {
    tag: String,
    immutable: bool,
    assets: HashMap<String, MatchedAsset>,
}

/// What the service knows of a driver version from the listing.
enum Lookup {
    Found(MatchedAsset),
    NotBuilt,
    /// The release lacks it and is immutable: nothing can be added to it.
    Immutable(String),
    /// The listing has no such release.
    NoRelease,
}

#[derive(Default)]
struct Metrics {
    requests: std::sync::Mutex<BTreeMap<&'static str, u64>>,
    dispatches: AtomicU64,
    dedup_hits: AtomicU64,
    build_seconds_sum: std::sync::Mutex<f64>,
    build_seconds_count: AtomicU64,
}

impl Metrics {
    fn count(&self, outcome: &'static str) {
        *self.requests.locked().entry(outcome).or_default() += 1;
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
    /// New builds started in the current hour, and when that hour began.
    hour_start: Instant,
    hour_builds: u32,
}

/// A build that failed, remembered until a new one may be dispatched.
#[derive(Clone, Debug)]
pub(super) struct RecentFailure {
    pub(super) reason: String,
    pub(super) run_url: Option<String>,
    pub(super) retry_at: chrono::DateTime<chrono::Utc>,
}

pub struct ServiceState {
    forge: Arc<dyn Forge>,
    planner: Planner,
    template: AssetTemplate,
    options: ServiceOptions,
    /// SHA-256 of each client token: compared in constant time, never by length.
    token_hashes: Vec<[u8; 32]>,
    /// The last good listing; replaced whole by a refresh.
    listing: std::sync::RwLock<Option<Arc<Listing>>>,
    /// Single flight for listing refreshes.
    refreshing: tokio::sync::Mutex<()>,
    /// request id -> build, as last read from the store, with its run status.
    builds: tokio::sync::Mutex<HashMap<String, Tracked>>,
    /// (key, driver version) -> the request id of its open build, as the store said within
    /// [`JOIN_TTL`]: a storm of requests for one missing kernel costs one store query a second.
    joins: std::sync::Mutex<HashMap<(String, String), (String, Instant)>>,
    buckets: std::sync::Mutex<HashMap<[u8; 32], Bucket>>,
    /// (key, driver version) -> its recent failure: answered without the store or the forge.
    failures: std::sync::Mutex<HashMap<(String, String), RecentFailure>>,
    /// Single flight for run polls.
    run_poll: tokio::sync::Mutex<()>,
    /// Set once a run poll finished: `/status` checks it without waiting for a poll under way.
    polled: std::sync::atomic::AtomicBool,
    /// Webhook deliveries seen (redeliveries change nothing) and when the last one came.
    deliveries: std::sync::Mutex<webhooks::Deliveries>,
    /// Runs missing from a listing that were then found one by one (a listing lagging behind a
    /// dispatch), and when: asked about again only after [`CONFIRM_AGAIN`].
    confirmed: std::sync::Mutex<HashMap<u64, Instant>>,
    metrics: Metrics,
}

/// Failures remembered at most (older ones are dropped first when full).
const MAX_REMEMBERED_FAILURES: usize = 100_000;

/// How long a run found by id while the run listing lacked it is not asked about again.
const CONFIRM_AGAIN: Duration = Duration::from_secs(60);

impl ServiceState {
    /// The service's time: the planner's clock.
    pub(super) fn clock(&self) -> &crate::clock::SharedClock {
        self.planner.clock()
    }

    /// Time passed since `then`, on the service's clock.
    pub(super) fn elapsed_since(&self, then: Instant) -> Duration {
        self.clock().instant().saturating_duration_since(then)
    }

    /// The service over `forge`, with the planner's state store. Builds a previous run (or
    /// another replica) claimed but never dispatched are settled by [`ServiceState::sweep`],
    /// which [`router`] starts.
    pub fn new(
        forge: Arc<dyn Forge>,
        planner: Planner,
        template: AssetTemplate,
        options: ServiceOptions,
    ) -> Arc<Self> {
        let token_hashes = options
            .client_tokens
            .iter()
            .map(|t| token_hash(t.as_bytes()))
            .collect();
        Arc::new(Self {
            forge,
            planner,
            template,
            options,
            token_hashes,
            listing: std::sync::RwLock::new(None),
            refreshing: tokio::sync::Mutex::new(()),
            builds: tokio::sync::Mutex::new(HashMap::new()),
            buckets: std::sync::Mutex::new(HashMap::new()),
            failures: std::sync::Mutex::new(HashMap::new()),
            joins: std::sync::Mutex::new(HashMap::new()),
            run_poll: tokio::sync::Mutex::new(()),
            polled: std::sync::atomic::AtomicBool::new(false),
            deliveries: std::sync::Mutex::new(webhooks::Deliveries::default()),
            confirmed: std::sync::Mutex::new(HashMap::new()),
            metrics: Metrics::default(),
        })
    }

    pub(super) fn store(&self) -> &Store {
        self.planner.store()
    }
}

fn token_hash(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

fn json_error(status: StatusCode, reason: impl Into<String>) -> Response {
    (
        status,
        axum::Json(BuildStatus {
            status: ServiceStatus::Error,
            reason: Some(reason.into()),
            ..BuildStatus::default()
        }),
    )
        .into_response()
}

/// The bearer token of a request (`Authorization: Bearer T`, the scheme in any case).
fn bearer(headers: &HeaderMap) -> &[u8] {
    headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes)
        .and_then(|v| {
            let space = v.iter().position(|b| *b == b' ')?;
            let (scheme, rest) = v.split_at(space);
            scheme
                .eq_ignore_ascii_case(b"bearer")
                .then(|| rest.trim_ascii())
        })
        .unwrap_or(b"")
}

/// A client that presented a known token, named by its token's hash.
struct Client([u8; 32]);

impl ServiceState {
    /// Checks the bearer token; the error is the response to send.
    fn authenticate(&self, headers: &HeaderMap) -> Result<Client, Box<Response>> {
        use subtle::ConstantTimeEq;
        let presented = token_hash(bearer(headers));
        let known = self
            .token_hashes
            .iter()
            .fold(subtle::Choice::from(0), |acc, t| acc | t.ct_eq(&presented));
        if bool::from(known) {
            return Ok(Client(presented));
        }
        self.metrics.count("unauthorized");
        let mut r = json_error(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        Err(Box::new(r))
    }

    /// Takes one new-build token from the client's bucket; the error is the response to send.
    fn charge(&self, client: &Client) -> Result<(), Box<Response>> {
        let rate = self.options.rate_per_client;
        let mut buckets = self.buckets.locked();
        let now = self.clock().instant();
        let bucket = buckets.entry(client.0).or_insert(Bucket {
            tokens: rate * 10.0,
            at: now,
            hour_start: now,
            hour_builds: 0,
        });
        if now.saturating_duration_since(bucket.hour_start) >= Duration::from_secs(3600) {
            bucket.hour_start = now;
            bucket.hour_builds = 0;
        }
        if bucket.hour_builds >= self.options.builds_per_hour {
            self.metrics.count("quota_exceeded");
            let mut r = json_error(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "this client started {} new builds this hour, its quota; ask again later",
                    bucket.hour_builds
                ),
            );
            let wait = Duration::from_secs(3600)
                .saturating_sub(now.saturating_duration_since(bucket.hour_start))
                .as_secs()
                .max(1);
            if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return Err(Box::new(r));
        }
        bucket.tokens =
            (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate).min(rate * 10.0);
        bucket.at = now;
        if bucket.tokens < 1.0 {
            self.metrics.count("rate_limited");
            let mut r = json_error(
                StatusCode::TOO_MANY_REQUESTS,
                "too many new build requests from this client",
            );
            let wait = ((1.0 - bucket.tokens) / rate).ceil().max(1.0) as u64;
            if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return Err(Box::new(r));
        }
        bucket.tokens -= 1.0;
        bucket.hour_builds += 1;
        Ok(())
    }

    /// The build of (key, driver version) that failed within `retry_failed_after`, if any: from
    /// a memory of failures, else the store's history (then remembered, so a storm for a kernel
    /// that cannot be built costs one store query, and nothing of the forge).
    pub(super) async fn recent_failure(
        &self,
        key: &str,
        driver_version: &str,
    ) -> Result<Option<RecentFailure>, crate::state::StoreError> {
        let now = self.clock().now();
        let id = (key.to_string(), driver_version.to_string());
        if let Some(known) = self.failures.locked().get(&id).cloned() {
            if known.retry_at > now {
                return Ok(Some(known));
            }
            self.failures.locked().remove(&id);
            return Ok(None);
        }
        let last = self.store().history(key, driver_version).await?.pop();
        // Only a run that ran and failed: a dispatch GitHub refused or a run that vanished says
        // nothing about the kernel.
        let Some(last) = last.filter(|r| {
            r.phase == Phase::Finished
                && !matches!(
                    r.conclusion.as_deref(),
                    None | Some("success" | AVAILABLE | crate::state::RUN_NOT_FOUND)
                )
        }) else {
            return Ok(None);
        };
        let tracked = Tracked {
            record: last.clone(),
            status: None,
        };
        let reason = match tracked.settled() {
            Some(Settled::Failed(reason)) => reason,
            _ => return Ok(None),
        };
        let wait = chrono::Duration::from_std(self.options.retry_failed_after)
            .unwrap_or(chrono::Duration::hours(1));
        let retry_at = last.updated_at + wait;
        if retry_at <= now {
            return Ok(None);
        }
        let failure = RecentFailure {
            reason,
            run_url: last.url.clone(),
            retry_at,
        };
        let mut failures = self.failures.locked();
        if failures.len() >= MAX_REMEMBERED_FAILURES {
            failures.retain(|_, f| f.retry_at > now);
        }
        failures.insert(id, failure.clone());
        Ok(Some(failure))
    }

    /// Fetches the listing now, unless another task is already at it (then waits for that one).
    async fn refresh_listing(&self, since: Option<Instant>) -> Result<Arc<Listing>, String> {
        let _one = self.refreshing.lock().await;
        let current = self.listing.read_now().clone();
        if let Some(current) = &current
            && since.is_none_or(|s| current.fetched > s)
        {
            // Someone refreshed while this task waited.
            return Ok(current.clone());
        }
        match self.forge.list_releases().await {
            Ok(fresh) => {
                let listing = Arc::new(Listing {
                    releases: fresh.releases,
                    indexes: std::sync::Mutex::new(HashMap::new()),
                    fetched: self.clock().instant(),
                });
                *self.listing.write_now() = Some(listing.clone());
                Ok(listing)
            }
            Err(e) => {
                tracing::warn!("cannot refresh the release listing: {e}");
                match current {
                    Some(c) => Ok(c),
                    None => Err(e.to_string()),
                }
            }
        }
    }

    /// The listing to answer from: the last good one (a stale one starts a refresh in the
    /// background and is still served), or the first one fetched now.
    async fn current_listing(self: &Arc<Self>) -> Result<Arc<Listing>, String> {
        let current = self.listing.read_now().clone();
        match current {
            Some(listing) => {
                self.refresh_if_older(&listing, self.options.listing_ttl);
                Ok(listing)
            }
            None => self.refresh_listing(None).await,
        }
    }

    /// Reads the listing again in the background when `listing` is at least `age` old and no
    /// refresh is under way.
    fn refresh_if_older(self: &Arc<Self>, listing: &Listing, age: Duration) {
        if self.elapsed_since(listing.fetched) >= age && self.refreshing.try_lock().is_ok() {
            let me = self.clone();
            let seen = listing.fetched;
            tokio::spawn(async move {
                let _ = me.refresh_listing(Some(seen)).await;
            });
        }
    }

    /// The artifact of `key` in release `driver_version`. Each release's assets are matched to
    /// identities once per listing, so a request is a hash lookup.
    fn find(&self, listing: &Listing, key: &str, driver_version: &str) -> Lookup {
        let index = {
            let mut indexes = listing.indexes.locked();
            match indexes.get(driver_version) {
                Some(index) => Some(index.clone()),
                None => match select_release(&listing.releases, Some(driver_version)) {
                    Ok(release) => {
                        let index = Arc::new(ReleaseIndex {
                            tag: release.tag_name.clone(),
                            immutable: release.immutable,
                            assets: index_assets(release, &self.template)
                                .matched
                                .into_iter()
                                .map(|a| (a.key.clone(), a))
                                .collect(),
                        });
                        indexes.insert(driver_version.to_string(), index.clone());
                        Some(index)
                    }
                    Err(_) => None,
                },
            }
        };
        match index {
            None => Lookup::NoRelease,
            Some(index) => match index.assets.get(key) {
                Some(asset) => Lookup::Found(asset.clone()),
                None if index.immutable => Lookup::Immutable(index.tag.clone()),
                None => Lookup::NotBuilt,
            },
        }
    }

    fn available_status(key: String, asset: MatchedAsset) -> BuildStatus {
        BuildStatus {
            id: None,
            status: ServiceStatus::Available,
            identity: Some(key),
            download_url: asset.url,
            sha256: asset
                .digest
                .map(|d| d.trim_start_matches("sha256:").to_string()),
            sha256_url: asset.checksum_url,
            run_url: None,
            reason: None,
        }
    }

    fn overdue(&self, record: &BuildRecord) -> bool {
        self.older_than(record.started_at(), self.options.deadline)
    }

    fn older_than(&self, at: chrono::DateTime<chrono::Utc>, age: Duration) -> bool {
        self.clock()
            .now()
            .signed_duration_since(at)
            .to_std()
            .is_ok_and(|a| a > age)
    }

    /// The request id of the open build of (key, driver version), as seen within [`JOIN_TTL`].
    fn cached_join(&self, key: &str, driver_version: &str) -> Option<String> {
        let mut joins = self.joins.locked();
        let now = self.clock().instant();
        joins.retain(|_, (_, at)| now.saturating_duration_since(*at) < JOIN_TTL);
        joins
            .get(&(key.to_string(), driver_version.to_string()))
            .map(|(rid, _)| rid.clone())
    }

    fn remember_join(&self, key: &str, driver_version: &str, rid: &str) {
        self.joins.locked().insert(
            (key.to_string(), driver_version.to_string()),
            (rid.to_string(), self.clock().instant()),
        );
    }

    /// Forgets that `build` is the one to join (it settled).
    fn forget_join(&self, build: BuildId<'_>) {
        let at = (build.key.to_string(), build.driver_version.to_string());
        let mut joins = self.joins.locked();
        if joins
            .get(&at)
            .is_some_and(|(rid, _)| rid == build.request_id)
        {
            joins.remove(&at);
        }
    }

    /// Forgets cached builds older than twice the deadline (their nodes stopped waiting; the
    /// store keeps them), so memory does not grow with every request ever made.
    fn prune_cache(&self, builds: &mut HashMap<String, Tracked>) {
        let retention = self.options.deadline * 2;
        builds.retain(|_, t| !self.older_than(t.record.started_at(), retention));
    }
}

impl ServiceState {
    /// Runs the planner for a build this service claimed (or takes over) and records in the store
    /// how it ended when no run follows.
    async fn dispatch(&self, id: KernelIdentity, driver_version: String, rid: String) {
        let key = id.key();
        let decision = self
            .planner
            .plan_with_request_id(&id, &driver_version, &rid)
            .await;
        let settled = match decision {
            Ok(Decision::Dispatched { .. }) => {
                self.metrics.dispatches.fetch_add(1, Ordering::Relaxed);
                return;
            }
            // Another dispatcher (a replica, the CLI) holds or started it: nodes follow that.
            Ok(Decision::Building { .. }) => {
                self.metrics.dedup_hits.fetch_add(1, Ordering::Relaxed);
                return;
            }
            // The planner settled it.
            Ok(Decision::TimedOut { .. }) => return,
            Ok(Decision::Available { .. }) => (Phase::Finished, AVAILABLE.to_string()),
            Ok(other) => (Phase::Failed, other.describe()),
            Err(e) => {
                tracing::warn!("dispatch for {key} {driver_version} failed: {e}");
                (
                    Phase::Failed,
                    "the build could not be dispatched; ask again later".to_string(),
                )
            }
        };
        let build = BuildId {
            request_id: &rid,
            key: &key,
            driver_version: &driver_version,
        };
        self.settle(build, settled.0, Some(&settled.1)).await;
    }

    /// Records in the store how a build ended (other replicas answer from it, and a later
    /// request starts afresh) and stops joining it here. A store that is down now leaves the
    /// build open: a claim expires and the sweep settles it; a run is seen again by the next poll.
    async fn settle(&self, build: BuildId<'_>, phase: Phase, conclusion: Option<&str>) {
        self.forget_join(build);
        if let Err(e) = self
            .store()
            .settle(build, phase, conclusion, self.clock().now())
            .await
        {
            tracing::warn!(
                "cannot record that {} ({} {}) is {}: {e}",
                build.request_id,
                build.key,
                build.driver_version,
                phase.as_str()
            );
        }
    }

    /// Reads the runs of every open dispatched build from one conditional run listing (per
    /// workflow that has one), records each run's state for `/status`, and settles builds whose
    /// run finished. A run the listing lacks is asked for by id, at most once a minute (a listing
    /// may lag behind a dispatch); one the forge no longer knows settles its build. The cost is
    /// one request per interval, whatever the number of builds and pollers, and nothing when the
    /// listing is unchanged.
    pub async fn poll_runs(&self) -> Result<(), String> {
        let _one = self.run_poll.lock().await;
        let dispatched: Vec<BuildRecord> = self
            .store()
            .open_builds()
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|r| r.phase == Phase::Dispatched && r.run_id.is_some())
            .collect();
        let mut runs: HashMap<u64, crate::forge::WorkflowRun> = HashMap::new();
        if let Some(since) = dispatched.iter().map(BuildRecord::started_at).min() {
            let config = self.planner.config();
            let mut workflows = vec![config.workflow.clone()];
            if config.batch_workflow != config.workflow {
                workflows.push(config.batch_workflow.clone());
            }
            for workflow in workflows {
                if dispatched
                    .iter()
                    .all(|r| r.run_id.is_some_and(|id| runs.contains_key(&id)))
                {
                    break;
                }
                let listed = self
                    .forge
                    .list_runs(&workflow, None, Some(since))
                    .await
                    .map_err(|e| e.to_string())?;
                runs.extend(listed.into_iter().map(|run| (run.id, run)));
            }
        }
        let now = self.clock().instant();
        for record in &dispatched {
            let Some(run_id) = record.run_id else {
                continue;
            };
            let run = match runs.remove(&run_id) {
                Some(run) => run,
                None => {
                    let recent = self
                        .confirmed
                        .locked()
                        .get(&run_id)
                        .is_some_and(|at| now.saturating_duration_since(*at) < CONFIRM_AGAIN);
                    if recent {
                        continue;
                    }
                    match self.forge.get_run(run_id).await {
                        Ok(run) => {
                            self.confirmed.locked().insert(run_id, now);
                            run
                        }
                        Err(crate::forge::ForgeError::NotFound { .. }) => {
                            self.settle(
                                record.into(),
                                Phase::Finished,
                                Some(crate::state::RUN_NOT_FOUND),
                            )
                            .await;
                            continue;
                        }
                        Err(e) => {
                            tracing::warn!("cannot read run {run_id}: {e}");
                            continue;
                        }
                    }
                }
            };
            self.record_run(record, &run, now).await;
        }
        self.confirmed
            .locked()
            .retain(|_, at| now.saturating_duration_since(*at) < CONFIRM_AGAIN);
        self.polled.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// What `run` says of the dispatched build `record`, seen at `now` (by the run poll or a
    /// webhook): its state for `/status`, and the build settled when the run finished.
    pub(super) async fn record_run(
        &self,
        record: &BuildRecord,
        run: &crate::forge::WorkflowRun,
        now: Instant,
    ) {
        if run.is_finished() {
            let conclusion = run.conclusion.map(|c| c.to_string());
            self.settle(record.into(), Phase::Finished, conclusion.as_deref())
                .await;
        }
        let mut builds = self.builds.lock().await;
        builds
            .entry(record.request_id.clone())
            .or_insert_with(|| Tracked {
                record: record.clone(),
                status: None,
            })
            .status = Some((RunState::of(run), now));
    }

    /// How long to wait before the next run poll: the status interval, stretched twelvefold
    /// while webhook deliveries arrive (they settle builds at once); polling takes over again
    /// when they stop.
    pub(super) fn run_poll_interval(&self) -> Duration {
        let every = self.options.status_ttl.max(Duration::from_millis(50));
        let live = self
            .deliveries
            .locked()
            .last()
            .is_some_and(|at| self.elapsed_since(at) < webhooks::LIVE);
        if live { every * 12 } else { every }
    }

    /// Polls the runs now if this replica has not since it started (a node asks right after a
    /// restart), so `/status` never reads a run by itself.
    pub(super) async fn polled_once(&self) {
        if !self.polled.load(Ordering::Relaxed)
            && let Err(e) = self.poll_runs().await
        {
            tracing::warn!("cannot read the open builds' runs: {e}");
        }
    }

    /// One pass over the open builds: claims whose holder stopped before dispatching are taken
    /// over and dispatched (or failed, when no node waits for them any more); dispatched builds
    /// far past the deadline are timed out; settled builds past the retention are deleted.
    pub async fn sweep(&self) -> Result<(), crate::state::StoreError> {
        let now = self.clock().now();
        for record in self.store().open_builds().await? {
            if record.claim_expired(now, crate::forge::DISPATCH_SEND_TIMEOUT) {
                if self.older_than(record.accepted_at, self.options.deadline) {
                    self.store()
                        .settle(
                            &record,
                            Phase::Failed,
                            Some("no dispatch was recorded for this request before its build service stopped; ask again"),
                            now,
                        )
                        .await?;
                    continue;
                }
                // The key comes from the store: one that no longer parses is not dispatched.
                match KernelIdentity::from_key(&record.key) {
                    Ok(id) => {
                        self.dispatch(id, record.driver_version.clone(), record.request_id.clone())
                            .await;
                    }
                    Err(_) => {
                        self.store()
                            .settle(
                                &record,
                                Phase::Failed,
                                Some("not a valid identity key"),
                                now,
                            )
                            .await?;
                    }
                }
            } else if record.phase == Phase::Dispatched
                && self.older_than(record.started_at(), self.options.deadline * 2)
            {
                self.store()
                    .settle(&record, Phase::TimedOut, None, now)
                    .await?;
            }
        }
        let retention = chrono::Duration::from_std(self.options.retention)
            .unwrap_or(chrono::Duration::days(30));
        let pruned = self.store().prune(now - retention).await?;
        if pruned > 0 {
            tracing::info!("pruned {pruned} settled builds older than the retention");
        }
        Ok(())
    }
}
