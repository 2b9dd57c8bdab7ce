//! What vouches for a header package: the signed index that lists its checksum (an APT
//! `InRelease`, a DNF `repomd.xml.asc`), its own signature (an RPM's header signature, checked
//! when it is downloaded), the distribution's own API over https, or nothing, where the operator
//! opted out for a source (`unverified = true`). Keyrings are named by a source's `signed_by`:
//! one built in (under `assets/keyrings/`), or a file on the machine.

use super::parts::KernelParts;
use super::spec::SourceSpec;
use crate::openpgp::{Keyring, Signer};
use serde::{Deserialize, Serialize};
use std::time::SystemTime;

/// Why a package's bytes can be trusted to be the distribution's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "by")]
pub enum Vouch {
    /// Its checksum is listed in an index this key signed (which index, and the signer).
    SignedIndex(String),
    /// It carries its own signature (an RPM's), checked against the source's keyring when it is
    /// downloaded; the string names the keyring.
    OwnSignature(String),
    /// Its checksum comes from the distribution's own API over https (Launchpad,
    /// snapshot.debian.org).
    DistributionApi(String),
    /// The operator opted out for its source (`unverified = true`): nothing vouches for it.
    Unverified,
}

impl std::fmt::Display for Vouch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SignedIndex(by) => write!(f, "checksum in {by}"),
            Self::OwnSignature(keyring) => {
                write!(f, "its own signature, checked against {keyring}")
            }
            Self::DistributionApi(host) => write!(f, "checksum from {host} over https"),
            Self::Unverified => write!(f, "NOT VERIFIED: its source has unverified = true"),
        }
    }
}

macro_rules! builtin {
    ($file:literal) => {
        (
            $file,
            include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/assets/keyrings/",
                $file
            ))
            .as_slice(),
        )
    };
}

/// The keyrings built in, by file name under `assets/keyrings/` (see its README for where each
/// came from).
const BUILTIN: &[(&str, &[u8])] = &[
    builtin!("debian-archive-keyring.gpg"),
    builtin!("debian-archive-removed-keys.gpg"),
    builtin!("ubuntu-archive-2018.asc"),
    builtin!("rpm/MICROSOFT-METADATA-GPG-KEY"),
    builtin!("rpm/MICROSOFT-RPM-GPG-KEY"),
    builtin!("rpm/RPM-GPG-KEY-AlmaLinux-10"),
    builtin!("rpm/RPM-GPG-KEY-AlmaLinux-8"),
    builtin!("rpm/RPM-GPG-KEY-AlmaLinux-9"),
    builtin!("rpm/RPM-GPG-KEY-CentOS-10"),
    builtin!("rpm/RPM-GPG-KEY-CentOS-7"),
    builtin!("rpm/RPM-GPG-KEY-CentOS-Official-SHA256"),
    builtin!("rpm/RPM-GPG-KEY-Rocky-10"),
    builtin!("rpm/RPM-GPG-KEY-Rocky-8"),
    builtin!("rpm/RPM-GPG-KEY-Rocky-9"),
    builtin!("rpm/RPM-GPG-KEY-SuSE-SLE-15"),
    builtin!("rpm/RPM-GPG-KEY-SuSE-SLE-Main-2023"),
    builtin!("rpm/RPM-GPG-KEY-amazon-linux-2"),
    builtin!("rpm/RPM-GPG-KEY-amazon-linux-2023"),
    builtin!("rpm/RPM-GPG-KEY-fedora-40-primary"),
    builtin!("rpm/RPM-GPG-KEY-fedora-41-primary"),
    builtin!("rpm/RPM-GPG-KEY-fedora-42-primary"),
    builtin!("rpm/RPM-GPG-KEY-fedora-43-primary"),
    builtin!("rpm/RPM-GPG-KEY-fedora-44-primary"),
    builtin!("rpm/RPM-GPG-KEY-fedora-45-primary"),
    builtin!("rpm/RPM-GPG-KEY-fedora-46-primary"),
    builtin!("rpm/RPM-GPG-KEY-openSUSE"),
    builtin!("rpm/RPM-GPG-KEY-openSUSE-16-Backports"),
    builtin!("rpm/RPM-GPG-KEY-openSUSE-2022"),
    builtin!("rpm/RPM-GPG-KEY-openSUSE-Backports-2023"),
    builtin!("rpm/RPM-GPG-KEY-openSUSE-Leap-SLE"),
    builtin!("rpm/RPM-GPG-KEY-openSUSE-Tumbleweed"),
    builtin!("rpm/RPM-GPG-KEY-oracle-ol10"),
    builtin!("rpm/RPM-GPG-KEY-oracle-ol7"),
    builtin!("rpm/RPM-GPG-KEY-oracle-ol8"),
    builtin!("rpm/RPM-GPG-KEY-oracle-ol9"),
    builtin!("rpm/RPM-GPG-KEY-redhat10-release"),
    builtin!("rpm/RPM-GPG-KEY-redhat8-release"),
    builtin!("rpm/RPM-GPG-KEY-redhat9-release"),
];

/// The built-in keyring a `signed_by` entry names (`debian-archive-keyring.gpg`,
/// `RPM-GPG-KEY-Rocky-9`), by its file name with or without its directory.
fn builtin(name: &str) -> Option<&'static [u8]> {
    BUILTIN
        .iter()
        .find(|(file, _)| *file == name || file.rsplit('/').next() == Some(name))
        .map(|(_, bytes)| *bytes)
}

