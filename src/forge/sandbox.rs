//! The sandbox forge: a GitHub-compatible HTTP server on loopback that serves release listings
//! (paginated with absolute `Link` URLs and ETags) and injects faults, so demos and tests
//! exercise the real GitHub client over real HTTP.

use super::runs::{RunList, WorkflowRun, run_title};
use crate::artifacts::{AssetTemplate, DEFAULT_ASSET_TEMPLATE};
use crate::artifacts::{Release, ReleaseAsset, parse_release_listing};
use crate::clock::SharedClock;
use crate::identity::KernelIdentity;
use crate::locks::Lock;
use axum::Router;
use axum::extract::{Json, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Faults the sandbox injects, for tests and demos of the client's resilience.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// The next N requests answer 502.
    pub server_errors: u32,
    /// Share of requests (0..1) that answer 503 at random.
    pub error_rate: f64,
    /// After this many requests, answer one 429 with `retry-after`.
    pub rate_limit_after: Option<u64>,
    pub retry_after_secs: u64,
    /// Added to every response.
    pub latency: Duration,
    /// The next N successful responses carry a truncated JSON body.
    pub malformed: u32,
    /// The next N dispatches answer 502 without starting a run.
    pub dispatch_errors: u32,
    /// The next N dispatches start their run, then answer 502 (the ambiguous failure).
    pub dispatch_errors_after_start: u32,
    /// The next N successful responses drop the connection halfway through the body.
    pub drop_connections: u32,
}

/// How simulated workflow runs behave.
#[derive(Clone, Debug)]
pub struct Simulation {
    /// Time a run stays `queued`.
    pub queue_time: Duration,
    /// Time a run stays `in_progress` before it completes.
    pub run_time: Duration,
    /// Share of runs (0..1) that fail at random.
    pub fail_rate: f64,
    /// Identity keys whose header chain cannot resolve: their runs always fail.
    pub unresolvable: HashSet<String>,
    /// Answer 422 to dispatches carrying `return_run_details`, as servers without it do.
    pub reject_run_details: bool,
    /// How long a new run stays out of run listings (GitHub's listing lags a dispatch).
    pub listing_delay: Duration,
    /// Workflow files that exist.
    pub workflows: Vec<String>,
    /// Refs that exist.
    pub refs: Vec<String>,
    /// How a successful run names the asset it uploads.
    pub template: AssetTemplate,
}

impl Default for Simulation {
    #[expect(
        clippy::expect_used,
        reason = "the default template is a constant, compiled by the tests"
    )]
    fn default() -> Self {
        Self {
            queue_time: Duration::from_secs(2),
            run_time: Duration::from_secs(8),
            fail_rate: 0.0,
            unresolvable: HashSet::new(),
            reject_run_details: false,
            listing_delay: Duration::ZERO,
            workflows: vec!["build-driver.yml".into(), "build-batch.yml".into()],
            refs: vec!["main".into()],
            template: AssetTemplate::compile(DEFAULT_ASSET_TEMPLATE, "kdriver")
                .expect("the default template compiles"),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct SandboxOptions {
    /// Required bearer token; `None` accepts any request.
    pub token: Option<String>,
    /// Repository served, `OWNER/NAME`; other repositories are 404.
    pub repo: String,
    pub faults: Faults,
    pub simulation: Simulation,
    /// The time runs progress by (tests move a manual clock instead of sleeping).
    pub clock: SharedClock,
}

/// A simulated run: its public face plus what decides how it ends.
struct SimRun {
    run: WorkflowRun,
    workflow: String,
    /// What a successful run uploads: one identity, or a batch's.
    identities: Vec<KernelIdentity>,
    driver_version: String,
    started: Instant,
    fails: Option<String>,
    cancelled: bool,
    finished: bool,
}

struct SandboxState {
    repo: String,
    token: Option<String>,
    base_url: String,
    releases: Mutex<Vec<Release>>,
    faults: Mutex<Faults>,
    requests: AtomicU64,
    rng: Mutex<fastrand::Rng>,
    simulation: Simulation,
    runs: Mutex<BTreeMap<u64, SimRun>>,
    dispatches: AtomicU64,
    /// Run ids start at a random base, so a restarted sandbox never reuses an id it gave out.
    run_id_base: u64,
    clock: SharedClock,
}

/// A running sandbox; dropping it stops the server.
pub struct Sandbox {
    state: Arc<SandboxState>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "refusing to listen on {0}: the sandbox binds loopback addresses only (127.0.0.1 or ::1)"
    )]
    NotLoopback(SocketAddr),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot load sandbox data: {0}")]
    Data(String),
}

