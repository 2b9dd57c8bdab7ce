//! Public keys as Sigstore carries them (DER SubjectPublicKeyInfo: ECDSA P-256 and P-384,
//! Ed25519, RSA) and signature checks with them, through `ring`.

use cms::cert::x509::der::Decode as _;
use cms::cert::x509::der::asn1::ObjectIdentifier as Oid;
use cms::cert::x509::spki::SubjectPublicKeyInfoOwned;

const EC_PUBLIC_KEY: Oid = Oid::new_unwrap("1.2.840.10045.2.1");
const P256: Oid = Oid::new_unwrap("1.2.840.10045.3.1.7");
const P384: Oid = Oid::new_unwrap("1.3.132.0.34");
const ED25519: Oid = Oid::new_unwrap("1.3.101.112");
const RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.1");

/// The hash a signature was made over, where the key alone does not say it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    P256,
    P384,
    Ed25519,
    Rsa,
}

/// A public key ready to check signatures.
#[derive(Clone, Debug)]
pub struct PublicKey {
    kind: Kind,
    /// The key as `ring` takes it: the uncompressed point, the raw Ed25519 key, or the RSA
    /// public key's DER.
    bytes: Vec<u8>,
}

impl PublicKey {
    /// A key from its DER SubjectPublicKeyInfo.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, String> {
        let spki = SubjectPublicKeyInfoOwned::from_der(der)
            .map_err(|e| format!("not a DER public key: {e}"))?;
        Self::from_spki(&spki)
    }

    pub fn from_spki(spki: &SubjectPublicKeyInfoOwned) -> Result<Self, String> {
        let algorithm = spki.algorithm.oid;
        let kind = if algorithm == EC_PUBLIC_KEY {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as::<Oid>().ok());
            match curve {
                Some(c) if c == P256 => Kind::P256,
                Some(c) if c == P384 => Kind::P384,
                other => {
                    return Err(format!(
                        "an elliptic-curve key on {}, not P-256 or P-384",
                        other.map_or("an unnamed curve".to_string(), |c| c.to_string())
                    ));
                }
            }
        } else if algorithm == ED25519 {
            Kind::Ed25519
        } else if algorithm == RSA {
            Kind::Rsa
        } else {
            return Err(format!(
                "a key of algorithm {algorithm}, not ECDSA, Ed25519 or RSA"
            ));
        };
        let bytes = spki
            .subject_public_key
            .as_bytes()
            .ok_or("a public key that is not a whole number of bytes")?
            .to_vec();
        Ok(Self { kind, bytes })
    }

    /// Checks `signature` (DER for ECDSA) over `message`, hashed with `hash` or, when `None`,
    /// the hash that goes with the key (SHA-256 for P-256 and RSA, SHA-384 for P-384).
    pub fn verify(&self, message: &[u8], signature: &[u8], hash: Option<Hash>) -> bool {
        use ring::signature as s;
        let algorithm: &dyn s::VerificationAlgorithm = match (self.kind, hash) {
            (Kind::P256, None | Some(Hash::Sha256)) => &s::ECDSA_P256_SHA256_ASN1,
            (Kind::P256, Some(Hash::Sha384)) => &s::ECDSA_P256_SHA384_ASN1,
            (Kind::P384, None | Some(Hash::Sha384)) => &s::ECDSA_P384_SHA384_ASN1,
            (Kind::P384, Some(Hash::Sha256)) => &s::ECDSA_P384_SHA256_ASN1,
            (Kind::Ed25519, _) => &s::ED25519,
            (Kind::Rsa, None | Some(Hash::Sha256)) => &s::RSA_PKCS1_2048_8192_SHA256,
            (Kind::Rsa, Some(Hash::Sha384)) => &s::RSA_PKCS1_2048_8192_SHA384,
            (Kind::Rsa, Some(Hash::Sha512)) => &s::RSA_PKCS1_2048_8192_SHA512,
            (Kind::P256 | Kind::P384, Some(Hash::Sha512)) => return false,
        };
        s::UnparsedPublicKey::new(algorithm, &self.bytes)
            .verify(message, signature)
            .is_ok()
    }
}