/// Keyrings parsed in this process, by what they were read from: checking every key's
/// self-signatures is most of a plan's time, and a plan over hundreds of kernels asks for the
/// same few keyrings each time.
static PARSED: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<String, Keyring>>> =
    std::sync::LazyLock::new(Default::default);

/// The keyring kept under `key`, else `parse`d and kept (an error is not kept).
fn parsed_once(
    key: String,
    parse: impl FnOnce() -> Result<Keyring, String>,
) -> Result<Keyring, String> {
    let kept = PARSED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key)
        .cloned();
    if let Some(keyring) = kept {
        return Ok(keyring);
    }
    let keyring = parse()?;
    PARSED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, keyring.clone());
    Ok(keyring)
}

/// A built-in keyring: embedded, so parsing it again gives the same keys.
fn parsed_builtin(entry: &str, bytes: &'static [u8]) -> Result<Keyring, String> {
    parsed_once(format!("builtin:{entry}"), || {
        Keyring::parse(&format!("{entry} (built in)"), bytes)
    })
}

/// A keyring file, read again when its size or modification time changed (a keyring package
/// updated while `serve` runs).
fn read_keyring(path: &std::path::Path) -> Result<Keyring, String> {
    let Ok(meta) = std::fs::metadata(path) else {
        return Keyring::read(path);
    };
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    parsed_once(
        format!("file:{}:{}:{modified}", path.display(), meta.len()),
        || Keyring::read(path),
    )
}

/// Every key `spec.signed_by` names for this kernel, together: entries that name nothing (a
/// built-in name not built in, a file that is not there) are passed over, as long as one
/// entry gives keys; a file that is there but unreadable or not keys is an error.
pub(crate) fn keyring_for(spec: &SourceSpec, parts: &KernelParts) -> Result<Keyring, String> {
    if spec.signed_by.is_empty() {
        return Err(format!(
            "source {} has no signed_by keyring to check what it serves; name one, or set \
             unverified = true to use it unchecked",
            spec.name
        ));
    }
    let mut keyrings = Vec::new();
    let mut tried = Vec::new();
    for entry in &spec.signed_by {
        let entry = parts.expand(entry);
        if entry.starts_with('/') {
            let path = std::path::Path::new(&entry);
            if !path.exists() {
                tried.push(format!("{entry} (no such file)"));
                continue;
            }
            keyrings.push(read_keyring(path)?);
        } else if let Some(bytes) = builtin(&entry) {
            keyrings.push(parsed_builtin(&entry, bytes)?);
        } else {
            tried.push(format!("{entry} (not built in)"));
        }
    }
    Keyring::merge(keyrings).ok_or_else(|| {
        format!(
            "no keyring to check source {} with: {}; install the distribution's keyring or point \
             signed_by at it",
            spec.name,
            tried.join(", ")
        )
    })
}

/// Checks an RPM's own signature: the OpenPGP signature of its header (rpm's `RSAHEADER`,
/// `DSAHEADER` or `OPENPGP` tag) by a key of `keyring`, then the payload's digest the header
/// carries (`PAYLOADDIGEST`). A package older than payload digests (EL 7) is checked with its
/// header-and-payload signature (`PGP`, `GPG`). The key must have been valid when it signed.
pub fn verify_rpm(bytes: &[u8], keyring: &Keyring) -> Result<Signer, String> {
    let rpm = super::rpm_payload::Parts::of(bytes)?;
    let signed_at =
        |s: &pgp::packet::Signature| s.created().map_or_else(SystemTime::now, SystemTime::from);
    let header_signed = rpm.header_signature();
    if let Some(raw) = &header_signed {
        let signature = parse_signature(raw)?;
        let signer = keyring.verify_packet(&signature, rpm.header, signed_at(&signature))?;
        if rpm.has_payload_digest() {
            rpm.check_payload_digest()?;
            return Ok(signer);
        }
    }
    if let Some(raw) = rpm.whole_signature() {
        let signature = parse_signature(&raw)?;
        let signed: Vec<u8> = [rpm.header, rpm.payload].concat();
        return keyring.verify_packet(&signature, &signed, signed_at(&signature));
    }
    Err(if header_signed.is_some() {
        "its header is signed, but nothing vouches for its payload (no payload digest in the \
         header, no header-and-payload signature)"
            .into()
    } else {
        "the package carries no OpenPGP signature (an unsigned build)".into()
    })
}

fn parse_signature(raw: &[u8]) -> Result<pgp::packet::Signature, String> {
    use pgp::composed::Deserializable;
    pgp::composed::DetachedSignature::from_bytes(raw)
        .map(|d| d.signature)
        .map_err(|e| format!("the package's signature is not OpenPGP: {e}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_built_in_keyring_holds_a_key_and_is_found_by_its_name() {
        for (file, bytes) in super::BUILTIN {
            let keyring = crate::openpgp::Keyring::parse(file, bytes)
                .unwrap_or_else(|e| panic!("{file}: {e}"));
            assert!(!keyring.fingerprints().is_empty(), "{file}");
            let name = file.rsplit('/').next().unwrap_or(file);
            assert!(super::builtin(name).is_some(), "{name}");
        }
        assert!(super::builtin("RPM-GPG-KEY-nonexistent").is_none());
    }
}
