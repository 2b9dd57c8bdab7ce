//! Builds: one planner for every dispatch path (validate, asset exists?, build open in the state
//! store?, run under way?, claim, then dispatch), single-flight within a process and an atomic
//! claim in the store across processes and replicas.

mod batch;
mod decision;
#[cfg(feature = "fleet")]
mod states;

pub use batch::{MAX_INPUT_CHARS, MAX_MATRIX_JOBS, chunk_batch};
pub use decision::{Decision, merge_decisions, parse_keys};
#[cfg(feature = "fleet")]
pub use states::build_states;

use crate::artifacts::AssetTemplate;
use crate::artifacts::{index_assets, select_release};
use crate::clock::SharedClock;
use crate::forge::{DISPATCH_SEND_TIMEOUT, Forge, ForgeError, WorkflowRun};
use crate::identity::KernelIdentity;
use crate::state::{BuildRecord, Claim, NewClaim, Phase, Store, StoreError};
use crate::text::Cause;
use batch::workflow_inputs;
use chrono::Utc;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct PlannerConfig {
    /// Workflow file that builds one identity.
    pub workflow: String,
    pub git_ref: String,
    /// Release tag the build uploads to.
    pub driver_version: String,
    /// A run not finished this long after dispatch is timed out.
    pub deadline: Duration,
    /// Cancel runs found past the deadline.
    pub cancel_on_timeout: bool,
    /// How long a claim gives its holder to dispatch before another process may take it over.
    pub claim_lease: Duration,
    /// Pause between dispatches, to stay under GitHub's ~80 content-creating requests a minute.
    pub dispatch_interval: Duration,
    /// Workflow that builds a JSON list of identities as a matrix (`--matrix`).
    pub batch_workflow: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0}")]
    Forge(#[from] ForgeError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("release {0}: {1}")]
    Release(String, String),
    #[error("cannot encode the workflow inputs: {0}")]
    Inputs(#[source] Cause),
}

/// Hears each identity key and its decision as the planner reaches it.
pub type DecisionHook = Box<dyn Fn(&str, &Decision) + Send + Sync>;

pub struct Planner {
    client: Arc<dyn Forge>,
    template: AssetTemplate,
    config: PlannerConfig,
    store: Store,
    /// This process as a claim holder.
    owner: String,
    /// Single-flight within the process: one check-and-dispatch at a time; holds when the last
    /// dispatch went out, for pacing.
    inflight: tokio::sync::Mutex<Option<tokio::time::Instant>>,
    /// Told about each identity as it is decided (a progress bar, a log).
    on_decided: Option<DecisionHook>,
    clock: SharedClock,
}

fn active(run: &WorkflowRun) -> bool {
    !run.is_finished()
}

/// A fresh request id: time and randomness from the operating system, safe in a run title.
pub fn new_request_id() -> String {
    let random = crate::fsio::random_hex(4).unwrap_or_else(|_| {
        // No random source: the clock's nanoseconds still set two ids of one second apart.
        format!("{:08x}", Utc::now().timestamp_subsec_nanos())
    });
    format!("{}-{random}", Utc::now().format("%Y%m%dT%H%M%S"))
}

impl Planner {
    pub fn new(
        client: Arc<dyn Forge>,
        template: AssetTemplate,
        config: PlannerConfig,
        store: Store,
    ) -> Self {
        Self {
            client,
            template,
            config,
            store,
            owner: crate::state::owner_name(),
            inflight: tokio::sync::Mutex::new(None),
            on_decided: None,
            clock: SharedClock::default(),
        }
    }

    /// Reads time from `clock` (build records, the run window, deadlines) instead of the system.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// Calls `f` with each identity key and its decision as the planner reaches it.
    pub fn on_decided(mut self, f: impl Fn(&str, &Decision) + Send + Sync + 'static) -> Self {
        self.on_decided = Some(Box::new(f));
        self
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn config(&self) -> &PlannerConfig {
        &self.config
    }

    /// Plans (and unless `dry_run`, dispatches) each identity, in order, one run each.
    pub async fn plan_many(
        &self,
        ids: &[KernelIdentity],
        dry_run: bool,
    ) -> Result<Vec<(KernelIdentity, Decision)>, BuildError> {
        self.plan(ids, &self.config.driver_version, dry_run, false, None)
            .await
    }

    /// Like [`Planner::plan_many`] for another release than the configured one (the build
    /// service takes the driver version from each request).
    pub async fn plan_for_version(
        &self,
        ids: &[KernelIdentity],
        driver_version: &str,
    ) -> Result<Vec<(KernelIdentity, Decision)>, BuildError> {
        self.plan(ids, driver_version, false, false, None).await
    }

    /// Plans one identity for `driver_version`; a dispatch carries `request_id` (the build
    /// service hands out the id before the paced dispatch happens).
    pub async fn plan_with_request_id(
        &self,
        id: &KernelIdentity,
        driver_version: &str,
        request_id: &str,
    ) -> Result<Decision, BuildError> {
        let mut out = self
            .plan(
                std::slice::from_ref(id),
                driver_version,
                false,
                false,
                Some(request_id),
            )
            .await?;
        Ok(out.remove(0).1)
    }

    /// Like [`Planner::plan_many`], but the identities that need a build go out in batches of at
    /// most 256 through the batch workflow, one matrix run each.
    pub async fn plan_matrix(
        &self,
        ids: &[KernelIdentity],
        dry_run: bool,
    ) -> Result<Vec<(KernelIdentity, Decision)>, BuildError> {
        self.plan(ids, &self.config.driver_version, dry_run, true, None)
            .await
    }

    async fn plan(
        &self,
        ids: &[KernelIdentity],
        driver_version: &str,
        dry_run: bool,
        matrix: bool,
        request_id: Option<&str>,
    ) -> Result<Vec<(KernelIdentity, Decision)>, BuildError> {
        let mut last_dispatch = self.inflight.lock().await;
        let listing = self.client.list_releases().await?;
        let release = select_release(&listing.releases, Some(driver_version))
            .map_err(|e| BuildError::Release(driver_version.to_string(), e.to_string()))?;
        let assets = index_assets(release, &self.template);
        let available: HashMap<&str, _> =
            assets.matched.iter().map(|a| (a.key.as_str(), a)).collect();
        // Every page of the runs that can still be under way: created within twice the deadline
        // (those past it are found so they can be timed out).
        let since = self.clock.now()
            - chrono::Duration::from_std(self.config.deadline * 2)
                .unwrap_or(chrono::Duration::days(1));
        let mut running: HashMap<String, WorkflowRun> = HashMap::new();
        for status in ["queued", "in_progress"] {
            for run in self
                .client
                .list_runs(&self.config.workflow, Some(status), Some(since))
                .await?
            {
                if active(&run)
                    && let Some(key) = run.builds(driver_version)
                {
                    running.entry(key.to_string()).or_insert(run);
                }
            }
        }
        let mut out = Vec::with_capacity(ids.len());
        let mut dispatched_now: HashMap<String, (u64, Option<String>, String)> = HashMap::new();
        for identity in ids {
            let key = identity.key();
            let decision = 'decided: {
                if let Some(a) = available.get(key.as_str()) {
                    let decision = Decision::Available {
                        asset: a.name.clone(),
                        url: a.url.clone(),
                        digest: a.digest.clone(),
                        checksum_url: a.checksum_url.clone(),
                        provenance_url: a.provenance_url.clone(),
                    };
                    break 'decided decision;
                }
                if release.immutable {
                    break 'decided Decision::Refused {
                        reason: crate::artifacts::immutable_reason(&release.tag_name),
                    };
                }
                if let Some((run_id, url, rid)) = dispatched_now.get(&key) {
                    break 'decided Decision::Building {
                        run_id: Some(*run_id),
                        status: Some(crate::forge::RunStatus::Queued),
                        url: url.clone(),
                        request_id: Some(rid.clone()),
                    };
                }
                // Read after the listings: a build another process opened since is seen here,
                // and one it opens from now on makes this process's claim fail.
                let open = self.store.open_build(&key, driver_version).await?;
                let decision = self
                    .decide(
                        identity,
                        driver_version,
                        open.as_ref(),
                        running.get(&key),
                        dry_run || matrix,
                        request_id,
                        &mut last_dispatch,
                    )
                    .await?;
                if let Decision::Dispatched {
                    run_id,
                    url,
                    request_id,
                } = &decision
                {
                    dispatched_now.insert(key.clone(), (*run_id, url.clone(), request_id.clone()));
                }
                decision
            };
            if let Some(f) = &self.on_decided {
                f(&key, &decision);
            }
            out.push((identity.clone(), decision));
        }
        if matrix && !dry_run {
            self.dispatch_batches(&mut out, driver_version, &mut last_dispatch)
                .await?;
        }
        Ok(out)
    }

    /// Waits until `dispatch_interval` has passed since the last dispatch, then marks this one.
    /// When the forge says less than a tenth of the token's budget is left, dispatches are spread
    /// over what remains of the window instead (before the limit, not after it).
    async fn pace(&self, last_dispatch: &mut Option<tokio::time::Instant>) {
        let interval = self.config.dispatch_interval.max(self.budget_interval());
        if let Some(last) = *last_dispatch {
            tokio::time::sleep_until(last + interval).await;
        }
        *last_dispatch = Some(tokio::time::Instant::now());
    }

    /// The spacing the token's remaining budget asks for: zero while more than a tenth is left.
    fn budget_interval(&self) -> Duration {
        let Some(budget) = self.client.stats().budget() else {
            return Duration::ZERO;
        };
        if budget.remaining.saturating_mul(10) >= budget.limit {
            return Duration::ZERO;
        }
        // A dispatch costs about five requests (the checks, the send, the run read back).
        let left = budget.remaining / 5;
        let window = budget.renews_in(self.clock.now());
        let spacing = Duration::from_secs(window / left.max(1)).min(Duration::from_secs(600));
        tracing::warn!(
            "{} of {} GitHub requests left until the window renews in {window}s: one dispatch every {}s",
            budget.remaining,
            budget.limit,
            spacing.as_secs()
        );
        spacing
    }

    #[allow(clippy::too_many_arguments)]
    async fn decide(
        &self,
        identity: &KernelIdentity,
        driver_version: &str,
        open: Option<&BuildRecord>,
        running: Option<&WorkflowRun>,
        dry_run: bool,
        request_id: Option<&str>,
        last_dispatch: &mut Option<tokio::time::Instant>,
    ) -> Result<Decision, BuildError> {
        let key = identity.key();
        let lease = self.config.claim_lease;
        // A claim this call holds: the service's own (made when it answered the node), or one
        // whose holder stopped before it dispatched.
        let mut mine: Option<BuildRecord> = None;
        let mut taken_over = false;
        if let Some(open) = open {
            match open.phase {
                Phase::Dispatched => {
                    if let Some(decision) = self.follow(identity, driver_version, open).await? {
                        return Ok(decision);
                    }
                }
                _ if request_id == Some(open.request_id.as_str())
                    && open.owner.as_deref() == Some(self.owner.as_str()) =>
                {
                    mine = Some(open.clone());
                }
                _ if open.claim_expired(self.clock.now(), DISPATCH_SEND_TIMEOUT) && !dry_run => {
                    match self
                        .store
                        .take_over(
                            open,
                            &self.owner,
                            self.clock.now(),
                            lease,
                            DISPATCH_SEND_TIMEOUT,
                        )
                        .await?
                    {
                        Some(taken) => {
                            tracing::info!(
                                "took over the claim {} on {key} {driver_version}: its holder {} did not dispatch within its lease",
                                taken.request_id,
                                open.owner.as_deref().unwrap_or("?")
                            );
                            mine = Some(taken);
                            taken_over = true;
                        }
                        None => return Ok(building(open)),
                    }
                }
                _ => return Ok(building(open)),
            }
        }
        if let Some(run) = running {
            let url = run.html_url.clone();
            let overdue = run
                .created_at
                .and_then(|c| self.clock.now().signed_duration_since(c).to_std().ok())
                .is_some_and(|age| age > self.config.deadline);
            if overdue {
                return self.time_out(mine.as_ref(), Some(run.id), url).await;
            }
            // The run a stopped holder started before it could record it, or one started
            // outside this store: the claim's nodes follow it.
            if let Some(claim) = &mine {
                self.store
                    .mark_dispatched(claim, run.id, url.as_deref(), self.clock.now())
                    .await?;
            }
            return Ok(Decision::Building {
                run_id: Some(run.id),
                status: run.status,
                url,
                request_id: run.request_id().map(str::to_string),
            });
        }
        if dry_run {
            return Ok(Decision::WouldDispatch);
        }
        let claim = match mine {
            Some(claim) => claim,
            None => {
                let rid = request_id
                    .map(str::to_string)
                    .unwrap_or_else(new_request_id);
                match self.claim(&rid, &key, driver_version).await? {
                    Claim::Won(record) => record,
                    Claim::Held(other) => return Ok(building(&other)),
                }
            }
        };
        let inputs = workflow_inputs([
            ("kernel_version", identity.kernel_version.clone()),
            ("architecture", identity.architecture.as_str().to_string()),
            ("distribution", identity.distribution.as_str().to_string()),
            ("distro_version", identity.distro_version.clone()),
            ("driver_version", driver_version.to_string()),
            ("request_id", claim.request_id.clone()),
        ]);
        self.pace(last_dispatch).await;
        // Every send of the dispatch (the first, and each after a rate-limit wait or an error)
        // renews the claim first: one that was taken over meanwhile is not sent again.
        let guard = ClaimGuard {
            planner: self,
            claims: vec![claim.clone()],
            lease,
            taken_over: std::sync::atomic::AtomicBool::new(taken_over),
        };
        let run = match self
            .client
            .dispatch(
                &self.config.workflow,
                &self.config.git_ref,
                &inputs,
                &claim.request_id,
                &guard,
            )
            .await
        {
            Ok(run) => run,
            Err(ForgeError::ClaimLost { why, .. }) => {
                tracing::warn!(
                    "stopped dispatching {key} {driver_version} ({}): {why}; the new holder dispatches it",
                    claim.request_id
                );
                let now_open = self.store.open_build(&key, driver_version).await?;
                return Ok(building(now_open.as_ref().unwrap_or(&claim)));
            }
            Err(e) => {
                let reason = format!("the dispatch failed: {e}");
                self.store
                    .abandon(&claim, &reason, self.clock.now())
                    .await?;
                return Err(e.into());
            }
        };
        if !self
            .store
            .mark_dispatched(&claim, run.id, run.html_url.as_deref(), self.clock.now())
            .await?
        {
            tracing::warn!(
                "run {} for {key} {driver_version} ({}) was started, but the claim was taken over meanwhile; its new holder adopts the run by the request id",
                run.id,
                claim.request_id
            );
            return Ok(Decision::Building {
                run_id: Some(run.id),
                status: run.status,
                url: run.html_url,
                request_id: Some(claim.request_id),
            });
        }
        Ok(Decision::Dispatched {
            run_id: run.id,
            url: run.html_url,
            request_id: claim.request_id,
        })
    }

    /// Where a dispatched build stands: `None` when it is over without an artifact (or its run
    /// is gone), so a new build may start.
    async fn follow(
        &self,
        identity: &KernelIdentity,
        driver_version: &str,
        open: &BuildRecord,
    ) -> Result<Option<Decision>, BuildError> {
        let run = match open.run_id {
            Some(id) => match self.client.get_run(id).await {
                Ok(run) => Some(run),
                // Retention, or a sandbox that restarted: the build is over.
                Err(ForgeError::NotFound { .. }) => {
                    self.store
                        .settle(
                            open,
                            Phase::Finished,
                            Some(crate::state::Ending::RunNotFound.as_str()),
                            self.clock.now(),
                        )
                        .await?;
                    return Ok(None);
                }
                Err(e) => return Err(e.into()),
            },
            None => None,
        };
        if let Some(run) = &run
            && run.is_finished()
        {
            let conclusion = run.conclusion.map(|c| c.to_string());
            self.store
                .settle(
                    open,
                    Phase::Finished,
                    conclusion.as_deref(),
                    self.clock.now(),
                )
                .await?;
            return Ok(run.succeeded().then(|| Decision::Available {
                asset: self.template.render(identity, driver_version),
                url: run.html_url.clone(),
                digest: None,
                checksum_url: None,
                provenance_url: None,
            }));
        }
        let overdue = self
            .clock
            .now()
            .signed_duration_since(open.started_at())
            .to_std()
            .is_ok_and(|age| age > self.config.deadline);
        let url = run
            .as_ref()
            .and_then(|r| r.html_url.clone())
            .or(open.url.clone());
        if overdue {
            return self.time_out(Some(open), open.run_id, url).await.map(Some);
        }
        Ok(Some(Decision::Building {
            run_id: open.run_id,
            status: run.and_then(|r| r.status),
            url,
            request_id: Some(open.request_id.clone()),
        }))
    }

    async fn time_out(
        &self,
        record: Option<&BuildRecord>,
        run_id: Option<u64>,
        url: Option<String>,
    ) -> Result<Decision, BuildError> {
        let mut cancelled = false;
        if self.config.cancel_on_timeout
            && let Some(id) = run_id
        {
            self.client.cancel_run(id).await?;
            cancelled = true;
        }
        if let Some(record) = record {
            let phase = if cancelled {
                Phase::Cancelled
            } else {
                Phase::TimedOut
            };
            self.store
                .settle(record, phase, None, self.clock.now())
                .await?;
        }
        Ok(Decision::TimedOut {
            run_id,
            url,
            cancelled,
        })
    }
}

