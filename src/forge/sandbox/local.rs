//! Dispatched runs executed by the local runner: each build-driver job of the run (one, or one per
//! identity of a batch) runs in turn against this sandbox; the run succeeds when all do.

use super::*;
use crate::localrun::{JobTarget, RunnerConfig};

pub(super) fn start(
    state: &Arc<SandboxState>,
    runner: RunnerConfig,
    run_id: u64,
    jobs: Vec<BTreeMap<String, String>>,
) -> LocalJob {
    let outcome = Arc::new(Mutex::new(None));
    let target = JobTarget {
        api_url: state.base_url.clone(),
        repo: state.repo.clone(),
        // Without a token of its own the sandbox accepts any; the job still needs one to present.
        token: state.token.clone().unwrap_or_else(|| "sandbox".into()),
        run_id,
    };
    let done = outcome.clone();
    let log = if jobs.len() > 1 {
        runner
            .work_dir
            .join(format!("run-{run_id}-batch"))
            .join("run-1")
    } else {
        runner.work_dir.join(format!("run-{run_id}"))
    }
    .join("job.log");
    let task = tokio::spawn(async move {
        let mut success = !jobs.is_empty();
        for (n, inputs) in jobs.iter().enumerate() {
            let mut runner = runner.clone();
            if jobs.len() > 1 {
                runner.work_dir = runner.work_dir.join(format!("run-{run_id}-batch"));
            }
            let target = JobTarget {
                run_id: if jobs.len() > 1 { n as u64 + 1 } else { run_id },
                ..target.clone()
            };
            let job = runner.run("build-driver.yml", inputs, &target).await;
            let what = inputs.get("kernel_version").map_or("", String::as_str);
            if job.success {
                tracing::info!("local run {run_id} ({what}): {}", job.summary);
            } else {
                tracing::warn!(
                    "local run {run_id} ({what}) failed: {} (log: {})",
                    job.summary,
                    job.log.display()
                );
                success = false;
                break;
            }
        }
        *done.locked() = Some(success);
    });
    LocalJob {
        outcome,
        task: task.abort_handle(),
        log,
    }
}
