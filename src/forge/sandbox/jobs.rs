//! A run's jobs and logs as GitHub serves them: `GET .../actions/runs/{id}/jobs` (one job per
//! run, with its steps), and `GET .../actions/jobs/{id}/logs`, which answers `302` with a
//! short-lived URL elsewhere that needs no token (here a path signed for the sandbox's token).
//! A simulated run's steps follow its clock (the build step fails when the run does); a local
//! run's steps and log are the runner's own (`## STEP` headers in its job log).

use super::*;
use crate::forge::{Job, JobStep};

/// Where a job's log is served without credentials; the gatekeeper lets it through.
pub(super) const LOG_PATH: &str = "/_job-logs/";

/// The steps of a simulated run's job, in order.
const SIMULATED_STEPS: [&str; 4] = [
    "Set up job",
    "Resolve kernel headers",
    "Build the module",
    "Upload the artifact",
];
/// The simulated step that fails when the run fails.
const FAILING_STEP: usize = 2;

pub(super) fn routes() -> Router<Arc<SandboxState>> {
    Router::new()
        .route(
            "/repos/{owner}/{repo}/actions/runs/{id}/jobs",
            get(list_jobs),
        )
        .route("/repos/{owner}/{repo}/actions/jobs/{id}", get(get_job))
        .route(
            "/repos/{owner}/{repo}/actions/jobs/{id}/logs",
            get(job_logs),
        )
        .route(
            "/repos/{owner}/{repo}/actions/runs/{id}/logs",
            get(run_logs),
        )
        .route("/_job-logs/{id}/{signature}", get(log_blob))
        .route("/_job-logs/{id}/{signature}/logs.zip", get(run_log_archive))
}

/// A signature for job `id`'s log URL: only the sandbox that handed it out serves it.
fn signature(state: &SandboxState, id: u64) -> String {
    let secret = state.token.as_deref().unwrap_or(&state.base_url);
    api::hex_sha256(format!("{secret}\0job-log\0{id}").as_bytes())[..32].to_string()
}

/// `302 Found` to `location`, as GitHub answers for logs.
fn found(location: &str) -> Response {
    (
        StatusCode::FOUND,
        [(
            header::LOCATION,
            HeaderValue::from_str(location).unwrap_or(HeaderValue::from_static("/")),
        )],
    )
        .into_response()
}

async fn list_jobs(
    State(state): State<Arc<SandboxState>>,
    Path((owner, repo, id)): Path<(String, String, u64)>,
) -> Response {
    match job_json(&state, (&owner, &repo), id) {
        Some(job) => Json(serde_json::json!({"total_count": 1, "jobs": [job]})).into_response(),
        None => api::not_found().await,
    }
}

/// `GET /repos/{owner}/{repo}/actions/jobs/{id}`: one job (a run's one job has the run's id).
async fn get_job(
    State(state): State<Arc<SandboxState>>,
    Path((owner, repo, id)): Path<(String, String, u64)>,
) -> Response {
    match job_json(&state, (&owner, &repo), id) {
        Some(job) => Json(job).into_response(),
        None => api::not_found().await,
    }
}

/// Run `id`'s job in GitHub's shape, if the run exists in this repository.
fn job_json(
    state: &SandboxState,
    (owner, repo): (&str, &str),
    id: u64,
) -> Option<serde_json::Value> {
    if !api::same_repo(state, owner, repo) {
        return None;
    }
    state.advance();
    let (job, _) = job_of(state, id)?;
    let runs = state.runs.locked();
    let sim = runs.get(&id)?;
    let created = sim.run.created_at.unwrap_or(state.started_at);
    Some(api::repo_of(state, owner, repo).job(&job, sim, created))
}

async fn job_logs(
    State(state): State<Arc<SandboxState>>,
    Path((owner, repo, id)): Path<(String, String, u64)>,
) -> Response {
    if !api::same_repo(&state, &owner, &repo) {
        return api::not_found().await;
    }
    if !state.runs.locked().contains_key(&id) {
        return api::not_found().await;
    }
    found(&format!(
        "{}{LOG_PATH}{id}/{}",
        state.base_url,
        signature(&state, id)
    ))
}

