//! `kfleet release`: the build job's calls on the driver's release (is the asset there; upload
//! the artifact and its checksum), through the same client as every other GitHub call.

use crate::artifacts::AssetTemplate;
use crate::cli::NamingArgs;
use crate::cli::ReleaseCommand;
use crate::cli::StoreArgs;
use crate::cli::StoreCommand;
use crate::cli::runtime;
use crate::config::Config;
use crate::forge::OciStore;
use crate::identity::Verdict;
use anyhow::Context;
use anyhow::Result;
use anyhow::bail;
use std::process::ExitCode;
use std::sync::Arc;

pub(crate) fn release_cmd(cmd: ReleaseCommand, config: &Config) -> Result<ExitCode> {
    match cmd {
        ReleaseCommand::Asset { tag, name, forge } => {
            let client = forge.client(config)?;
            let found = runtime()?.block_on(client.find_asset(&tag, &name))?;
            if super::json_wanted() {
                super::print_json(&serde_json::json!({
                    "tag": tag, "name": name, "present": found.is_some(), "asset": found,
                }))?;
            } else {
                outln!("{}", if found.is_some() { "present" } else { "absent" });
            }
        }
        ReleaseCommand::Upload { tag, files, forge } => {
            let client = forge.client(config)?;
            // Every file is read (and its name checked) before the first upload starts.
            let mut uploads = Vec::with_capacity(files.len());
            for path in &files {
                let name = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .with_context(|| format!("{}: not a file name", path.display()))?
                    .to_string();
                let size = std::fs::metadata(path)
                    .with_context(|| format!("cannot read {}", path.display()))?
                    .len();
                if size > crate::forge::MAX_UPLOAD {
                    bail!(
                        "{}: {size} bytes; a release asset holds at most {}",
                        path.display(),
                        crate::forge::MAX_UPLOAD
                    );
                }
                let bytes = std::fs::read(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                uploads.push((name, bytes::Bytes::from(bytes)));
            }
            let mut uploaded = Vec::new();
            for (name, bytes) in uploads {
                let asset = runtime()?.block_on(client.upload_asset(&tag, &name, bytes))?;
                if super::json_wanted() {
                    uploaded.push(asset);
                    continue;
                }
                outln!(
                    "uploaded {} to {tag} ({} bytes{})",
                    asset.name,
                    asset.size.unwrap_or_default(),
                    asset.digest.map(|d| format!(", {d}")).unwrap_or_default()
                );
            }
            if super::json_wanted() {
                super::print_json(&serde_json::json!({"tag": tag, "uploaded": uploaded}))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `kfleet store`: the build job's calls on an OCI registry holding the drivers.
pub(crate) fn store_cmd(cmd: StoreCommand, config: &Config) -> Result<ExitCode> {
    let open = |store: &StoreArgs, naming: &NamingArgs| -> Result<(Arc<OciStore>, AssetTemplate)> {
        let template = naming.template(config)?;
        let store = store.open(config, &template)?.context(
            "no store: pass --store oci://REGISTRY/NAMESPACE/NAME (or set store in kfleet.toml)",
        )?;
        Ok((store, template))
    };
    match cmd {
        StoreCommand::Push {
            driver_version,
            files,
            store,
            naming,
        } => {
            let (store, template) = open(&store, &naming)?;
            // Every package is read and checked before the first push.
            let mut pushes = Vec::with_capacity(files.len());
            for path in &files {
                let name = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .with_context(|| format!("{}: not a file name", path.display()))?;
                let parsed = template.parse(name).with_context(|| {
                    format!(
                        "{}: the name does not follow the asset template {}",
                        path.display(),
                        template.template()
                    )
                })?;
                if parsed
                    .driver_version
                    .as_deref()
                    .is_some_and(|v| v != driver_version)
                {
                    bail!(
                        "{}: the name says driver version {}, not --driver-version {driver_version}",
                        path.display(),
                        parsed.driver_version.unwrap_or_default()
                    );
                }
                let Verdict::Valid(identity) = &parsed.checked.verdict else {
                    bail!("{}: the name holds no valid identity", path.display());
                };
                let bytes = std::fs::read(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let modules = crate::node::install::read_package_bytes(path, &bytes)?;
                let mut vermagics: Vec<&str> =
                    modules.iter().map(|m| m.vermagic.as_str()).collect();
                vermagics.dedup();
                let [vermagic] = vermagics.as_slice() else {
                    bail!(
                        "{}: the modules disagree on vermagic ({}); one package is one kernel's",
                        path.display(),
                        vermagics.join(" | ")
                    );
                };
                // The build's Sigstore bundle beside the package goes with it, as its second layer.
                let mut bundle_path = path.clone().into_os_string();
                bundle_path.push(crate::provenance::BUNDLE_SUFFIX);
                let bundle_path = std::path::PathBuf::from(bundle_path);
                let bundle = match std::fs::metadata(&bundle_path) {
                    Ok(_) => Some(bytes::Bytes::from(
                        crate::bounded::read_file(
                            &bundle_path,
                            crate::provenance::MAX_BUNDLE as u64,
                        )
                        .with_context(|| format!("cannot read {}", bundle_path.display()))?,
                    )),
                    Err(_) => None,
                };
                // What its modules import, with CRCs: the record `kabi imports --json` writes,
                // another layer, so kernels with the same CRCs are found compatible.
                let kabi = match super::kabi::package_record(path, &modules) {
                    Ok(record) => Some(bytes::Bytes::from(serde_json::to_vec(&record)?)),
                    Err(e) => {
                        tracing::warn!(
                            "no kABI record pushed ({e:#}); no other kernel will be found compatible with {}",
                            path.display()
                        );
                        None
                    }
                };
                pushes.push((
                    identity.key(),
                    bytes::Bytes::from(bytes),
                    vermagic.to_string(),
                    crate::forge::Attached { bundle, kabi },
                ));
            }
            let mut pushed = Vec::new();
            for (key, bytes, vermagic, attached) in pushes {
                let done = runtime()?.block_on(store.push(
                    &key,
                    &driver_version,
                    bytes,
                    Some(vermagic),
                    attached,
                ))?;
                if !super::json_wanted() {
                    outln!(
                        "{} {}:{} ({}, {} bytes, layer {})",
                        if done.unchanged {
                            "already in"
                        } else {
                            "pushed to"
                        },
                        store.label(),
                        done.tag,
                        done.manifest_digest,
                        done.driver.size,
                        done.driver.layer_digest
                    );
                }
                pushed.push(done);
            }
            if super::json_wanted() {
                super::print_json(&serde_json::json!({"store": store.label(), "pushed": pushed}))?;
            }
        }
        StoreCommand::Has {
            driver_version,
            name,
            store,
            naming,
        } => {
            let (store, template) = open(&store, &naming)?;
            // A name the template does not give is no driver the store can hold.
            let key = template.parse(&name).and_then(|parsed| {
                let driver_named = parsed.driver_version.as_deref();
                match parsed.checked.verdict {
                    Verdict::Valid(id) if driver_named.is_none_or(|v| v == driver_version) => {
                        Some(id.key())
                    }
                    _ => None,
                }
            });
            let present = match key {
                Some(key) => runtime()?.block_on(store.has(&key, &driver_version))?,
                None => false,
            };
            if super::json_wanted() {
                super::print_json(&serde_json::json!({
                    "store": store.label(), "driver_version": driver_version, "name": name, "present": present,
                }))?;
            } else {
                outln!("{}", if present { "present" } else { "absent" });
            }
        }
        StoreCommand::List {
            driver_version,
            store,
            naming,
        } => {
            let (store, template) = open(&store, &naming)?;
            let listing = runtime()?.block_on(store.list())?;
            let mut rows = Vec::new();
            for release in &listing.releases {
                if driver_version
                    .as_ref()
                    .is_some_and(|v| *v != release.tag_name)
                {
                    continue;
                }
                for asset in crate::artifacts::index_assets(release, &template).matched {
                    let tag = store.tag(&asset.key, &release.tag_name)?.0;
                    rows.push(serde_json::json!({
                        "driver_version": release.tag_name, "identity": asset.key, "tag": tag,
                    }));
                }
            }
            if super::json_wanted() {
                super::print_json(&serde_json::json!({"store": store.label(), "drivers": rows}))?;
            } else {
                for row in &rows {
                    outln!(
                        "{}  {}  {}",
                        row["driver_version"].as_str().unwrap_or_default(),
                        row["identity"].as_str().unwrap_or_default(),
                        row["tag"].as_str().unwrap_or_default()
                    );
                }
                if rows.is_empty() {
                    outln!("no drivers in {}", store.label());
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