/// Loads `DIR/releases.json` (a release listing) for the sandbox.
pub fn load_releases(dir: &std::path::Path) -> Result<Vec<Release>, SandboxError> {
    let path = dir.join("releases.json");
    let bytes =
        std::fs::read(&path).map_err(|e| SandboxError::Data(format!("{}: {e}", path.display())))?;
    parse_release_listing(&path.display().to_string(), &bytes)
        .map_err(|e| SandboxError::Data(e.to_string()))
}

impl Sandbox {
    /// Starts serving `releases` on `listen` (port 0 picks a free port).
    pub async fn start(
        listen: SocketAddr,
        mut releases: Vec<Release>,
        options: SandboxOptions,
    ) -> Result<Self, SandboxError> {
        if !listen.ip().is_loopback() {
            return Err(SandboxError::NotLoopback(listen));
        }
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| SandboxError::Bind {
                addr: listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| SandboxError::Bind {
            addr: listen,
            source,
        })?;
        // GitHub lists the newest release first.
        releases.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        // Downloads come from the sandbox itself, so a demo works without the internet.
        for release in &mut releases {
            for asset in &mut release.assets {
                asset.browser_download_url = Some(format!(
                    "http://{addr}/{}/releases/download/{}/{}",
                    options.repo, release.tag_name, asset.name
                ));
            }
        }
        let state = Arc::new(SandboxState {
            repo: options.repo,
            token: options.token,
            base_url: format!("http://{addr}"),
            releases: Mutex::new(releases),
            faults: Mutex::new(options.faults),
            requests: AtomicU64::new(0),
            rng: Mutex::new(fastrand::Rng::with_seed(addr.port() as u64)),
            simulation: options.simulation,
            runs: Mutex::new(BTreeMap::new()),
            dispatches: AtomicU64::new(0),
            run_id_base: 7_000_000_000 + fastrand::u64(..1_000_000) * 1000,
            clock: options.clock,
        });
        let app = Router::new()
            .route("/repos/{owner}/{repo}/releases", get(list_releases))
            .route(
                "/repos/{owner}/{repo}/actions/workflows/{workflow}/dispatches",
                post(dispatch),
            )
            .route(
                "/repos/{owner}/{repo}/actions/workflows/{workflow}/runs",
                get(list_runs),
            )
            .route("/repos/{owner}/{repo}/actions/runs/{id}", get(get_run))
            .route(
                "/repos/{owner}/{repo}/actions/runs/{id}/cancel",
                post(cancel_run),
            )
            .route(
                "/{owner}/{repo}/releases/download/{tag}/{name}",
                get(download),
            )
            .fallback(not_found)
            .layer(middleware::from_fn_with_state(state.clone(), gatekeeper))
            .with_state(state.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(Self {
            state,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// `http://127.0.0.1:PORT`: pass it as `--api-url`.
    pub fn base_url(&self) -> String {
        self.state.base_url.clone()
    }

    /// The clock its runs progress by.
    pub fn clock(&self) -> SharedClock {
        self.state.clock.clone()
    }

    /// Requests received so far, faults included.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Dispatches accepted so far.
    pub fn dispatches(&self) -> u64 {
        self.state.dispatches.load(Ordering::SeqCst)
    }

    pub fn set_faults(&self, faults: Faults) {
        *self.state.faults.locked() = faults;
    }

    /// Replaces the served releases (as a publish would).
    pub fn set_releases(&self, mut releases: Vec<Release>) {
        releases.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        *self.state.releases.locked() = releases;
    }

    /// Stops accepting requests and waits for the server task.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

fn github_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        serde_json::json!({
            "message": message,
            "documentation_url": "https://docs.github.com/rest",
            "status": status.as_u16().to_string(),
        })
        .to_string(),
    )
        .into_response()
}

fn authorised(state: &SandboxState, headers: &HeaderMap) -> bool {
    let Some(token) = &state.token else {
        return true;
    };
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let presented = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("token "))
        .unwrap_or("");
    // Constant-time comparison: the sandbox stands in for a server that must not leak tokens.
    presented.len() == token.len()
        && presented
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Counts, authenticates and applies faults before any handler runs.
async fn gatekeeper(
    State(state): State<Arc<SandboxState>>,
    request: Request,
    next: Next,
) -> Response {
    let n = state.requests.fetch_add(1, Ordering::SeqCst) + 1;
    let (latency, fault) = {
        let mut faults = state.faults.locked();
        let latency = faults.latency;
        let fault = if faults.server_errors > 0 {
            faults.server_errors -= 1;
            Some(github_error(StatusCode::BAD_GATEWAY, "Server Error"))
        } else if faults.rate_limit_after.is_some_and(|after| n > after) {
            faults.rate_limit_after = None;
            let mut r = github_error(
                StatusCode::TOO_MANY_REQUESTS,
                "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
            );
            let headers = r.headers_mut();
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(faults.retry_after_secs),
            );
            headers.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
            Some(r)
        } else if faults.error_rate > 0.0 && state.rng.locked().f64() < faults.error_rate {
            Some(github_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Service Unavailable",
            ))
        } else {
            None
        };
        (latency, fault)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(response) = fault {
        return response;
    }
    // Release downloads are public on GitHub; everything else needs the token.
    let public = request.uri().path().contains("/releases/download/");
    if !public && !authorised(&state, request.headers()) {
        return github_error(StatusCode::UNAUTHORIZED, "Bad credentials");
    }
    let response = next.run(request).await;
    let (malformed, dropped) = {
        let mut faults = state.faults.locked();
        let ok = response.status().is_success();
        let malformed = ok && faults.malformed > 0;
        if malformed {
            faults.malformed -= 1;
        }
        let dropped = ok && !malformed && faults.drop_connections > 0;
        if dropped {
            faults.drop_connections -= 1;
        }
        (malformed, dropped)
    };
    if dropped {
        // Headers and half a body, then the stream fails: hyper aborts the connection.
        let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = vec![
            Ok(bytes::Bytes::from_static(b"[{\"tag_name\": ")),
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "sandbox drops the connection",
            )),
        ];
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            axum::body::Body::from_stream(futures_util::stream::iter(chunks)),
        )
            .into_response();
    }
    if malformed {
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            "[{\"tag_name\": \"v1\", \"assets\": [",
        )
            .into_response();
    }
    response
}

