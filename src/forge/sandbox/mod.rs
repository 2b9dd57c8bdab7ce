//! The sandbox forge: a GitHub-compatible HTTP server on loopback that serves release listings
//! (paginated with absolute `Link` URLs and ETags) and injects faults, so demos and tests
//! exercise the real GitHub client over real HTTP.

mod api;
mod assets;
mod jobs;
mod local;
mod shapes;

use super::runs::{Conclusion, RunStatus, WorkflowRun, run_title};
use crate::artifacts::{AssetTemplate, DEFAULT_ASSET_TEMPLATE};
use crate::artifacts::{Release, ReleaseAsset, parse_release_listing};
use crate::clock::SharedClock;
use crate::identity::KernelIdentity;
use crate::locks::Lock;
use crate::text::Cause;
use axum::Router;
use axum::extract::{Json, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
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
    /// The next N dispatches answer 429 with `retry-after` (`retry_after_secs`), starting nothing.
    pub dispatch_rate_limits: u32,
    /// The next N dispatches start their run, then answer only after `dispatch_stall` (a
    /// GitHub that stalls: the caller's send times out without knowing whether it started).
    pub dispatch_stalls: u32,
    pub dispatch_stall: Duration,
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
    /// Run dispatched jobs for real on this machine (the workflow's own steps) instead of
    /// simulating them.
    pub local: Option<crate::localrun::RunnerConfig>,
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
            local: None,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct SandboxOptions {
    /// Required bearer token; `None` accepts any request (`kfleet sandbox` always sets one).
    pub token: Option<String>,
    /// Repository served, `OWNER/NAME`; other repositories are 404.
    pub repo: String,
    pub faults: Faults,
    pub simulation: Simulation,
    /// The time runs progress by (tests move a manual clock instead of sleeping).
    pub clock: SharedClock,
    /// Real package bytes: an asset named NAME is served from `DIR/NAME` when that file exists,
    /// with its size and sha256 digest in the listing; otherwise its bytes are its name.
    pub assets_dir: Option<std::path::PathBuf>,
}

/// A simulated run: its public face plus what decides how it ends.
struct SimRun {
    run: WorkflowRun,
    workflow: String,
    /// The ref it was dispatched on (its `head_branch`).
    git_ref: String,
    /// What a successful run uploads: one identity, or a batch's.
    identities: Vec<KernelIdentity>,
    driver_version: String,
    started: Instant,
    fails: Option<String>,
    cancelled: bool,
    finished: bool,
    /// A job the local runner runs: its outcome once it ends, and the task to stop on cancel.
    local: Option<LocalJob>,
}

struct LocalJob {
    outcome: Arc<Mutex<Option<bool>>>,
    task: tokio::task::AbortHandle,
    /// The runner's log of the run's (first) job.
    log: std::path::PathBuf,
}

struct SandboxState {
    repo: String,
    token: Option<String>,
    base_url: String,
    releases: Mutex<Vec<Release>>,
    faults: Mutex<Faults>,
    requests: AtomicU64,
    /// Requests GitHub would charge (everything but 304s) in the current hour, for the
    /// `x-ratelimit-*` headers, and when that hour started (seconds since the epoch; 0 before
    /// the first request).
    charged: AtomicU64,
    window_start: AtomicU64,
    /// Every charged request since the sandbox started, across hours.
    charged_total: AtomicU64,
    rng: Mutex<fastrand::Rng>,
    simulation: Simulation,
    runs: Mutex<BTreeMap<u64, SimRun>>,
    dispatches: AtomicU64,
    /// Run ids start at a random base, so a restarted sandbox never reuses an id it gave out.
    run_id_base: u64,
    clock: SharedClock,
    assets_dir: Option<std::path::PathBuf>,
    /// Bytes of uploaded assets by name (within [`assets::MAX_UPLOADED`]).
    uploads: Mutex<HashMap<String, Vec<u8>>>,
    next_asset_id: AtomicU64,
    /// When the sandbox started: the date of what a listing file leaves undated.
    started_at: chrono::DateTime<chrono::Utc>,
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
    Data(#[source] Cause),
    #[error("cannot make the sandbox's token: {0}")]
    Random(#[from] std::io::Error),
}

/// Loads `DIR/releases.json` (a release listing) for the sandbox.
/// The file for asset `name` in `dir`, if there is one; a name that is not a plain file name
/// (a path, `..`) never reaches the file system.
fn asset_file(dir: Option<&std::path::Path>, name: &str) -> Option<Vec<u8>> {
    if !plain_name(name) {
        return None;
    }
    std::fs::read(dir?.join(name)).ok()
}

/// A name that is one file name: no path, not `.` or `..`.
fn plain_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(['/', '\\']) && name != "." && name != ".."
}

pub fn load_releases(dir: &std::path::Path) -> Result<Vec<Release>, SandboxError> {
    let path = dir.join("releases.json");
    let bytes = std::fs::read(&path)
        .map_err(|e| SandboxError::Data(format!("{}: {e}", path.display()).into()))?;
    parse_release_listing(&path.display().to_string(), &bytes)
        .map_err(|e| SandboxError::Data(Cause::of(e)))
}

/// Gives releases without an id one (the asset API addresses releases by id) and sorts them
/// newest first, as GitHub lists them.
fn number_releases(releases: &mut [Release]) {
    let first = releases.iter().filter_map(|r| r.id).max().unwrap_or(0) + 1;
    let unnumbered = releases.iter_mut().filter(|r| r.id.is_none());
    for (id, release) in (first..).zip(unnumbered) {
        release.id = Some(id);
    }
    releases.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
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
        number_releases(&mut releases);
        // Downloads come from the sandbox itself, so a demo works without the internet.
        for release in &mut releases {
            for asset in &mut release.assets {
                asset.browser_download_url = Some(format!(
                    "http://{addr}/{}/releases/download/{}/{}",
                    options.repo, release.tag_name, asset.name
                ));
                if let Some(bytes) = asset_file(options.assets_dir.as_deref(), &asset.name) {
                    asset.size = Some(bytes.len() as u64);
                    asset.digest = Some(format!("sha256:{}", api::hex_sha256(&bytes)));
                }
            }
        }
        let state = Arc::new(SandboxState {
            repo: options.repo,
            token: options.token,
            base_url: format!("http://{addr}"),
            releases: Mutex::new(releases),
            faults: Mutex::new(options.faults),
            requests: AtomicU64::new(0),
            charged: AtomicU64::new(0),
            window_start: AtomicU64::new(0),
            charged_total: AtomicU64::new(0),
            rng: Mutex::new(fastrand::Rng::with_seed(addr.port() as u64)),
            simulation: options.simulation,
            runs: Mutex::new(BTreeMap::new()),
            dispatches: AtomicU64::new(0),
            run_id_base: 7_000_000_000 + fastrand::u64(..1_000_000) * 1000,
            clock: options.clock,
            assets_dir: options.assets_dir,
            uploads: Mutex::new(HashMap::new()),
            next_asset_id: AtomicU64::new(900_000),
            started_at: chrono::Utc::now(),
        });
        let app = Router::new()
            .merge(api::routes())
            .merge(assets::routes())
            .merge(jobs::routes())
            .fallback(api::not_found)
            .layer(middleware::from_fn_with_state(
                state.clone(),
                api::gatekeeper,
            ))
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

    /// Requests GitHub would have charged so far (all but `304 Not Modified`), across hours.
    pub fn charged(&self) -> u64 {
        self.state.charged_total.load(Ordering::SeqCst)
    }

    /// Counts `n` more charged requests against the token's hourly budget (as other clients of
    /// the same token would), so `x-ratelimit-remaining` drops.
    pub fn spend(&self, n: u64) {
        self.state.charged.fetch_add(n, Ordering::SeqCst);
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
        number_releases(&mut releases);
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

/// Workflow ids: the n-th workflow file of the simulation is `WORKFLOW_ID_BASE + n`.
const WORKFLOW_ID_BASE: u64 = 161_335;

impl SandboxState {
    /// The workflow a path names, by file name or by id, as GitHub accepts both.
    fn workflow(&self, given: &str) -> Option<(u64, &str)> {
        self.simulation
            .workflows
            .iter()
            .enumerate()
            .map(|(n, file)| (WORKFLOW_ID_BASE + n as u64, file.as_str()))
            .find(|(id, file)| *file == given || id.to_string() == given)
    }

    /// A run's number within the repository (GitHub counts per workflow; one count is enough
    /// for the sandbox's few workflows).
    fn run_number(&self, id: u64) -> u64 {
        id.saturating_sub(self.run_id_base)
    }

    /// A run in GitHub's shape.
    fn run_json(&self, repo: &shapes::Repo<'_>, sim: &SimRun) -> serde_json::Value {
        let workflow_id = self.workflow(&sim.workflow).map_or(0, |(id, _)| id);
        repo.run(sim, self.run_number(sim.run.id), workflow_id)
    }

    /// Moves simulated runs along the clock; a successful build attaches its asset.
    fn advance(&self) {
        let now = self.clock.instant();
        let mut runs = self.runs.locked();
        for sim in runs.values_mut().filter(|r| !r.finished) {
            if let Some(job) = &sim.local {
                let (status, conclusion) = if sim.cancelled {
                    job.task.abort();
                    ("completed", Some("cancelled"))
                } else {
                    match *job.outcome.locked() {
                        None => ("in_progress", None),
                        Some(true) => ("completed", Some("success")),
                        Some(false) => ("completed", Some("failure")),
                    }
                };
                if sim.run.status != Some(status.into()) {
                    sim.run.updated_at = Some(self.clock.now());
                }
                sim.run.status = Some(status.into());
                sim.run.conclusion = conclusion.map(Into::into);
                sim.finished = status == "completed";
                continue;
            }
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

    /// What the asset `name` downloads as: its uploaded bytes, the file of that name in the assets
    /// directory, or the name itself.
    fn asset_bytes(&self, name: &str) -> Vec<u8> {
        if let Some(bytes) = self.uploads.locked().get(name) {
            return bytes.clone();
        }
        asset_file(self.assets_dir.as_deref(), name).unwrap_or_else(|| name.as_bytes().to_vec())
    }

    /// Uploads the built artifact to the release of `driver_version`; false when there is none.
    fn attach(&self, identity: &KernelIdentity, driver_version: &str) -> bool {
        let name = self.simulation.template.render(identity, driver_version);
        let mut releases = self.releases.locked();
        let Some(release) = releases.iter_mut().find(|r| r.tag_name == driver_version) else {
            return false;
        };
        if !release.assets.iter().any(|a| a.name == name) {
            let id = self.next_asset_id.fetch_add(1, Ordering::SeqCst);
            let bytes = self.asset_bytes(&name);
            release.assets.push(ReleaseAsset {
                id: Some(id),
                size: Some(bytes.len() as u64),
                browser_download_url: Some(format!(
                    "{}/{}/releases/download/{driver_version}/{name}",
                    self.base_url, self.repo
                )),
                digest: Some(format!("sha256:{}", api::hex_sha256(&bytes))),
                updated_at: Some(self.clock.now()),
                name,
            });
        }
        true
    }
}
