//! GitHub Actions workflow runs (own model: octocrab's rejects fields GitHub sends as null) and the
//! `run-name` convention that ties a run to one identity and one request.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct WorkflowRun {
    pub id: u64,
    #[serde(default)]
    pub display_title: String,
    #[serde(default)]
    pub status: Option<RunStatus>,
    /// Set when completed.
    #[serde(default)]
    pub conclusion: Option<Conclusion>,
    #[serde(default)]
    pub event: Option<String>,
    #[serde(default)]
    pub html_url: Option<String>,
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub updated_at: Option<DateTime<Utc>>,
}

/// Where a run is, as GitHub names it; a state GitHub adds later reads as `Other`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Requested,
    Queued,
    Pending,
    Waiting,
    InProgress,
    Completed,
    #[serde(other)]
    Other,
}

/// How a completed run ended; a conclusion GitHub adds later reads as `Other`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Conclusion {
    Success,
    Failure,
    Cancelled,
    TimedOut,
    ActionRequired,
    Neutral,
    Skipped,
    Stale,
    StartupFailure,
    #[serde(other)]
    Other,
}

/// The wire names both ways, for statuses and conclusions alike.
macro_rules! wire_names {
    ($t:ty, $($variant:ident = $name:literal),+ $(,)?) => {
        impl $t {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $name,)+ }
            }
        }
        impl From<&str> for $t {
            fn from(s: &str) -> Self {
                match s { $($name => Self::$variant,)+ _ => Self::Other }
            }
        }
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_names!(
    RunStatus,
    Requested = "requested",
    Queued = "queued",
    Pending = "pending",
    Waiting = "waiting",
    InProgress = "in_progress",
    Completed = "completed",
    Other = "other"
);
wire_names!(
    Conclusion,
    Success = "success",
    Failure = "failure",
    Cancelled = "cancelled",
    TimedOut = "timed_out",
    ActionRequired = "action_required",
    Neutral = "neutral",
    Skipped = "skipped",
    Stale = "stale",
    StartupFailure = "startup_failure",
    Other = "other"
);

impl WorkflowRun {
    pub fn is_finished(&self) -> bool {
        self.status == Some(RunStatus::Completed)
    }

    /// Finished with success.
    pub fn succeeded(&self) -> bool {
        self.is_finished() && self.conclusion == Some(Conclusion::Success)
    }

    /// The identity key and request id named by the run's title, if it is a kfleet run for one
    /// identity.
    pub fn identity(&self) -> Option<(&str, &str)> {
        parse_run_title(&self.display_title)
            .filter(|t| t.key.matches('/').count() == 3)
            .map(|t| (t.key, t.request_id))
    }

    /// The driver version the run builds, from its title (runs titled before kfleet put the
    /// version there have none).
    pub fn driver_version(&self) -> Option<&str> {
        parse_run_title(&self.display_title).and_then(|t| t.driver_version)
    }

    /// The identity key, when the run builds it for `driver_version`.
    pub fn builds(&self, driver_version: &str) -> Option<&str> {
        let title = parse_run_title(&self.display_title)?;
        (title.key.matches('/').count() == 3 && title.driver_version == Some(driver_version))
            .then_some(title.key)
    }

    /// The request id in the run's title (single or batch kfleet runs).
    pub fn request_id(&self) -> Option<&str> {
        parse_run_title(&self.display_title).map(|t| t.request_id)
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct RunList {
    #[serde(default)]
    pub total_count: u64,
    #[serde(default)]
    pub workflow_runs: Vec<WorkflowRun>,
}

/// A kfleet run title read back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunTitle<'a> {
    /// An identity key, or `batch`.
    pub key: &'a str,
    pub driver_version: Option<&'a str>,
    pub request_id: &'a str,
}

/// The workflow's `run-name`: `kfleet {key} {driver_version} [{request_id}]`.
pub fn run_title(key: &str, driver_version: &str, request_id: &str) -> String {
    format!("kfleet {key} {driver_version} [{request_id}]")
}

/// Reads `kfleet {key} {driver_version} [{request_id}]` back (and the older
/// `kfleet {key} [{request_id}]`, without a version).
pub fn parse_run_title(title: &str) -> Option<RunTitle<'_>> {
    let rest = title.strip_prefix("kfleet ")?;
    let (head, rid) = rest.split_once(" [")?;
    let request_id = rid.strip_suffix(']')?;
    let (key, driver_version) = match head.split_once(' ') {
        Some((key, dv)) if !dv.is_empty() && !dv.contains(' ') => (key, Some(dv)),
        Some(_) => return None,
        None => (head, None),
    };
    Some(RunTitle {
        key,
        driver_version,
        request_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_round_trip() {
        let t = run_title(
            "debian/13/x86_64/6.12.74+deb13+1-amd64",
            "v0.6.0-rc.1",
            "r-1",
        );
        assert_eq!(
            parse_run_title(&t),
            Some(RunTitle {
                key: "debian/13/x86_64/6.12.74+deb13+1-amd64",
                driver_version: Some("v0.6.0-rc.1"),
                request_id: "r-1"
            })
        );
        assert_eq!(
            parse_run_title("kfleet a/b/c/d [r-2]").map(|t| t.driver_version),
            Some(None)
        );
        assert_eq!(parse_run_title("Build driver"), None);
    }

    #[test]
    fn states_github_adds_later_read_as_other() {
        let run: WorkflowRun = serde_json::from_str(
            r#"{"id": 1, "status": "deferred", "conclusion": "postponed", "display_title": ""}"#,
        )
        .unwrap();
        assert_eq!(run.status, Some(RunStatus::Other));
        assert_eq!(run.conclusion, Some(Conclusion::Other));
        let done: WorkflowRun =
            serde_json::from_str(r#"{"id": 2, "status": "completed", "conclusion": "timed_out"}"#)
                .unwrap();
        assert!(done.is_finished() && !done.succeeded());
        assert_eq!(done.conclusion.map(Conclusion::as_str), Some("timed_out"));
    }
}

/// One job of a run, as `GET /repos/{owner}/{repo}/actions/runs/{id}/jobs` lists it.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct Job {
    pub id: u64,
    #[serde(default)]
    pub run_id: u64,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub status: Option<RunStatus>,
    #[serde(default)]
    pub conclusion: Option<Conclusion>,
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub completed_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub html_url: Option<String>,
    #[serde(default)]
    pub steps: Vec<JobStep>,
}

/// One step of a job.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct JobStep {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub number: u64,
    #[serde(default)]
    pub status: Option<RunStatus>,
    #[serde(default)]
    pub conclusion: Option<Conclusion>,
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub completed_at: Option<DateTime<Utc>>,
}

/// A page of a run's jobs.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct JobList {
    #[serde(default)]
    pub total_count: u64,
    #[serde(default)]
    pub jobs: Vec<Job>,
}
