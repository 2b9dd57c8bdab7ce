//! `kfleet runs`: build runs with their status against the deadline.

use super::prelude::*;

pub(crate) fn elapsed_text(run: &WorkflowRun) -> (String, bool, std::time::Duration) {
    let end = if run.is_finished() {
        run.updated_at.unwrap_or_else(chrono::Utc::now)
    } else {
        chrono::Utc::now()
    };
    let elapsed = run
        .created_at
        .and_then(|c| end.signed_duration_since(c).to_std().ok())
        .unwrap_or_default();
    let secs = elapsed.as_secs();
    (
        format!("{}m{:02}s", secs / 60, secs % 60),
        !run.is_finished(),
        elapsed,
    )
}

pub(crate) fn runs_cmd(args: RunsArgs, config: &Config) -> Result<ExitCode> {
    let client = args.build.client(config)?;
    let workflow = args.build.workflow(config);
    let deadline = args.build.deadline(config)?;
    let interactive = std::io::IsTerminal::is_terminal(&std::io::stdout());
    runtime()?.block_on(async {
        loop {
            let mut runs = client
                .list_runs(&workflow, None, Some(crate::forge::run_history_start()))
                .await?;
            if args.active {
                runs.retain(|r| !r.is_finished());
            }
            let mut rows = Vec::new();
            let mut json = Vec::new();
            for run in &runs {
                let (elapsed, active, took) = elapsed_text(run);
                let overdue = active && took > deadline;
                let mut status = run.status.map(|s| s.to_string()).unwrap_or_default();
                if overdue {
                    status = "timed-out".into();
                    if args.build.cancel_on_timeout {
                        client.cancel_run(run.id).await?;
                        status = "timed-out, cancel requested".into();
                    }
                }
                let identity = run
                    .identity()
                    .map(|(k, _)| k.to_string())
                    .unwrap_or_else(|| run.display_title.clone());
                json.push(serde_json::json!({
                    "id": run.id, "identity": identity, "status": status,
                    "conclusion": run.conclusion, "elapsed_secs": took.as_secs(),
                    "deadline_secs": deadline.as_secs(), "url": run.html_url,
                }));
                rows.push(vec![
                    run.id.to_string(),
                    identity,
                    status,
                    run.conclusion.map(|c| c.to_string()).unwrap_or_default(),
                    format!("{elapsed} / {}m", deadline.as_secs() / 60),
                    run.html_url.clone().unwrap_or_default(),
                ]);
            }
            let active = runs.iter().any(|r| !r.is_finished());
            if args.format == ListFormat::Json {
                outln!("{}", serde_json::to_string_pretty(&json)?);
            } else {
                if args.watch && interactive {
                    out!("\x1b[H\x1b[2J");
                }
                out!(
                    "{}",
                    report::grid(
                        &[
                            "RUN",
                            "IDENTITY",
                            "STATUS",
                            "CONCLUSION",
                            "ELAPSED / DEADLINE",
                            "URL"
                        ],
                        &rows,
                        &[]
                    )
                );
                if rows.is_empty() {
                    outln!("no runs of {workflow}");
                }
            }
            if !args.watch || !active {
                return Ok(ExitCode::SUCCESS);
            }
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        }
    })
}