async fn not_found() -> Response {
    github_error(StatusCode::NOT_FOUND, "Not Found")
}

#[derive(Deserialize)]
struct PageQuery {
    per_page: Option<usize>,
    page: Option<usize>,
}

fn same_repo(state: &SandboxState, owner: &str, repo: &str) -> bool {
    state.repo.is_empty() || state.repo == format!("{owner}/{repo}")
}

fn etag_of(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    format!("\"{}\"", crate::fsio::hex(&digest[..16]))
}

/// A JSON body with an ETag, or 304 when the client already holds it; 500 when the body could
/// not be encoded.
fn conditional_json(
    request_headers: &HeaderMap,
    body: serde_json::Result<String>,
    link: Option<String>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot encode: {e}"),
            )
                .into_response();
        }
    };
    let etag = etag_of(body.as_bytes());
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    if let Some(link) = link
        && let Ok(value) = HeaderValue::from_str(&link)
    {
        headers.insert(header::LINK, value);
    }
    let matches = request_headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().trim_start_matches("W/") == etag)
        });
    if matches {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    (StatusCode::OK, headers, body).into_response()
}

async fn list_releases(
    State(state): State<Arc<SandboxState>>,
    Path((owner, repo)): Path<(String, String)>,
    Query(q): Query<PageQuery>,
    headers: HeaderMap,
) -> Response {
    if !same_repo(&state, &owner, &repo) {
        return not_found().await;
    }
    let per_page = q.per_page.unwrap_or(30).clamp(1, 100);
    let page = q.page.unwrap_or(1).max(1);
    state.advance();
    let (body, total) = {
        let releases = state.releases.locked();
        let slice: Vec<&Release> = releases
            .iter()
            .skip((page - 1) * per_page)
            .take(per_page)
            .collect();
        (serde_json::to_string(&slice), releases.len())
    };
    let last = total.div_ceil(per_page).max(1);
    let url = |p: usize| {
        format!(
            "<{}/repos/{owner}/{repo}/releases?per_page={per_page}&page={p}>",
            state.base_url
        )
    };
    let mut links = Vec::new();
    if page < last {
        links.push(format!("{}; rel=\"next\"", url(page + 1)));
        links.push(format!("{}; rel=\"last\"", url(last)));
    }
    if page > 1 {
        links.push(format!("{}; rel=\"first\"", url(1)));
        links.push(format!("{}; rel=\"prev\"", url(page - 1)));
    }
    conditional_json(
        &headers,
        body,
        (!links.is_empty()).then(|| links.join(", ")),
    )
}

