//! `kfleet runs`: build runs with their status against the deadline.

use crate::cli::RunsArgs;
use crate::cli::RunsSettings;
use crate::cli::runtime;
use crate::config::Config;
use crate::forge::WorkflowRun;
use crate::report;
use crate::report::ListFormat;
use anyhow::Result;
use std::process::ExitCode;

/// Whether the run is still active, and how long it has taken so far (or took).
fn elapsed(run: &WorkflowRun) -> (bool, std::time::Duration) {
    let end = if run.is_finished() {
        run.updated_at.unwrap_or_else(chrono::Utc::now)
    } else {
        chrono::Utc::now()
    };
    let elapsed = run
        .created_at
        .and_then(|c| end.signed_duration_since(c).to_std().ok())
        .unwrap_or_default();
    (!run.is_finished(), elapsed)
}

pub(crate) fn runs_cmd(args: RunsArgs, config: &Config) -> Result<ExitCode> {
    let RunsSettings { workflow, deadline } = RunsSettings::resolve(&args, config)?;
    let client = args.build.client(config)?;
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
            for run in &runs {
                let (active, took) = elapsed(run);
                let mut status = run.status.map(|s| s.to_string()).unwrap_or_default();
                if active && took > deadline {
                    status = "timed-out".into();
                    if args.build.cancel_on_timeout {
                        client.cancel_run(run.id).await?;
                        status = "timed-out, cancel requested".into();
                    }
                }
                rows.push(report::RunRow {
                    id: run.id,
                    identity: run
                        .identity()
                        .map(|(k, _)| k.to_string())
                        .unwrap_or_else(|| run.display_title.clone()),
                    status,
                    conclusion: run.conclusion.map(|c| c.to_string()),
                    elapsed_secs: took.as_secs(),
                    deadline_secs: deadline.as_secs(),
                    url: run.html_url.clone(),
                });
            }
            let active = runs.iter().any(|r| !r.is_finished());
            if args.watch && interactive && args.format == ListFormat::Table {
                out!("\x1b[H\x1b[2J");
            }
            out!("{}", report::runs(&rows, &workflow, args.format));
            if !args.watch || !active {
                return Ok(ExitCode::SUCCESS);
            }
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        }
    })
}
