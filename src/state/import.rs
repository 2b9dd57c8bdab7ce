//! The one-time import of an old `ledger.jsonl` into the store, kept afterwards as
//! `ledger.jsonl.imported`. Importing twice (two processes starting at once) inserts nothing new.

use super::ledger::{Ledger, LedgerEvent};
use super::{BuildRecord, Phase, Store, StoreError};
use crate::text::Cause;
use std::path::Path;

fn phase_of(event: LedgerEvent) -> Phase {
    match event {
        LedgerEvent::Accepted => Phase::Claimed,
        LedgerEvent::Dispatched => Phase::Dispatched,
        LedgerEvent::Finished => Phase::Finished,
        LedgerEvent::TimedOut => Phase::TimedOut,
        LedgerEvent::Cancelled => Phase::Cancelled,
    }
}

/// Who holds an imported claim: nobody, so its lease has already ended and the build service
/// settles it (dispatches it if a node may still wait, fails it otherwise).
const IMPORTED: &str = "ledger.jsonl import";

pub(super) async fn import_ledger(store: &Store, path: &Path) -> Result<(), StoreError> {
    let invalid = |message: String| StoreError::Invalid {
        store: store.label(),
        source: Cause::from(message),
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let ledger = Ledger::open(dir).map_err(|e| StoreError::Invalid {
        store: store.label(),
        source: Cause::of(e),
    })?;
    let state = ledger
        .load()
        .map_err(|e| invalid(format!("cannot import the old ledger: {e}")))?;
    if let Some(tail) = &state.torn_tail {
        tracing::warn!("{tail}");
    }
    let mut imported = 0usize;
    for ((key, driver_version), entry) in &state.entries {
        let record = BuildRecord {
            request_id: entry.request_id.clone(),
            key: key.clone(),
            driver_version: driver_version.clone(),
            phase: phase_of(entry.last_event),
            run_id: entry.run_id,
            url: entry.url.clone(),
            conclusion: entry.conclusion.clone(),
            owner: None,
            lease_until: None,
            fence: 1,
            accepted_at: entry.dispatched_at,
            dispatched_at: Some(entry.dispatched_at),
            updated_at: entry.dispatched_at,
        };
        imported += usize::from(store.insert(&record).await?);
    }
    let mut accepted: Vec<_> = state.accepted.values().collect();
    accepted.sort_by_key(|r| r.at);
    for r in accepted {
        if state.dispatched_ids.contains(&r.request_id) {
            continue;
        }
        let mut record = BuildRecord {
            request_id: r.request_id.clone(),
            key: r.key.clone(),
            driver_version: r.driver_version.clone().unwrap_or_default(),
            phase: Phase::Claimed,
            run_id: None,
            url: None,
            conclusion: None,
            owner: Some(IMPORTED.into()),
            // Its holder, the old process, is gone: nothing to wait for before taking it over.
            lease_until: None,
            fence: 1,
            accepted_at: r.at,
            dispatched_at: None,
            updated_at: r.at,
        };
        if !store.insert(&record).await? {
            // Another build of the kernel is open: the id is answered, not lost.
            record.phase = Phase::Failed;
            record.owner = None;
            record.lease_until = None;
            record.conclusion = Some(
                "another build of this kernel was under way when the ledger was imported; ask again"
                    .into(),
            );
            store.insert(&record).await?;
        }
        imported += 1;
    }
    let kept = path.with_extension("jsonl.imported");
    match std::fs::rename(path, &kept) {
        Ok(()) => {
            tracing::info!(
                "imported {imported} builds from {} into {}; the old file is kept as {}",
                path.display(),
                store.label(),
                kept.display()
            );
            Ok(())
        }
        // Another process imported it at the same moment.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(invalid(format!(
            "imported {} but cannot rename it to {}: {e}",
            path.display(),
            kept.display()
        ))),
    }
}
