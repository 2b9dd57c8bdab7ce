//! `kfleet report`: coverage of the fleet by one release's artifacts.

use super::emit;
use super::load_listing;
use super::read_fleet;
use crate::cli::ReportArgs;
use crate::cli::ReportSettings;
use crate::cli::runtime;
use crate::config::Config;
use crate::coverage::CoverageStatus;
use crate::forge::index_assets;
use crate::report;
use anyhow::Result;
use std::process::ExitCode;
use std::sync::Arc;

pub(crate) fn report_cmd(args: ReportArgs, config: &Config) -> Result<ExitCode> {
    let settings = ReportSettings::resolve(&args, config)?;
    let coverage = &settings.coverage;
    let store = args.store.open(config, &coverage.template)?;
    let mut snapshot = load_listing(args.releases.as_ref(), &args.build, store.clone(), config)?;
    let release = &snapshot.take_release(coverage.driver_version.as_deref())?;
    let fleet = Arc::new(read_fleet(
        &settings.inventories,
        settings.strict,
        settings.view.verbose,
    )?);
    let kabi_cache = coverage.kabi_cache();
    let (report, found) = runtime()?.block_on(
        snapshot.checked_coverage(
            fleet.clone(),
            &release.tag_name,
            index_assets(release, &coverage.template),
            coverage.options,
            chrono::Utc::now(),
            settings
                .resolver
                .as_ref()
                .filter(|_| settings.kabi)
                .map(|resolver| crate::app::compatible::KabiCheck {
                    resolver,
                    cache: kabi_cache.as_path(),
                    // A listing file names no store; its records are beside its assets.
                    store: store.as_deref().filter(|_| args.releases.is_none()),
                }),
        ),
    )?;
    for note in &found.notes {
        tracing::warn!("kabi: {note}");
    }
    if !found.served.is_empty() || !found.classes.is_empty() {
        tracing::info!(
            "{} kernel(s) without an artifact load another one of their line; {} more share a build with another (kABI)",
            found.served.len(),
            found.classes.iter().map(|c| c.len() - 1).sum::<usize>()
        );
    }
    let missing: u64 = [CoverageStatus::Missing, CoverageStatus::LongTail]
        .iter()
        .filter_map(|s| report.summary.statuses.get(s))
        .map(|c| c.identities)
        .sum();
    if release.immutable && missing > 0 {
        tracing::warn!(
            "{missing} kernels have no artifact, and {}",
            crate::artifacts::immutable_reason(&release.tag_name)
        );
    }
    if settings.unused {
        emit(
            settings.output.as_ref(),
            &report::render_unused(&report.unused, settings.format)?,
        )?;
    } else {
        let upcoming = match (settings.upcoming_lines, &settings.resolver) {
            (Some(lines), Some(resolver)) => {
                let found = runtime()?.block_on(crate::coverage::upcoming::find(
                    resolver,
                    &fleet,
                    lines,
                    None,
                    Some((release, &coverage.template)),
                ));
                for note in &found.notes {
                    tracing::info!("note: {note}");
                }
                for unread in &found.errors {
                    tracing::warn!("{}", unread.error);
                }
                Some(found)
            }
            _ => None,
        };
        if settings.format == report::Format::Json {
            // Written as it is serialised: no copy of the whole document in memory.
            let write = |w: &mut dyn std::io::Write| {
                report::render_json_to(&mut *w, &report, &settings.view, upcoming.as_ref())?;
                w.flush()
            };
            match settings.output.as_ref() {
                Some(path) => {
                    report::write_atomic_with(path, |w| write(w))?;
                    tracing::info!("wrote {}", path.display());
                }
                None => write(&mut std::io::BufWriter::with_capacity(
                    1 << 20,
                    std::io::stdout().lock(),
                ))
                .map_err(super::StdoutError)?,
            }
        } else {
            emit(
                settings.output.as_ref(),
                &report::render(&report, settings.format, &settings.view, upcoming.as_ref())?,
            )?;
        }
    }
    if let Some(floor) = settings.fail_under
        && report.summary.node_coverage_pct < floor
    {
        tracing::info!(
            "node coverage {}% is below --fail-under {floor}%",
            report.summary.node_coverage_pct
        );
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}
