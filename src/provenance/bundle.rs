//! The Sigstore bundle as JSON (media types v0.1 to v0.3): the signing certificate, the
//! transparency-log entries, the RFC 3161 timestamps and the DSSE envelope that holds an
//! in-toto statement.

use super::trust_root::{RawBytes, base64};
use serde::Deserialize;

/// The bundle formats kfleet reads: v0.1 to v0.3.
const MEDIA_TYPES: &[&str] = &[
    "application/vnd.dev.sigstore.bundle+json;version=0.1",
    "application/vnd.dev.sigstore.bundle+json;version=0.2",
    "application/vnd.dev.sigstore.bundle+json;version=0.3",
    "application/vnd.dev.sigstore.bundle.v0.3+json",
];

/// Largest bundle read (GitHub's are about 10 KiB).
pub const MAX_BUNDLE: usize = 1 << 20;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bundle {
    pub media_type: String,
    pub verification_material: Material,
    pub dsse_envelope: Option<Envelope>,
    pub message_signature: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Material {
    pub certificate: Option<RawBytes>,
    pub x509_certificate_chain: Option<Chain>,
    pub public_key: Option<serde_json::Value>,
    #[serde(default)]
    pub tlog_entries: Vec<TlogEntry>,
    pub timestamp_verification_data: Option<TimestampData>,
}

#[derive(Deserialize)]
pub struct Chain {
    pub certificates: Vec<RawBytes>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimestampData {
    #[serde(default)]
    pub rfc3161_timestamps: Vec<SignedTimestamp>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignedTimestamp {
    pub signed_timestamp: String,
}

/// An int64 as protobuf's JSON writes it: a string, or a plain number.
#[derive(Deserialize, Clone, Debug)]
#[serde(untagged)]
pub enum Int {
    Text(String),
    Number(i64),
}

impl Int {
    pub fn value(&self, what: &str) -> Result<i64, String> {
        match self {
            Self::Number(n) => Ok(*n),
            Self::Text(t) => t
                .parse()
                .map_err(|_| format!("{what} '{}' is not a number", crate::text::clean(t))),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TlogEntry {
    pub log_index: Int,
    pub log_id: LogId,
    pub kind_version: KindVersion,
    pub integrated_time: Option<Int>,
    pub inclusion_promise: Option<Promise>,
    pub inclusion_proof: Option<Proof>,
    pub canonicalized_body: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogId {
    pub key_id: String,
}

#[derive(Deserialize)]
pub struct KindVersion {
    pub kind: String,
    pub version: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Promise {
    pub signed_entry_timestamp: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Proof {
    pub log_index: Int,
    pub root_hash: String,
    pub tree_size: Int,
    #[serde(default)]
    pub hashes: Vec<String>,
    pub checkpoint: Option<Checkpoint>,
}

#[derive(Deserialize)]
pub struct Checkpoint {
    pub envelope: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    pub payload: String,
    pub payload_type: String,
    #[serde(default)]
    pub signatures: Vec<EnvelopeSignature>,
}

#[derive(Deserialize)]
pub struct EnvelopeSignature {
    pub sig: String,
}

impl Bundle {
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let bundle: Self =
            serde_json::from_slice(bytes).map_err(|e| format!("not a Sigstore bundle: {e}"))?;
        if !MEDIA_TYPES.contains(&bundle.media_type.as_str()) {
            return Err(format!(
                "media type '{}' is not a Sigstore bundle format kfleet reads (v0.1 to v0.3)",
                crate::text::clean(&bundle.media_type)
            ));
        }
        Ok(bundle)
    }

    /// The signing certificate (DER) and the chain's other certificates a v0.1/v0.2 bundle
    /// carries.
    pub fn certificates(&self) -> Result<(Vec<u8>, Vec<Vec<u8>>), String> {
        let material = &self.verification_material;
        if let Some(cert) = &material.certificate {
            return Ok((base64("the certificate", &cert.raw_bytes)?, Vec::new()));
        }
        if let Some(chain) = &material.x509_certificate_chain {
            let mut certs = chain
                .certificates
                .iter()
                .map(|c| base64("a certificate", &c.raw_bytes))
                .collect::<Result<Vec<_>, _>>()?;
            if certs.is_empty() {
                return Err("its certificate chain is empty".into());
            }
            let leaf = certs.remove(0);
            return Ok((leaf, certs));
        }
        if material.public_key.is_some() {
            return Err(
                "it is signed with a bare public key, not a certificate from a workflow's identity"
                    .into(),
            );
        }
        Err("it holds no signing certificate".into())
    }
}

/// DSSE's pre-authentication encoding: what the envelope's signature is over.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}
