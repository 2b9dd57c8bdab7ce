//! Coverage build states from a run listing and the ledger (the rules are coverage's:
//! [`crate::coverage::build_states`]).

use super::ledger::LedgerState;
use crate::forge::WorkflowRun;
use chrono::{DateTime, Utc};
use std::time::Duration;

/// Coverage build states for `driver_version`.
pub fn build_states(
    runs: &[WorkflowRun],
    ledger: Option<&LedgerState>,
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
    crate::coverage::build_states(&observed, &open, deadline, now)
}
