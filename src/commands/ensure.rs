//! `kfleet ensure`: the node side of the build service.

use super::prelude::*;

pub(crate) fn ensure_cmd(args: EnsureArgs, config: &Config) -> Result<ExitCode> {
    let token = match &args.token_file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the service token {}", path.display()))?
            .trim()
            .to_string(),
        None => std::env::var("KFLEET_SERVICE_TOKEN").unwrap_or_default(),
    };
    if token.is_empty() && args.service.is_some() {
        bail!("no service token: pass --token-file FILE or set KFLEET_SERVICE_TOKEN");
    }
    let identity = match &args.distribution {
        Some(d) => crate::identity::KernelIdentity::parse(
            d,
            args.distro_version.as_deref().unwrap_or(""),
            args.architecture.as_deref().unwrap_or(""),
            args.kernel_version.as_deref().unwrap_or(""),
        )?,
        None => {
            let local = local_identity(None).context("cannot determine this machine's identity")?;
            let key = local.key();
            match local.verdict {
                Verdict::Valid(id) => id,
                Verdict::Unsupported(r) | Verdict::Invalid(r) => {
                    eprintln!("this machine ({key}) cannot get a driver: {r}");
                    return Ok(ExitCode::from(5));
                }
            }
        }
    };
    crate::identity::check_driver_version(&args.driver_version)
        .map_err(|e| anyhow::anyhow!("--driver-version: {e}"))?;
    let template = args.naming.template(config)?;
    let options = crate::service::ensure::EnsureOptions {
        asset_name: template.render(&identity, &args.driver_version),
        max_download: args.max_download.saturating_mul(1 << 20),
        insecure_http: args.insecure_http,
        service: args.service.clone().unwrap_or_default(),
        token,
        driver_version: args.driver_version.clone(),
        out: args.out.clone(),
        deadline: args.deadline,
        poll_min: std::time::Duration::from_secs(1),
        poll_max: std::time::Duration::from_secs(15),
    };
    let outcome = if args.service.is_some() {
        runtime()?.block_on(crate::service::ensure::ensure(&identity, &options))?
    } else {
        let build = BuildArgs::for_repo(
            args.repo.clone(),
            args.api_url.clone(),
            args.state_dir.clone(),
            Some(args.deadline),
        );
        let forge = build.client(config)?;
        let planner = Planner::new(
            forge.clone(),
            template.clone(),
            build.planner_config(config, args.driver_version.clone())?,
        )?;
        runtime()?.block_on(crate::service::ensure::ensure_direct(
            &identity, &*forge, &planner, &template, &options,
        ))?
    };
    match &outcome {
        crate::service::ensure::EnsureOutcome::Available(path) => outln!("{}", path.display()),
        crate::service::ensure::EnsureOutcome::TimedOut(why)
        | crate::service::ensure::EnsureOutcome::Failed(why) => eprintln!("{why}"),
        crate::service::ensure::EnsureOutcome::Rejected(why) => eprintln!("rejected: {why}"),
    }
    Ok(ExitCode::from(outcome.exit_code()))
}
