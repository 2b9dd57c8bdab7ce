//! Builds: one planner for every dispatch path (validate, asset exists?, run under way?, ledger
//! says dispatched?, then dispatch), single-flight within a process and a lock across processes.

pub mod ledger;

use crate::artifacts::AssetTemplate;
use crate::artifacts::{index_assets, select_release};
use crate::forge::{Forge, ForgeError, WorkflowRun};
use crate::identity::{KernelIdentity, Rejection};
use chrono::Utc;
use ledger::{Ledger, LedgerError, LedgerEvent, LedgerRecord};
use serde::Serialize;
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

/// GitHub's limits for one batch dispatch: jobs per matrix, characters of inputs.
pub const MAX_MATRIX_JOBS: usize = 256;
pub const MAX_INPUT_CHARS: usize = 65_535;
/// Room left in the inputs for `driver_version` and `request_id`.
const BATCH_INPUT_BUDGET: usize = MAX_INPUT_CHARS - 512;

/// A workflow's inputs: every value a string, as `workflow_dispatch` takes them.
fn workflow_inputs<const N: usize>(
    pairs: [(&str, String); N],
) -> serde_json::Map<String, serde_json::Value> {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v)))
        .collect()
}

/// Splits identities into batches of at most `max_jobs` whose JSON list stays within
/// `max_chars` (GitHub: 256 and the inputs' 65,535 characters).
pub fn chunk_batch(
    identities: &[KernelIdentity],
    max_jobs: usize,
    max_chars: usize,
) -> Vec<Vec<KernelIdentity>> {
    let mut out: Vec<Vec<KernelIdentity>> = Vec::new();
    let mut current: Vec<KernelIdentity> = Vec::new();
    let mut chars = 2;
    for id in identities {
        // An identity that cannot be measured (it always can: four strings) goes alone.
        let item = serde_json::to_vec(id).map_or(max_chars, |v| v.len()) + 1;
        if !current.is_empty() && (current.len() == max_jobs || chars + item > max_chars) {
            out.push(std::mem::take(&mut current));
            chars = 2;
        }
        chars += item;
        current.push(id.clone());
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// What the planner did (or, in a dry run, would do) for one identity.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Decision {
    Invalid {
        reason: String,
    },
    Unsupported {
        reason: String,
    },
    /// The release already has the artifact.
    Available {
        asset: String,
        url: Option<String>,
        digest: Option<String>,
    },
    /// A run for the identity is queued or in progress.
    Building {
        run_id: Option<u64>,
        status: String,
        url: Option<String>,
        /// The request id of the dispatch that started it, when known.
        request_id: Option<String>,
    },
    /// Its run is still unfinished past the deadline.
    TimedOut {
        run_id: Option<u64>,
        url: Option<String>,
        cancelled: bool,
    },
    /// Dry run: nothing stops a dispatch.
    WouldDispatch,
    Dispatched {
        run_id: u64,
        url: Option<String>,
        request_id: String,
    },
}

impl Decision {
    /// One line for the operator.
    pub fn describe(&self) -> String {
        let url = |u: &Option<String>| u.as_deref().map(|u| format!(" {u}")).unwrap_or_default();
        match self {
            Self::Invalid { reason } => format!("invalid: {reason}"),
            Self::Unsupported { reason } => format!("unsupported: {reason}"),
            Self::Available { asset, .. } => format!("available: {asset}"),
            Self::Building {
                run_id,
                status,
                url: u,
                ..
            } => match run_id {
                Some(id) => format!("already building: run {id} is {status}{}", url(u)),
                None => format!("already building: {status}"),
            },
            Self::TimedOut {
                run_id,
                url: u,
                cancelled,
            } => format!(
                "timed out: run {} passed the deadline{}{}",
                run_id.map(|i| i.to_string()).unwrap_or_else(|| "?".into()),
                if *cancelled { " and was cancelled" } else { "" },
                url(u)
            ),
            Self::WouldDispatch => "would dispatch (dry run)".to_string(),
            Self::Dispatched { run_id, url: u, .. } => format!("dispatched run {run_id}{}", url(u)),
        }
    }
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
        })
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

    /// Plans (and unless `dry_run`, dispatches) each identity key, in order, one run each.
    pub async fn plan_many(
        &self,
        keys: &[String],
        dry_run: bool,
    ) -> Result<Vec<(String, Decision)>, BuildError> {
        self.plan(keys, &self.config.driver_version, dry_run, false, None)
            .await
    }

    /// Like [`Planner::plan_many`] for another release than the configured one (the build
    /// service takes the driver version from each request).
    pub async fn plan_for_version(
        &self,
        keys: &[String],
        driver_version: &str,
    ) -> Result<Vec<(String, Decision)>, BuildError> {
        self.plan(keys, driver_version, false, false, None).await
    }

    /// Plans one identity for `driver_version`; a dispatch carries `request_id` (the build
    /// service hands out the id before the paced dispatch happens).
    pub async fn plan_with_request_id(
        &self,
        key: &str,
        driver_version: &str,
        request_id: &str,
    ) -> Result<Decision, BuildError> {
        let mut out = self
            .plan(
                &[key.to_string()],
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
        keys: &[String],
        dry_run: bool,
    ) -> Result<Vec<(String, Decision)>, BuildError> {
        self.plan(keys, &self.config.driver_version, dry_run, true, None)
            .await
    }

    async fn plan(
        &self,
        keys: &[String],
        driver_version: &str,
        dry_run: bool,
        matrix: bool,
        request_id: Option<&str>,
    ) -> Result<Vec<(String, Decision)>, BuildError> {
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
        let since = Utc::now()
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
        let mut out = Vec::with_capacity(keys.len());
        let mut dispatched_now: HashMap<String, (u64, Option<String>, String)> = HashMap::new();
        for key in keys {
            let (key, decision) = 'decided: {
                let identity = match KernelIdentity::from_key(key) {
                    Ok(id) => id,
                    Err(Rejection::Invalid(reason)) => {
                        break 'decided (key.clone(), Decision::Invalid { reason });
                    }
                    Err(Rejection::Unsupported(reason)) => {
                        break 'decided (key.clone(), Decision::Unsupported { reason });
                    }
                };
                let key = identity.key();
                if let Some(a) = available.get(key.as_str()) {
                    let decision = Decision::Available {
                        asset: a.name.clone(),
                        url: a.url.clone(),
                        digest: a.digest.clone(),
                    };
                    break 'decided (key, decision);
                }
                if let Some((run_id, url, rid)) = dispatched_now.get(&key) {
                    let decision = Decision::Building {
                        run_id: Some(*run_id),
                        status: "queued".into(),
                        url: url.clone(),
                        request_id: Some(rid.clone()),
                    };
                    break 'decided (key, decision);
                }
                let decision = self
                    .decide(
                        &identity,
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
                (key, decision)
            };
            if let Some(f) = &self.on_decided {
                f(&key, &decision);
            }
            out.push((key, decision));
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

    /// Turns every `WouldDispatch` into a batch dispatch of at most 256 identities.
    async fn dispatch_batches(
        &self,
        decisions: &mut [(String, Decision)],
        driver_version: &str,
        last_dispatch: &mut Option<tokio::time::Instant>,
    ) -> Result<(), BuildError> {
        let wanted: Vec<KernelIdentity> = decisions
            .iter()
            .filter(|(_, d)| *d == Decision::WouldDispatch)
            .filter_map(|(k, _)| KernelIdentity::from_key(k).ok())
            .collect();
        for chunk in chunk_batch(&wanted, MAX_MATRIX_JOBS, BATCH_INPUT_BUDGET) {
            let rid = new_request_id();
            let identities =
                serde_json::to_string(&chunk).map_err(|e| BuildError::Inputs(e.to_string()))?;
            let inputs = workflow_inputs([
                ("identities", identities),
                ("driver_version", driver_version.to_string()),
                ("request_id", rid.clone()),
            ]);
            self.pace(last_dispatch).await;
            let run = self
                .client
                .dispatch(
                    &self.config.batch_workflow,
                    &self.config.git_ref,
                    &inputs,
                    &rid,
                )
                .await?;
            for id in &chunk {
                let key = id.key();
                self.record(
                    LedgerEvent::Dispatched,
                    &key,
                    &rid,
                    driver_version,
                    Some(&run),
                )?;
                if let Some((_, d)) = decisions.iter_mut().find(|(k, _)| *k == key) {
                    *d = Decision::Dispatched {
                        run_id: run.id,
                        url: run.html_url.clone(),
                        request_id: rid.clone(),
                    };
                }
            }
        }
        Ok(())
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
                    let overdue = Utc::now()
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
                            status: run
                                .and_then(|r| r.status)
                                .map_or_else(|| "dispatched".into(), |s| s.to_string()),
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
                .and_then(|c| Utc::now().signed_duration_since(c).to_std().ok())
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
                status: run.status.map(|s| s.to_string()).unwrap_or_default(),
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
            at: Utc::now(),
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
            at: Utc::now(),
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

/// Coverage build states for `driver_version` from a run listing and the ledger (the rules are
/// coverage's: [`crate::coverage::build_states`]).
#[cfg(feature = "fleet")]
pub fn build_states(
    runs: &[WorkflowRun],
    ledger: Option<&ledger::LedgerState>,
    driver_version: &str,
    deadline: Duration,
) -> crate::coverage::BuildStates {
    let observed: Vec<crate::coverage::ObservedRun> = runs
        .iter()
        .filter_map(|run| {
            Some(crate::coverage::ObservedRun {
                key: run.builds(driver_version)?.to_string(),
                created_at: run.created_at,
                succeeded: run.is_finished().then(|| run.succeeded()),
            })
        })
        .collect();
    let open: Vec<(String, chrono::DateTime<Utc>)> = ledger
        .map(|l| {
            l.entries
                .iter()
                .filter(|((_, version), entry)| version == driver_version && entry.is_open())
                .map(|((key, _), entry)| (key.clone(), entry.dispatched_at))
                .collect()
        })
        .unwrap_or_default();
    crate::coverage::build_states(&observed, &open, deadline, Utc::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_respect_the_job_and_character_limits() {
        let ids: Vec<KernelIdentity> = (0..600)
            .map(|i| {
                KernelIdentity::parse("ubuntu", "22.04", "x86_64", &format!("5.15.0-{i}-generic"))
                    .unwrap()
            })
            .collect();
        let sizes =
            |chunks: &[Vec<KernelIdentity>]| chunks.iter().map(Vec::len).collect::<Vec<_>>();
        let by_jobs = chunk_batch(&ids, MAX_MATRIX_JOBS, BATCH_INPUT_BUDGET);
        assert_eq!(sizes(&by_jobs), vec![256, 256, 88]);
        assert!(chunk_batch(&[], MAX_MATRIX_JOBS, BATCH_INPUT_BUDGET).is_empty());
        // A tighter character budget splits before the job limit, and every chunk fits it.
        let by_chars = chunk_batch(&ids, MAX_MATRIX_JOBS, 10_000);
        assert!(by_chars.len() > 3);
        assert_eq!(sizes(&by_chars).iter().sum::<usize>(), 600);
        for chunk in &by_chars {
            assert!(serde_json::to_string(chunk).unwrap().len() <= 10_000);
        }
    }
}
