//! Command-line interface: clap definitions and the commands behind them.

use crate::config::{Config, DEFAULT_MODULE};
use crate::coverage::{self, CoverageOptions, CoverageStatus};
use crate::forge::{index_assets, read_release_file, select_release};
use crate::identity::{
    AssetTemplate, DEFAULT_ASSET_TEMPLATE, RawIdentity, Verdict, check, local_identity,
};
use crate::inventory::read_inventory;
use crate::report::{self, Format, View, write_atomic};
use crate::sample::{FleetSpec, generate};
use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Which kernels in your fleet have a prebuilt driver, which are missing, and what to build.
#[derive(Debug, Parser)]
#[command(name = "kfleet", version, arg_required_else_help = true)]
pub struct Cli {
    /// Config file (default: ./kfleet.toml, then $XDG_CONFIG_HOME/kfleet/kfleet.toml).
    #[arg(long, global = true, value_name = "FILE", env = "KFLEET_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Coverage of the fleet by a release's artifacts: statuses, summary, batch plan.
    Report(ReportArgs),
    /// Check or show kernel identities.
    #[command(subcommand)]
    Identity(IdentityCommand),
    /// Write a deterministic synthetic fleet (fleet.csv) and matching releases.json.
    GenFleet(GenFleetArgs),
}

#[derive(Debug, Args)]
pub struct NamingArgs {
    /// Module name in asset names [config: module; default: kdriver].
    #[arg(long, env = "KFLEET_MODULE")]
    pub module: Option<String>,
    /// Asset naming template [config: asset_template].
    #[arg(long, env = "KFLEET_ASSET_TEMPLATE")]
    pub asset_template: Option<String>,
}

impl NamingArgs {
    fn template(&self, config: &Config) -> Result<AssetTemplate> {
        let module = self
            .module
            .clone()
            .or_else(|| config.module.clone())
            .unwrap_or_else(|| DEFAULT_MODULE.to_string());
        let template = self
            .asset_template
            .clone()
            .or_else(|| config.asset_template.clone())
            .unwrap_or_else(|| DEFAULT_ASSET_TEMPLATE.to_string());
        Ok(AssetTemplate::compile(&template, &module)?)
    }
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Fleet inventory: CSV, `kubectl get nodes -o json`, or JSON Lines; gzip accepted. Repeatable.
    #[arg(long, short = 'i', required = true, value_name = "FILE")]
    pub inventory: Vec<PathBuf>,
    /// GitHub release listing (`gh api repos/OWNER/REPO/releases --paginate > FILE`).
    #[arg(long, short = 'r', value_name = "FILE")]
    pub releases: PathBuf,
    /// Release tag to report on (default: newest published, not draft, not prerelease).
    #[arg(long, value_name = "TAG")]
    pub driver_version: Option<String>,
    #[command(flatten)]
    pub naming: NamingArgs,
    /// Share of nodes the head holds, 0 < x <= 1 [config: head_share; default 0.90].
    #[arg(long, value_name = "SHARE")]
    pub head_share: Option<f64>,
    /// Node coverage the batch plan aims for, in percent [config: target; default 99].
    #[arg(long, value_name = "PCT")]
    pub target: Option<f64>,
    /// Output format.
    #[arg(long, short = 'f', value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Only identities with these statuses (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub status: Vec<CoverageStatus>,
    /// Rows shown by the table format (0: all).
    #[arg(long, default_value_t = 40)]
    pub limit: usize,
    /// Write to FILE (atomically) instead of stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Exit 2 when node coverage is below PCT percent.
    #[arg(long, value_name = "PCT")]
    pub fail_under: Option<f64>,
    /// List the unused artifacts (built, but no node runs the kernel) instead.
    #[arg(long)]
    pub unused: bool,
    /// Fail on bad inventory rows instead of skipping them.
    #[arg(long)]
    pub strict: bool,
    /// Also list unrecognised asset names and every bad row.
    #[arg(long, short = 'v')]
    pub verbose: bool,
}

