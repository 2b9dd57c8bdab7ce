//! The build service (`kfleet serve`): nodes ask for their driver; the answer comes from a release
//! listing kept fresh with conditional requests, or one dispatch through the builds planner that
//! every later request for the same kernel joins.

pub mod ensure;
mod handlers;
mod server;

pub use server::{router, serve};

use crate::artifacts::AssetTemplate;
use crate::artifacts::{MatchedAsset, Release, index_assets, select_release};
use crate::builds::ledger::LedgerState;
use crate::builds::{Decision, Planner};
use crate::forge::Forge;
use crate::identity::KernelIdentity;
use crate::locks::{Lock, ReadWrite};
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
    /// How long a run's status is trusted before asking the forge again.
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A build the service knows of, by request id.
#[derive(Clone, Debug)]
struct Tracked {
    key: String,
    driver_version: String,
    run_id: Option<u64>,
    run_url: Option<String>,
    dispatched_at: chrono::DateTime<chrono::Utc>,
    /// Last status seen, and when.
    status: Option<(RunState, Instant)>,
    /// How a build ended without a run to follow (the planner found the artifact, or failed).
    settled: Option<Settled>,
}

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

    fn finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

#[derive(Clone, Debug)]
enum Settled {
    Available,
    TimedOut,
    Failed(String),
}

/// Builds by request id, and the request id of the build under way per (key, driver version).
type Builds = (HashMap<String, Tracked>, HashMap<(String, String), String>);

/// One release listing as fetched; requests read it while a refresh runs in the background.
struct Listing {
    releases: Vec<Release>,
    /// Per release tag: identity key -> artifact, built on first use.
    indexes: std::sync::Mutex<HashMap<String, Arc<HashMap<String, MatchedAsset>>>>,
    fetched: Instant,
}

/// What the service knows of a driver version from the listing.
enum Lookup {
    Found(MatchedAsset),
    NotBuilt,
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
    /// request id -> build; key+version -> request id of the build under way.
    builds: tokio::sync::Mutex<Builds>,
    buckets: std::sync::Mutex<HashMap<[u8; 32], Bucket>>,
    metrics: Metrics,
    /// Requests a previous run accepted but never dispatched: (key, driver version, request id),
    /// started by [`router`].
    pending: std::sync::Mutex<Vec<(KernelIdentity, String, String)>>,
}

impl ServiceState {
    /// The service's time: the planner's clock.
    pub(super) fn clock(&self) -> &crate::clock::SharedClock {
        self.planner.clock()
    }

    /// Time passed since `then`, on the service's clock.
    pub(super) fn elapsed_since(&self, then: Instant) -> Duration {
        self.clock().instant().saturating_duration_since(then)
    }

    /// The service over `forge`, resuming the builds the planner's ledger records.
    pub fn new(
        forge: Arc<dyn Forge>,
        planner: Planner,
        template: AssetTemplate,
        options: ServiceOptions,
    ) -> Result<Arc<Self>, crate::builds::ledger::LedgerError> {
        let ledger = planner.ledger().load()?;
        let (builds, pending) = resume(&ledger, options.deadline, planner.clock().now());
        let token_hashes = options
            .client_tokens
            .iter()
            .map(|t| token_hash(t.as_bytes()))
            .collect();
        let state = Arc::new(Self {
            forge,
            planner,
            template,
            options,
            token_hashes,
            listing: std::sync::RwLock::new(None),
            refreshing: tokio::sync::Mutex::new(()),
            builds: tokio::sync::Mutex::new(builds),
            buckets: std::sync::Mutex::new(HashMap::new()),
            metrics: Metrics::default(),
            pending: std::sync::Mutex::new(pending),
        });
        Ok(state)
    }
}

