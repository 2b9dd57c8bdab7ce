//! `kfleet rhel register` and `unregister`: a build job's system in Red Hat Subscription
//! Management, for the CDN's content access certificate when the repository holds an activation
//! key rather than an entitlement certificate.

use crate::cli::{RhelCommand, runtime};
use crate::headers::rhsm::{self, Consumer};
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::ExitCode;

const CONSUMER: &str = "consumer.pem";
/// The consumer's id and the service that issued it, for `unregister`.
const CONSUMER_FACTS: &str = "consumer.json";
const CERT: &str = "entitlement.pem";
const KEY: &str = "entitlement-key.pem";

pub(crate) fn rhel_cmd(cmd: RhelCommand) -> Result<ExitCode> {
    match cmd {
        RhelCommand::Register {
            out,
            org,
            name,
            rhsm_url,
            rhsm_ca,
        } => register(&out, &org, &name, &rhsm_url, rhsm_ca.as_deref()),
        RhelCommand::Unregister { dir, rhsm_ca } => unregister(&dir, rhsm_ca.as_deref()),
    }?;
    Ok(ExitCode::SUCCESS)
}

fn activation_key() -> Result<String> {
    use crate::environment::{KFLEET_RHEL_ACTIVATION_KEY, KFLEET_RHEL_ACTIVATION_KEY_FILE};
    crate::environment::secret_name(
        KFLEET_RHEL_ACTIVATION_KEY,
        KFLEET_RHEL_ACTIVATION_KEY_FILE,
        "activation key",
    )
    .map_err(anyhow::Error::msg)
}

fn register(out: &Path, org: &str, name: &str, base: &str, ca: Option<&Path>) -> Result<()> {
    let key = activation_key()?;
    if out.join(CONSUMER_FACTS).exists() {
        bail!(
            "{} already holds a registered system: kfleet rhel unregister {} first",
            out.display(),
            out.display()
        );
    }
    crate::fsio::create_private_dir(out)
        .with_context(|| format!("cannot make {}", out.display()))?;
    let rt = runtime()?;
    let consumer = rt.block_on(rhsm::register(base, ca, org, &key, name))?;
    // From here on a failure unregisters the system, so none is left behind.
    let kept = keep_consumer(out, base, &consumer).and_then(|()| {
        let (cert, key) = rt.block_on(rhsm::content_certificate(base, ca, &consumer))?;
        crate::fsio::write_private(&out.join(CERT), cert.as_bytes())?;
        crate::fsio::write_private(&out.join(KEY), key.as_bytes())?;
        Ok(())
    });
    if let Err(e) = kept {
        let undone = rt.block_on(rhsm::unregister(base, ca, &consumer));
        return Err(match undone {
            Ok(()) => {
                remove_files(out, &[CERT, KEY, CONSUMER, CONSUMER_FACTS]);
                e.context(format!("system {} unregistered again", consumer.uuid))
            }
            Err(u) => {
                // The system's identity stays, so unregistering can be tried again.
                remove_files(out, &[CERT, KEY]);
                e.context(format!(
                    "and system {} could not be unregistered ({u}): `kfleet rhel unregister {}` tries again (the build job's last step does), or remove it in the Hybrid Cloud Console",
                    consumer.uuid,
                    out.display()
                ))
            }
        });
    }
    outln!("registered system {} in organisation {org}", consumer.uuid);
    outln!("KFLEET_RHEL_ENTITLEMENT_CERT={}", out.join(CERT).display());
    outln!("KFLEET_RHEL_ENTITLEMENT_KEY={}", out.join(KEY).display());
    Ok(())
}

fn keep_consumer(out: &Path, base: &str, consumer: &Consumer) -> Result<()> {
    crate::fsio::write_private(&out.join(CONSUMER), &consumer.identity)?;
    let facts = serde_json::json!({"uuid": consumer.uuid, "rhsm_url": base});
    crate::fsio::write_private(&out.join(CONSUMER_FACTS), facts.to_string().as_bytes())?;
    Ok(())
}

fn unregister(dir: &Path, ca: Option<&Path>) -> Result<()> {
    #[derive(serde::Deserialize)]
    struct Facts {
        uuid: String,
        rhsm_url: String,
    }
    // What register wrote: small files, read bounded all the same.
    let read = |file: &str| {
        let path = dir.join(file);
        crate::bounded::read_file(&path, 1 << 20)
            .with_context(|| format!("cannot read {}", path.display()))
    };
    let facts_file = dir.join(CONSUMER_FACTS);
    let facts: Facts = serde_json::from_slice(&read(CONSUMER_FACTS)?).with_context(|| {
        format!(
            "{} is not what kfleet rhel register wrote",
            facts_file.display()
        )
    })?;
    let identity = read(CONSUMER)?;
    // The id names a URL path: the file is checked like the service's answer was.
    let consumer = Consumer {
        uuid: rhsm::checked_uuid(&facts.rhsm_url, &facts.uuid)?,
        identity,
    };
    runtime()?.block_on(rhsm::unregister(&facts.rhsm_url, ca, &consumer))?;
    remove_files(dir, &[CERT, KEY, CONSUMER, CONSUMER_FACTS]);
    outln!("unregistered system {}", consumer.uuid);
    Ok(())
}

/// Removes `files` of what `register` wrote into `dir` (what is not there is no error).
fn remove_files(dir: &Path, files: &[&str]) {
    for file in files {
        let _ = std::fs::remove_file(dir.join(file));
    }
}
