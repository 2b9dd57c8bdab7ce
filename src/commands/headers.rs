//! `kfleet headers`: kernel headers through the fallback chain.

use super::prelude::*;

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
                if format == ListFormat::Json {
                    outln!("{}", serde_json::to_string_pretty(&planned)?);
                } else {
                    outln!("plan for {} (offline: nothing was fetched)", id.key());
                    for (i, s) in planned.iter().enumerate() {
                        outln!(
                            "{}. {} ({}) for {}",
                            i + 1,
                            s.name,
                            s.kind.as_str(),
                            s.packages.join(", ")
                        );
                        for url in &s.urls {
                            outln!("   {url}");
                        }
                    }
                }
                return Ok(ExitCode::SUCCESS);
            }
            let resolver = chain.resolver(config)?;
            let resolution = runtime()?.block_on(resolver.resolve(&id))?;
            if format == ListFormat::Json {
                outln!("{}", serde_json::to_string_pretty(&resolution)?);
            } else {
                let rows: Vec<Vec<String>> = resolution
                    .attempts
                    .iter()
                    .map(|a| {
                        vec![
                            a.source.clone(),
                            a.kind.as_str().to_string(),
                            format!("{} ms", a.millis),
                            a.outcome.clone(),
                            a.url.clone(),
                        ]
                    })
                    .collect();
                out!(
                    "{}",
                    report::grid(&["SOURCE", "KIND", "TIME", "OUTCOME", "URL"], &rows, &[2])
                );
                match &resolution.resolved_by {
                    Some(by) => {
                        outln!("\nresolved by {by}:");
                        for p in &resolution.packages {
                            let sum = p
                                .checksum
                                .as_ref()
                                .map(|c| format!(" {}:{}", c.algorithm, c.hex))
                                .unwrap_or_default();
                            outln!("  {}{sum}", p.url);
                        }
                    }
                    None => outln!("\nunresolvable: every source was tried"),
                }
            }
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
            eprintln!(
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