fn token_hash(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

/// Rebuilds the request map from the ledger, so ids survive a restart: every dispatch, and every
/// accepted request with no dispatch recorded. Those accepted within `deadline` are returned to be
/// planned again (the planner's checks keep that to one build); older ones answer failed, since
/// their nodes stopped waiting.
fn resume(
    ledger: &LedgerState,
    deadline: std::time::Duration,
    now: chrono::DateTime<chrono::Utc>,
) -> (Builds, Vec<(KernelIdentity, String, String)>) {
    let mut by_id = HashMap::new();
    let mut open = HashMap::new();
    for ((key, driver_version), entry) in &ledger.entries {
        by_id.insert(
            entry.request_id.clone(),
            Tracked {
                key: key.clone(),
                driver_version: driver_version.clone(),
                run_id: entry.run_id,
                run_url: entry.url.clone(),
                dispatched_at: entry.dispatched_at,
                status: None,
                settled: None,
            },
        );
        if entry.is_open() {
            open.insert(
                (key.clone(), driver_version.clone()),
                entry.request_id.clone(),
            );
        }
    }
    let mut pending = Vec::new();
    let mut accepted: Vec<_> = ledger.accepted.values().collect();
    accepted.sort_by_key(|r| r.at);
    for record in accepted {
        if by_id.contains_key(&record.request_id)
            || ledger.dispatched_ids.contains(&record.request_id)
        {
            continue;
        }
        let dv = record.driver_version.clone().unwrap_or_default();
        let fresh = now
            .signed_duration_since(record.at)
            .to_std()
            .is_ok_and(|age| age < deadline);
        let joinable = fresh && !open.contains_key(&(record.key.clone(), dv.clone()));
        by_id.insert(
            record.request_id.clone(),
            Tracked {
                key: record.key.clone(),
                driver_version: dv.clone(),
                run_id: None,
                run_url: None,
                dispatched_at: record.at,
                status: None,
                settled: (!fresh).then(|| {
                    Settled::Failed(
                        "no dispatch was recorded for this request before the build service restarted; ask again"
                            .into(),
                    )
                }),
            },
        );
        // The key comes from a file: one that no longer parses is not dispatched.
        if fresh && let Ok(id) = KernelIdentity::from_key(&record.key) {
            if joinable {
                open.insert((record.key.clone(), dv.clone()), record.request_id.clone());
            }
            pending.push((id, dv, record.request_id.clone()));
        }
    }
    ((by_id, open), pending)
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
        });
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
        Ok(())
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
                if self.elapsed_since(listing.fetched) >= self.options.listing_ttl
                    && self.refreshing.try_lock().is_ok()
                {
                    let me = self.clone();
                    let seen = listing.fetched;
                    tokio::spawn(async move {
                        let _ = me.refresh_listing(Some(seen)).await;
                    });
                }
                Ok(listing)
            }
            None => self.refresh_listing(None).await,
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
                        let index: Arc<HashMap<String, MatchedAsset>> = Arc::new(
                            index_assets(release, &self.template)
                                .matched
                                .into_iter()
                                .map(|a| (a.key.clone(), a))
                                .collect(),
                        );
                        indexes.insert(driver_version.to_string(), index.clone());
                        Some(index)
                    }
                    Err(_) => None,
                },
            }
        };
        match index {
            None => Lookup::NoRelease,
            Some(index) => match index.get(key) {
                Some(asset) => Lookup::Found(asset.clone()),
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
            run_url: None,
            reason: None,
        }
    }

    fn overdue(&self, t: &Tracked) -> bool {
        self.clock()
            .now()
            .signed_duration_since(t.dispatched_at)
            .to_std()
            .is_ok_and(|age| age > self.options.deadline)
    }

    /// Forgets builds older than twice the deadline (their nodes stopped waiting; the ledger
    /// keeps them), so memory does not grow with every request ever made.
    fn prune(&self, builds: &mut Builds) {
        let retention = self.options.deadline * 2;
        let now = self.clock().now();
        let old = |t: &Tracked| {
            now.signed_duration_since(t.dispatched_at)
                .to_std()
                .is_ok_and(|age| age > retention)
        };
        builds.0.retain(|_, t| !old(t));
        let (by_id, open) = builds;
        open.retain(|_, rid| by_id.contains_key(rid));
    }
}

impl ServiceState {
    /// Runs the planner for a build the service accepted and records what happened to it.
    async fn dispatch(&self, id: KernelIdentity, driver_version: String, rid: String) {
        let key = id.key();
        let decision = self
            .planner
            .plan_with_request_id(&id, &driver_version, &rid)
            .await;
        let mut builds = self.builds.lock().await;
        let settled = match decision {
            Ok(Decision::Dispatched { run_id, url, .. }) => {
                self.metrics.dispatches.fetch_add(1, Ordering::Relaxed);
                if let Some(t) = builds.0.get_mut(&rid) {
                    t.run_id = Some(run_id);
                    t.run_url = url;
                }
                None
            }
            // Another dispatcher (a replica, the CLI) started it: follow that run.
            Ok(Decision::Building { run_id, url, .. }) => {
                self.metrics.dedup_hits.fetch_add(1, Ordering::Relaxed);
                if let Some(t) = builds.0.get_mut(&rid) {
                    t.run_id = run_id;
                    t.run_url = url;
                }
                None
            }
            Ok(Decision::Available { .. }) => Some(Settled::Available),
            Ok(Decision::TimedOut { .. }) => Some(Settled::TimedOut),
            Ok(other) => Some(Settled::Failed(other.describe())),
            Err(e) => {
                tracing::warn!("dispatch for {key} {driver_version} failed: {e}");
                Some(Settled::Failed(
                    "the build could not be dispatched; ask again later".into(),
                ))
            }
        };
        if let Some(settled) = settled {
            if let Some(t) = builds.0.get_mut(&rid) {
                t.settled = Some(settled);
            }
            // Settled without a run: a later request starts afresh.
            builds.1.remove(&(key, driver_version));
        }
    }

    /// Records how a build ended without a run to follow, and lets a later request start afresh.
    async fn settle(&self, id: &str, tracked: &Tracked, settled: Settled) {
        let mut builds = self.builds.lock().await;
        if let Some(t) = builds.0.get_mut(id) {
            t.settled = Some(settled);
        }
        if builds
            .1
            .get(&(tracked.key.clone(), tracked.driver_version.clone()))
            == Some(&id.to_string())
        {
            builds
                .1
                .remove(&(tracked.key.clone(), tracked.driver_version.clone()));
        }
    }
}
