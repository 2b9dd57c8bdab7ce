//! `kfleet report`: coverage of the fleet by one release's artifacts.

use super::emit;
use super::load_listing;
use super::read_fleet;
use crate::cli::ReportArgs;
use crate::cli::runtime;
use crate::config::Config;
use crate::coverage::CoverageOptions;
use crate::coverage::CoverageStatus;
use crate::forge::index_assets;
use crate::report;
use crate::report::View;
use anyhow::Result;
use std::process::ExitCode;
use std::sync::Arc;

pub(crate) fn report_cmd(args: ReportArgs, config: &Config) -> Result<ExitCode> {
    let (head_share, target) = args.shares.resolve(config);
    let template = args.naming.template(config)?;
    let snapshot = load_listing(
        args.releases.as_ref(),
        &args.build,
        args.store.open(config, &template)?,
        config,
    )?;
    let release = snapshot.release(args.driver_version.as_deref())?;
    let fleet = Arc::new(read_fleet(&args.inventory, args.strict, args.verbose)?);
    let options = CoverageOptions {
        head_share,
        target: target / 100.0,
    };
    let state_root = args.build.state_root(config);
    let resolver = args
        .kabi
        .then(|| super::upcoming_resolver(args.sources.as_ref(), &state_root))
        .transpose()?;
    let cache = state_root.join("kabi");
    let (report, found) = runtime()?.block_on(snapshot.checked_coverage(
        fleet.clone(),
        &release.tag_name,
        index_assets(release, &template),
        options,
        chrono::Utc::now(),
        resolver.as_ref().map(|r| (r, cache.as_path())),
    ))?;
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
    let text = if args.unused {
        report::render_unused(&report.unused, args.format)?
    } else {
        let view = View {
            statuses: args.status.clone(),
            limit: args.limit,
            verbose: args.verbose,
        };
        let upcoming = if args.upcoming {
            let resolver =
                super::upcoming_resolver(args.sources.as_ref(), &args.build.state_root(config))?;
            let found = runtime()?.block_on(crate::coverage::upcoming::find(
                &resolver,
                &fleet,
                args.upcoming_lines,
                None,
                Some((release, &template)),
            ));
            for note in &found.notes {
                tracing::info!("note: {note}");
            }
            for unread in &found.errors {
                tracing::warn!("{}", unread.error);
            }
            Some(found)
        } else {
            None
        };
        report::render(&report, args.format, &view, upcoming.as_ref())?
    };
    emit(args.output.as_ref(), &text)?;
    if let Some(floor) = args.fail_under
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
