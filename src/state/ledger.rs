//! The dispatch ledger of kfleet before the state store: JSON Lines in the state directory, one
//! record per accepted request, dispatch and state change. Read once, to import it into the
//! store ([`super::import`]).

use crate::text::Cause;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LedgerEvent {
    /// The build service handed a request id to a node; its dispatch follows. Recorded before the
    /// answer, so an id survives a crash between the answer and the dispatch.
    Accepted,
    Dispatched,
    Finished,
    TimedOut,
    Cancelled,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LedgerRecord {
    pub at: DateTime<Utc>,
    pub event: LedgerEvent,
    pub key: String,
    pub request_id: String,
    pub run_id: Option<u64>,
    #[serde(default)]
    pub conclusion: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    /// Release the build uploads to.
    #[serde(default)]
    pub driver_version: Option<String>,
}

/// What the ledger says about one identity: its latest dispatch and whether that ended.
#[derive(Clone, Debug, PartialEq)]
pub struct LedgerEntry {
    pub dispatched_at: DateTime<Utc>,
    pub request_id: String,
    pub run_id: Option<u64>,
    pub url: Option<String>,
    pub driver_version: Option<String>,
    /// The last state change after the dispatch, if any.
    pub last_event: LedgerEvent,
    pub conclusion: Option<String>,
}

impl LedgerEntry {
    pub fn is_open(&self) -> bool {
        self.last_event == LedgerEvent::Dispatched
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "ledger {path}:{line}: not a ledger record ({source}); the file is damaged before its last line, fix or move it"
    )]
    Corrupt {
        path: String,
        line: usize,
        source: Cause,
    },
}

#[derive(Clone, Debug)]
pub struct Ledger {
    path: PathBuf,
}

/// What a build is for: the identity key and the driver version (release tag). Two versions of
/// the driver for one kernel are two builds.
pub type BuildKey = (String, String);

/// A ledger read back: the state per identity and driver version, and a warning when the last
/// line was torn.
#[derive(Debug, Default)]
pub struct LedgerState {
    /// The latest dispatch per identity and driver version (records written before versions were
    /// recorded have an empty version).
    pub entries: HashMap<BuildKey, LedgerEntry>,
    /// The service's accepted requests, by request id.
    pub accepted: HashMap<String, LedgerRecord>,
    /// Every request id with a dispatch record (`entries` keeps only the latest per identity).
    pub dispatched_ids: std::collections::HashSet<String>,
    pub records: usize,
    pub torn_tail: Option<String>,
}

