//! `kfleet ensure`: the node side of the build service.

use crate::builds::Planner;
use crate::cli::BuildArgs;
use crate::cli::EnsureArgs;
use crate::cli::EnsureSettings;
use crate::cli::HookCommand;
use crate::cli::HookKindArg;
use crate::cli::InstallArgs;
use crate::cli::ModuleDir;
use crate::cli::NodeArgs;
use crate::cli::runtime;
use crate::config::Config;
use crate::forge::Forge;
use crate::forge::StoreForge;
use crate::identity::RawIdentity;
use crate::identity::Verdict;
use crate::identity::check;
use crate::node::local_identity;
use anyhow::Context;
use anyhow::Result;
use anyhow::bail;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

pub(crate) fn ensure_cmd(args: EnsureArgs, config: &Config) -> Result<ExitCode> {
    let settings = EnsureSettings::resolve(&args, config)?;
    if args.all_installed {
        return ensure_all_installed(&args, config, &settings);
    }
    let identity = match &args.distribution {
        Some(d) => crate::identity::KernelIdentity::parse(
            d,
            args.distro_version.as_deref().unwrap_or(""),
            args.architecture.as_deref().unwrap_or(""),
            args.kernel_version.as_deref().unwrap_or(""),
        )?,
        None => {
            let local = machine_identity(&args, args.kernel_version.as_deref())?;
            let key = local.key();
            match local.verdict {
                Verdict::Valid(id) => id,
                Verdict::Unsupported(r) | Verdict::Invalid(r) => {
                    tracing::info!("this machine ({key}) cannot get a driver: {r}");
                    if args.mark_node {
                        apply_mark(
                            &args,
                            crate::readiness::Mark {
                                label: "unsupported".into(),
                                status: format!("this machine ({key}) cannot get a driver: {r}"),
                                ready: false,
                                ..Default::default()
                            },
                        )?;
                    }
                    return Ok(ExitCode::from(5));
                }
            }
        }
    };
    let result = ensure_identity(&args, config, &settings, &identity);
    if args.mark_node {
        mark_node(&args, &identity, &result)?;
    }
    result.map(ExitCode::from)
}

/// The API server and node `--mark-node` marks: the pod's, each replaced where a flag names it.
fn kube_target(args: &EnsureArgs) -> Result<crate::readiness::KubeTarget> {
    Ok(crate::readiness::KubeTarget::in_cluster(
        args.kube_api.clone(),
        args.kube_token_file.clone(),
        args.kube_ca_file.clone(),
        args.node_name.clone(),
    )?)
}

/// `--mark-node`: the node's label, annotation and taint after `ensure` ended with `result`.
fn mark_node(
    args: &EnsureArgs,
    identity: &crate::identity::KernelIdentity,
    result: &Result<u8>,
) -> Result<()> {
    use crate::readiness::Mark;
    let kernel = &identity.kernel_version;
    let version = &args.driver_version;
    let loaded = args.install && !args.node.no_load;
    let mark = match result {
        Ok(0) => Mark {
            label: version.clone(),
            status: if loaded {
                format!("driver {version} installed and loaded for {kernel}")
            } else {
                format!("driver {version} downloaded for {kernel}, not loaded")
            },
            ready: loaded,
            ..Default::default()
        },
        Ok(code) => {
            let why = match code {
                3 => "timed-out",
                4 => "build-failed",
                5 => "unsupported",
                6 => "vermagic-mismatch",
                7 => "signature-required",
                8 => "load-failed",
                _ => "error",
            };
            Mark {
                label: why.into(),
                status: format!(
                    "no driver {version} for {kernel}: {why} (exit {code}); the pod's log says more"
                ),
                ready: false,
                ..Default::default()
            }
        }
        Err(e) => Mark {
            label: "error".into(),
            status: format!("no driver {version} for {kernel}: {e:#}"),
            ready: false,
            ..Default::default()
        },
    };
    apply_mark(args, mark)
}

/// Marks the node `--mark-node` names with `mark`, and says so.
fn apply_mark(args: &EnsureArgs, mut mark: crate::readiness::Mark) -> Result<()> {
    let target = kube_target(args)?;
    // The kernels the node may boot next, for inventories read from the cluster.
    mark.installed = crate::node::hooks::installed_kernels(&install_root(&args.node));
    runtime()?.block_on(crate::readiness::mark_node(&target, &mark))?;
    tracing::info!(
        "node {}: {}={}{}",
        target.node,
        crate::readiness::LABEL,
        crate::readiness::label_value(&mark.label),
        if mark.ready {
            format!(", {} taint removed", crate::readiness::TAINT)
        } else {
            String::new()
        }
    );
    Ok(())
}

