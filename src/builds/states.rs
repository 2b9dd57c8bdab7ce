//! Coverage build states from a run listing and the open builds of the state store (the rules
//! are coverage's:
//! [`crate::coverage::build_states`]).

use crate::forge::WorkflowRun;
use crate::state::BuildRecord;
use chrono::{DateTime, Utc};
use std::time::Duration;

/// Coverage build states for `driver_version`.
pub fn build_states(
    runs: &[WorkflowRun],
    open_builds: &[BuildRecord],
    driver_version: &str,
    deadline: Duration,
    now: DateTime<Utc>,
) -> crate::coverage::BuildStates {
    let observed: Vec<crate::coverage::ObservedRun> = runs
        .iter()
        .filter_map(|run| {
            Some(crate::coverage::ObservedRun {
                key: run.builds(driver_version)?.to_string(),
                created_at: run.created_at,
                succeeded: run.is_finished().then(|| run.succeeded()),
                cancelled: run.conclusion == Some(crate::forge::Conclusion::Cancelled),
            })
        })
        .collect();
    let open: Vec<(String, chrono::DateTime<Utc>)> = open_builds
        .iter()
        .filter(|b| b.driver_version == driver_version && b.phase.is_open())
        .map(|b| (b.key.clone(), b.started_at()))
        .collect();
    crate::coverage::build_states(&observed, &open, deadline, now)
}
