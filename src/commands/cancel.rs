//! `kfleet cancel`: cancel a build run.

use crate::cli::CancelArgs;
use crate::cli::runtime;
use crate::config::Config;
use crate::forge::CancelOutcome;
use anyhow::Result;
use std::process::ExitCode;

pub(crate) fn cancel_cmd(args: CancelArgs, config: &Config) -> Result<ExitCode> {
    let client = args.build.client(config)?;
    let outcome = runtime()?.block_on(client.cancel_run(args.run_id))?;
    if super::json_wanted() {
        let said = match outcome {
            CancelOutcome::Requested => "requested",
            CancelOutcome::AlreadyFinished => "already_finished",
        };
        super::print_json(&serde_json::json!({"run_id": args.run_id, "cancel": said}))?;
        return Ok(ExitCode::SUCCESS);
    }
    match outcome {
        CancelOutcome::Requested => outln!("cancel requested for run {}", args.run_id),
        CancelOutcome::AlreadyFinished => {
            outln!(
                "run {} had already finished; nothing to cancel",
                args.run_id
            )
        }
    }
    Ok(ExitCode::SUCCESS)
}
