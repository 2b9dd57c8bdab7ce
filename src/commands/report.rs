//! `kfleet report`: coverage of the fleet by one release's artifacts.

use super::prelude::*;

pub(crate) fn report_cmd(args: ReportArgs, config: &Config) -> Result<ExitCode> {
    let (head_share, target) = args.shares.resolve(config);
    let template = args.naming.template(config)?;
    let (releases, builds) = load_listing(args.releases.as_ref(), &args.build, config)?;
    let release = select_release(&releases, args.driver_version.as_deref())?;
    let builds = builds(&release.tag_name);
    let assets = index_assets(release, &template);
    let fleet = read_inventory(&args.inventory, args.strict)?;
    for bad in fleet
        .bad_rows
        .iter()
        .take(if args.verbose { usize::MAX } else { 10 })
    {
        eprintln!("warning: skipped bad row {bad}");
    }
    if fleet.bad_row_count > 10 && !args.verbose {
        eprintln!(
            "warning: {} bad rows in all; --verbose lists them (--strict fails on them)",
            fleet.bad_row_count
        );
    }
    let report = coverage::compute(
        &fleet,
        &assets,
        &release.tag_name,
        CoverageOptions {
            head_share,
            target: target / 100.0,
        },
        &builds,
    )?;
    let text = if args.unused {
        report::render_unused(&report.unused, args.format)?
    } else {
        let view = View {
            statuses: args.status.clone(),
            limit: args.limit,
            verbose: args.verbose,
        };
        report::render(&report, args.format, &view)?
    };
    emit(args.output.as_ref(), &text)?;
    if let Some(floor) = args.fail_under
        && report.summary.node_coverage_pct < floor
    {
        eprintln!(
            "node coverage {}% is below --fail-under {floor}%",
            report.summary.node_coverage_pct
        );
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}
