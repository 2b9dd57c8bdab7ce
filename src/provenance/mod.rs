//! Signed provenance: a Sigstore bundle (what `actions/attest-build-provenance` makes) checked
//! before a node trusts an artifact. Its DSSE envelope must be signed by a certificate that
//! chains to a certificate authority of the trust root at a moment a transparency log or a
//! timestamp authority vouches for; the in-toto statement inside must name the artifact's
//! sha256; and the certificate's identity must be the policy's: GitHub Actions' token issuer,
//! the repository, the build workflow and the ref.
//!
//! The pieces are well-kept crates: `rustls-webpki` builds and checks certificate chains,
//! `x509-cert` and `cms` read certificates and RFC 3161 tokens, `ring` checks signatures.

mod bundle;
mod certificate;
mod keys;
mod timestamp;
mod tlog;
mod trust_root;

pub use bundle::MAX_BUNDLE;
pub use certificate::Identity;
pub use trust_root::{MAX_TRUST_ROOT, TrustRoots};

use sha2::Digest as _;

/// GitHub Actions' OIDC token issuer.
pub const GITHUB_ACTIONS_ISSUER: &str = "https://token.actions.githubusercontent.com";
/// The workflow that builds drivers, as kfleet writes it.
pub const BUILD_WORKFLOW: &str = ".github/workflows/build-driver.yml";
/// The suffix of the Sigstore bundle the build job uploads beside each artifact.
pub const BUNDLE_SUFFIX: &str = ".sigstore.json";

/// Whose signature an artifact must carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// `OWNER/NAME` on `server`.
    pub repository: String,
    /// The workflow file that ran the build, within the repository.
    pub workflow: String,
    /// The ref the workflow ran from (`refs/heads/main`); `None` takes any.
    pub git_ref: Option<String>,
    pub issuer: String,
    /// `https://github.com`, or a GitHub Enterprise server.
    pub server: String,
}

impl Policy {
    /// kfleet's build workflow in `repository`, run from `git_ref`, on github.com.
    pub fn github(repository: &str, git_ref: Option<&str>) -> Self {
        Self {
            repository: repository.to_string(),
            workflow: BUILD_WORKFLOW.to_string(),
            git_ref: git_ref.map(str::to_string),
            issuer: GITHUB_ACTIONS_ISSUER.to_string(),
            server: "https://github.com".to_string(),
        }
    }
}

/// What a node requires of an artifact's provenance: whom it trusts and whose signature.
#[derive(Clone, Debug)]
pub struct Requirement {
    pub roots: TrustRoots,
    pub policy: Policy,
}

impl Requirement {
    /// Verifies `bundle` (named `name`) for an artifact with sha256 `artifact_sha256`.
    pub fn check(
        &self,
        name: &str,
        bundle: &[u8],
        artifact_sha256: &str,
    ) -> Result<Verified, ProvenanceError> {
        verify(name, bundle, artifact_sha256, &self.roots, &self.policy)
    }
}

/// What a verified bundle vouched for.
#[derive(Clone, Debug)]
pub struct Verified {
    pub identity: Identity,
    /// The workflow run's subject (`https://github.com/OWNER/REPO/.github/workflows/F@REF`).
    pub signer: String,
    /// What dated the signature: logs and timestamp authorities, with the time each gave.
    pub witnesses: Vec<String>,
}

