//! Module signatures and the keys that vouch for them: the signer a module's appended PKCS#7
//! signature names (issuer and serial, or subject key identifier), the X.509 certificates of
//! UEFI signature lists (the firmware's `db`, shim's `MokListRT`, which the kernel loads into its
//! `.platform` and `.machine` keyrings), the key identifiers `/proc/keys` shows, and whether a
//! signer is among them. Parsing is RustCrypto's `cms` and `x509-cert`.

use cms::cert::x509::Certificate;
use cms::cert::x509::der::{Decode as _, Encode as _};
use cms::content_info::ContentInfo;
use cms::signed_data::{SignedData, SignerIdentifier};

const MARKER: &[u8] = b"~Module signature appended~\n";
/// `struct module_signature`: algo, hash, id_type, signer_len, key_id_len, 3 pad, be32 sig_len.
const TRAILER: usize = 12;
/// `id_type` of a PKCS#7 signature, the only kind current kernels take.
const PKEY_ID_PKCS7: u8 = 2;
/// `EFI_CERT_X509_GUID` a5c059a1-94e4-4aa7-87b5-ab155c2bf072, as it is laid out in memory.
const EFI_CERT_X509: [u8; 16] = [
    0xa1, 0x59, 0xc0, 0xa5, 0xe4, 0x94, 0xa7, 0x4a, 0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0, 0x72,
];

/// Who signed a module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signer {
    /// The issuer's name (DER, and as text) and the certificate's serial number.
    IssuerSerial {
        issuer_der: Vec<u8>,
        issuer: String,
        serial: Vec<u8>,
    },
    /// The certificate's subject key identifier.
    KeyId(Vec<u8>),
}

impl std::fmt::Display for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::IssuerSerial { issuer, serial, .. } => {
                write!(f, "the certificate of {issuer} with serial {}", hex(serial))
            }
            Self::KeyId(id) => write!(f, "the key {}", hex(id)),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The signer of a module file, `None` when it carries no signature.
pub fn module_signer(ko: &[u8]) -> Result<Option<Signer>, String> {
    let Some(body) = ko.strip_suffix(MARKER) else {
        return Ok(None);
    };
    let trailer_at = body
        .len()
        .checked_sub(TRAILER)
        .ok_or("the signature trailer is cut off")?;
    let trailer = &body[trailer_at..];
    if trailer[2] != PKEY_ID_PKCS7 {
        return Err(format!(
            "the signature is of type {}, not PKCS#7",
            trailer[2]
        ));
    }
    let len = u32::from_be_bytes([trailer[8], trailer[9], trailer[10], trailer[11]]) as usize;
    let start = trailer_at
        .checked_sub(len)
        .ok_or("the signature is longer than the module")?;
    let info = ContentInfo::from_der(&body[start..trailer_at])
        .map_err(|e| format!("the signature is not PKCS#7: {e}"))?;
    let signed: SignedData = info
        .content
        .decode_as()
        .map_err(|e| format!("the signature holds no SignedData: {e}"))?;
    let first = signed
        .signer_infos
        .0
        .iter()
        .next()
        .ok_or("the signature names no signer")?;
    Ok(Some(match &first.sid {
        SignerIdentifier::IssuerAndSerialNumber(id) => Signer::IssuerSerial {
            issuer_der: id
                .issuer
                .to_der()
                .map_err(|e| format!("the signer's issuer: {e}"))?,
            issuer: id.issuer.to_string(),
            serial: id.serial_number.as_bytes().to_vec(),
        },
        SignerIdentifier::SubjectKeyIdentifier(skid) => Signer::KeyId(skid.0.as_bytes().to_vec()),
    }))
}

/// A certificate the machine trusts for modules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trusted {
    pub subject: String,
    issuer_der: Vec<u8>,
    serial: Vec<u8>,
    key_id: Option<Vec<u8>>,
}

