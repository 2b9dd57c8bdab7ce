//! Builds: one planner for every dispatch path (validate, asset exists?, run under way?, ledger
//! says dispatched?, then dispatch), single-flight within a process and a lock across processes.

mod batch;
mod decision;
pub mod ledger;
#[cfg(feature = "fleet")]
mod states;

pub use batch::{MAX_INPUT_CHARS, MAX_MATRIX_JOBS, chunk_batch};
pub use decision::{Decision, merge_decisions, parse_keys};
#[cfg(feature = "fleet")]
pub use states::build_states;

use crate::artifacts::AssetTemplate;
use crate::artifacts::{index_assets, select_release};
use crate::clock::SharedClock;
use crate::forge::{Forge, ForgeError, WorkflowRun};
use crate::identity::KernelIdentity;
use batch::workflow_inputs;
use chrono::Utc;
use ledger::{Ledger, LedgerError, LedgerEvent, LedgerRecord};
use std::collections::HashMap;
use std::path::PathBuf;
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
    /// Holds the ledger and the dispatch lock.
    pub state_dir: PathBuf,
    /// Pause between dispatches, to stay under GitHub's ~80 content-creating requests a minute.
    pub dispatch_interval: Duration,
    /// Workflow that builds a JSON list of identities as a matrix (`--matrix`).
    pub batch_workflow: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Forge(#[from] ForgeError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("release {0}: {1}")]
    Release(String, String),
    #[error("cannot encode the workflow inputs: {0}")]
    Inputs(String),
    #[error("cannot take the dispatch lock {path}: {source}")]
    Lock {
        path: String,
        source: std::io::Error,
    },
}

/// Hears each identity key and its decision as the planner reaches it.
pub type DecisionHook = Box<dyn Fn(&str, &Decision) + Send + Sync>;

pub struct Planner {
    client: Arc<dyn Forge>,
    template: AssetTemplate,
    config: PlannerConfig,
    ledger: Ledger,
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

/// A fresh request id: time and randomness, safe in a run title.
pub fn new_request_id() -> String {
    format!(
        "{}-{:08x}",
        Utc::now().format("%Y%m%dT%H%M%S"),
        fastrand::u32(..)
    )
}

impl Planner {
    pub fn new(
        client: Arc<dyn Forge>,
        template: AssetTemplate,
        config: PlannerConfig,
    ) -> Result<Self, BuildError> {
        let ledger = Ledger::open(&config.state_dir)?;
        Ok(Self {
            client,
            template,
            config,
            ledger,
            inflight: tokio::sync::Mutex::new(None),
            on_decided: None,
            clock: SharedClock::default(),
        })
    }

