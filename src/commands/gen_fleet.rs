//! `kfleet gen-fleet`: a deterministic synthetic fleet and releases.

use crate::cli::FleetFormat;
use crate::cli::GenFleetArgs;
use crate::config::Config;
use crate::sample::FleetSpec;
use anyhow::Context;
use anyhow::Result;
use anyhow::bail;
use std::process::ExitCode;

pub(crate) fn gen_fleet_cmd(args: GenFleetArgs, config: &Config) -> Result<ExitCode> {
    let spec = FleetSpec {
        nodes: args.nodes,
        seed: args.seed,
        identities: args.identities,
        template: args.naming.template(config)?,
        repo: args.repo,
    };
    // What this writes (Parquet is converted from a fleet.csv written on the way).
    let touched = match args.format {
        FleetFormat::Csv => &["fleet.csv", "releases.json"][..],
        FleetFormat::Parquet => &["fleet.csv", "fleet.parquet", "releases.json"][..],
    };
    let present: Vec<String> = touched
        .iter()
        .map(|f| args.out.join(f))
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if !present.is_empty() && !args.force {
        let (verb, them) = if present.len() == 1 {
            ("exists", "it")
        } else {
            ("exist", "them")
        };
        bail!(
            "{} already {verb}; nothing was written (pass --force to replace {them}, or another --out)",
            present.join(" and ")
        );
    }
    // On a terminal, how far it got (a 100M-node fleet takes minutes); nothing when piped.
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(spec.nodes),
        indicatif::ProgressDrawTarget::stderr(),
    )
    .with_style(
        indicatif::ProgressStyle::with_template("{bar:40} {human_pos}/{human_len} nodes {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let made = crate::sample::generate_with(&spec, &args.out, &|done| bar.set_position(done))?;
    bar.finish_and_clear();
    let fleet = match args.format {
        FleetFormat::Csv => "fleet.csv",
        FleetFormat::Parquet => {
            let csv = args.out.join("fleet.csv");
            crate::sample::csv_to_parquet(&csv, &args.out.join("fleet.parquet"))?;
            std::fs::remove_file(&csv)
                .with_context(|| format!("cannot remove {}", csv.display()))?;
            "fleet.parquet"
        }
    };
    if super::json_wanted() {
        super::print_json(&serde_json::json!({
            "fleet": args.out.join(fleet),
            "releases": args.out.join("releases.json"),
            "nodes": made.nodes,
            "identities": made.identities,
            "bad_rows": made.bad_rows,
            "release_count": made.releases,
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "wrote {}/{fleet} ({} nodes, {} identities, {} bad rows) and releases.json ({} releases)",
        args.out.display(),
        made.nodes,
        made.identities,
        made.bad_rows,
        made.releases
    );
    Ok(ExitCode::SUCCESS)
}
