//! RFC 3161 timestamps: a timestamp authority of the trust root signed, at a stated time, a
//! hash of the bundle's signature. That time is when the signing certificate must have been
//! valid (GitHub's own Sigstore instance dates signatures this way, with no transparency log).

use super::certificate::{TIME_STAMPING, verify_chain};
use super::keys::Hash;
use super::trust_root::TrustRoots;
use cms::cert::CertificateChoices;
use cms::cert::x509::der::asn1::{GeneralizedTime, ObjectIdentifier as Oid, OctetString};
use cms::cert::x509::der::{Decode as _, Encode as _, Reader as _, Tag};
use cms::cert::x509::spki::AlgorithmIdentifierOwned;
use cms::content_info::ContentInfo;
use cms::signed_data::SignedData;
use sha2::Digest as _;

const SIGNED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.2");
const TST_INFO: Oid = Oid::new_unwrap("1.2.840.113549.1.9.16.1.4");
const MESSAGE_DIGEST: Oid = Oid::new_unwrap("1.2.840.113549.1.9.4");
const SHA256: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.1");
const SHA384: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.2");
const SHA512: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.3");

/// A verified timestamp: who stamped, and when.
#[derive(Clone, Debug)]
pub struct Stamped {
    pub authority: String,
    pub time: i64,
}

fn hash_of(alg: &AlgorithmIdentifierOwned) -> Result<Hash, String> {
    match alg.oid {
        o if o == SHA256 => Ok(Hash::Sha256),
        o if o == SHA384 => Ok(Hash::Sha384),
        o if o == SHA512 => Ok(Hash::Sha512),
        o => Err(format!("a digest algorithm kfleet does not know ({o})")),
    }
}

fn digest(hash: Hash, bytes: &[u8]) -> Vec<u8> {
    match hash {
        Hash::Sha256 => sha2::Sha256::digest(bytes).to_vec(),
        Hash::Sha384 => sha2::Sha384::digest(bytes).to_vec(),
        Hash::Sha512 => sha2::Sha512::digest(bytes).to_vec(),
    }
}

/// The token of a TimeStampResp (status granted), or a bare token.
fn token(der: &[u8]) -> Result<ContentInfo, String> {
    let bad = |e: cms::cert::x509::der::Error| format!("not an RFC 3161 timestamp: {e}");
    let mut reader = cms::cert::x509::der::SliceReader::new(der).map_err(bad)?;
    reader
        .sequence(|r| {
            if r.peek_tag()? == Tag::ObjectIdentifier {
                return Ok(None);
            }
            let status: u32 = r.sequence(|s| {
                let status = s.decode()?;
                s.read_slice(s.remaining_len())?;
                Ok(status)
            })?;
            let token: Option<ContentInfo> = r.decode()?;
            Ok(Some((status, token)))
        })
        .map_err(bad)
        .and_then(|answer| match answer {
            None => ContentInfo::from_der(der).map_err(bad),
            Some((0 | 1, Some(token))) => Ok(token),
            Some((status, _)) => Err(format!(
                "a timestamp response that grants nothing (status {status})"
            )),
        })
}

/// The message imprint and the time of a TSTInfo.
fn tst_info(der: &[u8]) -> Result<(AlgorithmIdentifierOwned, Vec<u8>, i64), String> {
    let bad = |e: cms::cert::x509::der::Error| format!("an unreadable TSTInfo: {e}");
    let mut reader = cms::cert::x509::der::SliceReader::new(der).map_err(bad)?;
    reader
        .sequence(|r| {
            let _version: u8 = r.decode()?;
            let _policy: Oid = r.decode()?;
            let (alg, hashed) = r.sequence(|m| {
                let alg: AlgorithmIdentifierOwned = m.decode()?;
                let hashed: OctetString = m.decode()?;
                Ok((alg, hashed.into_bytes()))
            })?;
            let _serial: cms::cert::x509::der::asn1::Int = r.decode()?;
            let time: GeneralizedTime = r.decode()?;
            r.read_slice(r.remaining_len())?;
            let secs = i64::try_from(time.to_unix_duration().as_secs()).unwrap_or(i64::MAX);
            Ok((alg, hashed, secs))
        })
        .map_err(bad)
}

/// Verifies an RFC 3161 timestamp over `signature` against the trust root's timestamp
/// authorities.
pub fn verify(der: &[u8], signature: &[u8], roots: &TrustRoots) -> Result<Stamped, String> {
    let token = token(der)?;
    if token.content_type != SIGNED_DATA {
        return Err("a timestamp that is not CMS signed data".into());
    }
    let signed: SignedData = token
        .content
        .decode_as()
        .map_err(|e| format!("a timestamp with unreadable signed data: {e}"))?;
    let content = &signed.encap_content_info;
    if content.econtent_type != TST_INFO {
        return Err("a signed message that is not a timestamp (no TSTInfo)".into());
    }
    let tst = content
        .econtent
        .as_ref()
        .ok_or("a timestamp without its TSTInfo")?
        .decode_as::<OctetString>()
        .map_err(|e| format!("an unreadable TSTInfo: {e}"))?
        .into_bytes();
    let (imprint_alg, imprint, time) = tst_info(&tst)?;
    if digest(hash_of(&imprint_alg)?, signature) != imprint {
        return Err("the timestamp is for another signature than the bundle's".into());
    }
    let embedded: Vec<Vec<u8>> = signed
        .certificates
        .iter()
        .flat_map(|set| set.0.iter())
        .filter_map(|c| match c {
            CertificateChoices::Certificate(cert) => cert.to_der().ok(),
            CertificateChoices::Other(_) => None,
        })
        .collect();
    let mut why = String::from("no timestamp authority of the trust root signed it");
    for signer in signed.signer_infos.0.iter() {
        let hash = hash_of(&signer.digest_alg)?;
        let attrs = signer
            .signed_attrs
            .as_ref()
            .ok_or("a timestamp whose signature covers no signed attributes")?;
        let stated = attrs
            .iter()
            .find(|a| a.oid == MESSAGE_DIGEST)
            .and_then(|a| a.values.iter().next())
            .and_then(|v| v.decode_as::<OctetString>().ok())
            .ok_or("a timestamp without a message digest")?;
        if stated.as_bytes() != digest(hash, &tst).as_slice() {
            return Err("the timestamp's TSTInfo does not match what its authority signed".into());
        }
        let message = attrs
            .to_der()
            .map_err(|e| format!("cannot encode the signed attributes: {e}"))?;
        let sig = signer.signature.as_bytes();
        for authority in &roots.timestamp_authorities {
            if !authority.valid.contains(time) {
                continue;
            }
            let candidates = embedded.iter().chain(authority.chain.first());
            for cert in candidates {
                let Ok(key) = super::certificate::public_key(cert) else {
                    continue;
                };
                if !key.verify(&message, sig, Some(hash)) {
                    continue;
                }
                match verify_chain(cert, &embedded, authority, time, TIME_STAMPING) {
                    Ok(()) => {
                        return Ok(Stamped {
                            authority: authority.name.clone(),
                            time,
                        });
                    }
                    Err(e) => why = format!("its signer's certificate: {e}"),
                }
            }
        }
    }
    Err(why)
}