#[derive(Debug, Subcommand)]
pub enum IdentityCommand {
    /// Validate one identity: prints its canonical key (exit 0) or why it is rejected (exit 1).
    Check {
        #[arg(long)]
        distribution: String,
        #[arg(long)]
        distro_version: String,
        #[arg(long)]
        architecture: String,
        #[arg(long)]
        kernel_version: String,
    },
    /// This machine's identity from /etc/os-release and the running kernel.
    Local {
        /// Read this os-release file instead.
        #[arg(long, value_name = "FILE")]
        os_release: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct GenFleetArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3000)]
    pub nodes: u64,
    /// Seed; the same seed writes the same files.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Distinct kernel identities (default: 4 x sqrt(nodes)).
    #[arg(long)]
    pub identities: Option<usize>,
    /// Directory to write fleet.csv and releases.json into.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Repository named in download URLs.
    #[arg(long, default_value = "example/kdriver")]
    pub repo: String,
    #[command(flatten)]
    pub naming: NamingArgs,
}

/// Runs the parsed command line; the exit code says how it went.
pub fn run(cli: Cli) -> Result<ExitCode> {
    let (config, _) = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Report(args) => report_cmd(args, &config),
        Command::Identity(cmd) => identity_cmd(cmd),
        Command::GenFleet(args) => gen_fleet_cmd(args, &config),
    }
}

fn emit(output: Option<&PathBuf>, text: &str) -> Result<()> {
    match output {
        Some(path) => {
            write_atomic(path, text.as_bytes())?;
            eprintln!("wrote {}", path.display());
        }
        None => print!("{text}"),
    }
    Ok(())
}

fn report_cmd(args: ReportArgs, config: &Config) -> Result<ExitCode> {
    let head_share = args.head_share.or(config.head_share).unwrap_or(0.90);
    if !(head_share > 0.0 && head_share <= 1.0) {
        bail!("--head-share {head_share}: must be above 0 and at most 1 (0.90 means 90%)");
    }
    let target = args.target.or(config.target).unwrap_or(99.0);
    if !(target > 0.0 && target <= 100.0) {
        bail!("--target {target}: must be a percentage above 0 and at most 100");
    }
    let template = args.naming.template(config)?;
    let releases = read_release_file(&args.releases)?;
    let release = select_release(&releases, args.driver_version.as_deref())?;
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

fn identity_cmd(cmd: IdentityCommand) -> Result<ExitCode> {
    let checked = match &cmd {
        IdentityCommand::Check {
            distribution,
            distro_version,
            architecture,
            kernel_version,
        } => check(&RawIdentity {
            distribution,
            distro_version,
            architecture,
            kernel_version,
        }),
        IdentityCommand::Local { os_release } => local_identity(os_release.as_deref())
            .context("cannot determine this machine's identity")?,
    };
    match &checked.verdict {
        Verdict::Valid => {
            println!("{}", checked.key());
            Ok(ExitCode::SUCCESS)
        }
        Verdict::Unsupported(reason) => {
            println!("{}", checked.key());
            eprintln!("unsupported: {reason}");
            Ok(ExitCode::from(1))
        }
        Verdict::Invalid(reason) => {
            eprintln!("invalid: {reason}");
            Ok(ExitCode::from(1))
        }
    }
}

fn gen_fleet_cmd(args: GenFleetArgs, config: &Config) -> Result<ExitCode> {
    let spec = FleetSpec {
        nodes: args.nodes,
        seed: args.seed,
        identities: args.identities,
        template: args.naming.template(config)?,
        repo: args.repo,
    };
    let made = generate(&spec, &args.out)?;
    println!(
        "wrote {}/fleet.csv ({} nodes, {} identities, {} bad rows) and releases.json ({} releases)",
        args.out.display(),
        made.nodes,
        made.identities,
        made.bad_rows,
        made.releases
    );
    Ok(ExitCode::SUCCESS)
}