    /// Reads time from `clock` (ledger records, the run window, deadlines) instead of the system.
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

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    async fn lock_across_processes(&self) -> Result<std::fs::File, BuildError> {
        let path = self.config.state_dir.join("dispatch.lock");
        let shown = path.display().to_string();
        tokio::task::spawn_blocking(move || {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)?;
            file.lock()?;
            Ok(file)
        })
        .await
        .map_err(|e| BuildError::Lock {
            path: shown.clone(),
            source: std::io::Error::other(e),
        })?
        .map_err(|source| BuildError::Lock {
            path: shown,
            source,
        })
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
        let _lock = self.lock_across_processes().await?;
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
        // Read under the lock: another process may have just dispatched.
        let ledger = self.ledger.load()?;
        if let Some(tail) = &ledger.torn_tail {
            tracing::warn!("{tail}");
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
                    };
                    break 'decided decision;
                }
                if let Some((run_id, url, rid)) = dispatched_now.get(&key) {
                    break 'decided Decision::Building {
                        run_id: Some(*run_id),
                        status: Some(crate::forge::RunStatus::Queued),
                        url: url.clone(),
                        request_id: Some(rid.clone()),
                    };
                }
                let decision = self
                    .decide(
                        identity,
                        driver_version,
                        ledger
                            .entries
                            .get(&(key.clone(), driver_version.to_string())),
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
    async fn pace(&self, last_dispatch: &mut Option<tokio::time::Instant>) {
        if let Some(last) = *last_dispatch {
            tokio::time::sleep_until(last + self.config.dispatch_interval).await;
        }
        *last_dispatch = Some(tokio::time::Instant::now());
    }

    #[allow(clippy::too_many_arguments)]
    async fn decide(
        &self,
        identity: &KernelIdentity,
        driver_version: &str,
        entry: Option<&ledger::LedgerEntry>,
        running: Option<&WorkflowRun>,
        dry_run: bool,
        request_id: Option<&str>,
        last_dispatch: &mut Option<tokio::time::Instant>,
    ) -> Result<Decision, BuildError> {
        let key = identity.key();
        if let Some(entry) = entry.filter(|e| e.is_open()) {
            // `None`: the run is gone (retention, or a sandbox that restarted): the entry is over.
            let known: Option<Option<WorkflowRun>> = match entry.run_id {
                Some(id) => match self.client.get_run(id).await {
                    Ok(run) => Some(Some(run)),
                    Err(ForgeError::NotFound { .. }) => {
                        self.record_id(
                            LedgerEvent::Finished,
                            &key,
                            &entry.request_id,
                            entry.run_id,
                            Some("run-not-found".into()),
                        )?;
                        None
                    }
                    Err(e) => return Err(e.into()),
                },
                None => Some(None),
            };
            match known {
                None => {}
                Some(Some(run)) if run.is_finished() => {
                    self.record(
                        LedgerEvent::Finished,
                        &key,
                        &entry.request_id,
                        driver_version,
                        Some(&run),
                    )?;
                    if run.succeeded() {
                        return Ok(Decision::Available {
                            asset: self.template.render(identity, driver_version),
                            url: run.html_url,
                            digest: None,
                        });
                    }
                }
                Some(run) => {
                    let overdue = self
                        .clock
                        .now()
                        .signed_duration_since(entry.dispatched_at)
                        .to_std()
                        .is_ok_and(|age| age > self.config.deadline);
                    let url = run
                        .as_ref()
                        .and_then(|r| r.html_url.clone())
                        .or(entry.url.clone());
                    if !overdue {
                        return Ok(Decision::Building {
                            run_id: entry.run_id,
                            status: run.and_then(|r| r.status),
                            url,
                            request_id: Some(entry.request_id.clone()),
                        });
                    }
                    return self
                        .time_out(&key, &entry.request_id, entry.run_id, url)
                        .await;
                }
            }
        }
        if let Some(run) = running {
            let url = run.html_url.clone();
            let overdue = run
                .created_at
                .and_then(|c| self.clock.now().signed_duration_since(c).to_std().ok())
                .is_some_and(|age| age > self.config.deadline);
            if overdue {
                let rid = run
                    .identity()
                    .map(|(_, r)| r.to_string())
                    .unwrap_or_default();
                return self.time_out(&key, &rid, Some(run.id), url).await;
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
        let rid = request_id
            .map(str::to_string)
            .unwrap_or_else(new_request_id);
        let inputs = workflow_inputs([
            ("kernel_version", identity.kernel_version.clone()),
            ("architecture", identity.architecture.as_str().to_string()),
            ("distribution", identity.distribution.as_str().to_string()),
            ("distro_version", identity.distro_version.clone()),
            ("driver_version", driver_version.to_string()),
            ("request_id", rid.clone()),
        ]);
        self.pace(last_dispatch).await;
        let run = self
            .client
            .dispatch(&self.config.workflow, &self.config.git_ref, &inputs, &rid)
            .await?;
        self.record(
            LedgerEvent::Dispatched,
            &key,
            &rid,
            driver_version,
            Some(&run),
        )?;
        Ok(Decision::Dispatched {
            run_id: run.id,
            url: run.html_url,
            request_id: rid,
        })
    }

    async fn time_out(
        &self,
        key: &str,
        request_id: &str,
        run_id: Option<u64>,
        url: Option<String>,
    ) -> Result<Decision, BuildError> {
        self.record_id(LedgerEvent::TimedOut, key, request_id, run_id, None)?;
        let mut cancelled = false;
        if self.config.cancel_on_timeout
            && let Some(id) = run_id
        {
            self.client.cancel_run(id).await?;
            self.record_id(LedgerEvent::Cancelled, key, request_id, run_id, None)?;
            cancelled = true;
        }
        Ok(Decision::TimedOut {
            run_id,
            url,
            cancelled,
        })
    }

    fn record(
        &self,
        event: LedgerEvent,
        key: &str,
        request_id: &str,
        driver_version: &str,
        run: Option<&WorkflowRun>,
    ) -> Result<(), BuildError> {
        self.ledger.append(&LedgerRecord {
            at: self.clock.now(),
            event,
            key: key.to_string(),
            request_id: request_id.to_string(),
            run_id: run.map(|r| r.id),
            conclusion: run.and_then(|r| r.conclusion).map(|c| c.to_string()),
            url: run.and_then(|r| r.html_url.clone()),
            driver_version: Some(driver_version.to_string()),
        })?;
        Ok(())
    }

    fn record_id(
        &self,
        event: LedgerEvent,
        key: &str,
        request_id: &str,
        run_id: Option<u64>,
        conclusion: Option<String>,
    ) -> Result<(), BuildError> {
        self.ledger.append(&LedgerRecord {
            at: self.clock.now(),
            event,
            key: key.to_string(),
            request_id: request_id.to_string(),
            run_id,
            conclusion,
            url: None,
            driver_version: None,
        })?;
        Ok(())
    }
}
