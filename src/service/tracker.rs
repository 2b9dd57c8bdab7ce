//! The builds this service follows: each open build's record and run state, the build a new
//! request joins, recent failures answered without the store, the run poll (one conditional
//! listing per interval, single flight) and the sweep that settles what nobody else will.

use super::{ServiceState, webhooks};
use crate::builds::Decision;
use crate::identity::KernelIdentity;
use crate::locks::Lock;
use crate::state::{BuildId, BuildRecord, Ending, Phase};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// A build the service knows of: its record in the state store, and the status of its run as
/// last fetched (trusted for the status TTL).
#[derive(Clone, Debug)]
pub(super) struct Tracked {
    pub(super) record: BuildRecord,
    pub(super) status: Option<(RunState, Instant)>,
}

impl Tracked {
    /// How the build ended without a run to follow, by its record.
    pub(super) fn settled(&self) -> Option<Settled> {
        let r = &self.record;
        let reason = || {
            r.conclusion
                .clone()
                .unwrap_or_else(|| "the build failed".into())
        };
        match r.phase {
            Phase::Claimed | Phase::Dispatched => None,
            Phase::Finished => match r.conclusion.as_deref().map(Ending::of) {
                Some(ending) if ending.is_built() => Some(Settled::Available),
                Some(Ending::RunNotFound) => Some(Settled::Failed(format!(
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

/// A run as the service last saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RunState {
    Queued,
    InProgress,
    Succeeded,
    Failed,
}

impl RunState {
    pub(super) fn of(run: &crate::forge::WorkflowRun) -> Self {
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
pub(super) enum Settled {
    Available,
    TimedOut,
    Failed(String),
}

/// A build that failed, remembered until a new one may be dispatched.
#[derive(Clone, Debug)]
pub(super) struct RecentFailure {
    pub(super) reason: String,
    pub(super) run_url: Option<String>,
    pub(super) retry_at: chrono::DateTime<chrono::Utc>,
}

/// Failures remembered at most (older ones are dropped first when full).
const MAX_REMEMBERED_FAILURES: usize = 100_000;

/// How long a run found by id while the run listing lacked it is not asked about again.
const CONFIRM_AGAIN: Duration = Duration::from_secs(60);

/// Why a run poll could not read the open builds' runs.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("cannot read the open builds: {0}")]
    Store(#[from] crate::state::StoreError),
    #[error("cannot list the runs: {0}")]
    Forge(#[from] crate::forge::ForgeError),
}

/// What the service keeps of builds between requests.
pub(super) struct Tracker {
    /// request id -> build, as last read from the store, with its run status.
    pub(super) builds: tokio::sync::Mutex<HashMap<String, Tracked>>,
    /// (key, driver version) -> the request id of its open build, as the store said within
    /// [`JOIN_TTL`]: a storm of requests for one missing kernel costs one store query a second.
    joins: std::sync::Mutex<HashMap<(String, String), (String, Instant)>>,
    /// (key, driver version) -> its recent failure: answered without the store or the forge.
    failures: std::sync::Mutex<HashMap<(String, String), RecentFailure>>,
    /// Single flight for run polls.
    run_poll: tokio::sync::Mutex<()>,
    /// Set once a run poll finished: `/status` checks it without waiting for a poll under way.
    polled: std::sync::atomic::AtomicBool,
    /// Webhook deliveries seen (redeliveries change nothing) and when the last one came.
    pub(super) deliveries: std::sync::Mutex<webhooks::Deliveries>,
    /// Runs missing from a listing that were then found one by one (a listing lagging behind a
    /// dispatch), and when: asked about again only after [`CONFIRM_AGAIN`].
    confirmed: std::sync::Mutex<HashMap<u64, Instant>>,
}

impl Tracker {
    pub(super) fn new() -> Self {
        Self {
            builds: tokio::sync::Mutex::new(HashMap::new()),
            joins: std::sync::Mutex::new(HashMap::new()),
            failures: std::sync::Mutex::new(HashMap::new()),
            run_poll: tokio::sync::Mutex::new(()),
            polled: std::sync::atomic::AtomicBool::new(false),
            deliveries: std::sync::Mutex::new(webhooks::Deliveries::default()),
            confirmed: std::sync::Mutex::new(HashMap::new()),
        }
    }
}

impl ServiceState {
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
        if let Some(known) = self.tracker.failures.locked().get(&id).cloned() {
            if known.retry_at > now {
                return Ok(Some(known));
            }
            self.tracker.failures.locked().remove(&id);
            return Ok(None);
        }
        let last = self.store().history(key, driver_version).await?.pop();
        // Only a run that ran and failed: a dispatch GitHub refused or a run that vanished says
        // nothing about the kernel.
        let Some(last) = last.filter(|r| {
            r.phase == Phase::Finished
                && matches!(
                    r.conclusion.as_deref().map(Ending::of),
                    Some(Ending::Other(_))
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
        let mut failures = self.tracker.failures.locked();
        if failures.len() >= MAX_REMEMBERED_FAILURES {
            failures.retain(|_, f| f.retry_at > now);
        }
        failures.insert(id, failure.clone());
        Ok(Some(failure))
    }

    pub(super) fn overdue(&self, record: &BuildRecord) -> bool {
        self.older_than(record.started_at(), self.options.deadline)
    }

    pub(super) fn older_than(&self, at: chrono::DateTime<chrono::Utc>, age: Duration) -> bool {
        self.clock()
            .now()
            .signed_duration_since(at)
            .to_std()
            .is_ok_and(|a| a > age)
    }

    /// The request id of the open build of (key, driver version), as seen within [`JOIN_TTL`].
    pub(super) fn cached_join(&self, key: &str, driver_version: &str) -> Option<String> {
        let mut joins = self.tracker.joins.locked();
        let now = self.clock().instant();
        joins.retain(|_, (_, at)| now.saturating_duration_since(*at) < JOIN_TTL);
        joins
            .get(&(key.to_string(), driver_version.to_string()))
            .map(|(rid, _)| rid.clone())
    }

    pub(super) fn remember_join(&self, key: &str, driver_version: &str, rid: &str) {
        self.tracker.joins.locked().insert(
            (key.to_string(), driver_version.to_string()),
            (rid.to_string(), self.clock().instant()),
        );
    }

    /// Forgets that `build` is the one to join (it settled).
    pub(super) fn forget_join(&self, build: BuildId<'_>) {
        let at = (build.key.to_string(), build.driver_version.to_string());
        let mut joins = self.tracker.joins.locked();
        if joins
            .get(&at)
            .is_some_and(|(rid, _)| rid == build.request_id)
        {
            joins.remove(&at);
        }
    }

    /// Forgets cached builds older than twice the deadline (their nodes stopped waiting; the
    /// store keeps them), so memory does not grow with every request ever made.
    pub(super) fn prune_cache(&self, builds: &mut HashMap<String, Tracked>) {
        let retention = self.options.deadline * 2;
        builds.retain(|_, t| !self.older_than(t.record.started_at(), retention));
    }
}

impl ServiceState {
    /// Runs the planner for a build this service claimed (or takes over) and records in the store
    /// how it ended when no run follows.
    pub(super) async fn dispatch(&self, id: KernelIdentity, driver_version: String, rid: String) {
        let key = id.key();
        let decision = self
            .planner
            .plan_with_request_id(&id, &driver_version, &rid)
            .await;
        let settled = match decision {
            Ok(Decision::Dispatched { .. }) => {
                self.metrics.dispatched();
                return;
            }
            // Another dispatcher (a replica, the CLI) holds or started it: nodes follow that.
            Ok(Decision::Building { .. }) => {
                self.metrics.joined();
                return;
            }
            // The planner settled it.
            Ok(Decision::TimedOut { .. }) => return,
            Ok(Decision::Available { .. }) => {
                (Phase::Finished, Ending::Available.as_str().to_string())
            }
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
    pub(super) async fn settle(&self, build: BuildId<'_>, phase: Phase, conclusion: Option<&str>) {
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
    pub async fn poll_runs(&self) -> Result<(), PollError> {
        let _one = self.tracker.run_poll.lock().await;
        let dispatched: Vec<BuildRecord> = self
            .store()
            .open_builds()
            .await?
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
                let listed = self.forge.list_runs(&workflow, None, Some(since)).await?;
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
                        .tracker
                        .confirmed
                        .locked()
                        .get(&run_id)
                        .is_some_and(|at| now.saturating_duration_since(*at) < CONFIRM_AGAIN);
                    if recent {
                        continue;
                    }
                    match self.forge.get_run(run_id).await {
                        Ok(run) => {
                            self.tracker.confirmed.locked().insert(run_id, now);
                            run
                        }
                        Err(crate::forge::ForgeError::NotFound { .. }) => {
                            self.settle(
                                record.into(),
                                Phase::Finished,
                                Some(Ending::RunNotFound.as_str()),
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
        self.tracker
            .confirmed
            .locked()
            .retain(|_, at| now.saturating_duration_since(*at) < CONFIRM_AGAIN);
        self.tracker.polled.store(true, Ordering::Relaxed);
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
        let mut builds = self.tracker.builds.lock().await;
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
            .tracker
            .deliveries
            .locked()
            .last()
            .is_some_and(|at| self.elapsed_since(at) < webhooks::LIVE);
        if live { every * 12 } else { every }
    }

    /// Polls the runs now if this replica has not since it started (a node asks right after a
    /// restart), so `/status` never reads a run by itself.
    pub(super) async fn polled_once(&self) {
        if !self.tracker.polled.load(Ordering::Relaxed)
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