/// Inputs of the shipped workflows, as their `on.workflow_dispatch.inputs` declare them.
fn workflow_inputs(workflow: &str) -> &'static [&'static str] {
    match workflow {
        "build-batch.yml" => &["identities", "driver_version", "request_id"],
        _ => &[
            "kernel_version",
            "architecture",
            "distribution",
            "distro_version",
            "driver_version",
            "request_id",
        ],
    }
}

impl SandboxState {
    /// Moves simulated runs along the clock; a successful build attaches its asset.
    fn advance(&self) {
        let now = self.clock.instant();
        let mut runs = self.runs.locked();
        for sim in runs.values_mut().filter(|r| !r.finished) {
            let elapsed = now.duration_since(sim.started);
            let (status, conclusion) = if sim.cancelled {
                ("completed", Some("cancelled"))
            } else if elapsed < self.simulation.queue_time {
                ("queued", None)
            } else if elapsed < self.simulation.queue_time + self.simulation.run_time {
                ("in_progress", None)
            } else if sim.fails.is_some() {
                ("completed", Some("failure"))
            } else {
                ("completed", Some("success"))
            };
            if sim.run.status != Some(status.into()) {
                sim.run.updated_at = Some(self.clock.now());
            }
            sim.run.status = Some(status.into());
            sim.run.conclusion = conclusion.map(Into::into);
            if status != "completed" {
                continue;
            }
            sim.finished = true;
            if conclusion == Some("success")
                && !sim
                    .identities
                    .iter()
                    .all(|identity| self.attach(identity, &sim.driver_version))
            {
                sim.run.conclusion = Some("failure".into());
            }
        }
    }

    /// Uploads the built artifact to the release of `driver_version`; false when there is none.
    fn attach(&self, identity: &KernelIdentity, driver_version: &str) -> bool {
        let name = self.simulation.template.render(identity, driver_version);
        let mut releases = self.releases.locked();
        let Some(release) = releases.iter_mut().find(|r| r.tag_name == driver_version) else {
            return false;
        };
        if !release.assets.iter().any(|a| a.name == name) {
            let id = 900_000 + release.assets.len() as u64;
            release.assets.push(ReleaseAsset {
                id: Some(id),
                size: Some(48_000),
                browser_download_url: Some(format!(
                    "{}/{}/releases/download/{driver_version}/{name}",
                    self.base_url, self.repo
                )),
                digest: Some(format!("sha256:{}", hex_sha256(name.as_bytes()))),
                updated_at: Some(self.clock.now()),
                name,
            });
        }
        true
    }
}

fn hex_sha256(bytes: &[u8]) -> String {
    crate::fsio::hex(&Sha256::digest(bytes))
}

fn unprocessable(message: &str) -> Response {
    github_error(StatusCode::UNPROCESSABLE_ENTITY, message)
}

#[derive(Deserialize)]
struct DispatchBody {
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    #[serde(default)]
    inputs: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    return_run_details: Option<bool>,
}

