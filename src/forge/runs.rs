//! GitHub Actions workflow runs (own model: octocrab's rejects fields GitHub sends as null) and the
//! `run-name` convention that ties a run to one identity and one request.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct WorkflowRun {
    pub id: u64,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub display_title: String,
    /// `queued`, `in_progress`, `completed` (also `requested`, `waiting`, `pending`).
    #[serde(default)]
    pub status: Option<String>,
    /// Set when completed: `success`, `failure`, `cancelled`, `timed_out`, ...
    #[serde(default)]
    pub conclusion: Option<String>,
    #[serde(default)]
    pub event: Option<String>,
    #[serde(default)]
    pub head_branch: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub html_url: Option<String>,
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub updated_at: Option<DateTime<Utc>>,
}

impl WorkflowRun {
    pub fn is_finished(&self) -> bool {
        self.status.as_deref() == Some("completed")
    }

    /// The identity key and request id named by the run's title, if it is a kfleet run for one
    /// identity.
    pub fn identity(&self) -> Option<(&str, &str)> {
        parse_run_title(&self.display_title).filter(|(key, _)| key.matches('/').count() == 3)
    }

    /// The request id in the run's title (single or batch kfleet runs).
    pub fn request_id(&self) -> Option<&str> {
        parse_run_title(&self.display_title).map(|(_, rid)| rid)
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct RunList {
    #[serde(default)]
    pub total_count: u64,
    #[serde(default)]
    pub workflow_runs: Vec<WorkflowRun>,
}

/// The workflow's `run-name`: `kfleet {key} [{request_id}]`.
pub fn run_title(key: &str, request_id: &str) -> String {
    format!("kfleet {key} [{request_id}]")
}

/// Reads `kfleet {key} [{request_id}]` back.
pub fn parse_run_title(title: &str) -> Option<(&str, &str)> {
    let rest = title.strip_prefix("kfleet ")?;
    let (key, rid) = rest.split_once(" [")?;
    Some((key, rid.strip_suffix(']')?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_round_trip() {
        let t = run_title("debian/13/x86_64/6.12.74+deb13+1-amd64", "r-1");
        assert_eq!(
            parse_run_title(&t),
            Some(("debian/13/x86_64/6.12.74+deb13+1-amd64", "r-1"))
        );
        assert_eq!(parse_run_title("Build driver"), None);
    }
}