impl Verified {
    /// Who built it and what dated the signature, for the log.
    pub fn describe(&self) -> String {
        format!(
            "provenance verified: built by {}; dated by {}",
            self.signer,
            self.witnesses.join(", ")
        )
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the provenance bundle {source_name}: {reason}")]
pub struct ProvenanceError {
    pub source_name: String,
    pub reason: String,
}

/// In-toto's statement types kfleet reads.
const STATEMENT_TYPES: &[&str] = &[
    "https://in-toto.io/Statement/v1",
    "https://in-toto.io/Statement/v0.1",
];

/// Verifies `bundle` (named `name` in errors) for an artifact whose sha256 is
/// `artifact_sha256` (hex), against `roots` and `policy`.
pub fn verify(
    name: &str,
    bundle: &[u8],
    artifact_sha256: &str,
    roots: &TrustRoots,
    policy: &Policy,
) -> Result<Verified, ProvenanceError> {
    verify_inner(bundle, artifact_sha256, roots, policy).map_err(|reason| ProvenanceError {
        source_name: crate::text::clean(name).into_owned(),
        reason,
    })
}

fn verify_inner(
    bytes: &[u8],
    artifact_sha256: &str,
    roots: &TrustRoots,
    policy: &Policy,
) -> Result<Verified, String> {
    if bytes.len() > MAX_BUNDLE {
        return Err(format!("is larger than {MAX_BUNDLE} bytes; not a bundle"));
    }
    let bundle = bundle::Bundle::parse(bytes)?;
    let Some(envelope) = &bundle.dsse_envelope else {
        return Err(if bundle.message_signature.is_some() {
            "holds a bare message signature, not an attestation; kfleet verifies attestations (actions/attest-build-provenance)".into()
        } else {
            "holds no DSSE envelope".into()
        });
    };
    let (leaf, extra) = bundle.certificates()?;
    let key = certificate::public_key(&leaf).map_err(|e| format!("its certificate: {e}"))?;
    let payload = trust_root::base64("the envelope's payload", &envelope.payload)?;
    let [signature] = envelope.signatures.as_slice() else {
        return Err(format!(
            "its envelope has {} signatures; a Sigstore bundle has exactly one",
            envelope.signatures.len()
        ));
    };
    let signature = trust_root::base64("the envelope's signature", &signature.sig)?;
    if !key.verify(
        &bundle::pae(&envelope.payload_type, &payload),
        &signature,
        None,
    ) {
        return Err(
            "its signature does not verify with its certificate's key (the envelope was changed)"
                .into(),
        );
    }

    // Who vouches for when it was signed.
    let signed = tlog::Signed {
        payload: &payload,
        signature: &signature,
        certificate: &leaf,
    };
    let material = &bundle.verification_material;
    let mut times = Vec::new();
    let mut witnesses = Vec::new();
    for entry in &material.tlog_entries {
        let logged = tlog::verify_entry(entry, roots, &signed)?;
        match logged.integrated_time {
            Some(t) => {
                times.push(t);
                witnesses.push(format!("{} at {}", logged.log, certificate::moment(t)));
            }
            None => witnesses.push(logged.log),
        }
    }
    for stamp in material
        .timestamp_verification_data
        .iter()
        .flat_map(|d| d.rfc3161_timestamps.iter())
    {
        let der = trust_root::base64("a timestamp", &stamp.signed_timestamp)?;
        let stamped = timestamp::verify(&der, &signature, roots)?;
        times.push(stamped.time);
        witnesses.push(format!(
            "{} at {}",
            stamped.authority,
            certificate::moment(stamped.time)
        ));
    }
    if times.is_empty() {
        return Err(if material.tlog_entries.is_empty() {
            "has neither a transparency-log entry nor a timestamp: nothing says when it was signed"
                .into()
        } else {
            "has no signed entry timestamp and no RFC 3161 timestamp: nothing trusted says when it was signed".into()
        });
    }

    // The certificate was valid, and chained to a trusted authority, at each of those times.
    for &at in &times {
        let mut why = format!(
            "its certificate was issued by no certificate authority the trust root trusts at {}",
            certificate::moment(at)
        );
        let chained = roots
            .authorities
            .iter()
            .filter(|a| a.valid.contains(at))
            .any(|a| {
                match certificate::verify_chain(&leaf, &extra, a, at, certificate::CODE_SIGNING) {
                    Ok(()) => true,
                    Err(e) => {
                        why = format!("its certificate: {e}");
                        false
                    }
                }
            });
        if !chained {
            return Err(why);
        }
    }

    // The statement names this artifact.
    if envelope.payload_type != "application/vnd.in-toto+json" {
        return Err(format!(
            "its payload is '{}', not an in-toto statement",
            crate::text::clean(&envelope.payload_type)
        ));
    }
    let statement: serde_json::Value =
        serde_json::from_slice(&payload).map_err(|e| format!("its statement is not JSON: {e}"))?;
    let kind = statement["_type"].as_str().unwrap_or_default();
    if !STATEMENT_TYPES.contains(&kind) {
        return Err(format!(
            "its statement is of type '{}', not an in-toto statement",
            crate::text::clean(kind)
        ));
    }
    let wanted = artifact_sha256
        .trim_start_matches("sha256:")
        .to_ascii_lowercase();
    let subjects = statement["subject"].as_array().cloned().unwrap_or_default();
    let named = subjects.iter().any(|s| {
        s["digest"]["sha256"]
            .as_str()
            .is_some_and(|d| d.eq_ignore_ascii_case(&wanted))
    });
    if !named {
        let files: Vec<String> = subjects
            .iter()
            .filter_map(|s| {
                let digest = s["digest"]["sha256"].as_str()?;
                Some(format!(
                    "{} (sha256 {})",
                    crate::text::clean(s["name"].as_str().unwrap_or("a file without a name")),
                    crate::text::clean(digest)
                ))
            })
            .collect();
        let what = match files.as_slice() {
            [] => "no file by its sha256".to_string(),
            [one] => one.clone(),
            [first, rest @ ..] => format!("{first} and {} other files", rest.len()),
        };
        return Err(format!(
            "vouches for {what}, not for this artifact (sha256 {wanted})"
        ));
    }

    // The signer is the policy's.
    let identity = certificate::identity(&leaf).map_err(|e| format!("its certificate: {e}"))?;
    let signer = check_identity(&identity, policy)?;
    Ok(Verified {
        identity,
        signer,
        witnesses,
    })
}

/// The certificate's identity against the policy; the subject on success.
fn check_identity(identity: &Identity, policy: &Policy) -> Result<String, String> {
    let issuer = identity.issuer.as_deref().unwrap_or("no issuer");
    if issuer != policy.issuer {
        return Err(format!(
            "was signed with a token from {}, not from {}",
            crate::text::clean(issuer),
            policy.issuer
        ));
    }
    let subject = identity
        .subject
        .as_deref()
        .ok_or("its certificate names no workflow")?;
    let clean = crate::text::clean(subject).into_owned();
    let server = policy.server.trim_end_matches('/');
    let (path, git_ref) = subject
        .strip_prefix(server)
        .and_then(|rest| rest.strip_prefix('/'))
        .and_then(|rest| rest.split_once('@'))
        .ok_or_else(|| format!("was signed by {clean}, which is not a workflow on {server}"))?;
    let (owner, rest) = path.split_once('/').unwrap_or((path, ""));
    let (repo, workflow) = rest.split_once('/').unwrap_or((rest, ""));
    let repository = format!("{owner}/{repo}");
    if !repository.eq_ignore_ascii_case(&policy.repository) {
        return Err(format!(
            "was signed by a workflow of {}, not of {} ({clean})",
            crate::text::clean(&repository),
            policy.repository
        ));
    }
    if workflow != policy.workflow {
        return Err(format!(
            "was signed by the workflow {}, not {} ({clean})",
            crate::text::clean(workflow),
            policy.workflow
        ));
    }
    if let Some(source) = &identity.source_repository {
        let expected = format!("{server}/{}", policy.repository);
        if !source.eq_ignore_ascii_case(&expected) {
            return Err(format!(
                "was built for the repository {}, not {expected}",
                crate::text::clean(source)
            ));
        }
    }
    if let Some(wanted) = &policy.git_ref
        && git_ref != wanted
    {
        return Err(format!(
            "was signed by a run from {}, not from {wanted} ({clean})",
            crate::text::clean(git_ref)
        ));
    }
    Ok(clean)
}

/// The sha256 of `bytes`, hex: what a bundle's subject names.
pub fn sha256_hex(bytes: &[u8]) -> String {
    crate::fsio::hex(&sha2::Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    //! The pieces against real data from Sigstore's staging instance: a Rekor v2 entry (an
    //! Ed25519-signed checkpoint, no signed entry timestamp) and its timestamp authority's RFC
    //! 3161 token over the signature.

    use super::*;

    const BUNDLE: &str =
        include_str!("../../tests/fixtures/provenance/sigstage-rekor-v2-tsa.sigstore.json");
    const ROOT: &str = include_str!("../../tests/fixtures/provenance/sigstage-trusted-root.json");

    fn material() -> (serde_json::Value, TrustRoots) {
        (
            serde_json::from_str(BUNDLE).unwrap(),
            TrustRoots::parse(ROOT).unwrap(),
        )
    }

    #[test]
    fn a_real_rekor_v2_inclusion_proof_and_ed25519_checkpoint_verify() {
        let (bundle, roots) = material();
        let entry: bundle::TlogEntry =
            serde_json::from_value(bundle["verificationMaterial"]["tlogEntries"][0].clone())
                .unwrap();
        let key_id = trust_root::base64("", &entry.log_id.key_id).unwrap();
        let log = roots.logs.iter().find(|l| l.key_id == key_id).unwrap();
        let body = trust_root::base64("", &entry.canonicalized_body).unwrap();
        let proof = entry.inclusion_proof.as_ref().unwrap();
        tlog::verify_inclusion(proof, &body, log).unwrap();

        let mut changed = body.clone();
        changed[10] ^= 1;
        let e = tlog::verify_inclusion(proof, &changed, log).unwrap_err();
        assert!(e.contains("does not lead to the root hash"), "{e}");
        // The other log's key did not sign this checkpoint.
        let other = roots.logs.iter().find(|l| l.key_id != key_id).unwrap();
        let e = tlog::verify_inclusion(proof, &body, other).unwrap_err();
        assert!(e.contains("not signed by the log's key"), "{e}");
    }

    #[test]
    fn a_real_rfc3161_token_from_sigstores_timestamp_authority_verifies() {
        let (bundle, roots) = material();
        let signature = trust_root::base64(
            "",
            bundle["messageSignature"]["signature"].as_str().unwrap(),
        )
        .unwrap();
        let token =
            trust_root::base64(
                "",
                bundle["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"][0]
                    ["signedTimestamp"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap();
        let stamped = timestamp::verify(&token, &signature, &roots).unwrap();
        assert_eq!(
            stamped.authority,
            "timestamp authority https://timestamp.sigstage.dev/api/v1/timestamp"
        );
        assert!(
            certificate::moment(stamped.time).starts_with("2025-"),
            "{}",
            stamped.time
        );

        let e = timestamp::verify(&token, b"another signature", &roots).unwrap_err();
        assert!(e.contains("for another signature"), "{e}");
        let e = timestamp::verify(&token, &signature, &TrustRoots::public_good()).unwrap_err();
        assert!(e.contains("timestamp authority"), "{e}");
    }

    #[test]
    fn the_built_in_trust_root_parses() {
        let roots = TrustRoots::public_good();
        assert!(roots.authorities.len() >= 2);
        assert!(roots.logs.len() >= 2, "Rekor v1 and v2");
        assert!(!roots.timestamp_authorities.is_empty());
    }
}
