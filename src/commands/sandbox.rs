//! `kfleet sandbox`: a GitHub-compatible forge on loopback.

use crate::cli::SandboxArgs;
use crate::cli::runtime;
use crate::config::Config;
use crate::forge::Faults;
use crate::forge::Sandbox;
use crate::forge::SandboxOptions;
use crate::forge::Simulation;
use crate::forge::load_releases;
use anyhow::Context;
use anyhow::Result;
use anyhow::bail;
use std::process::ExitCode;

pub(crate) fn sandbox_cmd(args: SandboxArgs, config: &Config) -> Result<ExitCode> {
    let releases = load_releases(&args.data)?;
    let count = releases.len();
    let unresolvable_file = args.data.join("unresolvable.txt");
    let unresolvable = match std::fs::read_to_string(&unresolvable_file) {
        Ok(text) => text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Default::default(),
        Err(e) => bail!("cannot read {}: {e}", unresolvable_file.display()),
    };
    let seconds = |name: &str, v: f64| {
        std::time::Duration::try_from_secs_f64(v)
            .map_err(|_| anyhow::anyhow!("--{name} {v}: must be a non-negative number of seconds"))
    };
    let simulation = Simulation {
        queue_time: seconds("queue-secs", args.queue_secs)?,
        run_time: seconds("run-secs", args.run_secs)?,
        fail_rate: args.build_fail_rate,
        unresolvable,
        reject_run_details: args.reject_run_details,
        template: args.naming.template(config)?,
        local: args.runner.local()?,
        ..Simulation::default()
    };
    // Never open to any client: a page in a browser could reach a sandbox that runs jobs.
    let (token, generated) = match args.token.filter(|t| !t.trim().is_empty()) {
        Some(token) => (token, false),
        None => (format!("sandbox-{}", crate::fsio::random_hex(16)?), true),
    };
    let options = SandboxOptions {
        token: Some(token.clone()),
        repo: args.repo.clone(),
        faults: Faults {
            server_errors: args.server_errors,
            error_rate: args.fail_rate,
            rate_limit_after: args.rate_limit_after,
            retry_after_secs: args.retry_after,
            latency: std::time::Duration::from_millis(args.latency_ms),
            malformed: args.malformed,
            drop_connections: args.drop_connections,
            ..Faults::default()
        },
        simulation,
        clock: Default::default(),
        assets_dir: Some(args.data.join("assets")),
    };
    runtime()?.block_on(async move {
        let sandbox = Sandbox::start(args.listen, releases, options).await?;
        outln!("{}", sandbox.base_url());
        if generated {
            tracing::info!(
                "sandbox token (clients send it as GITHUB_TOKEN; give --token or KFLEET_SANDBOX_TOKEN to choose one): {token}"
            );
        }
        tracing::info!(
            "sandbox forge serving {count} releases of {} at {} (Ctrl-C stops it); use --api-url {} --repo {}",
            args.repo,
            sandbox.base_url(),
            sandbox.base_url(),
            args.repo
        );
        tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
        sandbox.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}