impl Trusted {
    pub fn from_der(der: &[u8]) -> Result<Self, String> {
        let cert =
            Certificate::from_der(der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
        let tbs = &cert.tbs_certificate;
        let skid_oid = cms::cert::x509::der::oid::db::rfc5280::ID_CE_SUBJECT_KEY_IDENTIFIER;
        let key_id = tbs
            .extensions
            .iter()
            .flatten()
            .find(|e| e.extn_id == skid_oid)
            .and_then(|e| {
                cms::cert::x509::der::asn1::OctetString::from_der(e.extn_value.as_bytes()).ok()
            })
            .map(|o| o.as_bytes().to_vec());
        Ok(Self {
            subject: tbs.subject.to_string(),
            issuer_der: tbs.issuer.to_der().map_err(|e| e.to_string())?,
            serial: tbs.serial_number.as_bytes().to_vec(),
            key_id,
        })
    }

    /// Whether this certificate is the one `signer` names.
    pub fn vouches_for(&self, signer: &Signer) -> bool {
        match signer {
            Signer::IssuerSerial {
                issuer_der, serial, ..
            } => *issuer_der == self.issuer_der && *serial == self.serial,
            Signer::KeyId(id) => self.key_id.as_ref() == Some(id),
        }
    }
}

/// The X.509 certificates of a UEFI variable holding `EFI_SIGNATURE_LIST`s (`db`, `MokListRT`),
/// as efivarfs shows it: four bytes of attributes, then the lists. Hashes and entries that are
/// not certificates are skipped.
pub fn efi_certificates(var: &[u8]) -> Result<Vec<Trusted>, String> {
    let mut rest = var.get(4..).ok_or("shorter than its attributes")?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let u32_at = |b: &[u8], at: usize| -> Result<usize, String> {
            b.get(at..at + 4)
                .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]) as usize)
                .ok_or_else(|| "a signature list is cut off".to_string())
        };
        let list_size = u32_at(rest, 16)?;
        let header_size = u32_at(rest, 20)?;
        let entry_size = u32_at(rest, 24)?;
        if list_size < 28 + header_size || list_size > rest.len() || entry_size <= 16 {
            return Err(format!(
                "a signature list of {list_size} bytes does not fit (entries of {entry_size})"
            ));
        }
        if rest[..16] == EFI_CERT_X509 {
            let entries = &rest[28 + header_size..list_size];
            for entry in entries.chunks(entry_size) {
                // Each entry: the owner's GUID, then the certificate.
                if let Some(der) = entry.get(16..)
                    && let Ok(cert) = Trusted::from_der(der)
                {
                    out.push(cert);
                }
            }
        }
        rest = &rest[list_size..];
    }
    Ok(out)
}

/// The key identifiers of the asymmetric keys `/proc/keys` lists (`…: CN: 6cce…ea1: X509.rsa …`):
/// the kernel names an X.509 key by its subject and subject key identifier.
pub fn proc_keys_ids(text: &str) -> Vec<Vec<u8>> {
    text.lines()
        .filter(|l| l.contains(" asymmetri"))
        .flat_map(|l| l.split(": "))
        .filter(|w| w.len() >= 16 && w.len() % 2 == 0 && w.bytes().all(|b| b.is_ascii_hexdigit()))
        .filter_map(|w| {
            (0..w.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&w[i..i + 2], 16).ok())
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsigned_and_cut_modules_are_told_apart() {
        assert_eq!(module_signer(b"\x7fELF plain module"), Ok(None));
        let mut cut = b"x".to_vec();
        cut.extend_from_slice(MARKER);
        assert!(module_signer(&cut).is_err());
        let mut wrong_type = vec![0u8; 40];
        wrong_type.extend_from_slice(&[0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 4]);
        wrong_type.extend_from_slice(MARKER);
        assert!(
            module_signer(&wrong_type)
                .unwrap_err()
                .contains("not PKCS#7")
        );
    }

    #[test]
    fn proc_keys_lines_give_key_ids() {
        let text = "1b5cbb5a I------     1 perm 1f010000     0     0 asymmetri Debian Secure Boot CA: 6ccece7e4c6c0d1f6149f3dd27dfcc5cbb419ea1: X509.rsa 4c6c0d1f []\n\
                    2a0e2b5e I------     1 perm 1f0b0000     0     0 keyring   .platform: 2\n";
        assert_eq!(
            proc_keys_ids(text),
            vec![vec![
                0x6c, 0xce, 0xce, 0x7e, 0x4c, 0x6c, 0x0d, 0x1f, 0x61, 0x49, 0xf3, 0xdd, 0x27, 0xdf,
                0xcc, 0x5c, 0xbb, 0x41, 0x9e, 0xa1
            ]]
        );
    }

    #[test]
    fn signature_lists_that_do_not_fit_are_refused() {
        let mut var = vec![7, 0, 0, 0];
        var.extend_from_slice(&EFI_CERT_X509);
        var.extend_from_slice(&1000u32.to_le_bytes());
        var.extend_from_slice(&0u32.to_le_bytes());
        var.extend_from_slice(&100u32.to_le_bytes());
        assert!(efi_certificates(&var).is_err());
        assert_eq!(efi_certificates(&[7, 0, 0, 0]), Ok(Vec::new()));
    }
}
