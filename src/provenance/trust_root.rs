//! Sigstore trust roots (`trusted_root.json`, as `gh attestation trusted-root` prints them, one
//! per line): the certificate authorities that issue signing certificates, the transparency
//! logs' keys and the timestamp authorities, each with the time it was valid for. Sigstore's
//! public instance and GitHub's own (which signs private repositories' attestations) are built
//! in; an operator may replace them.

use super::keys::PublicKey;
use base64::Engine as _;
use serde::Deserialize;

/// Sigstore's public instance (Fulcio, Rekor v1 and v2, its timestamp authority).
const PUBLIC_GOOD: &str = include_str!("../../assets/sigstore/public-good-trusted-root.json");
/// GitHub's Sigstore instance: its certificate authority and timestamp authority, no public log.
const GITHUB: &str = include_str!("../../assets/sigstore/github-trusted-root.json");

/// Largest trust-root file read.
pub const MAX_TRUST_ROOT: u64 = 4 << 20;

/// A time span `[start, end)` in Unix seconds; `end` may be open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    pub start: i64,
    pub end: Option<i64>,
}

impl Validity {
    pub fn contains(&self, at: i64) -> bool {
        at >= self.start && self.end.is_none_or(|end| at < end)
    }
}

/// A certificate chain, leaf or intermediate first and the root last, as DER.
#[derive(Clone, Debug)]
pub struct Authority {
    pub name: String,
    pub chain: Vec<Vec<u8>>,
    pub valid: Validity,
}

#[derive(Clone, Debug)]
pub struct Log {
    pub name: String,
    pub key_id: Vec<u8>,
    pub key: PublicKey,
    pub valid: Validity,
}