/// `GET .../actions/runs/{id}/logs`: `302` to a zip archive of the run's job logs.
async fn run_logs(
    State(state): State<Arc<SandboxState>>,
    Path((owner, repo, id)): Path<(String, String, u64)>,
) -> Response {
    if !api::same_repo(&state, &owner, &repo) || !state.runs.locked().contains_key(&id) {
        return api::not_found().await;
    }
    found(&format!(
        "{}{LOG_PATH}{id}/{}/logs.zip",
        state.base_url,
        signature(&state, id)
    ))
}

async fn run_log_archive(
    State(state): State<Arc<SandboxState>>,
    Path((id, given)): Path<(u64, String)>,
) -> Response {
    signed_log(&state, id, &given, true).await
}

/// A zip archive of `files`, stored without compression (GitHub's run log archive is a zip
/// of `N_job.txt` files). Entries and the archive stay far below zip's 4 GiB limits: a job
/// log is served from at most its last MiB.
fn stored_zip(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    const DOS_DATE_1980_01_01: u16 = 0x21;
    const UTF8_NAMES: u16 = 1 << 11;
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in files {
        let mut crc = flate2::Crc::new();
        crc.update(data);
        let offset = out.len() as u32;
        let fields = |out: &mut Vec<u8>| {
            out.extend_from_slice(&UTF8_NAMES.to_le_bytes());
            out.extend_from_slice(&0u16.to_le_bytes()); // stored
            out.extend_from_slice(&0u16.to_le_bytes()); // time
            out.extend_from_slice(&DOS_DATE_1980_01_01.to_le_bytes());
            out.extend_from_slice(&crc.sum().to_le_bytes());
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(&0u16.to_le_bytes()); // extra
        };
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        out.extend_from_slice(&20u16.to_le_bytes());
        fields(&mut out);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&20u16.to_le_bytes());
        central.extend_from_slice(&20u16.to_le_bytes());
        fields(&mut central);
        central.extend_from_slice(&[0; 6]); // comment length, disk, internal attributes
        central.extend_from_slice(&0u32.to_le_bytes()); // external attributes
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let central_at = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0; 4]); // this disk, the central directory's disk
    out.extend_from_slice(&(files.len() as u16).to_le_bytes());
    out.extend_from_slice(&(files.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&central_at.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes()); // comment
    out
}

async fn log_blob(
    State(state): State<Arc<SandboxState>>,
    Path((id, given)): Path<(u64, String)>,
) -> Response {
    signed_log(&state, id, &given, false).await
}

/// Job `id`'s log at a URL signed for it: the text, or the run's zip archive of it.
async fn signed_log(state: &SandboxState, id: u64, given: &str, archive: bool) -> Response {
    if given != signature(state, id) {
        return api::github_error(StatusCode::FORBIDDEN, "the log URL is not valid");
    }
    state.advance();
    let Some((job, log)) = job_of(state, id) else {
        return api::not_found().await;
    };
    if archive {
        let zip = stored_zip(&[(format!("0_{}.txt", job.name), log.into_bytes())]);
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/zip")],
            zip,
        )
            .into_response();
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        log,
    )
        .into_response()
}

/// Run `id`'s one job (its id is the run's) and its log so far.
fn job_of(state: &SandboxState, id: u64) -> Option<(Job, String)> {
    let runs = state.runs.locked();
    let sim = runs.get(&id)?;
    let run = &sim.run;
    let (steps, log) = match &sim.local {
        Some(local) => local_steps(run, &local.log),
        None => simulated_steps(state, sim),
    };
    let started = run.created_at.map(|c| c + state.simulation.queue_time);
    let started = started.filter(|_| run.status != Some(RunStatus::Queued));
    let job = Job {
        id,
        run_id: id,
        name: "build".into(),
        status: run.status,
        conclusion: run.conclusion,
        started_at: started,
        completed_at: run.conclusion.and(run.updated_at),
        html_url: run.html_url.as_ref().map(|u| format!("{u}/job/{id}")),
        steps,
    };
    Some((job, log))
}

