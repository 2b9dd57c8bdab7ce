//! The build service (`kfleet serve`): nodes ask for their driver; the answer comes from a release
//! listing kept fresh with conditional requests, or one dispatch through the builds planner that
//! every later request for the same kernel joins.

pub mod ensure;

use crate::builds::ledger::{LedgerEvent, LedgerRecord, LedgerState};
use crate::builds::{Decision, Planner, new_request_id};
use crate::forge::{Forge, MatchedAsset, Release, index_assets, select_release};
use crate::identity::{AssetTemplate, KernelIdentity, Rejection};
use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
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
    /// Requests per second each client token may make (burst: ten times that).
    pub rate_per_client: f64,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        Self {
            client_tokens: Vec::new(),
            listing_ttl: Duration::from_secs(30),
            status_ttl: Duration::from_secs(5),
            deadline: Duration::from_secs(15 * 60),
            rate_per_client: 50.0,
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

/// What the service answers to `POST /build` and `GET /status/{id}`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct BuildStatus {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `queued`, `in_progress`, `available`, `failed`, `timed_out`.
    pub status: String,
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
    status: Option<(String, Instant)>,
    /// How a build ended without a run to follow (the planner found the artifact, or failed).
    settled: Option<Settled>,
}

#[derive(Clone, Debug)]
enum Settled {
    Available,
    TimedOut,
    Failed(String),
}

/// Builds by request id, and the request id of the build under way per (key, driver version).
type Builds = (HashMap<String, Tracked>, HashMap<(String, String), String>);

struct Listing {
    releases: Vec<Release>,
    /// Per release tag: identity key -> artifact.
    indexes: HashMap<String, HashMap<String, MatchedAsset>>,
    fetched: Option<Instant>,
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
        *self
            .requests
            .lock()
            .expect("metrics lock")
            .entry(outcome)
            .or_default() += 1;
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
    listing: tokio::sync::Mutex<Listing>,
    /// request id -> build; key+version -> request id of the build under way.
    builds: tokio::sync::Mutex<Builds>,
    buckets: std::sync::Mutex<HashMap<String, Bucket>>,
    metrics: Metrics,
    /// Requests a previous run accepted but never dispatched: (key, driver version, request id),
    /// started by [`router`].
    pending: std::sync::Mutex<Vec<(String, String, String)>>,
}

impl ServiceState {
    /// The service over `forge`, resuming the builds the planner's ledger records.
    pub fn new(
        forge: Arc<dyn Forge>,
        planner: Planner,
        template: AssetTemplate,
        options: ServiceOptions,
    ) -> Result<Arc<Self>, crate::builds::ledger::LedgerError> {
        let ledger = planner.ledger().load()?;
        let (builds, pending) = resume(&ledger, options.deadline);
        let state = Arc::new(Self {
            forge,
            planner,
            template,
            options,
            listing: tokio::sync::Mutex::new(Listing {
                releases: Vec::new(),
                indexes: HashMap::new(),
                fetched: None,
            }),
            builds: tokio::sync::Mutex::new(builds),
            buckets: std::sync::Mutex::new(HashMap::new()),
            metrics: Metrics::default(),
            pending: std::sync::Mutex::new(pending),
        });
        Ok(state)
    }
}

/// Rebuilds the request map from the ledger, so ids survive a restart: every dispatch, and every
/// accepted request with no dispatch recorded. Those accepted within `deadline` are returned to be
/// planned again (the planner's checks keep that to one build); older ones answer failed, since
/// their nodes stopped waiting.
fn resume(
    ledger: &LedgerState,
    deadline: std::time::Duration,
) -> (Builds, Vec<(String, String, String)>) {
    let mut by_id = HashMap::new();
    let mut open = HashMap::new();
    for (key, entry) in &ledger.entries {
        by_id.insert(
            entry.request_id.clone(),
            Tracked {
                key: key.clone(),
                driver_version: entry.driver_version.clone().unwrap_or_default(),
                run_id: entry.run_id,
                run_url: entry.url.clone(),
                dispatched_at: entry.dispatched_at,
                status: None,
                settled: None,
            },
        );
        if entry.is_open() {
            open.insert(
                (
                    key.clone(),
                    entry.driver_version.clone().unwrap_or_default(),
                ),
                entry.request_id.clone(),
            );
        }
    }
    let mut pending = Vec::new();
    let now = chrono::Utc::now();
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
        if fresh {
            if joinable {
                open.insert((record.key.clone(), dv.clone()), record.request_id.clone());
            }
            pending.push((record.key.clone(), dv, record.request_id.clone()));
        }
    }
    ((by_id, open), pending)
}

