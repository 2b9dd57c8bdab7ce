//! Batch dispatch: identities that need a build go out through the batch workflow, at most 256
//! per matrix run and within GitHub's 65,535 characters of inputs.

use super::{BuildError, Decision, Planner, building, new_request_id};
use crate::identity::KernelIdentity;
use crate::state::Claim;
use crate::text::Cause;

/// GitHub's limits for one batch dispatch: jobs per matrix, characters of inputs.
pub const MAX_MATRIX_JOBS: usize = 256;
pub const MAX_INPUT_CHARS: usize = 65_535;
/// Room left in the inputs for `driver_version` and `request_id`.
pub(super) const BATCH_INPUT_BUDGET: usize = MAX_INPUT_CHARS - 512;

/// A workflow's inputs: every value a string, as `workflow_dispatch` takes them.
pub(super) fn workflow_inputs<const N: usize>(
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

impl Planner {
    /// Turns every `WouldDispatch` into a batch dispatch of at most 256 identities.
    pub(super) async fn dispatch_batches(
        &self,
        decisions: &mut [(KernelIdentity, Decision)],
        driver_version: &str,
        last_dispatch: &mut Option<tokio::time::Instant>,
    ) -> Result<(), BuildError> {
        let wanted: Vec<KernelIdentity> = decisions
            .iter()
            .filter(|(_, d)| *d == Decision::WouldDispatch)
            .map(|(id, _)| id.clone())
            .collect();
        for chunk in chunk_batch(&wanted, MAX_MATRIX_JOBS, BATCH_INPUT_BUDGET) {
            let rid = new_request_id();
            // Each identity is claimed under the batch's request id; one another process holds
            // is left to that process.
            let mut claims = Vec::with_capacity(chunk.len());
            for id in chunk {
                match self.claim(&rid, &id.key(), driver_version).await? {
                    Claim::Won(record) => claims.push((id, record)),
                    Claim::Held(other) => {
                        for (_, d) in decisions.iter_mut().filter(|(i, _)| *i == id) {
                            *d = building(&other);
                        }
                    }
                }
            }
            if claims.is_empty() {
                continue;
            }
            let batch: Vec<&KernelIdentity> = claims.iter().map(|(id, _)| id).collect();
            let identities =
                serde_json::to_string(&batch).map_err(|e| BuildError::Inputs(Cause::of(e)))?;
            let inputs = workflow_inputs([
                ("identities", identities),
                ("driver_version", driver_version.to_string()),
                ("request_id", rid.clone()),
            ]);
            self.pace(last_dispatch).await;
            let guard = super::ClaimGuard {
                planner: self,
                claims: claims.iter().map(|(_, record)| record.clone()).collect(),
                lease: self.config.claim_lease,
                taken_over: std::sync::atomic::AtomicBool::new(false),
            };
            let dispatched = self
                .client
                .dispatch(
                    &self.config.batch_workflow,
                    &self.config.git_ref,
                    &inputs,
                    &rid,
                    &guard,
                )
                .await;
            let run = match dispatched {
                Ok(run) => run,
                Err(e) => {
                    let reason = format!("the batch dispatch failed: {e}");
                    for (_, record) in &claims {
                        self.store
                            .abandon(record, &reason, self.clock.now())
                            .await?;
                    }
                    return Err(e.into());
                }
            };
            for (id, record) in &claims {
                self.store
                    .mark_dispatched(record, run.id, run.html_url.as_deref(), self.clock.now())
                    .await?;
                for (_, d) in decisions.iter_mut().filter(|(i, _)| i == id) {
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
