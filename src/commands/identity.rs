//! `kfleet identity`: check and show kernel identities.

use crate::cli::IdentityCommand;
use crate::config::Config;
use crate::identity::RawIdentity;
use crate::identity::Verdict;
use crate::identity::check;
use crate::node::local_identity;
use anyhow::Context;
use anyhow::Result;
use std::process::ExitCode;

pub(crate) fn identity_cmd(cmd: IdentityCommand, config: &Config) -> Result<ExitCode> {
    let checked = match &cmd {
        IdentityCommand::AssetName {
            identity,
            driver_version,
            naming,
        } => {
            let id = identity.identity()?;
            crate::identity::check_driver_version(driver_version)
                .map_err(|e| anyhow::anyhow!("--driver-version: {e}"))?;
            let asset = naming.template(config)?.render(&id, driver_version);
            if super::json_wanted() {
                super::print_json(&serde_json::json!({
                    "key": id.key(), "driver_version": driver_version, "asset": asset,
                }))?;
            } else {
                outln!("{asset}");
            }
            return Ok(ExitCode::SUCCESS);
        }
        IdentityCommand::Check {
            distribution,
            distro_version,
            architecture,
            kernel_version,
        } => check(&RawIdentity {
            distribution,
            distro_version,
            architecture,
            kernel_version,
        }),
        IdentityCommand::Local {
            os_release,
            host_root,
        } => match &host_root {
            Some(root) => crate::node::host_identity(root).with_context(|| {
                format!(
                    "cannot determine the identity of the host at {}",
                    root.display()
                )
            })?,
            None => local_identity(os_release.as_deref())
                .context("cannot determine this machine's identity")?,
        },
    };
    if super::json_wanted() {
        let (verdict, reason) = match &checked.verdict {
            Verdict::Valid(_) => ("valid", None),
            Verdict::Unsupported(r) => ("unsupported", Some(r.to_string())),
            Verdict::Invalid(r) => ("invalid", Some(r.to_string())),
        };
        super::print_json(&serde_json::json!({
            "key": checked.key(), "verdict": verdict, "reason": reason,
        }))?;
        return Ok(ExitCode::from(u8::from(verdict != "valid")));
    }
    match &checked.verdict {
        Verdict::Valid(_) => {
            outln!("{}", checked.key());
            Ok(ExitCode::SUCCESS)
        }
        Verdict::Unsupported(reason) => {
            outln!("{}", checked.key());
            tracing::info!("unsupported: {reason}");
            Ok(ExitCode::from(1))
        }
        Verdict::Invalid(reason) => {
            tracing::info!("invalid: {reason}");
            Ok(ExitCode::from(1))
        }
    }
}