fn step(number: usize, name: &str, status: RunStatus, conclusion: Option<Conclusion>) -> JobStep {
    JobStep {
        name: name.to_string(),
        number: number as u64 + 1,
        status: Some(status),
        conclusion,
        started_at: None,
        completed_at: None,
    }
}

/// The simulated job: its steps share the run time in equal parts on the sandbox's clock.
fn simulated_steps(state: &SandboxState, sim: &SimRun) -> (Vec<JobStep>, String) {
    let queue = state.simulation.queue_time;
    let part = state.simulation.run_time / SIMULATED_STEPS.len() as u32;
    let elapsed = state.clock.instant().duration_since(sim.started);
    let failed = sim.run.conclusion == Some(Conclusion::Failure);
    let cancelled = sim.run.conclusion == Some(Conclusion::Cancelled);
    let done = sim.run.status == Some(RunStatus::Completed);
    let mut steps = Vec::new();
    let mut log = String::new();
    for (i, name) in SIMULATED_STEPS.iter().enumerate() {
        let begins = queue + part * i as u32;
        let ends = begins + part;
        let (status, conclusion) = if done && failed && i > FAILING_STEP {
            (RunStatus::Completed, Some(Conclusion::Skipped))
        } else if done && failed && i == FAILING_STEP {
            (RunStatus::Completed, Some(Conclusion::Failure))
        } else if done && cancelled && elapsed < ends {
            (RunStatus::Completed, Some(Conclusion::Cancelled))
        } else if done || elapsed >= ends {
            (RunStatus::Completed, Some(Conclusion::Success))
        } else if elapsed >= begins {
            (RunStatus::InProgress, None)
        } else {
            (RunStatus::Queued, None)
        };
        let mut s = step(i, name, status, conclusion);
        let at = |d: Duration| {
            sim.run
                .created_at
                .and_then(|c| chrono::Duration::from_std(d).ok().map(|d| c + d))
        };
        if status != RunStatus::Queued && conclusion != Some(Conclusion::Skipped) {
            s.started_at = at(begins);
            if status == RunStatus::Completed {
                s.completed_at = at(ends.min(elapsed.max(begins)));
            }
            log.push_str(&format!("##[group]{name}\n"));
            match (i, conclusion) {
                (FAILING_STEP, Some(Conclusion::Failure)) => {
                    log.push_str(&format!(
                        "make -C /lib/modules/build M=/src modules\n##[error]{}\n",
                        sim.fails.as_deref().unwrap_or("the build failed")
                    ));
                }
                _ => log.push_str(&format!("{name}: ok\n")),
            }
            log.push_str("##[endgroup]\n");
        }
        steps.push(s);
    }
    (steps, log)
}

/// A local run's steps from its job log's `## STEP` headers: those before the last are done;
/// the last runs while the run does, then ends as the run ended.
fn local_steps(run: &WorkflowRun, log_path: &std::path::Path) -> (Vec<JobStep>, String) {
    // The log is the runner's own file, bounded by the job's output; only its tail is served.
    let text = std::fs::read(log_path)
        .map(|b| {
            let tail = b.len().saturating_sub(1 << 20);
            String::from_utf8_lossy(&b[tail..]).into_owned()
        })
        .unwrap_or_default();
    let names: Vec<(String, bool)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(|h| match h.split_once(" (skipped: ") {
            Some((name, _)) => (name.to_string(), true),
            None => (h.to_string(), false),
        })
        .collect();
    let last = names.iter().rposition(|(_, skipped)| !skipped);
    let done = run.status == Some(RunStatus::Completed);
    let steps = names
        .iter()
        .enumerate()
        .map(|(i, (name, skipped))| {
            let (status, conclusion) = if *skipped {
                (RunStatus::Completed, Some(Conclusion::Skipped))
            } else if Some(i) == last && !done {
                (RunStatus::InProgress, None)
            } else if Some(i) == last {
                (RunStatus::Completed, run.conclusion)
            } else {
                (RunStatus::Completed, Some(Conclusion::Success))
            };
            step(i, name, status, conclusion)
        })
        .collect();
    (steps, text)
}
