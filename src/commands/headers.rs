//! `kfleet headers`: kernel headers through the fallback chain.

use crate::cli::HeadersCommand;
use crate::cli::runtime;
use crate::config::Config;
use crate::headers::plan;
use crate::report;
use anyhow::Result;
use anyhow::bail;
use std::process::ExitCode;

pub(crate) fn headers_cmd(cmd: HeadersCommand, config: &Config) -> Result<ExitCode> {
    match cmd {
        HeadersCommand::Resolve {
            identity,
            offline,
            format,
            chain,
        } => {
            let id = identity.identity()?;
            if offline {
                let planned = plan(&chain.chain()?, &id);
                if planned.is_empty() {
                    bail!("no header sources for {}", id.key());
                }
                out!("{}", report::header_plan(&id.key(), &planned, format));
                return Ok(ExitCode::SUCCESS);
            }
            let resolver = chain.resolver(config)?;
            let resolution = runtime()?.block_on(resolver.resolve(&id))?;
            out!("{}", report::header_resolution(&resolution, format));
            Ok(if resolution.resolved_by.is_some() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        HeadersCommand::Fetch {
            identity,
            out,
            chain,
        } => {
            let id = identity.identity()?;
            let resolver = chain.resolver(config)?;
            let (resolution, files) = runtime()?.block_on(resolver.fetch(&id, &out))?;
            tracing::info!(
                "headers for {} from {}",
                id.key(),
                resolution.resolved_by.as_deref().unwrap_or("?")
            );
            for f in files {
                outln!("{}", f.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