impl Planner {
    /// Claims (key, driver version) for a dispatch under `request_id`, held by this process for
    /// a lease (the build service claims before it answers, then plans with that request id).
    pub async fn claim(
        &self,
        request_id: &str,
        key: &str,
        driver_version: &str,
    ) -> Result<Claim, StoreError> {
        self.store
            .claim(&NewClaim {
                request_id,
                key,
                driver_version,
                owner: &self.owner,
                now: self.clock.now(),
                lease: self.config.claim_lease,
            })
            .await
    }
}

/// The claims a dispatch is for, renewed before each send; a claim taken over meanwhile (its
/// fence raised) stops the dispatch.
pub(crate) struct ClaimGuard<'a> {
    pub(crate) planner: &'a Planner,
    pub(crate) claims: Vec<BuildRecord>,
    pub(crate) lease: Duration,
    /// Set for a claim taken over from a holder that may have sent it: the first send looks for
    /// that holder's run first.
    pub(crate) taken_over: std::sync::atomic::AtomicBool,
}

impl crate::forge::DispatchGuard for ClaimGuard<'_> {
    fn hold(&self) -> crate::forge::BoxFuture<'_, Result<crate::forge::Held, String>> {
        Box::pin(async move {
            for claim in &self.claims {
                let held = self
                    .planner
                    .store
                    .renew(claim, self.planner.clock.now(), self.lease)
                    .await
                    .map_err(|e| format!("cannot renew the claim: {e}"))?;
                if !held {
                    return Err(format!(
                        "the claim {} on {} {} is no longer this replica's (its lease ended and another took it over)",
                        claim.request_id, claim.key, claim.driver_version
                    ));
                }
            }
            Ok(crate::forge::Held {
                taken_over: self
                    .taken_over
                    .swap(false, std::sync::atomic::Ordering::Relaxed),
            })
        })
    }
}

/// An open build another process holds or follows (a claim not yet dispatched is queued).
fn building(open: &BuildRecord) -> Decision {
    Decision::Building {
        run_id: open.run_id,
        status: (open.phase == Phase::Claimed).then_some(crate::forge::RunStatus::Queued),
        url: open.url.clone(),
        request_id: Some(open.request_id.clone()),
    }
}
