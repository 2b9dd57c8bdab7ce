//! `kfleet upcoming`: the kernels the distributions already publish on the lines the fleet runs,
//! newer than the newest the fleet runs on each, and whether the release has them.

use super::prelude::*;
use crate::headers::{FleetLine, Upcoming, fleet_lines};
use crate::identity::KernelIdentity;
use crate::inventory::FleetGroups;
use std::collections::HashSet;

#[derive(serde::Serialize)]
struct Row<'a> {
    line: &'a str,
    nodes: u64,
    fleet_newest: &'a str,
    #[serde(flatten)]
    upcoming: &'a Upcoming,
    status: &'static str,
}

pub(crate) fn upcoming_cmd(args: UpcomingArgs, config: &Config) -> Result<ExitCode> {
    let fleet = read_fleet(&args.inventory, false, false)?;
    let lines = fleet_lines(fleet_identities(&fleet));
    let ranked: Vec<&FleetLine> = lines.iter().take(args.lines).collect();

    // The release the statuses are computed against, when one is named.
    let repo_named = args.forge.repo.is_some() || config.repo.is_some();
    let releases = match &args.releases {
        Some(path) => Some(read_release_file(path)?),
        None if repo_named => {
            let client = args.forge.client(config)?;
            Some(runtime()?.block_on(client.list_releases())?.releases)
        }
        None => None,
    };
    let release = releases
        .as_deref()
        .map(|r| select_release(r, args.driver_version.as_deref()))
        .transpose()?;
    let assets: HashSet<&str> = release
        .map(|r| r.assets.iter().map(|a| a.name.as_str()).collect())
        .unwrap_or_default();
    let template = args.naming.template(config)?;

    let resolver = args.chain.resolver(config)?;
    let found = runtime()?.block_on(newer_on_lines(&resolver, &ranked));
    let status = |u: &Upcoming| match release {
        None => "upcoming",
        Some(r) if assets.contains(template.render(&u.identity, &r.tag_name).as_str()) => {
            "upcoming-covered"
        }
        Some(_) => "upcoming-missing",
    };
    let rows: Vec<Row<'_>> = found
        .iter()
        .flat_map(|(line, upcoming)| {
            upcoming.iter().map(|u| Row {
                line: line.line.as_str(),
                nodes: line.nodes,
                fleet_newest: line.newest.kernel_version.as_str(),
                upcoming: u,
                status: status(u),
            })
        })
        .collect();
    match args.format {
        ListFormat::Json => outln!("{}", serde_json::to_string_pretty(&rows)?),
        ListFormat::Table => {
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    vec![
                        r.line.to_string(),
                        crate::report::thousands(r.nodes),
                        r.fleet_newest.to_string(),
                        r.upcoming.identity.kernel_version.clone(),
                        r.upcoming
                            .published
                            .map(|t| t.format("%Y-%m-%d").to_string())
                            .unwrap_or_else(|| "-".into()),
                        r.status.to_string(),
                    ]
                })
                .collect();
            out!(
                "{}",
                crate::report::grid(
                    &[
                        "LINE",
                        "NODES",
                        "FLEET NEWEST",
                        "UPCOMING",
                        "PUBLISHED",
                        "STATUS"
                    ],
                    &cells,
                    &[1]
                )
            );
            let missing = rows
                .iter()
                .filter(|r| r.status == "upcoming-missing")
                .count();
            outln!(
                "{} upcoming kernels on {} of {} lines{}",
                rows.len(),
                found.iter().filter(|(_, u)| !u.is_empty()).count(),
                lines.len(),
                match release {
                    Some(r) => format!("; {missing} without an artifact in {}", r.tag_name),
                    None => String::new(),
                }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The fleet's valid identities with their node counts.
pub(crate) fn fleet_identities(fleet: &FleetGroups) -> impl Iterator<Item = (KernelIdentity, u64)> {
    fleet.groups.iter().filter_map(|g| {
        KernelIdentity::parse(
            &g.distribution,
            &g.distro_version,
            &g.architecture,
            &g.kernel_version,
        )
        .ok()
        .map(|id| (id, g.nodes))
    })
}

/// The newer kernels on each line; a line whose chain has no source is noted and skipped.
pub(crate) async fn newer_on_lines<'a>(
    resolver: &crate::headers::Resolver,
    lines: &[&'a FleetLine],
) -> Vec<(&'a FleetLine, Vec<Upcoming>)> {
    let mut out = Vec::new();
    for line in lines {
        match resolver.newer_on_line(&line.newest).await {
            Ok((upcoming, _)) => out.push((*line, upcoming)),
            Err(e) => eprintln!("note: {}: {e}", line.line),
        }
    }
    out
}