impl Ledger {
    /// The ledger in `state_dir` (created if needed).
    pub fn open(state_dir: &Path) -> Result<Self, LedgerError> {
        crate::fsio::create_private_dir(state_dir).map_err(|source| LedgerError::Io {
            path: state_dir.display().to_string(),
            source,
        })?;
        Ok(Self {
            path: state_dir.join("ledger.jsonl"),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self) -> impl FnOnce(std::io::Error) -> LedgerError + '_ {
        |source| LedgerError::Io {
            path: self.path.display().to_string(),
            source,
        }
    }

    /// Reads every record. A torn last line (a crash mid-write) is tolerated and reported; a bad
    /// line before the end is an error, since guessing could dispatch twice.
    pub fn load(&self) -> Result<LedgerState, LedgerError> {
        let text = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LedgerState::default()),
            Err(e) => return Err(self.io()(e)),
        };
        let mut state = LedgerState::default();
        let mut by_request: HashMap<String, BuildKey> = HashMap::new();
        let lines: Vec<&[u8]> = text.split(|b| *b == b'\n').collect();
        let last_index = lines.len().saturating_sub(1);
        for (i, line) in lines.iter().enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let record: LedgerRecord = match serde_json::from_slice(line) {
                Ok(r) => r,
                Err(e) if i == last_index => {
                    state.torn_tail = Some(format!(
                        "{}:{}: ignoring a torn last record ({e}); it was never completed",
                        self.path.display(),
                        i + 1
                    ));
                    continue;
                }
                Err(e) => {
                    return Err(LedgerError::Corrupt {
                        path: self.path.display().to_string(),
                        line: i + 1,
                        source: Cause::of(e),
                    });
                }
            };
            state.records += 1;
            match record.event {
                LedgerEvent::Accepted => {
                    state.accepted.insert(record.request_id.clone(), record);
                }
                LedgerEvent::Dispatched => {
                    state.dispatched_ids.insert(record.request_id.clone());
                    let build = (
                        record.key.clone(),
                        record.driver_version.clone().unwrap_or_default(),
                    );
                    by_request.insert(record.request_id.clone(), build.clone());
                    state.entries.insert(
                        build,
                        LedgerEntry {
                            dispatched_at: record.at,
                            request_id: record.request_id,
                            run_id: record.run_id,
                            url: record.url,
                            driver_version: record.driver_version,
                            last_event: LedgerEvent::Dispatched,
                            conclusion: None,
                        },
                    );
                }
                event => {
                    if let Some(build) = by_request.get(&record.request_id)
                        && let Some(entry) = state.entries.get_mut(build)
                        && entry.request_id == record.request_id
                    {
                        entry.last_event = event;
                        entry.conclusion = record.conclusion;
                    }
                }
            }
        }
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(event: LedgerEvent, key: &str, rid: &str) -> LedgerRecord {
        LedgerRecord {
            at: Utc::now(),
            event,
            key: key.into(),
            request_id: rid.into(),
            run_id: Some(1),
            conclusion: None,
            url: None,
            driver_version: Some("v1".into()),
        }
    }

    fn build(key: &str, dv: &str) -> BuildKey {
        (key.to_string(), dv.to_string())
    }

    fn write(ledger: &Ledger, records: &[LedgerRecord], tail: &str) {
        let mut text = String::new();
        for r in records {
            text.push_str(&serde_json::to_string(r).unwrap());
            text.push('\n');
        }
        text.push_str(tail);
        std::fs::write(ledger.path(), text).unwrap();
    }

    #[test]
    fn a_torn_tail_is_ignored_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        write(
            &ledger,
            &[
                record(LedgerEvent::Dispatched, "a", "r1"),
                record(LedgerEvent::Dispatched, "b", "r2"),
                record(LedgerEvent::Finished, "b", "r2"),
                record(LedgerEvent::Accepted, "d", "r4"),
            ],
            "{\"at\":\"2026-",
        );
        let state = ledger.load().unwrap();
        assert_eq!(state.records, 4);
        assert!(state.entries[&build("a", "v1")].is_open());
        assert!(!state.entries[&build("b", "v1")].is_open());
        assert!(
            !state.entries.contains_key(&build("d", "v1")),
            "accepted is not dispatched"
        );
        assert_eq!(state.accepted["r4"].key, "d");
        assert!(
            state
                .torn_tail
                .unwrap()
                .contains("ledger.jsonl:5: ignoring a torn last record")
        );
    }

    #[test]
    fn damage_before_the_last_line_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        write(
            &ledger,
            &[],
            "{not json\n{\"at\":\"2026-01-01T00:00:00Z\",\"event\":\"dispatched\",\"key\":\"c\",\"request_id\":\"r3\",\"run_id\":1}\n",
        );
        let err = ledger.load().unwrap_err();
        assert!(
            err.to_string()
                .contains("ledger.jsonl:1: not a ledger record"),
            "{err}"
        );
    }

    #[test]
    fn two_driver_versions_of_one_kernel_are_two_builds() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        let mut old = record(LedgerEvent::Dispatched, "k", "r1");
        old.driver_version = Some("v0.5.15".into());
        let mut new = record(LedgerEvent::Dispatched, "k", "r2");
        new.driver_version = Some("v0.5.16".into());
        let mut done = record(LedgerEvent::Finished, "k", "r1");
        done.driver_version = None;
        write(&ledger, &[old, new, done], "");
        let state = ledger.load().unwrap();
        assert!(!state.entries[&build("k", "v0.5.15")].is_open());
        assert!(state.entries[&build("k", "v0.5.16")].is_open());
    }
}
