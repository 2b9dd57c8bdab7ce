//! Transparency-log entries: the entry's body must describe this very signature, certificate
//! and payload; the log vouches for it with a signed entry timestamp (Rekor v1's promise, which
//! also dates it) and/or an inclusion proof up to a checkpoint the log signed (RFC 6962 Merkle
//! paths, a signed note).

use super::bundle::{Proof, TlogEntry};
use super::trust_root::{Log, TrustRoots, base64};
use sha2::{Digest as _, Sha256};

/// What the bundle says was signed, for comparison with what the log recorded.
pub struct Signed<'a> {
    pub payload: &'a [u8],
    pub signature: &'a [u8],
    pub certificate: &'a [u8],
}

/// A log's word for the signature.
#[derive(Clone, Debug)]
pub struct Logged {
    pub log: String,
    /// When the log took the entry, where a signed entry timestamp vouches for it.
    pub integrated_time: Option<i64>,
}

/// Checks one entry: its log is trusted, its body is this signature, and the log signed for
/// it (a signed entry timestamp, an inclusion proof with a signed checkpoint, or both; each
/// that is there must hold).
pub fn verify_entry(
    entry: &TlogEntry,
    roots: &TrustRoots,
    signed: &Signed<'_>,
) -> Result<Logged, String> {
    let key_id = base64("the entry's log ID", &entry.log_id.key_id)?;
    let log = roots
        .logs
        .iter()
        .find(|l| l.key_id == key_id)
        .ok_or_else(|| {
            format!(
                "its transparency-log entry is in a log the trust root does not name (log ID {})",
                crate::fsio::hex(&key_id)
            )
        })?;
    let body = base64("the entry's body", &entry.canonicalized_body)?;
    check_body(
        &entry.kind_version.kind,
        &entry.kind_version.version,
        &body,
        signed,
    )
    .map_err(|e| format!("{}: the entry {e}", log.name))?;
    let log_index = entry.log_index.value("the entry's log index")?;
    let mut integrated_time = None;
    if let Some(promise) = &entry.inclusion_promise {
        let time = entry
            .integrated_time
            .as_ref()
            .ok_or("a signed entry timestamp without the time it signs")?
            .value("the entry's integrated time")?;
        let canonical = serde_json::json!({
            "body": entry.canonicalized_body,
            "integratedTime": time,
            "logID": crate::fsio::hex(&key_id),
            "logIndex": log_index,
        });
        let message = serde_json::to_vec(&canonical).map_err(|e| e.to_string())?;
        let signature = base64(
            "the signed entry timestamp",
            &promise.signed_entry_timestamp,
        )?;
        if !log.key.verify(&message, &signature, None) {
            return Err(format!(
                "{}: the signed entry timestamp does not verify with the log's key",
                log.name
            ));
        }
        if !log.valid.contains(time) {
            return Err(format!(
                "{}: the entry was logged at {}, outside the time the trust root trusts the log's key",
                log.name,
                super::certificate::moment(time)
            ));
        }
        integrated_time = Some(time);
    }
    if let Some(proof) = &entry.inclusion_proof {
        verify_inclusion(proof, &body, log).map_err(|e| format!("{}: {e}", log.name))?;
    } else if entry.inclusion_promise.is_none() {
        return Err(format!(
            "{}: the entry has neither a signed entry timestamp nor an inclusion proof",
            log.name
        ));
    }
    Ok(Logged {
        log: log.name.clone(),
        integrated_time,
    })
}

/// A signature and its certificate (DER) as a log entry records them.
type Recorded = (Vec<u8>, Vec<u8>);

/// The body of a `dsse` entry (Rekor v1's 0.0.1, Rekor v2's 0.0.2) must name this payload's
/// hash, this signature and this certificate.
fn check_body(kind: &str, version: &str, body: &[u8], signed: &Signed<'_>) -> Result<(), String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    let payload_hash = crate::fsio::hex(&Sha256::digest(signed.payload));
    let spec = &value["spec"];
    let (hash, signatures): (Option<String>, Vec<Recorded>) = match (kind, version) {
        ("dsse", "0.0.1") => {
            let hash = spec["payloadHash"]["value"].as_str().map(str::to_string);
            let mut signatures = Vec::new();
            for s in spec["signatures"].as_array().into_iter().flatten() {
                let sig = base64("a signature", s["signature"].as_str().unwrap_or_default())?;
                let pem = base64("a verifier", s["verifier"].as_str().unwrap_or_default())?;
                signatures.push((sig, pem_to_der(&pem)?));
            }
            (hash, signatures)
        }
        ("dsse", "0.0.2") => {
            let spec = &spec["dsseV002"];
            let hash = spec["payloadHash"]["digest"]
                .as_str()
                .map(|d| base64("the payload hash", d))
                .transpose()?
                .map(|d| crate::fsio::hex(&d));
            let mut signatures = Vec::new();
            for s in spec["signatures"].as_array().into_iter().flatten() {
                let sig = base64("a signature", s["content"].as_str().unwrap_or_default())?;
                let der = base64(
                    "a verifier",
                    s["verifier"]["x509Certificate"]["rawBytes"]
                        .as_str()
                        .unwrap_or_default(),
                )?;
                signatures.push((sig, der));
            }
            (hash, signatures)
        }
        _ => {
            return Err(format!(
                "is of kind {} {}; kfleet reads dsse entries (what actions/attest-build-provenance writes)",
                crate::text::clean(kind),
                crate::text::clean(version)
            ));
        }
    };
    if hash.as_deref() != Some(payload_hash.as_str()) {
        return Err("is for another payload than the bundle's".into());
    }
    if !signatures
        .iter()
        .any(|(sig, cert)| sig == signed.signature && cert == signed.certificate)
    {
        return Err("records another signature or certificate than the bundle's".into());
    }
    Ok(())
}

