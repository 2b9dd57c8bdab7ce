//! `kfleet cancel`: cancel a build run.

use super::prelude::*;

pub(crate) fn cancel_cmd(args: CancelArgs, config: &Config) -> Result<ExitCode> {
    let client = args.build.client(config)?;
    match runtime()?.block_on(client.cancel_run(args.run_id))? {
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
