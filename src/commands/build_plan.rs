//! `kfleet build-plan`: the environment one kernel's build runs in.

use super::read_keys_csv;
use crate::buildenv::{Digests, Planned, plan};
use crate::cli::BuildPlanArgs;
use crate::cli::ImagesCommand;
use crate::cli::PlanFormat;
use crate::cli::runtime;
use anyhow::Context;
use anyhow::Result;
use std::process::ExitCode;

pub(crate) fn build_plan_cmd(args: BuildPlanArgs) -> Result<ExitCode> {
    let id = args.identity.identity()?;
    let chain = crate::headers::Chain::load_or_builtin(args.sources.as_deref())?;
    let digests = match &args.digests {
        Some(path) => Digests::load(path)?,
        None => Digests::default(),
    };
    let planned = plan(&id, &chain, &digests);
    match (&planned, args.format) {
        (_, PlanFormat::Json) => {
            outln!("{}", serde_json::to_string_pretty(&planned)?);
        }
        (Planned::Plan(p), PlanFormat::Env) => out!("{}", p.to_env()),
        (Planned::Plan(p), PlanFormat::Text) => {
            outln!("identity      {}", p.identity);
            outln!(
                "image         {}{}",
                p.image,
                if p.pinned { "" } else { " (tag, not pinned)" }
            );
            outln!("headers       {}", p.header_packages.join(" "));
            let compilers: Vec<String> = p
                .compilers
                .iter()
                .map(|c| format!("gcc {} ({} from {})", c.major, c.command, c.package))
                .collect();
            outln!(
                "compilers     {}",
                if compilers.is_empty() {
                    "the image's default gcc".to_string()
                } else {
                    compilers.join(", ")
                }
            );
            if let Some(major) = p.expected_gcc {
                outln!("kernel's gcc  {major} (CONFIG_CC_VERSION_TEXT in the headers decides)");
            }
            outln!("commands");
            for (n, command) in p.commands().iter().enumerate() {
                outln!("  {}. {command}", n + 1);
            }
            if !p.notes.is_empty() {
                outln!("notes");
                for note in &p.notes {
                    outln!("  - {note}");
                }
            }
        }
        (Planned::Unsupported { .. }, _) => {}
    }
    match planned {
        Planned::Plan(_) => Ok(ExitCode::SUCCESS),
        Planned::Unsupported { identity, reason } => {
            tracing::info!("unsupported: {identity}: {reason}");
            Ok(ExitCode::from(1))
        }
    }
}

/// `kfleet images pin`: the digests of the build images of the kernels named.
pub(crate) fn images_cmd(cmd: ImagesCommand) -> Result<ExitCode> {
    let ImagesCommand::Pin {
        identity,
        from,
        out,
        registry,
        timeout,
    } = cmd;
    let mut keys = identity;
    if let Some(path) = &from {
        keys.extend(read_keys_csv(path)?);
    }
    let mut overrides = std::collections::BTreeMap::new();
    for entry in &registry {
        let (host, url) = entry
            .split_once('=')
            .with_context(|| format!("--registry {entry}: expected HOST=URL"))?;
        overrides.insert(host.to_string(), url.to_string());
    }
    let chain = crate::headers::Chain::builtin();
    let mut images = std::collections::BTreeSet::new();
    for key in &keys {
        let id = crate::identity::KernelIdentity::from_key(key)
            .map_err(|e| anyhow::anyhow!("{key}: {e}"))?;
        match plan(&id, &chain, &Digests::default()) {
            Planned::Plan(p) => {
                images.insert(p.image);
            }
            Planned::Unsupported { reason, .. } => tracing::info!("skipped {key}: {reason}"),
        }
    }
    let images: Vec<String> = images.into_iter().collect();
    let pinned = runtime()?.block_on(crate::buildenv::pin(&images, &overrides, timeout))?;
    let mut digests = match &out {
        Some(path) if path.exists() => Digests::load(path)?,
        _ => Digests::default(),
    };
    for image in &images {
        if let Some(digest) = pinned.get(image) {
            tracing::info!("{image} {digest}");
            digests.insert(image.clone(), digest.to_string());
        }
    }
    match &out {
        Some(path) => {
            crate::fsio::write_atomic(path, digests.to_toml().as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
            tracing::info!(
                "{} of {} images pinned in {}",
                images.len(),
                digests.len(),
                path.display()
            );
        }
        None => out!("{}", digests.to_toml()),
    }
    Ok(ExitCode::SUCCESS)
}