/// A PEM certificate's DER.
fn pem_to_der(pem: &[u8]) -> Result<Vec<u8>, String> {
    let text = std::str::from_utf8(pem).map_err(|_| "a verifier that is not PEM text")?;
    let inner: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    base64("a verifier certificate", &inner)
}

fn node(left: &[u8], right: &[u8]) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().to_vec()
}

/// The root an RFC 6962 inclusion path leads to from `leaf` at `index` in a tree of `size`
/// (RFC 9162, 2.1.3.2); `None` when the path cannot be one.
fn root_from_path(index: u64, size: u64, leaf: Vec<u8>, path: &[Vec<u8>]) -> Option<Vec<u8>> {
    if index >= size {
        return None;
    }
    let (mut f, mut s, mut r) = (index, size - 1, leaf);
    for p in path {
        if s == 0 {
            return None;
        }
        if f & 1 == 1 || f == s {
            r = node(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    (s == 0).then_some(r)
}

pub(super) fn verify_inclusion(proof: &Proof, body: &[u8], log: &Log) -> Result<(), String> {
    let index = u64::try_from(proof.log_index.value("the proof's log index")?)
        .map_err(|_| "a negative log index in the inclusion proof")?;
    let size = u64::try_from(proof.tree_size.value("the proof's tree size")?)
        .map_err(|_| "a negative tree size in the inclusion proof")?;
    let root = base64("the proof's root hash", &proof.root_hash)?;
    let path = proof
        .hashes
        .iter()
        .map(|h| base64("a hash of the inclusion proof", h))
        .collect::<Result<Vec<_>, _>>()?;
    let mut leaf = Sha256::new();
    leaf.update([0u8]);
    leaf.update(body);
    if root_from_path(index, size, leaf.finalize().to_vec(), &path).as_deref() != Some(&root) {
        return Err("the inclusion proof does not lead to the root hash it states".into());
    }
    let checkpoint = proof
        .checkpoint
        .as_ref()
        .ok_or("the inclusion proof has no checkpoint signed by the log")?;
    verify_checkpoint(&checkpoint.envelope, size, &root, log)
}

/// A signed note (`ORIGIN\nSIZE\nROOT\n[more]\n\n— NAME BASE64(hint || signature)\n`): the log's
/// key must sign it, and it must state this tree's size and root.
fn verify_checkpoint(note: &str, size: u64, root: &[u8], log: &Log) -> Result<(), String> {
    let Some(split) = note.find("\n\n") else {
        return Err("the checkpoint is not a signed note".into());
    };
    let (text, signatures) = (&note[..=split], &note[split + 2..]);
    let mut lines = text.lines();
    let (origin, stated_size, stated_root) = (lines.next(), lines.next(), lines.next());
    // The signer's name is the log's origin (`rekor.sigstore.dev - 1193050959916656506`'s first
    // word).
    let signer = origin
        .and_then(|o| o.split_whitespace().next())
        .unwrap_or_default();
    if stated_size.and_then(|s| s.parse::<u64>().ok()) != Some(size)
        || stated_root.and_then(|r| base64("", r).ok()).as_deref() != Some(root)
    {
        return Err("the checkpoint is for another tree than the inclusion proof".into());
    }
    let signed = signatures.lines().any(|line| {
        let Some(rest) = line.strip_prefix("\u{2014} ") else {
            return false;
        };
        let Some((name, encoded)) = rest.split_once(' ') else {
            return false;
        };
        if name != signer {
            return false;
        }
        base64("", encoded)
            .ok()
            .filter(|b| b.len() > 4)
            .is_some_and(|b| log.key.verify(text.as_bytes(), &b[4..], None))
    });
    if !signed {
        return Err("the checkpoint is not signed by the log's key".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(n: u8) -> Vec<u8> {
        let mut h = Sha256::new();
        h.update([0u8, n]);
        h.finalize().to_vec()
    }

    /// RFC 6962's tree hash of leaves `[lo, hi)`.
    fn tree(leaves: &[Vec<u8>]) -> Vec<u8> {
        if leaves.len() == 1 {
            return leaves[0].clone();
        }
        let k = leaves.len().next_power_of_two() / 2;
        node(&tree(&leaves[..k]), &tree(&leaves[k..]))
    }

    fn path(leaves: &[Vec<u8>], m: usize) -> Vec<Vec<u8>> {
        if leaves.len() == 1 {
            return Vec::new();
        }
        let k = leaves.len().next_power_of_two() / 2;
        if m < k {
            let mut p = path(&leaves[..k], m);
            p.push(tree(&leaves[k..]));
            p
        } else {
            let mut p = path(&leaves[k..], m - k);
            p.push(tree(&leaves[..k]));
            p
        }
    }

    #[test]
    fn every_leaf_of_every_small_tree_proves_and_a_changed_path_does_not() {
        for size in 1..=17u8 {
            let leaves: Vec<_> = (0..size).map(leaf).collect();
            let root = tree(&leaves);
            for m in 0..size as usize {
                let p = path(&leaves, m);
                let got = root_from_path(m as u64, size as u64, leaves[m].clone(), &p);
                assert_eq!(got.as_ref(), Some(&root), "size {size} leaf {m}");
                if let Some(first) = p.first() {
                    let mut bad = p.clone();
                    bad[0] = node(first, first);
                    assert_ne!(
                        root_from_path(m as u64, size as u64, leaves[m].clone(), &bad).as_ref(),
                        Some(&root)
                    );
                }
                assert_eq!(
                    root_from_path(size as u64, size as u64, leaves[m].clone(), &p),
                    None,
                    "an index past the tree"
                );
            }
        }
    }
}