async fn dispatch(
    State(state): State<Arc<SandboxState>>,
    Path((owner, repo, workflow)): Path<(String, String, String)>,
    body: Result<Json<DispatchBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if !same_repo(&state, &owner, &repo) || !state.simulation.workflows.contains(&workflow) {
        return not_found().await;
    }
    let (fail_before, fail_after) = {
        let mut faults = state.faults.locked();
        let before = faults.dispatch_errors > 0;
        if before {
            faults.dispatch_errors -= 1;
        }
        let after = !before && faults.dispatch_errors_after_start > 0;
        if after {
            faults.dispatch_errors_after_start -= 1;
        }
        (before, after)
    };
    if fail_before {
        return github_error(StatusCode::BAD_GATEWAY, "Server Error");
    }
    let Ok(Json(body)) = body else {
        return github_error(StatusCode::BAD_REQUEST, "Problems parsing JSON");
    };
    if body.return_run_details.is_some() && state.simulation.reject_run_details {
        return unprocessable("Invalid request.\n\n\"return_run_details\" is not a permitted key.");
    }
    let Some(git_ref) = body.git_ref else {
        return unprocessable("Invalid request.\n\n\"ref\" wasn't supplied.");
    };
    if !state.simulation.refs.contains(&git_ref) {
        return unprocessable(&format!("No ref found for: {git_ref}"));
    }
    if body.inputs.len() > 25 {
        return unprocessable(
            "you may only define up to 25 `inputs` for a `workflow_dispatch` event",
        );
    }
    let declared = workflow_inputs(&workflow);
    let unexpected: Vec<&String> = body
        .inputs
        .keys()
        .filter(|k| !declared.contains(&k.as_str()))
        .collect();
    if !unexpected.is_empty() {
        return unprocessable(&format!("Unexpected inputs provided: {unexpected:?}"));
    }
    let input = |k: &str| body.inputs.get(k).and_then(|v| v.as_str()).unwrap_or("");
    if let Some(missing) = declared.iter().find(|k| input(k).is_empty()) {
        return unprocessable(&format!("Required input '{missing}' not provided"));
    }
    let parse = |d: &str, v: &str, a: &str, k: &str| KernelIdentity::parse(d, v, a, k).ok();
    let (title, identities, all_valid) = if workflow == "build-batch.yml" {
        let listed: Vec<serde_json::Value> =
            serde_json::from_str(input("identities")).unwrap_or_default();
        if listed.is_empty() || listed.len() > 256 {
            return unprocessable("identities must be a JSON list of 1 to 256 identities");
        }
        let field = |v: &serde_json::Value, k: &str| {
            v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string()
        };
        let identities: Vec<KernelIdentity> = listed
            .iter()
            .filter_map(|v| {
                parse(
                    &field(v, "distribution"),
                    &field(v, "distro_version"),
                    &field(v, "architecture"),
                    &field(v, "kernel_version"),
                )
            })
            .collect();
        let all_valid = identities.len() == listed.len();
        (
            run_title("batch", input("driver_version"), input("request_id")),
            identities,
            all_valid,
        )
    } else {
        let key = format!(
            "{}/{}/{}/{}",
            input("distribution"),
            input("distro_version"),
            input("architecture"),
            input("kernel_version")
        );
        let identity = parse(
            input("distribution"),
            input("distro_version"),
            input("architecture"),
            input("kernel_version"),
        );
        let valid = identity.is_some();
        (
            run_title(&key, input("driver_version"), input("request_id")),
            identity.into_iter().collect(),
            valid,
        )
    };
    let fails = if !all_valid {
        Some("an identity does not validate".to_string())
    } else if identities
        .iter()
        .any(|id| state.simulation.unresolvable.contains(&id.key()))
    {
        Some("kernel headers unresolvable".to_string())
    } else if state.rng.locked().f64() < state.simulation.fail_rate {
        Some("build failed".to_string())
    } else {
        None
    };
    let id = {
        let mut runs = state.runs.locked();
        let id = state.run_id_base + runs.len() as u64 + 1;
        let now = state.clock.now();
        runs.insert(
            id,
            SimRun {
                run: WorkflowRun {
                    id,
                    display_title: title,
                    status: Some("queued".into()),
                    conclusion: None,
                    event: Some("workflow_dispatch".into()),
                    html_url: Some(format!(
                        "{}/{}/actions/runs/{id}",
                        state.base_url, state.repo
                    )),
                    created_at: Some(now),
                    updated_at: Some(now),
                },
                workflow,
                identities,
                driver_version: input("driver_version").to_string(),
                started: state.clock.instant(),
                fails,
                cancelled: false,
                finished: false,
            },
        );
        id
    };
    state.dispatches.fetch_add(1, Ordering::SeqCst);
    if fail_after {
        return github_error(StatusCode::BAD_GATEWAY, "Server Error");
    }
    if body.return_run_details == Some(true) {
        let api = format!("{}/repos/{}/actions/runs/{id}", state.base_url, state.repo);
        let html = format!("{}/{}/actions/runs/{id}", state.base_url, state.repo);
        return (
            StatusCode::OK,
            Json(serde_json::json!({"workflow_run_id": id, "run_url": api, "html_url": html})),
        )
            .into_response();
    }
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
struct RunQuery {
    status: Option<String>,
    event: Option<String>,
    per_page: Option<usize>,
    page: Option<usize>,
    /// GitHub's date filter; the sandbox knows the `>=TIME` form kfleet sends.
    created: Option<String>,
}

async fn list_runs(
    State(state): State<Arc<SandboxState>>,
    Path((owner, repo, workflow)): Path<(String, String, String)>,
    Query(q): Query<RunQuery>,
    headers: HeaderMap,
) -> Response {
    if !same_repo(&state, &owner, &repo) || !state.simulation.workflows.contains(&workflow) {
        return not_found().await;
    }
    let created_since = match q.created.as_deref() {
        None => None,
        Some(c) => match c
            .strip_prefix(">=")
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        {
            Some(t) => Some(t.with_timezone(&chrono::Utc)),
            None => return unprocessable(&format!("created={c}: the sandbox knows >=TIME only")),
        },
    };
    state.advance();
    let runs = state.runs.locked();
    let matching: Vec<WorkflowRun> = runs
        .values()
        .rev()
        .filter(|r| r.workflow == workflow)
        .filter(|r| {
            state.clock.instant().saturating_duration_since(r.started)
                >= state.simulation.listing_delay
        })
        .filter(|r| {
            q.status
                .as_deref()
                .is_none_or(|s| r.run.status == Some(s.into()))
        })
        .filter(|r| {
            q.event
                .as_deref()
                .is_none_or(|e| r.run.event.as_deref() == Some(e))
        })
        .filter(|r| created_since.is_none_or(|since| r.run.created_at >= Some(since)))
        .map(|r| r.run.clone())
        .collect();
    let total = matching.len();
    let per_page = q.per_page.unwrap_or(30).clamp(1, 100);
    let page = q.page.unwrap_or(1).max(1);
    let workflow_runs = matching
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    let body = serde_json::to_string(&RunList {
        total_count: total as u64,
        workflow_runs,
    });
    let last = total.div_ceil(per_page).max(1);
    let link = (page < last).then(|| {
        let mut next = format!(
            "{}/repos/{owner}/{repo}/actions/workflows/{workflow}/runs?per_page={per_page}&page={}",
            state.base_url,
            page + 1
        );
        for (name, value) in [
            ("status", &q.status),
            ("event", &q.event),
            ("created", &q.created),
        ] {
            if let Some(v) = value {
                next.push_str(&format!(
                    "&{name}={}",
                    v.replace('>', "%3E").replace('=', "%3D")
                ));
            }
        }
        format!("<{next}>; rel=\"next\"")
    });
    conditional_json(&headers, body, link)
}

async fn get_run(
    State(state): State<Arc<SandboxState>>,
    Path((owner, repo, id)): Path<(String, String, u64)>,
) -> Response {
    if !same_repo(&state, &owner, &repo) {
        return not_found().await;
    }
    state.advance();
    let run = state.runs.locked().get(&id).map(|r| r.run.clone());
    match run {
        Some(run) => Json(run).into_response(),
        None => not_found().await,
    }
}

async fn cancel_run(
    State(state): State<Arc<SandboxState>>,
    Path((owner, repo, id)): Path<(String, String, u64)>,
) -> Response {
    if !same_repo(&state, &owner, &repo) {
        return not_found().await;
    }
    state.advance();
    let outcome = {
        let mut runs = state.runs.locked();
        match runs.get_mut(&id) {
            None => None,
            Some(sim) if sim.finished => Some(false),
            Some(sim) => {
                sim.cancelled = true;
                Some(true)
            }
        }
    };
    state.advance();
    match outcome {
        None => not_found().await,
        Some(false) => github_error(
            StatusCode::CONFLICT,
            "Cannot cancel a workflow run that is completed.",
        ),
        Some(true) => (StatusCode::ACCEPTED, Json(serde_json::json!({}))).into_response(),
    }
}

/// A release asset's bytes. The sandbox's artifacts are their own names, which is what their
/// `sha256:` digests were computed from.
async fn download(
    State(state): State<Arc<SandboxState>>,
    Path((owner, repo, tag, name)): Path<(String, String, String, String)>,
) -> Response {
    if !same_repo(&state, &owner, &repo) {
        return not_found().await;
    }
    state.advance();
    let exists = state
        .releases
        .locked()
        .iter()
        .any(|r| r.tag_name == tag && r.assets.iter().any(|a| a.name == name));
    if !exists {
        return not_found().await;
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/octet-stream")],
        name.into_bytes(),
    )
        .into_response()
}
