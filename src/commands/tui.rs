//! `kfleet tui` (and `kfleet` alone): the terminal dashboard.

use crate::builds::Planner;
use crate::cli::TuiArgs;
use crate::cli::TuiSettings;
use crate::cli::runtime;
use crate::config::Config;
use crate::forge::Forge;
use crate::forge::RetryPolicy;
use crate::forge::SandboxForge;
use crate::forge::SandboxOptions;
use crate::forge::Simulation;
use crate::forge::load_releases;
use crate::forge::read_release_file;
use crate::forge::select_release;
use crate::inventory::read_inventory;
use anyhow::Result;
use std::process::ExitCode;
use std::sync::Arc;

pub(crate) const SAMPLE_FLEET: &str = include_str!("../../sample-data/fleet.csv");

pub(crate) const SAMPLE_RELEASES: &str = include_str!("../../sample-data/releases.json");

/// What to say when the dashboard has no terminal to draw on (a pipe, cron, CI, `ssh host kfleet`).
const NEEDS_A_TERMINAL: &str = "the dashboard needs a terminal, and this one has none (its output is piped or it runs without a controlling terminal, as under cron or CI); `kfleet report` prints the same coverage without one (--format table, json, markdown or html), `ssh -t` gives a remote command a terminal";

pub(crate) fn tui_cmd(args: TuiArgs, config: &Config) -> Result<ExitCode> {
    let sample = args.inventory.is_empty();
    // The built-in sample fleet is read like any inventory, from a file.
    let sample_file = if sample {
        let mut f = tempfile::Builder::new()
            .prefix("kfleet-sample-")
            .suffix(".csv")
            .tempfile()?;
        std::io::Write::write_all(&mut f, SAMPLE_FLEET.as_bytes())?;
        Some(f)
    } else {
        None
    };
    let inventories = match &sample_file {
        Some(f) => vec![f.path().to_path_buf()],
        None => args.inventory.clone(),
    };
    let fleet = read_inventory(&inventories, false)?;
    let live: Vec<_> = inventories
        .iter()
        .filter_map(|p| {
            p.to_str()
                .and_then(crate::inventory::kube::KubeSource::parse)
        })
        .collect();
    let build = &args.build;
    let sandbox_releases = match (&args.releases, &build.forge.sandbox, &build.forge.repo) {
        (Some(file), _, _) => Some(read_release_file(file)?),
        (None, Some(dir), _) => Some(load_releases(dir)?),
        (None, None, None) if config.repo.is_none() => Some(crate::forge::parse_release_listing(
            "(built-in sample releases)",
            SAMPLE_RELEASES.as_bytes(),
        )?),
        _ => None,
    };
    let forge: Arc<dyn Forge> = match sandbox_releases {
        Some(releases) => Arc::new(runtime()?.block_on(SandboxForge::start(
            releases,
            SandboxOptions {
                simulation: Simulation {
                    local: build.forge.runner.local()?,
                    ..Simulation::default()
                },
                ..SandboxOptions::default()
            },
            RetryPolicy::default(),
        ))?),
        None => build.client(config)?,
    };
    let settings = TuiSettings::resolve(&args, config)?;
    let coverage = settings.coverage;
    let forge = args.store.wrap(forge, config, &coverage.template)?;
    let mut planner_config = build.planner_config(config, String::new())?;
    let sandbox = build.forge.sandbox.is_some() || forge.is_sandbox();
    runtime()?.block_on(async move {
        let listing = forge.list_releases().await?;
        let release = select_release(&listing.releases, coverage.driver_version.as_deref())?;
        planner_config.driver_version = release.tag_name.clone();
        let store = build.store_for(config, sandbox).await?;
        let planner = Arc::new(Planner::new(
            forge.clone(),
            coverage.template.clone(),
            planner_config,
            store,
        ));
        let dash = Arc::new(crate::tui::Dashboard {
            forge: forge.clone(),
            planner,
            fleet: std::sync::RwLock::new(Arc::new(fleet)),
            live,
            upcoming_lines: settings.upcoming_lines,
            kabi: settings.kabi.then(|| coverage.kabi_cache()),
            template: coverage.template,
            options: coverage.options,
            workflow: settings.workflow,
            deadline: settings.deadline,
            driver_version: coverage.driver_version,
            inventories: inventories.clone(),
            resolver: settings.resolver,
        });
        let report = dash.report().await?;
        let app = crate::tui::app::App::new(forge.label(), report, settings.deadline.as_secs())
            .with_chain(dash.resolver.chain().clone())
            .with_keys(settings.keys);
        // Checked after the flags and inputs, so their errors come first.
        if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            anyhow::bail!(NEEDS_A_TERMINAL);
        }
        crate::tui::run(dash, app).await.map_err(|e| {
            // ENXIO: stdout is a terminal but the process has no controlling one (/dev/tty).
            if e.raw_os_error() == Some(6) {
                anyhow::anyhow!(NEEDS_A_TERMINAL)
            } else {
                anyhow::anyhow!(e)
            }
        })?;
        anyhow::Ok(ExitCode::SUCCESS)
    })
}