/// This machine's identity (the host's under --host-root), with `kernel` instead of the running
/// kernel when one is named.
fn machine_identity(args: &EnsureArgs, kernel: Option<&str>) -> Result<crate::identity::Checked> {
    let local = match &args.node.host_root {
        Some(root) => crate::node::host_identity(root).with_context(|| {
            format!(
                "cannot determine the identity of the host at {}",
                root.display()
            )
        })?,
        None => local_identity(None).context("cannot determine this machine's identity")?,
    };
    Ok(match kernel {
        Some(kernel) => check(&RawIdentity {
            distribution: &local.distribution,
            distro_version: &local.distro_version,
            architecture: &local.architecture,
            kernel_version: kernel,
        }),
        None => local,
    })
}

/// `ensure --all-installed`: every kernel installed on the machine, one after another.
fn ensure_all_installed(
    args: &EnsureArgs,
    config: &Config,
    settings: &EnsureSettings,
) -> Result<ExitCode> {
    let root = args
        .node
        .host_root
        .clone()
        .unwrap_or_else(|| PathBuf::from("/"));
    let kernels = crate::node::hooks::installed_kernels(&root);
    if kernels.is_empty() {
        bail!(
            "no installed kernel under {}: no lib/modules/VERSION beside a boot/vmlinuz-VERSION",
            root.display()
        );
    }
    let mut first_failure = None;
    for kernel in &kernels {
        let checked = machine_identity(args, Some(kernel))?;
        let key = checked.key();
        let code = match checked.verdict {
            Verdict::Valid(id) => {
                tracing::info!("{key}: asking for its driver");
                ensure_identity(args, config, settings, &id)?
            }
            Verdict::Unsupported(r) | Verdict::Invalid(r) => {
                tracing::info!("{key} cannot get a driver: {r}");
                5
            }
        };
        if code != 0 && first_failure.is_none() {
            first_failure = Some(code);
        }
    }
    Ok(ExitCode::from(first_failure.unwrap_or(0)))
}

/// Gets (and with --install installs) the driver of one identity.
fn ensure_identity(
    args: &EnsureArgs,
    config: &Config,
    settings: &EnsureSettings,
    identity: &crate::identity::KernelIdentity,
) -> Result<u8> {
    let template = &settings.template;
    let store = args.store.open(config, template)?;
    let options = crate::node::ensure::EnsureOptions {
        asset_name: template.render(identity, &args.driver_version),
        store: store.clone(),
        ..settings.options.clone()
    };
    let outcome = if args.service.is_some() {
        runtime()?.block_on(crate::node::ensure::ensure(identity, &options))?
    } else {
        let build = BuildArgs::for_repo(
            args.repo.clone(),
            args.api_url.clone(),
            args.state_dir.clone(),
            Some(args.deadline),
        );
        let forge: Arc<dyn Forge> = match &store {
            Some(store) => Arc::new(StoreForge::new(build.client(config)?, store.clone())),
            None => build.client(config)?,
        };
        let planner_config = build.planner_config(config, args.driver_version.clone())?;
        runtime()?.block_on(async {
            let planner = Planner::new(
                forge.clone(),
                template.clone(),
                planner_config,
                build.store(config).await?,
            );
            anyhow::Ok(
                crate::node::ensure::ensure_direct(identity, &*forge, &planner, template, &options)
                    .await?,
            )
        })?
    };
    match &outcome {
        crate::node::ensure::EnsureOutcome::Available(artifact) if args.install => {
            tracing::info!("verified {}", artifact.path.display());
            // The bytes that were verified, not a second read of the file in --out.
            return install_package(
                &artifact.path,
                Some(&artifact.bytes),
                &identity.kernel_version,
                Some(identity.distribution),
                &args.node,
            );
        }
        crate::node::ensure::EnsureOutcome::Available(artifact) if super::json_wanted() => {
            super::print_json(&serde_json::json!({
                "status": "available",
                "identity": identity.key(),
                "path": artifact.path,
                "bytes": artifact.bytes.len(),
            }))?;
        }
        crate::node::ensure::EnsureOutcome::Available(artifact) => {
            outln!("{}", artifact.path.display())
        }
        crate::node::ensure::EnsureOutcome::TimedOut(why)
        | crate::node::ensure::EnsureOutcome::Failed(why)
        | crate::node::ensure::EnsureOutcome::Rejected(why)
            if super::json_wanted() =>
        {
            let status = match &outcome {
                crate::node::ensure::EnsureOutcome::TimedOut(_) => "timed_out",
                crate::node::ensure::EnsureOutcome::Failed(_) => "failed",
                _ => "rejected",
            };
            super::print_json(&serde_json::json!({
                "status": status, "identity": identity.key(), "reason": why,
            }))?;
        }
        crate::node::ensure::EnsureOutcome::TimedOut(why)
        | crate::node::ensure::EnsureOutcome::Failed(why) => tracing::info!("{why}"),
        crate::node::ensure::EnsureOutcome::Rejected(why) => tracing::info!("rejected: {why}"),
    }
    Ok(outcome.exit_code())
}

