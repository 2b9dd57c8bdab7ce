//! What the planner decided for one identity, and the identity keys a user typed turned into
//! identities to plan (or decisions of their own when they are not valid).

use crate::forge::RunStatus;
use crate::identity::{KernelIdentity, Rejection};
use serde::Serialize;

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
    /// The release cannot take the artifact (an immutable release): nothing is dispatched.
    Refused {
        reason: String,
    },
    /// The release already has the artifact.
    Available {
        asset: String,
        url: Option<String>,
        digest: Option<String>,
        /// The release's `.sha256` file for the asset, when it has one.
        checksum_url: Option<String>,
        /// The release's Sigstore bundle for the asset, when it has one.
        provenance_url: Option<String>,
    },
    /// A run for the identity is queued or in progress.
    Building {
        run_id: Option<u64>,
        /// As GitHub last said; `None`: dispatched, not seen in a listing yet.
        status: Option<RunStatus>,
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
            Self::Refused { reason } => format!("refused: {reason}"),
            Self::Available { asset, .. } => format!("available: {asset}"),
            Self::Building {
                run_id,
                status,
                url: u,
                ..
            } => {
                let status = status.map_or_else(|| "dispatched".to_string(), |s| s.to_string());
                match run_id {
                    Some(id) => format!("already building: run {id} is {status}{}", url(u)),
                    None => format!("already building: {status}"),
                }
            }
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

/// Identity keys as a user or a file gave them: each one parsed once, into an identity to plan or
/// the decision that it cannot be (`invalid`, `unsupported`).
pub fn parse_keys(keys: &[String]) -> Vec<Result<KernelIdentity, Box<(String, Decision)>>> {
    keys.iter()
        .map(|key| {
            KernelIdentity::from_key(key).map_err(|rejection| {
                let decision = match rejection {
                    Rejection::Invalid(reason) => Decision::Invalid { reason },
                    Rejection::Unsupported(reason) => Decision::Unsupported { reason },
                };
                Box::new((key.clone(), decision))
            })
        })
        .collect()
}

/// Puts planned decisions (in the order of the valid keys) back among the rejected keys, in the
/// order the keys were given.
pub fn merge_decisions(
    parsed: Vec<Result<KernelIdentity, Box<(String, Decision)>>>,
    planned: Vec<(KernelIdentity, Decision)>,
) -> Vec<(String, Decision)> {
    let mut planned = planned.into_iter();
    parsed
        .into_iter()
        .filter_map(|p| match p {
            Ok(_) => planned.next().map(|(id, d)| (id.key(), d)),
            Err(rejected) => Some(*rejected),
        })
        .collect()
}
