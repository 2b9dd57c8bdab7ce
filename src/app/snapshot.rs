//! Coverage as the forge and the build state stand: the release listing, the build workflow's
//! recent runs and the open dispatches read once, the build states of a release derived from
//! them, and coverage computed on a blocking thread (polars is CPU-bound work that must not hold
//! an async worker). `kfleet report` and the dashboard both start here.

use crate::artifacts::{AssetIndex, Release, ReleaseError, select_release};
use crate::coverage::{self, BuildStates, CoverageError, CoverageOptions, CoverageReport};
use crate::forge::{Forge, ForgeError, WorkflowRun};
use crate::inventory::FleetGroups;
use crate::state::{BuildRecord, Store, StoreError};
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{0}")]
    Forge(#[from] ForgeError),
    #[error("{0}")]
    State(#[from] StoreError),
    #[error("{0}")]
    Release(#[from] ReleaseError),
    #[error("{0}")]
    Coverage(#[from] CoverageError),
    #[error("the coverage computation stopped: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// What coverage is computed from.
pub struct Snapshot {
    pub releases: Vec<Release>,
    runs: Vec<WorkflowRun>,
    open: Vec<BuildRecord>,
    deadline: Duration,
    /// Why the build workflow's runs could not be listed: coverage then shows no `building`,
    /// `failed` or `timed-out` from runs (no such workflow, no `actions: read`).
    pub runs_unread: Option<ForgeError>,
}

impl Snapshot {
    /// A release listing without builds (a listing file, or an artifact store alone).
    pub fn releases_only(releases: Vec<Release>) -> Self {
        Self {
            releases,
            runs: Vec::new(),
            open: Vec::new(),
            deadline: Duration::ZERO,
            runs_unread: None,
        }
    }

    /// Reads the forge's releases, the runs of `workflow` since the run history starts, and the
    /// build state's open dispatches. A run listing that fails leaves coverage standing without
    /// build states from runs ([`Snapshot::runs_unread`] says why).
    pub async fn read(
        forge: &dyn Forge,
        store: &Store,
        workflow: &str,
        deadline: Duration,
    ) -> Result<Self, SnapshotError> {
        let releases = forge.list_releases().await?.releases;
        let (runs, runs_unread) = match forge
            .list_runs(workflow, None, Some(crate::forge::run_history_start()))
            .await
        {
            Ok(runs) => (runs, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        let open = store.open_builds().await?;
        Ok(Self {
            releases,
            runs,
            open,
            deadline,
            runs_unread,
        })
    }

    /// The release named, or the newest published one.
    pub fn release(&self, driver_version: Option<&str>) -> Result<&Release, SnapshotError> {
        Ok(select_release(&self.releases, driver_version)?)
    }

    /// [`Snapshot::release`], taken out; the other releases are dropped (a one-shot report
    /// reads no other, and at 100M nodes the listing is a good part of what it holds).
    pub fn take_release(&mut self, driver_version: Option<&str>) -> Result<Release, SnapshotError> {
        let chosen: *const Release = self.release(driver_version)?;
        let mut releases = std::mem::take(&mut self.releases);
        // The chosen release is one of them (select_release found it there).
        let at = releases
            .iter()
            .position(|r| std::ptr::eq(r, chosen))
            .unwrap_or_default();
        Ok(releases.swap_remove(at))
    }

    /// `building`, `failed` and `timed-out` of the identities of `driver_version`, at `now`.
    pub fn build_states(&self, driver_version: &str, now: DateTime<Utc>) -> BuildStates {
        crate::builds::build_states(&self.runs, &self.open, driver_version, self.deadline, now)
    }

    /// Coverage of `fleet` by the artifacts `assets` of release `tag` (one of
    /// [`Snapshot::releases`]) with its build states at `now`, computed on a blocking thread.
    pub async fn coverage(
        &self,
        fleet: Arc<FleetGroups>,
        tag: &str,
        assets: AssetIndex,
        options: CoverageOptions,
        now: DateTime<Utc>,
    ) -> Result<CoverageReport, SnapshotError> {
        let states = self.build_states(tag, now);
        let tag = tag.to_string();
        let report = tokio::task::spawn_blocking(move || {
            coverage::compute(&fleet, &assets, &tag, options, &states)
        })
        .await??;
        Ok(report)
    }

    /// [`Snapshot::coverage`]; with `kabi` (the header resolver, where to keep what the check
    /// reads, and the OCI store the artifacts are in, if any) the kernels without an artifact are checked against their line's artifacts
    /// ([`super::compatible::find`]) and coverage computed once more with those another artifact
    /// serves and the kABI classes. What the check found comes back beside the report.
    pub async fn checked_coverage(
        &self,
        fleet: Arc<FleetGroups>,
        tag: &str,
        mut assets: AssetIndex,
        options: CoverageOptions,
        now: DateTime<Utc>,
        kabi: Option<super::compatible::KabiCheck<'_>>,
    ) -> Result<(CoverageReport, super::compatible::Compatible), SnapshotError> {
        let Some(check) = kabi else {
            let report = self.coverage(fleet, tag, assets, options, now).await?;
            return Ok((report, Default::default()));
        };
        let report = self
            .coverage(fleet.clone(), tag, assets.clone(), options, now)
            .await?;
        let found = super::compatible::find(&report, &assets, check).await;
        if found.served.is_empty() && found.classes.is_empty() {
            return Ok((report, found));
        }
        assets.compatible = found.served.clone();
        assets.kabi_classes = found.classes.clone();
        let report = self.coverage(fleet, tag, assets, options, now).await?;
        Ok((report, found))
    }
}
