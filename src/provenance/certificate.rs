//! Signing certificates: their chain to an authority of the trust root at a moment (through
//! `rustls-webpki`), their key, and the identity Fulcio wrote into them (the OIDC issuer and
//! GitHub's workflow claims, Fulcio's extensions under 1.3.6.1.4.1.57264.1).

use super::keys::PublicKey;
use super::trust_root::Authority;
use cms::cert::x509::Certificate;
use cms::cert::x509::der::Decode as _;
use cms::cert::x509::der::asn1::{ObjectIdentifier as Oid, Utf8StringRef};
use cms::cert::x509::ext::pkix::name::GeneralName;
use cms::cert::x509::ext::pkix::{ExtendedKeyUsage, SubjectAltName};

/// Extended key usages, as DER OID contents: code signing (Fulcio's certificates) and time
/// stamping (a timestamp authority's).
pub const CODE_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];
pub const TIME_STAMPING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x08];

const SUBJECT_ALT_NAME: Oid = Oid::new_unwrap("2.5.29.17");
const EXTENDED_KEY_USAGE: Oid = Oid::new_unwrap("2.5.29.37");
/// Fulcio's OIDC issuer, the first form (raw bytes) and the second (a DER UTF8String).
const ISSUER_V1: Oid = Oid::new_unwrap("1.3.6.1.4.1.57264.1.1");
const ISSUER_V2: Oid = Oid::new_unwrap("1.3.6.1.4.1.57264.1.8");
const SOURCE_REPOSITORY_URI: Oid = Oid::new_unwrap("1.3.6.1.4.1.57264.1.12");
const SOURCE_REPOSITORY_REF: Oid = Oid::new_unwrap("1.3.6.1.4.1.57264.1.14");

/// Who a signing certificate was issued to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// The OIDC issuer of the token Fulcio exchanged for the certificate.
    pub issuer: Option<String>,
    /// The subject: for GitHub Actions the workflow that ran,
    /// `https://github.com/OWNER/REPO/.github/workflows/FILE@REF`.
    pub subject: Option<String>,
    /// The repository the run was for (`https://github.com/OWNER/REPO`).
    pub source_repository: Option<String>,
    /// The ref the run was for (`refs/heads/main`).
    pub source_ref: Option<String>,
}

fn parse(der: &[u8]) -> Result<Certificate, String> {
    Certificate::from_der(der).map_err(|e| format!("not a DER X.509 certificate: {e}"))
}

/// The certificate's public key.
pub fn public_key(der: &[u8]) -> Result<PublicKey, String> {
    PublicKey::from_spki(&parse(der)?.tbs_certificate.subject_public_key_info)
}

/// The identity written into a signing certificate.
pub fn identity(der: &[u8]) -> Result<Identity, String> {
    let cert = parse(der)?;
    let mut id = Identity::default();
    let utf8 = |value: &[u8]| {
        Utf8StringRef::from_der(value)
            .map(|s| s.as_str().to_string())
            .ok()
    };
    for ext in cert.tbs_certificate.extensions.iter().flatten() {
        let value = ext.extn_value.as_bytes();
        if ext.extn_id == SUBJECT_ALT_NAME {
            let names = SubjectAltName::from_der(value)
                .map_err(|e| format!("an unreadable subject alternative name: {e}"))?;
            id.subject = names.0.iter().find_map(|n| match n {
                GeneralName::UniformResourceIdentifier(uri) => Some(uri.to_string()),
                GeneralName::Rfc822Name(mail) => Some(mail.to_string()),
                _ => None,
            });
        } else if ext.extn_id == ISSUER_V2 {
            id.issuer = utf8(value).or(id.issuer);
        } else if ext.extn_id == ISSUER_V1 && id.issuer.is_none() {
            id.issuer = std::str::from_utf8(value).ok().map(str::to_string);
        } else if ext.extn_id == SOURCE_REPOSITORY_URI {
            id.source_repository = utf8(value);
        } else if ext.extn_id == SOURCE_REPOSITORY_REF {
            id.source_ref = utf8(value);
        }
    }
    Ok(id)
}

/// Whether the certificate's extended key usage names `usage` (DER OID contents).
fn has_usage(der: &[u8], usage: &[u8]) -> Result<bool, String> {
    let cert = parse(der)?;
    for ext in cert.tbs_certificate.extensions.iter().flatten() {
        if ext.extn_id == EXTENDED_KEY_USAGE {
            let usages = ExtendedKeyUsage::from_der(ext.extn_value.as_bytes())
                .map_err(|e| format!("an unreadable extended key usage: {e}"))?;
            return Ok(usages.0.iter().any(|u| u.as_bytes() == usage));
        }
    }
    Ok(false)
}

/// Checks that `leaf` chains to `authority`'s root (its other certificates as intermediates,
/// `extra` as more) at Unix time `at`, for the extended key usage `usage`.
pub fn verify_chain(
    leaf: &[u8],
    extra: &[Vec<u8>],
    authority: &Authority,
    at: i64,
    usage: &'static [u8],
) -> Result<(), String> {
    use rustls_pki_types::{CertificateDer, UnixTime};
    let Some((root, intermediates)) = authority.chain.split_last() else {
        return Err(format!("{} has no certificates", authority.name));
    };
    let root = CertificateDer::from(root.as_slice());
    let anchor = webpki::anchor_from_trusted_cert(&root)
        .map_err(|e| format!("{}: its root certificate is unusable: {e}", authority.name))?;
    let intermediates: Vec<CertificateDer<'_>> = intermediates
        .iter()
        .chain(extra)
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    let leaf = CertificateDer::from(leaf);
    let end = webpki::EndEntityCert::try_from(&leaf)
        .map_err(|e| format!("the certificate cannot be read: {e}"))?;
    let algorithms: &[&dyn rustls_pki_types::SignatureVerificationAlgorithm] = &[
        webpki::ring::ECDSA_P256_SHA256,
        webpki::ring::ECDSA_P256_SHA384,
        webpki::ring::ECDSA_P384_SHA256,
        webpki::ring::ECDSA_P384_SHA384,
        webpki::ring::ED25519,
        webpki::ring::RSA_PKCS1_2048_8192_SHA256,
        webpki::ring::RSA_PKCS1_2048_8192_SHA384,
        webpki::ring::RSA_PKCS1_2048_8192_SHA512,
    ];
    let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(at).unwrap_or(0),
    ));
    // The certificate itself must name the usage; a CA above it may name none.
    if !has_usage(leaf.as_ref(), usage)? {
        return Err(format!(
            "it is not a certificate for {} (its extended key usage does not say so)",
            if usage == TIME_STAMPING {
                "time stamping"
            } else {
                "code signing"
            }
        ));
    }
    end.verify_for_usage(
        algorithms,
        &[anchor],
        &intermediates,
        time,
        webpki::KeyUsage::required_if_present(usage),
        None,
        None,
    )
    .map(|_| ())
    .map_err(|e| {
        format!(
            "it does not chain to {} at {}: {e}",
            authority.name,
            moment(at)
        )
    })
}

/// A Unix time as an operator reads it.
pub fn moment(at: i64) -> String {
    chrono::DateTime::from_timestamp(at, 0).map_or_else(
        || at.to_string(),
        |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}