/// `kfleet install PACKAGE`: a package already on the node.
pub(crate) fn install_cmd(args: InstallArgs) -> Result<ExitCode> {
    let kernel = match args.kernel_version.clone() {
        Some(k) => k,
        None => {
            running_kernel().context("cannot read the running kernel; pass --kernel-version")?
        }
    };
    let distribution = root_distribution(&install_root(&args.node));
    let verified = match args.provenance.requirement(None)? {
        Some(required) => Some(verified_package(&args, &required)?),
        None => None,
    };
    install_package(
        &args.package,
        verified.as_deref(),
        &kernel,
        distribution,
        &args.node,
    )
    .map(ExitCode::from)
}

/// The package's bytes, once its Sigstore bundle verified them (the install uses these bytes,
/// never a second read of the file).
fn verified_package(
    args: &InstallArgs,
    required: &crate::provenance::Requirement,
) -> Result<Vec<u8>> {
    let package = std::fs::read(&args.package)
        .with_context(|| format!("cannot read {}", args.package.display()))?;
    let bundle_path = args.bundle.clone().unwrap_or_else(|| {
        let mut name = args.package.clone().into_os_string();
        name.push(crate::provenance::BUNDLE_SUFFIX);
        PathBuf::from(name)
    });
    let bundle = crate::bounded::read_file(&bundle_path, crate::provenance::MAX_BUNDLE as u64)
        .with_context(|| {
            format!(
                "provenance is required, but its bundle {} cannot be read; nothing was installed",
                bundle_path.display()
            )
        })?;
    let verified = required
        .check(
            &bundle_path.display().to_string(),
            &bundle,
            &crate::provenance::sha256_hex(&package),
        )
        .map_err(|e| anyhow::anyhow!("{e}; nothing was installed"))?;
    tracing::info!("{}: {}", args.package.display(), verified.describe());
    Ok(package)
}

/// The root a package is installed under: `--host-root`, `--root`, or `/`.
fn install_root(node: &NodeArgs) -> PathBuf {
    node.host_root
        .clone()
        .or_else(|| node.root.clone())
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// The distribution the root's os-release names, if it names one kfleet knows.
fn root_distribution(root: &std::path::Path) -> Option<crate::identity::Distribution> {
    let host = crate::node::host_identity(root).ok()?;
    crate::identity::Distribution::from_alias(&host.distribution).map(|(d, _)| d)
}

fn running_kernel() -> std::io::Result<String> {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string())
}