/// The router: `POST /build`, `GET /status/{id}`, `GET /healthz`, `GET /metrics`. Called within a
/// tokio runtime, it also starts the dispatches a previous run accepted but never recorded.
pub fn router(state: Arc<ServiceState>) -> Router {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        let pending = std::mem::take(&mut *state.pending.lock().expect("pending lock"));
        for (key, dv, rid) in pending {
            let worker = state.clone();
            runtime.spawn(async move { worker.dispatch(key, dv, rid).await });
        }
    }
    Router::new()
        .route("/build", post(build))
        .route("/status/{id}", get(status))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

fn json_error(status: StatusCode, reason: impl Into<String>) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "status": "error", "reason": reason.into() })),
    )
        .into_response()
}

impl ServiceState {
    /// Checks the bearer token and the client's rate; the error is the response to send.
    fn admit(&self, headers: &HeaderMap) -> Result<(), Box<Response>> {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let known = self.options.client_tokens.iter().any(|t| {
            t.len() == presented.len()
                && t.bytes()
                    .zip(presented.bytes())
                    .fold(0u8, |a, (x, y)| a | (x ^ y))
                    == 0
        });
        if !known {
            self.metrics.count("unauthorized");
            let mut r = json_error(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return Err(Box::new(r));
        }
        let rate = self.options.rate_per_client;
        let mut buckets = self.buckets.lock().expect("rate lock");
        let now = Instant::now();
        let bucket = buckets.entry(presented.to_string()).or_insert(Bucket {
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
                "too many requests from this client",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return Err(Box::new(r));
        }
        bucket.tokens -= 1.0;
        Ok(())
    }

    /// The artifact of `key` in release `driver_version`, from the listing, refreshed
    /// (conditionally) when older than the TTL. Each release's assets are matched to identities
    /// once per refresh, so a request is a hash lookup. A failed refresh keeps the last listing.
    async fn lookup(
        &self,
        key: &str,
        driver_version: &str,
    ) -> Result<Option<MatchedAsset>, String> {
        let mut listing = self.listing.lock().await;
        let stale = listing
            .fetched
            .is_none_or(|at| at.elapsed() >= self.options.listing_ttl);
        if stale {
            match self.forge.list_releases().await {
                Ok(fresh) => {
                    listing.releases = fresh.releases;
                    listing.indexes.clear();
                    listing.fetched = Some(Instant::now());
                }
                Err(e) if listing.fetched.is_some() => {
                    eprintln!("warning: keeping the last release listing: {e}");
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        if !listing.indexes.contains_key(driver_version) {
            let index: HashMap<String, MatchedAsset> =
                match select_release(&listing.releases, Some(driver_version)) {
                    Ok(release) => index_assets(release, &self.template)
                        .matched
                        .into_iter()
                        .map(|a| (a.key.clone(), a))
                        .collect(),
                    Err(_) => HashMap::new(),
                };
            listing.indexes.insert(driver_version.to_string(), index);
        }
        Ok(listing
            .indexes
            .get(driver_version)
            .and_then(|index| index.get(key))
            .cloned())
    }

    async fn available(
        &self,
        id: &KernelIdentity,
        driver_version: &str,
    ) -> Result<Option<BuildStatus>, String> {
        let key = id.key();
        Ok(self
            .lookup(&key, driver_version)
            .await?
            .map(|a| BuildStatus {
                id: None,
                status: "available".into(),
                identity: Some(key),
                download_url: a.url,
                sha256: a
                    .digest
                    .map(|d| d.trim_start_matches("sha256:").to_string()),
                run_url: None,
                reason: None,
            }))
    }

    fn overdue(&self, t: &Tracked) -> bool {
        chrono::Utc::now()
            .signed_duration_since(t.dispatched_at)
            .to_std()
            .is_ok_and(|age| age > self.options.deadline)
    }
}

async fn build(
    State(state): State<Arc<ServiceState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = state.admit(&headers) {
        return *r;
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
    if !is_json {
        state.metrics.count("unsupported_media_type");
        return json_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the request as Content-Type: application/json",
        );
    }
    let request: BuildRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            state.metrics.count("bad_request");
            return json_error(StatusCode::BAD_REQUEST, format!("not a build request: {e}"));
        }
    };
    let id = match KernelIdentity::parse(
        &request.distribution,
        &request.distro_version,
        &request.architecture,
        &request.kernel_version,
    ) {
        Ok(id) => id,
        Err(Rejection::Invalid(reason) | Rejection::Unsupported(reason)) => {
            state.metrics.count("invalid");
            return json_error(StatusCode::BAD_REQUEST, reason);
        }
    };
    let dv = request.driver_version;
    if dv.is_empty()
        || !dv
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-'))
    {
        state.metrics.count("invalid");
        return json_error(
            StatusCode::BAD_REQUEST,
            "driver_version may only hold letters, digits and . _ + -",
        );
    }
    match state.available(&id, &dv).await {
        Ok(Some(found)) => {
            state.metrics.count("available");
            return (StatusCode::OK, axum::Json(found)).into_response();
        }
        Ok(None) => {}
        Err(e) => {
            state.metrics.count("forge_error");
            return json_error(
                StatusCode::BAD_GATEWAY,
                format!("cannot read the release listing: {e}"),
            );
        }
    }
    let key = id.key();
    // Single flight: one id per kernel and driver version, handed out at once; the (paced)
    // dispatch happens in the background and every later request joins it.
    let rid = {
        let mut builds = state.builds.lock().await;
        if let Some(existing) = builds.1.get(&(key.clone(), dv.clone())).cloned() {
            state.metrics.dedup_hits.fetch_add(1, Ordering::Relaxed);
            state.metrics.count("joined");
            return accepted(existing, key);
        }
        let rid = new_request_id();
        // On disk before the answer: a crash after it must not lose the id (see `resume`).
        let record = LedgerRecord {
            at: chrono::Utc::now(),
            event: LedgerEvent::Accepted,
            key: key.clone(),
            request_id: rid.clone(),
            run_id: None,
            conclusion: None,
            url: None,
            driver_version: Some(dv.clone()),
        };
        let ledger = state.planner.ledger().clone();
        let written = tokio::task::spawn_blocking(move || ledger.append(&record)).await;
        if let Err(e) = written
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
        {
            state.metrics.count("ledger_error");
            eprintln!("error: cannot record a build request: {e}");
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the build service cannot record requests right now; retry later",
            );
        }
        builds.0.insert(
            rid.clone(),
            Tracked {
                key: key.clone(),
                driver_version: dv.clone(),
                run_id: None,
                run_url: None,
                dispatched_at: chrono::Utc::now(),
                status: None,
                settled: None,
            },
        );
        builds.1.insert((key.clone(), dv.clone()), rid.clone());
        rid
    };
    state.metrics.count("accepted");
    let worker = state.clone();
    let (job_key, job_rid) = (key.clone(), rid.clone());
    tokio::spawn(async move { worker.dispatch(job_key, dv, job_rid).await });
    accepted(rid, key)
}

fn accepted(id: String, key: String) -> Response {
    (
        StatusCode::ACCEPTED,
        axum::Json(BuildStatus {
            id: Some(id),
            status: "queued".into(),
            identity: Some(key),
            ..BuildStatus::default()
        }),
    )
        .into_response()
}

impl ServiceState {
    /// Runs the planner for a build the service accepted and records what happened to it.
    async fn dispatch(&self, key: String, driver_version: String, rid: String) {
        let decision = self
            .planner
            .plan_with_request_id(&key, &driver_version, &rid)
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
                eprintln!("warning: dispatch for {key} failed: {e}");
                Some(Settled::Failed(format!("dispatch failed: {e}")))
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
}

async fn status(
    State(state): State<Arc<ServiceState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = state.admit(&headers) {
        return *r;
    }
    let tracked = state.builds.lock().await.0.get(&id).cloned();
    let Some(tracked) = tracked else {
        state.metrics.count("unknown_id");
        return json_error(StatusCode::NOT_FOUND, format!("no build with id {id}"));
    };
    let answer = |status: &str| BuildStatus {
        id: Some(id.clone()),
        status: status.to_string(),
        identity: Some(tracked.key.clone()),
        run_url: tracked.run_url.clone(),
        ..BuildStatus::default()
    };
    let identity = match KernelIdentity::from_key(&tracked.key) {
        Ok(i) => i,
        Err(e) => return json_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let run_status = match (&tracked.settled, &tracked.status) {
        (Some(Settled::Available), _) => "success".to_string(),
        (Some(Settled::TimedOut), _) => "timed_out".to_string(),
        (Some(Settled::Failed(reason)), _) => {
            let mut failed = answer("failed");
            failed.reason = Some(reason.clone());
            return (StatusCode::OK, axum::Json(failed)).into_response();
        }
        (None, Some((s, at))) if at.elapsed() < state.options.status_ttl => s.clone(),
        _ => match tracked.run_id {
            Some(run_id) => match state.forge.get_run(run_id).await {
                Ok(run) if run.is_finished() => match run.conclusion.as_deref() {
                    Some("success") => "success".to_string(),
                    _ => "failed".to_string(),
                },
                Ok(run) => run.status.unwrap_or_else(|| "queued".into()),
                Err(e) => return json_error(StatusCode::BAD_GATEWAY, e.to_string()),
            },
            None => "queued".to_string(),
        },
    };
    {
        let mut builds = state.builds.lock().await;
        if let Some(t) = builds.0.get_mut(&id) {
            t.status = Some((run_status.clone(), Instant::now()));
        }
        if run_status == "success" || run_status == "failed" {
            builds
                .1
                .remove(&(tracked.key.clone(), tracked.driver_version.clone()));
        }
    }
    state.metrics.count("status");
    let response = match run_status.as_str() {
        "success" => {
            let first_seen = tracked.status.as_ref().is_none_or(|(s, _)| s != "success");
            if first_seen {
                // The asset appears in the listing once the run uploads it: refresh once now.
                state.listing.lock().await.fetched = None;
                let took = chrono::Utc::now()
                    .signed_duration_since(tracked.dispatched_at)
                    .num_milliseconds()
                    .max(0) as f64
                    / 1000.0;
                *state
                    .metrics
                    .build_seconds_sum
                    .lock()
                    .expect("metrics lock") += took;
                state
                    .metrics
                    .build_seconds_count
                    .fetch_add(1, Ordering::Relaxed);
            }
            match state.available(&identity, &tracked.driver_version).await {
                Ok(Some(mut found)) => {
                    found.id = Some(id.clone());
                    found.run_url = tracked.run_url.clone();
                    found
                }
                _ => answer("in_progress"),
            }
        }
        "failed" => answer("failed"),
        "timed_out" => answer("timed_out"),
        _ if state.overdue(&tracked) => answer("timed_out"),
        "in_progress" => answer("in_progress"),
        _ => answer("queued"),
    };
    (StatusCode::OK, axum::Json(response)).into_response()
}

async fn metrics(State(state): State<Arc<ServiceState>>) -> Response {
    use std::fmt::Write as _;
    let m = &state.metrics;
    let stats = state.forge.stats();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP kfleet_requests_total Requests to the build service by outcome."
    );
    let _ = writeln!(out, "# TYPE kfleet_requests_total counter");
    for (outcome, n) in m.requests.lock().expect("metrics lock").iter() {
        let _ = writeln!(out, "kfleet_requests_total{{outcome=\"{outcome}\"}} {n}");
    }
    for (name, help, value) in [
        (
            "kfleet_dispatches_total",
            "Workflow dispatches made.",
            m.dispatches.load(Ordering::Relaxed),
        ),
        (
            "kfleet_dedup_hits_total",
            "Requests that joined a build already under way.",
            m.dedup_hits.load(Ordering::Relaxed),
        ),
        (
            "kfleet_github_requests_total",
            "Requests made to the forge API.",
            stats.requests.load(Ordering::Relaxed),
        ),
        (
            "kfleet_github_retries_total",
            "Forge requests retried after 5xx, timeouts or dropped connections.",
            stats.retries.load(Ordering::Relaxed),
        ),
        (
            "kfleet_github_rate_limit_waits_total",
            "Waits for a forge rate limit.",
            stats.rate_limit_waits.load(Ordering::Relaxed),
        ),
        (
            "kfleet_github_not_modified_total",
            "Conditional requests answered 304.",
            stats.not_modified.load(Ordering::Relaxed),
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP kfleet_build_duration_seconds Dispatch to available, for builds this service saw finish."
    );
    let _ = writeln!(out, "# TYPE kfleet_build_duration_seconds summary");
    let _ = writeln!(
        out,
        "kfleet_build_duration_seconds_sum {}",
        m.build_seconds_sum.lock().expect("metrics lock")
    );
    let _ = writeln!(
        out,
        "kfleet_build_duration_seconds_count {}",
        m.build_seconds_count.load(Ordering::Relaxed)
    );
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}
