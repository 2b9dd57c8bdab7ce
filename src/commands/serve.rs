//! `kfleet serve`: the build service nodes ask for their driver.

use crate::builds::Planner;
use crate::cli::ServeArgs;
use crate::cli::runtime;
use crate::config::Config;
use anyhow::Context;
use anyhow::Result;
use anyhow::bail;
use std::path::PathBuf;
use std::process::ExitCode;

pub(crate) fn client_tokens(file: Option<&PathBuf>) -> Result<Vec<String>> {
    let mut tokens: Vec<String> = match file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read client tokens {}", path.display()))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect(),
        None => Vec::new(),
    };
    if let Some(env) = crate::environment::var(crate::environment::KFLEET_CLIENT_TOKENS) {
        tokens.extend(
            env.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string),
        );
    }
    if tokens.is_empty() {
        bail!(
            "no client tokens: pass --client-tokens FILE (one token per line) or set KFLEET_CLIENT_TOKENS"
        );
    }
    if let Some(short) = tokens.iter().find(|t| t.len() < 16) {
        bail!(
            "a client token of {} characters is too short to be a secret; use at least 16",
            short.len()
        );
    }
    Ok(tokens)
}

/// The webhook secret: `--webhook-secret FILE`, else `KFLEET_WEBHOOK_SECRET`; none turns webhooks
/// off.
fn webhook_secret(file: Option<&PathBuf>) -> Result<Option<crate::service::Secret>> {
    let secret = match file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the webhook secret {}", path.display()))?
            .trim()
            .to_string(),
        None => match crate::environment::var(crate::environment::KFLEET_WEBHOOK_SECRET) {
            Some(s) => s.trim().to_string(),
            None => return Ok(None),
        },
    };
    if secret.len() < 16 {
        bail!(
            "the webhook secret has {} characters; use at least 16 (openssl rand -hex 32), the same as in the repository's webhook settings",
            secret.len()
        );
    }
    Ok(Some(crate::service::Secret::new(secret)))
}

pub(crate) fn serve_cmd(args: ServeArgs, config: &Config) -> Result<ExitCode> {
    let tokens = client_tokens(args.client_tokens.as_ref())?;
    let webhook_secret = webhook_secret(args.webhook_secret.as_ref())?;
    let template = args.naming.template(config)?;
    let forge = args
        .store
        .wrap(args.build.client(config)?, config, &template)?;
    let planner_config = args.build.planner_config(config, String::new())?;
    let store = runtime()?.block_on(args.build.store(config))?;
    tracing::info!("build state: {} {}", store.kind(), store.label());
    let planner = Planner::new(forge.clone(), template.clone(), planner_config, store);
    let options = crate::service::ServiceOptions {
        client_tokens: tokens,
        listing_ttl: std::time::Duration::from_secs(args.listing_ttl),
        deadline: args.build.deadline(config)?,
        rate_per_client: args.client_rate,
        metrics_public: args.metrics_public,
        // Claims whose holder stopped are found within half a lease.
        sweep_interval: (args.build.claim_lease / 2).min(std::time::Duration::from_secs(10)),
        retention: args.retention,
        retry_failed_after: args.retry_failed_after,
        builds_per_hour: args.client_builds_per_hour,
        webhook_secret,
        tls: args
            .tls_cert
            .clone()
            .zip(args.tls_key.clone())
            .map(|(cert, key)| crate::service::tls::TlsFiles { cert, key }),
        ..crate::service::ServiceOptions::default()
    };
    if let Some(files) = &options.tls {
        crate::service::tls::Reloading::new(files.clone())?;
    }
    let state = crate::service::ServiceState::new(forge.clone(), planner, template, options);
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        tracing::info!(
            "kfleet build service on {}://{} for {}",
            if args.tls_cert.is_some() {
                "https"
            } else {
                "http"
            },
            listener.local_addr()?,
            forge.label()
        );
        crate::service::serve(listener, state, async {
            let ctrl_c = tokio::signal::ctrl_c();
            #[cfg(unix)]
            {
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(mut term) => {
                        tokio::select! {
                            _ = ctrl_c => {}
                            _ = term.recv() => {}
                        }
                    }
                    Err(_) => {
                        let _ = ctrl_c.await;
                    }
                }
            }
            #[cfg(not(unix))]
            let _ = ctrl_c.await;
        })
        .await
        .context("the build service stopped")?;
        Ok(ExitCode::SUCCESS)
    })
}
