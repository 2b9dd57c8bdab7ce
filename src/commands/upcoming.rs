//! `kfleet upcoming`: the kernels the distributions already publish on the lines the fleet runs,
//! newer than the newest the fleet runs on each, and whether the release has them.

use super::read_fleet;
use crate::cli::UpcomingArgs;
use crate::cli::UpcomingSettings;
use crate::cli::runtime;
use crate::config::Config;
use crate::coverage::upcoming::{UpcomingStatus, find};
use crate::forge::read_release_file;
use crate::forge::select_release;
use crate::report::ListFormat;
use anyhow::Result;
use std::process::ExitCode;

pub(crate) fn upcoming_cmd(args: UpcomingArgs, config: &Config) -> Result<ExitCode> {
    let settings = UpcomingSettings::resolve(&args, config)?;
    let template = &settings.template;
    let resolver = &settings.resolver;
    let fleet = read_fleet(&args.inventory, false, false)?;
    // The release the statuses are computed against, when one is named.
    let store = args.store.open(config, template)?;
    let releases = match (&args.releases, store.as_ref()) {
        (Some(path), _) => Some(read_release_file(path)?),
        (None, Some(store)) => Some(runtime()?.block_on(store.list())?.releases),
        (None, None) if settings.repo_named => {
            let client = args.forge.client(config)?;
            Some(runtime()?.block_on(client.list_releases())?.releases)
        }
        (None, None) => None,
    };
    let release = releases
        .as_deref()
        .map(|r| select_release(r, args.driver_version.as_deref()))
        .transpose()?;
    let mut found = runtime()?.block_on(find(
        resolver,
        &fleet,
        args.lines,
        None,
        release.map(|r| (r, template)),
    ));
    if let (true, Some(release)) = (args.kabi, release) {
        let index = crate::forge::index_assets(release, template);
        let compatible = runtime()?.block_on(crate::app::compatible::mark_upcoming(
            &mut found,
            &index,
            crate::app::compatible::KabiCheck {
                resolver,
                cache: &settings.kabi_cache,
                store: store.as_deref().filter(|_| args.releases.is_none()),
            },
        ));
        for note in &compatible.notes {
            tracing::warn!("kabi: {note}");
        }
    }
    for note in &found.notes {
        tracing::info!("note: {note}");
    }
    for unread in &found.errors {
        tracing::warn!("{}", unread.error);
    }
    match args.format {
        ListFormat::Json => outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "rows": found.rows,
                "lines": found.lines,
                "lines_with_upcoming": found.lines_with_upcoming,
                "notes": found.notes,
                "errors": found.errors,
            }))?
        ),
        ListFormat::Table => {
            let cells = crate::report::upcoming_cells(&found.rows);
            out!(
                "{}",
                crate::text::grid(&crate::report::UPCOMING_COLUMNS, &cells, &[1])
            );
            let missing = found
                .rows
                .iter()
                .filter(|r| r.status == UpcomingStatus::UpcomingMissing)
                .count();
            outln!(
                "{} upcoming kernels on {} of {} lines{}{}",
                found.rows.len(),
                found.lines_with_upcoming,
                found.lines,
                match release {
                    Some(r) => format!("; {missing} without an artifact in {}", r.tag_name),
                    None => String::new(),
                },
                match found.errors.len() {
                    0 => String::new(),
                    n =>
                        format!("; {n} lines unread (their repositories failed, see the warnings)"),
                }
            );
        }
    }
    // A nightly job must tell a broken mirror from a quiet week.
    Ok(if found.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
