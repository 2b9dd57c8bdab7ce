//! `kfleet build-plan`: the environment one kernel's build runs in.

use super::prelude::*;
use crate::buildenv::{Planned, plan};

pub(crate) fn build_plan_cmd(args: BuildPlanArgs) -> Result<ExitCode> {
    let id = args.identity.identity()?;
    let chain = match &args.sources {
        Some(path) => crate::headers::Chain::load(path)?,
        None => crate::headers::Chain::builtin(),
    };
    let planned = plan(&id, &chain);
    match (&planned, args.format) {
        (_, PlanFormat::Json) => {
            outln!("{}", serde_json::to_string_pretty(&planned)?);
        }
        (Planned::Plan(p), PlanFormat::Env) => out!("{}", p.to_env()),
        (Planned::Plan(p), PlanFormat::Text) => {
            outln!("identity      {}", p.identity);
            outln!(
                "image         {}{}",
                p.image,
                if p.pinned { "" } else { " (tag, not pinned)" }
            );
            outln!("headers       {}", p.header_packages.join(" "));
            let compilers: Vec<String> = p
                .compilers
                .iter()
                .map(|c| format!("gcc {} ({} from {})", c.major, c.command, c.package))
                .collect();
            outln!(
                "compilers     {}",
                if compilers.is_empty() {
                    "the image's default gcc".to_string()
                } else {
                    compilers.join(", ")
                }
            );
            if let Some(major) = p.expected_gcc {
                outln!("kernel's gcc  {major} (CONFIG_CC_VERSION_TEXT in the headers decides)");
            }
            outln!("commands");
            for (n, command) in p.commands().iter().enumerate() {
                outln!("  {}. {command}", n + 1);
            }
            if !p.notes.is_empty() {
                outln!("notes");
                for note in &p.notes {
                    outln!("  - {note}");
                }
            }
        }
        (Planned::Unsupported { .. }, _) => {}
    }
    match planned {
        Planned::Plan(_) => Ok(ExitCode::SUCCESS),
        Planned::Unsupported { identity, reason } => {
            eprintln!("unsupported: {identity}: {reason}");
            Ok(ExitCode::from(1))
        }
    }
}