/// What a verifier trusts.
#[derive(Clone, Debug, Default)]
pub struct TrustRoots {
    pub authorities: Vec<Authority>,
    pub logs: Vec<Log>,
    pub timestamp_authorities: Vec<Authority>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRoot {
    media_type: Option<String>,
    #[serde(default)]
    tlogs: Vec<RawLog>,
    #[serde(default)]
    certificate_authorities: Vec<RawAuthority>,
    #[serde(default)]
    timestamp_authorities: Vec<RawAuthority>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawLog {
    #[serde(default)]
    base_url: String,
    public_key: RawKey,
    log_id: RawLogId,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawKey {
    raw_bytes: String,
    valid_for: Option<RawValidity>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawLogId {
    key_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawAuthority {
    #[serde(default)]
    uri: String,
    cert_chain: RawChain,
    valid_for: Option<RawValidity>,
}

#[derive(Deserialize)]
struct RawChain {
    certificates: Vec<RawBytes>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawBytes {
    pub raw_bytes: String,
}

#[derive(Deserialize)]
struct RawValidity {
    start: Option<String>,
    end: Option<String>,
}

pub(super) fn base64(what: &str, text: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| format!("{what} is not base64: {e}"))
}

fn seconds(what: &str, text: &str) -> Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp())
        .map_err(|e| {
            format!(
                "{what}: '{}' is not an RFC 3339 time: {e}",
                crate::text::clean(text)
            )
        })
}

fn validity(what: &str, raw: Option<&RawValidity>) -> Result<Validity, String> {
    let Some(raw) = raw else {
        return Ok(Validity {
            start: i64::MIN,
            end: None,
        });
    };
    Ok(Validity {
        start: match &raw.start {
            Some(s) => seconds(what, s)?,
            None => i64::MIN,
        },
        end: raw.end.as_deref().map(|e| seconds(what, e)).transpose()?,
    })
}

fn authority(kind: &str, raw: &RawAuthority) -> Result<Authority, String> {
    let name = if raw.uri.is_empty() {
        kind.to_string()
    } else {
        format!("{kind} {}", crate::text::clean(&raw.uri))
    };
    let chain = raw
        .cert_chain
        .certificates
        .iter()
        .map(|c| base64(&format!("a certificate of {name}"), &c.raw_bytes))
        .collect::<Result<Vec<_>, _>>()?;
    if chain.is_empty() {
        return Err(format!("{name} has no certificates"));
    }
    Ok(Authority {
        valid: validity(&name, raw.valid_for.as_ref())?,
        name,
        chain,
    })
}

impl TrustRoots {
    /// Sigstore's public instance, built in.
    #[expect(
        clippy::expect_used,
        reason = "embedded at build time and parsed by a test (tests/provenance.rs)"
    )]
    pub fn public_good() -> Self {
        Self::parse(PUBLIC_GOOD).expect("the built-in trust root is checked by a test")
    }

    /// GitHub's own instance, built in: private and internal repositories' attestations are
    /// signed by its certificate authority and dated by its timestamp authority.
    #[expect(
        clippy::expect_used,
        reason = "embedded at build time and parsed by a test (tests/provenance.rs)"
    )]
    pub fn github() -> Self {
        Self::parse(GITHUB).expect("the built-in trust root is checked by a test")
    }

    /// What a node trusts unless told otherwise: Sigstore's public instance and GitHub's, as
    /// `gh attestation trusted-root` lists them.
    pub fn builtin() -> Self {
        let mut roots = Self::public_good();
        roots.merge(Self::github());
        roots
    }

    /// Trusts what `other` trusts as well.
    pub fn merge(&mut self, other: Self) {
        self.authorities.extend(other.authorities);
        self.logs.extend(other.logs);
        self.timestamp_authorities
            .extend(other.timestamp_authorities);
    }

    /// One `trusted_root.json`, or several, one per line (`gh attestation trusted-root`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut roots = Self::default();
        let whole: Result<RawRoot, _> = serde_json::from_str(text);
        let raws = match whole {
            Ok(raw) => vec![raw],
            Err(whole_err) => {
                let mut raws = Vec::new();
                for (n, line) in text.lines().enumerate() {
                    if line.trim().is_empty() {
                        continue;
                    }
                    raws.push(serde_json::from_str(line).map_err(|e| {
                        if n == 0 {
                            format!("not a Sigstore trusted root: {whole_err}")
                        } else {
                            format!("line {}: not a Sigstore trusted root: {e}", n + 1)
                        }
                    })?);
                }
                raws
            }
        };
        for raw in raws {
            if raw
                .media_type
                .as_deref()
                .is_some_and(|m| !m.starts_with("application/vnd.dev.sigstore.trustedroot"))
            {
                return Err(format!(
                    "media type '{}' is not a Sigstore trusted root",
                    crate::text::clean(raw.media_type.as_deref().unwrap_or_default())
                ));
            }
            for ca in &raw.certificate_authorities {
                roots
                    .authorities
                    .push(authority("certificate authority", ca)?);
            }
            for tsa in &raw.timestamp_authorities {
                roots
                    .timestamp_authorities
                    .push(authority("timestamp authority", tsa)?);
            }
            for log in &raw.tlogs {
                let name = format!("transparency log {}", crate::text::clean(&log.base_url));
                let der = base64(&format!("the key of {name}"), &log.public_key.raw_bytes)?;
                let key = PublicKey::from_spki_der(&der).map_err(|e| format!("{name}: {e}"))?;
                roots.logs.push(Log {
                    key_id: base64(&format!("the log ID of {name}"), &log.log_id.key_id)?,
                    key,
                    valid: validity(&name, log.public_key.valid_for.as_ref())?,
                    name,
                });
            }
        }
        if roots.authorities.is_empty() {
            return Err("it names no certificate authority".into());
        }
        Ok(roots)
    }

    /// A trust-root file an operator chose.
    pub fn from_file(path: &std::path::Path) -> Result<Self, String> {
        let text = crate::bounded::read_file(path, MAX_TRUST_ROOT)
            .map_err(|e| format!("cannot read the trust root {}: {e}", path.display()))?;
        let text =
            String::from_utf8(text).map_err(|_| format!("{}: not UTF-8 text", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}
