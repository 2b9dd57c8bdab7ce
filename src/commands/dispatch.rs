//! `kfleet dispatch`: builds for identities without an artifact, through the planner.

#[cfg(feature = "fleet")]
use super::read_fleet;
use super::read_keys_csv;
use crate::builds::Decision;
use crate::builds::Planner;
use crate::builds::merge_decisions;
use crate::builds::parse_keys;
use crate::cli::DispatchArgs;
use crate::cli::DispatchSettings;
use crate::cli::PreflightArgs;
use crate::cli::PreflightSettings;
use crate::cli::runtime;
use crate::config::Config;
#[cfg(feature = "fleet")]
use crate::coverage;
#[cfg(feature = "fleet")]
use crate::coverage::BuildStates;
#[cfg(feature = "fleet")]
use crate::coverage::CoverageOptions;
#[cfg(feature = "fleet")]
use crate::coverage::CoverageStatus;
#[cfg(feature = "fleet")]
use crate::forge::index_assets;
use crate::forge::select_release;
use crate::identity::KernelIdentity;
use crate::report;
use anyhow::Context;
use anyhow::Result;
use std::path::PathBuf;
use std::process::ExitCode;

pub(crate) fn dispatch_cmd(args: DispatchArgs, config: &Config) -> Result<ExitCode> {
    let settings = DispatchSettings::resolve(&args, config)?;
    let template = settings.template.clone();
    let client = args
        .store
        .wrap(args.build.client(config)?, config, &template)?;
    let mut keys = args.identity.clone();
    if let Some(path) = &args.from {
        keys.extend(read_keys_csv(path)?);
    }
    #[cfg(feature = "fleet")]
    let fleet = if args.missing || args.long_tail || args.upcoming {
        Some(read_fleet(&args.inventory, false, false)?)
    } else {
        None
    };
    #[cfg(not(feature = "fleet"))]
    if args.missing || args.long_tail || args.upcoming {
        anyhow::bail!(
            "--missing, --long-tail and --upcoming read the fleet, and this kfleet was built without the fleet feature; name identities or use --from FILE"
        );
    }
    let decisions = runtime()?.block_on(async {
        let listing = client.list_releases().await?;
        let release = select_release(&listing.releases, args.driver_version.as_deref())?;
        #[cfg(feature = "fleet")]
        if let (Some(fleet), Some(resolver)) =
            (fleet.as_ref().filter(|_| args.upcoming), &settings.resolver)
        {
            keys.extend(upcoming_keys(&args, fleet, resolver).await);
        }
        #[cfg(feature = "fleet")]
        if let Some(fleet) = fleet.as_ref().filter(|_| args.missing || args.long_tail) {
            let assets = index_assets(release, &template);
            let options = CoverageOptions {
                head_share: settings.head_share,
                ..CoverageOptions::default()
            };
            let report = coverage::compute(
                fleet,
                &assets,
                &release.tag_name,
                options,
                &BuildStates::new(),
            )?;
            // With --kabi, kernels another artifact loads into need no build, and one kernel of
            // each class (the first, most nodes) builds for the class.
            let mut skip: std::collections::HashSet<String> = Default::default();
            if let Some(resolver) = settings.resolver.as_ref().filter(|_| args.kabi) {
                let found = crate::app::compatible::find(
                    &report,
                    &assets,
                    crate::app::compatible::KabiCheck {
                        resolver,
                        cache: &settings.kabi_cache,
                        store: client.artifact_store(),
                    },
                )
                .await;
                for note in &found.notes {
                    tracing::warn!("kabi: {note}");
                }
                for (key, asset) in found.served {
                    tracing::info!("{key}: {asset} loads into it (kABI); nothing to build");
                    skip.insert(key);
                }
                for class in &found.classes {
                    let Some((first, rest)) = class.split_first() else {
                        continue;
                    };
                    for key in rest {
                        tracing::info!("{key}: the build for {first} serves it too (kABI)");
                        skip.insert(key.clone());
                    }
                }
            }
            keys.extend(
                report
                    .identities
                    .iter()
                    .filter(|r| {
                        (args.missing && r.status == CoverageStatus::Missing)
                            || (args.long_tail && r.status == CoverageStatus::LongTail)
                    })
                    .filter(|r| !skip.contains(&r.key))
                    .map(|r| r.key.clone()),
            );
        }
        let mut planner = Planner::new(
            client.clone(),
            template,
            args.build
                .planner_config(config, release.tag_name.clone())?,
            args.build.store(config).await?,
        );
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) && keys.len() > 1 {
            let style = indicatif::ProgressStyle::with_template(
                "{bar:30} {pos}/{len} identities checked, {elapsed} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            let bar = indicatif::ProgressBar::new(keys.len() as u64).with_style(style);
            planner = planner.on_decided(move |key, _| {
                bar.inc(1);
                bar.set_message(key.to_string());
                if bar.position() == bar.length().unwrap_or(0) {
                    bar.finish_and_clear();
                }
            });
        }
        let parsed = parse_keys(&keys);
        let ids: Vec<_> = parsed
            .iter()
            .filter_map(|p| p.as_ref().ok().cloned())
            .collect();
        let planned = if args.matrix {
            planner.plan_matrix(&ids, args.dry_run).await?
        } else {
            planner.plan_many(&ids, args.dry_run).await?
        };
        anyhow::Ok(merge_decisions(parsed, planned))
    })?;
    let rejected = decisions
        .iter()
        .filter(|(_, d)| {
            matches!(
                d,
                Decision::Invalid { .. } | Decision::Unsupported { .. } | Decision::Refused { .. }
            )
        })
        .count();
    out!("{}", report::decisions(&decisions, args.format));
    Ok(if rejected > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `--upcoming`: the newest `--upcoming-kernels` kernels published on each of the
/// `--upcoming-lines` most-run lines of the fleet, newer than the newest it runs.
#[cfg(feature = "fleet")]
async fn upcoming_keys(
    args: &DispatchArgs,
    fleet: &crate::inventory::FleetGroups,
    resolver: &crate::headers::Resolver,
) -> Vec<String> {
    let found = crate::coverage::upcoming::find(
        resolver,
        fleet,
        args.upcoming_lines,
        Some(args.upcoming_kernels),
        None,
    )
    .await;
    for note in &found.notes {
        tracing::info!("note: {note}");
    }
    for unread in &found.errors {
        tracing::warn!("{}", unread.error);
    }
    found.rows.iter().map(|r| r.key()).collect()
}

/// `kfleet preflight`: every target kernel's decision (dispatching the missing ones unless
/// --dry-run), then exit 0 when each has its driver, 2 while any is still to be built, 1 when
/// one cannot be (invalid, unsupported, refused).
pub(crate) fn preflight_cmd(args: PreflightArgs, config: &Config) -> Result<ExitCode> {
    let settings = PreflightSettings::resolve(&args, config)?;
    let template = settings.template.clone();
    let resolver = &settings.resolver;
    let client = args
        .store
        .wrap(args.build.client(config)?, config, &template)?;
    let mut keys = args.identity.clone();
    if let Some(path) = &args.target_kernels {
        keys.extend(read_target_kernels(path)?);
    }
    let mut unread = 0;
    if !args.inventory.is_empty() {
        #[cfg(not(feature = "fleet"))]
        anyhow::bail!(
            "-i reads the fleet, and this kfleet was built without the fleet feature; name the target kernels with --identity, --target-kernels or --kernel-line"
        );
        #[cfg(feature = "fleet")]
        {
            let fleet = read_fleet(&args.inventory, false, false)?;
            if !keys.is_empty() {
                keys = on_fleet_lines(keys, &fleet);
            } else {
                let found = runtime()?.block_on(crate::coverage::upcoming::find(
                    resolver,
                    &fleet,
                    args.lines,
                    Some(args.kernels_per_line),
                    None,
                ));
                for note in &found.notes {
                    tracing::info!("note: {note}");
                }
                for line in &found.errors {
                    tracing::warn!("{}", line.error);
                }
                unread += found.errors.len();
                keys.extend(found.rows.iter().map(|r| r.key()));
            }
        }
    }
    if !args.kernel_line.is_empty() {
        for key in &args.kernel_line {
            let id = KernelIdentity::from_key(key)
                .map_err(|e| anyhow::anyhow!("--kernel-line {}: {e}", crate::text::clean(key)))?;
            let newest: Vec<String> = match runtime()?.block_on(resolver.newer_on_line(&id)) {
                Ok((found, _)) => found
                    .into_iter()
                    .rev()
                    .take(args.kernels_per_line)
                    .map(|u| u.identity.key())
                    .collect(),
                Err(e) => {
                    tracing::warn!("{}: {e}", crate::headers::line_of(&id));
                    unread += 1;
                    continue;
                }
            };
            if newest.is_empty() {
                tracing::info!(
                    "{}: no kernel newer than {} is published",
                    crate::headers::line_of(&id),
                    id.kernel_version
                );
            }
            keys.extend(newest);
        }
    }
    let decisions = runtime()?.block_on(async {
        let listing = client.list_releases().await?;
        let release = select_release(&listing.releases, args.driver_version.as_deref())?;
        let planner = Planner::new(
            client.clone(),
            template,
            args.build
                .planner_config(config, release.tag_name.clone())?,
            args.build.store(config).await?,
        );
        let parsed = parse_keys(&keys);
        let ids: Vec<_> = parsed
            .iter()
            .filter_map(|p| p.as_ref().ok().cloned())
            .collect();
        let planned = planner.plan_many(&ids, args.dry_run).await?;
        anyhow::Ok((release.tag_name.clone(), merge_decisions(parsed, planned)))
    })?;
    let (driver_version, decisions) = decisions;
    out!("{}", report::decisions(&decisions, args.format));
    let count = |f: fn(&Decision) -> bool| decisions.iter().filter(|(_, d)| f(d)).count();
    let covered = count(|d| matches!(d, Decision::Available { .. }));
    let impossible = count(|d| {
        matches!(
            d,
            Decision::Invalid { .. } | Decision::Unsupported { .. } | Decision::Refused { .. }
        )
    });
    let total = decisions.len();
    if unread > 0 {
        tracing::warn!(
            "{unread} line(s) could not be read (see the warnings): their targets are unknown, so the fleet is not ready"
        );
    }
    tracing::info!(
        "{covered} of {total} target kernels have a driver in {driver_version}{}",
        match (total - covered - impossible, impossible) {
            (0, 0) => String::new(),
            (waiting, 0) => format!("; {waiting} still to be built: not ready"),
            (waiting, bad) => format!("; {waiting} still to be built, {bad} cannot be: not ready"),
        }
    );
    Ok(if impossible > 0 || unread > 0 {
        ExitCode::from(1)
    } else if covered < total {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// The target kernels on a line `fleet` runs; the others are named and dropped (the fleet does
/// not move to them). Keys that do not parse stay, for the planner to call invalid.
#[cfg(feature = "fleet")]
fn on_fleet_lines(keys: Vec<String>, fleet: &crate::inventory::FleetGroups) -> Vec<String> {
    let lines: std::collections::HashSet<String> =
        crate::headers::fleet_lines(crate::coverage::upcoming::fleet_identities(fleet))
            .into_iter()
            .map(|l| l.line)
            .collect();
    keys.into_iter()
        .filter(|key| match KernelIdentity::from_key(key) {
            Ok(id) if !lines.contains(&crate::headers::line_of(&id)) => {
                tracing::info!(
                    "{}: not on a line the fleet runs ({}); skipped",
                    crate::text::clean(key),
                    crate::headers::line_of(&id)
                );
                false
            }
            _ => true,
        })
        .collect()
}

/// Target kernels: a CSV with the four identity columns, or one identity key per line (blank
/// lines and `#` comments skipped).
fn read_target_kernels(path: &PathBuf) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    if text
        .lines()
        .next()
        .is_some_and(|l| l.split(',').any(|c| c.trim() == "kernel_version"))
    {
        return read_keys_csv(path);
    }
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect())
}