/// Installs (and loads, where the target is the running kernel) with the node's settings; says
/// what happened and exits with the installer's code.
fn install_package(
    package: &std::path::Path,
    verified: Option<&[u8]>,
    kernel: &str,
    distribution: Option<crate::identity::Distribution>,
    node: &NodeArgs,
) -> Result<u8> {
    let root = install_root(node);
    // Installing into another root for an image never loads; a host root is this kernel's.
    let running = if node.root.is_some() {
        None
    } else {
        running_kernel().ok()
    };
    let options = crate::node::install::InstallOptions {
        root,
        kernel_version: kernel.to_string(),
        running_kernel: running,
        subdir: match node.module_dir {
            Some(ModuleDir::Extra) => "extra".into(),
            Some(ModuleDir::Updates) => "updates".into(),
            None => distribution
                .map_or("extra", crate::identity::Distribution::module_dir)
                .into(),
        },
        load: !node.no_load,
        replace: node.replace,
        require_signed: node.require_signed,
        check_signer: !node.no_signer_check,
        depmod: node.depmod.clone(),
        kabi: node.kabi,
    };
    let loader = crate::node::install::SystemLoader {
        root: options.root.clone(),
    };
    let installed = match verified {
        Some(bytes) => crate::node::install::install_bytes(package, bytes, &options, &loader),
        None => crate::node::install::install(package, &options, &loader),
    };
    let outcome = match installed {
        Ok(outcome) => outcome,
        Err(e) => {
            tracing::error!("{}", super::hints::with_hint(&e));
            return Ok(e.exit_code());
        }
    };
    use crate::node::install::{InstallOutcome, ModulePlace};
    let (paths, loaded, place) = match outcome {
        InstallOutcome::AlreadyInstalled { paths, place } => (paths, None, place),
        InstallOutcome::Installed {
            paths,
            loaded,
            place,
        } => (paths, Some(loaded), place),
    };
    let image_based = match &place {
        ModulePlace::Writable { os, route } => Some((os, route)),
        ModulePlace::Tree => None,
    };
    if super::json_wanted() {
        let mut json = serde_json::json!({
            "status": if loaded.is_some() { "installed" } else { "already_installed" },
            "kernel": kernel,
            "paths": paths,
        });
        if let Some(loaded) = loaded {
            json["loaded"] = loaded.into();
        }
        if let Some((os, route)) = image_based {
            json["image_based"] = serde_json::json!({"os": os, "route": route});
        }
        super::print_json(&json)?;
        return Ok(0);
    }
    for p in &paths {
        outln!("{}", p.display());
    }
    let running = options.running_kernel.as_deref() == Some(kernel);
    match loaded {
        None => tracing::info!(
            "already installed{}; nothing to do",
            if options.load { " and loaded" } else { "" }
        ),
        Some(loaded) => tracing::info!(
            "installed for {kernel}; {}{}",
            if image_based.is_some() {
                ""
            } else {
                "depmod ran; "
            },
            match (loaded, options.load, running) {
                (true, _, _) => "loaded",
                (false, false, _) => "not loaded (--no-load)",
                (false, true, false) => "not loaded: it is not the running kernel",
                (false, true, true) => "not loaded",
            }
        ),
    }
    if let Some((os, route)) = image_based {
        tracing::info!(
            "{os} keeps /lib/modules in a read-only image: the driver is in /{}/{kernel} and is loaded by path (insmod); kfleet-ensure.service loads it again after a reboot. To make it part of the image, {os}'s own route is: {route}",
            crate::node::install::WRITABLE_MODULES
        );
    }
    Ok(0)
}

/// `kfleet hook install|remove`.
pub(crate) fn hook_cmd(cmd: HookCommand) -> Result<ExitCode> {
    use crate::node::hooks::{HookKind, HookSettings};
    match cmd {
        HookCommand::Install {
            root,
            kind,
            timeout,
            kfleet,
            env_file,
        } => {
            let kind = match kind {
                Some(HookKindArg::Postinst) => HookKind::Postinst,
                Some(HookKindArg::KernelInstall) => HookKind::KernelInstall,
                None => HookKind::for_distribution(root_distribution(&root)),
            };
            let kfleet = match kfleet {
                Some(path) => path,
                None => std::env::current_exe()
                    .context("cannot tell where this kfleet is; pass --kfleet PATH")?,
            };
            let settings = HookSettings {
                kfleet,
                timeout,
                env_file,
            };
            let written = crate::node::hooks::install(&root, kind, &settings)?;
            for path in &written {
                outln!("wrote {}", path.display());
            }
            if !root
                .join(
                    settings
                        .env_file
                        .strip_prefix("/")
                        .unwrap_or(&settings.env_file),
                )
                .exists()
            {
                tracing::warn!(
                    "{} does not exist yet: the hook needs KFLEET_SERVICE, KFLEET_DRIVER_VERSION and KFLEET_SERVICE_TOKEN there (mode 0600)",
                    settings.env_file.display()
                );
            }
        }
        HookCommand::Remove { root } => {
            let (removed, kept) = crate::node::hooks::remove(&root)?;
            for path in &removed {
                outln!("removed {}", path.display());
            }
            for path in &kept {
                tracing::warn!("{} is not kfleet's; left as it is", path.display());
            }
            if removed.is_empty() && kept.is_empty() {
                outln!("no kfleet hook under {}", root.display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
