//! `kfleet serve`: the build service nodes ask for their driver.

use crate::builds::Planner;
use crate::cli::ServeArgs;
use crate::cli::ServeSettings;
use crate::cli::runtime;
use crate::config::Config;
use anyhow::Context;
use anyhow::Result;
use std::process::ExitCode;

pub(crate) fn serve_cmd(args: ServeArgs, config: &Config) -> Result<ExitCode> {
    let settings = ServeSettings::resolve(&args, config)?;
    let ServeSettings {
        template,
        planner: planner_config,
        options,
        listen,
    } = settings;
    let forge = args
        .store
        .wrap(args.build.client(config)?, config, &template)?;
    let store = runtime()?.block_on(args.build.store(config))?;
    tracing::info!("build state: {} {}", store.kind(), store.label());
    let planner = Planner::new(forge.clone(), template.clone(), planner_config, store);
    if let Some(files) = &options.tls {
        crate::service::tls::Reloading::new(files.clone())?;
    }
    let tls = options.tls.is_some();
    let state = crate::service::ServiceState::new(forge.clone(), planner, template, options);
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        tracing::info!(
            "kfleet build service on {}://{} for {}",
            if tls { "https" } else { "http" },
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
