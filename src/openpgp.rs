//! OpenPGP signatures of package repositories: an APT `InRelease` (clear-signed) or `Release` with
//! `Release.gpg`, a DNF `repomd.xml` with `repomd.xml.asc`, checked against a keyring the operator
//! trusts (Debian's and Ubuntu's archive keyrings, a distribution's `RPM-GPG-KEY-*`). Built on the
//! `pgp` crate (rPGP, pure Rust); nothing shells out to `gpg`.
//!
//! A signature counts when it verifies under a key of the keyring (a primary key, or a subkey
//! whose binding the primary key signed) that is neither revoked nor expired at the time given,
//! and the signature itself is not expired then: as `gpgv` under APT decides.

use pgp::composed::{CleartextSignedMessage, Deserializable, DetachedSignature, SignedPublicKey};
use pgp::packet::Signature;
use pgp::types::KeyDetails;
use std::time::{Duration, SystemTime};

/// Largest keyring file read (Debian's whole archive keyring is 60 KiB).
pub const MAX_KEYRING: u64 = 4 << 20;

/// The public keys one source trusts, with where they came from for messages.
#[derive(Clone, Debug)]
pub struct Keyring {
    pub origin: String,
    keys: Vec<TrustedKey>,
}

/// A key of a keyring, with what its own signatures say about it: third parties' certifications
/// (Debian's keys certify each other) are not read.
#[derive(Clone, Debug)]
struct TrustedKey {
    key: SignedPublicKey,
    user: String,
    /// The newest self-certification that verifies: it says when the key expires.
    newest: Signature,
    revoked: bool,
}

/// The key with its user ID and newest valid self-signature; `None` when no self-signature
/// verifies.
fn self_certified(key: SignedPublicKey) -> Option<TrustedKey> {
    let primary = &key.primary_key;
    let mut best: Option<(&pgp::types::SignedUser, &Signature)> = None;
    for user in &key.details.users {
        for s in user.signatures.iter().filter(|s| s.is_certification()) {
            if s.verify_certification(primary, pgp::types::Tag::UserId, &user.id)
                .is_ok()
                && best.is_none_or(|(_, b)| s.created() > b.created())
            {
                best = Some((user, s));
            }
        }
    }
    let (user, newest) = best?;
    let revoked = key
        .details
        .revocation_signatures
        .iter()
        .any(|s| s.verify_key(primary).is_ok());
    Some(TrustedKey {
        user: String::from_utf8_lossy(user.id.id()).into_owned(),
        newest: newest.clone(),
        revoked,
        key,
    })
}

/// A signature that verified: which key made it, and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signer {
    /// The fingerprint of the key that signed (a subkey's own), upper-case hex.
    pub fingerprint: String,
    /// The primary key's first user ID.
    pub user: String,
    pub created: Option<SystemTime>,
}

impl std::fmt::Display for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.user, self.fingerprint)
    }
}

impl Keyring {
    /// Every public key in `bytes`: a binary keyring (`.gpg`, several keys one after another) or
    /// ASCII armour (`.asc`, `RPM-GPG-KEY-*`, one or more blocks). Keys whose self-signatures do
    /// not verify are dropped; a keyring left without a key is an error.
    pub fn parse(origin: &str, bytes: &[u8]) -> Result<Keyring, String> {
        let bad = |e: &dyn std::fmt::Display| format!("keyring {origin}: not OpenPGP keys: {e}");
        let mut keys = Vec::new();
        // An armoured file may hold several blocks (a distribution's keys pasted together).
        let blocks: Vec<&[u8]> = if bytes.starts_with(b"-----") || armoured(bytes) {
            split_armour(bytes)
        } else {
            vec![bytes]
        };
        for block in blocks {
            let (parsed, _) = SignedPublicKey::from_reader_many(block).map_err(|e| bad(&e))?;
            for key in parsed {
                let key = key.map_err(|e| bad(&e))?;
                if let Some(key) = self_certified(key) {
                    keys.push(key);
                }
            }
        }
        if keys.is_empty() {
            return Err(format!(
                "keyring {origin} holds no usable public key (every key's self-signature failed, \
                 or the file is empty)"
            ));
        }
        Ok(Keyring {
            origin: origin.to_string(),
            keys,
        })
    }

    /// The keys of several keyrings together; `None` when there are none.
    pub fn merge(keyrings: Vec<Keyring>) -> Option<Keyring> {
        let origin = keyrings
            .iter()
            .map(|k| k.origin.as_str())
            .collect::<Vec<_>>()
            .join(" + ");
        let keys: Vec<TrustedKey> = keyrings.into_iter().flat_map(|k| k.keys).collect();
        (!keys.is_empty()).then_some(Keyring { origin, keys })
    }

    /// Reads a keyring file, bounded in size.
    pub fn read(path: &std::path::Path) -> Result<Keyring, String> {
        let origin = path.display().to_string();
        let bytes = crate::bounded::read_file(path, MAX_KEYRING)
            .map_err(|e| format!("cannot read keyring {origin}: {e}"))?;
        Keyring::parse(&origin, &bytes)
    }

    /// The fingerprints of the primary keys, for messages and tests.
    pub fn fingerprints(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| hex(k.key.primary_key.fingerprint().as_bytes()))
            .collect()
    }

    /// Every key's short id (the last 8 hex digits of its fingerprint, lower case, as Koji names
    /// the signed copies of a build's RPMs): primary keys, then their subkeys.
    pub fn short_ids(&self) -> Vec<String> {
        let short = |f: &pgp::types::Fingerprint| {
            let hex = crate::fsio::hex(f.as_bytes());
            hex[hex.len().saturating_sub(8)..].to_string()
        };
        let primaries = self
            .keys
            .iter()
            .map(|k| short(&k.key.primary_key.fingerprint()));
        let subkeys = self.keys.iter().flat_map(|k| {
            k.key
                .public_subkeys
                .iter()
                .map(|s| short(&s.key.fingerprint()))
        });
        primaries.chain(subkeys).collect()
    }

    /// Verifies a clear-signed message (`InRelease`) and returns the text it signs, as signed:
    /// the only text a caller may read from it.
    pub fn verify_cleartext(
        &self,
        message: &[u8],
        now: SystemTime,
    ) -> Result<(String, Signer), String> {
        let text = std::str::from_utf8(message)
            .map_err(|_| "the clear-signed file is not UTF-8 text".to_string())?;
        // Anything before the armour header would be unsigned text a reader might take as signed.
        if !text.starts_with("-----BEGIN PGP SIGNED MESSAGE-----") {
            return Err(
                "not a clear-signed message (no BEGIN PGP SIGNED MESSAGE at its start)".into(),
            );
        }
        let (message, _) = CleartextSignedMessage::from_string(text)
            .map_err(|e| format!("not a well-formed clear-signed message: {e}"))?;
        let signed = message.signed_text();
        let signer = self.verify_any(message.signatures(), signed.as_bytes(), now)?;
        // What was signed, with the line ends the file uses.
        Ok((signed.replace("\r\n", "\n"), signer))
    }

    /// Verifies a detached signature (`Release.gpg`, `repomd.xml.asc`, armoured or binary) over
    /// `data`.
    pub fn verify_detached(
        &self,
        data: &[u8],
        signature: &[u8],
        now: SystemTime,
    ) -> Result<Signer, String> {
        let (parsed, _) = DetachedSignature::from_reader_many(signature)
            .map_err(|e| format!("not an OpenPGP signature: {e}"))?;
        let mut signatures = Vec::new();
        for s in parsed {
            signatures.push(
                s.map_err(|e| format!("not an OpenPGP signature: {e}"))?
                    .signature,
            );
        }
        self.verify_any(&signatures, data, now)
    }

    /// Verifies a signature packet already parsed (an RPM header's), over `data`.
    pub fn verify_packet(
        &self,
        signature: &Signature,
        data: &[u8],
        now: SystemTime,
    ) -> Result<Signer, String> {
        self.verify_any(std::slice::from_ref(signature), data, now)
    }

    /// The first of `signatures` that verifies with a usable key of the keyring; otherwise why
    /// none did, naming the keys the signatures were made with.
    fn verify_any(
        &self,
        signatures: &[Signature],
        data: &[u8],
        now: SystemTime,
    ) -> Result<Signer, String> {
        if signatures.is_empty() {
            return Err("it carries no signature".into());
        }
        let mut problems = Vec::new();
        for signature in signatures {
            match self.verify_one(signature, data, now) {
                Ok(signer) => return Ok(signer),
                Err(e) => problems.push(e),
            }
        }
        problems.dedup();
        Err(problems.join("; "))
    }

    fn verify_one(
        &self,
        signature: &Signature,
        data: &[u8],
        now: SystemTime,
    ) -> Result<Signer, String> {
        let issuers: Vec<String> = signature
            .issuer_fingerprint()
            .iter()
            .map(|f| hex(f.as_bytes()))
            .chain(signature.issuer_key_id().iter().map(|id| hex(id.as_ref())))
            .collect();
        let named = |fingerprint: &str| {
            issuers.is_empty() || issuers.iter().any(|i| fingerprint.ends_with(i.as_str()))
        };
        let created = signature.created().map(SystemTime::from);
        if let (Some(created), Some(valid_for)) = (created, signature.signature_expiration_time())
            && valid_for.as_secs() > 0
            && created + Duration::from_secs(valid_for.as_secs().into()) < now
        {
            return Err("the signature has expired".into());
        }
        let mut failure = None;
        for trusted in &self.keys {
            let key = &trusted.key;
            let user = trusted.user.clone();
            let primary = hex(key.primary_key.fingerprint().as_bytes());
            let candidates = std::iter::once((primary.clone(), None)).chain(
                key.public_subkeys
                    .iter()
                    .map(|s| (hex(s.key.fingerprint().as_bytes()), Some(s))),
            );
            for (fingerprint, subkey) in candidates {
                if !named(&fingerprint) {
                    continue;
                }
                let checked = match subkey {
                    None => signature.verify(&key.primary_key, data),
                    Some(s) => signature.verify(&s.key, data),
                };
                if let Err(e) = checked {
                    failure = Some(format!(
                        "the signature by {fingerprint} does not verify: {e}"
                    ));
                    continue;
                }
                usable(trusted, subkey, now)
                    .map_err(|e| format!("signed by {user} ({fingerprint}), but {e}"))?;
                return Ok(Signer {
                    fingerprint,
                    user,
                    created,
                });
            }
        }
        Err(failure.unwrap_or_else(|| {
            format!(
                "signed by key {}, which is not in keyring {}",
                issuers.first().map_or("(unnamed)", String::as_str),
                self.origin
            )
        }))
    }
}

/// Whether a key of the keyring may sign now: not revoked, not expired, and a subkey bound to its
/// primary key for signing.
fn usable(
    trusted: &TrustedKey,
    subkey: Option<&pgp::composed::SignedPublicSubKey>,
    now: SystemTime,
) -> Result<(), String> {
    let key = &trusted.key;
    if trusted.revoked {
        return Err("that key has been revoked".into());
    }
    let created = SystemTime::from(key.primary_key.created_at());
    expires(created, Some(&trusted.newest), now, "the key")?;
    if let Some(sub) = subkey {
        if sub.signatures.iter().any(|s| {
            matches!(s.typ(), Some(pgp::packet::SignatureType::SubkeyRevocation))
                && s.verify_subkey_binding(&key.primary_key, &sub.key).is_ok()
        }) {
            return Err("that subkey has been revoked".into());
        }
        let binding = sub
            .signatures
            .iter()
            .filter(|s| matches!(s.typ(), Some(pgp::packet::SignatureType::SubkeyBinding)))
            .max_by_key(|s| s.created().map(|t| t.as_secs()))
            .ok_or("that subkey has no binding signature")?;
        binding
            .verify_subkey_binding(&key.primary_key, &sub.key)
            .map_err(|e| format!("that subkey's binding does not verify: {e}"))?;
        let flags = binding.key_flags();
        let flagged = flags.certify()
            || flags.encrypt_comms()
            || flags.encrypt_storage()
            || flags.authentication();
        if flagged && !flags.sign() {
            return Err("that subkey is not for signing".into());
        }
        expires(
            SystemTime::from(sub.key.created_at()),
            Some(binding),
            now,
            "the subkey",
        )?;
    }
    Ok(())
}

fn expires(
    created: SystemTime,
    by: Option<&Signature>,
    now: SystemTime,
    what: &str,
) -> Result<(), String> {
    let Some(valid_for) = by.and_then(Signature::key_expiration_time) else {
        return Ok(());
    };
    if valid_for.as_secs() == 0 {
        return Ok(());
    }
    let end = created + Duration::from_secs(valid_for.as_secs().into());
    if end < now {
        let date = chrono::DateTime::<chrono::Utc>::from(end).format("%Y-%m-%d");
        return Err(format!("{what} expired on {date}"));
    }
    Ok(())
}

fn armoured(bytes: &[u8]) -> bool {
    memchr::memmem::find(bytes, b"-----BEGIN PGP").is_some()
}

/// Each `-----BEGIN PGP PUBLIC KEY BLOCK-----` ... `END` block of an armoured file.
fn split_armour(bytes: &[u8]) -> Vec<&[u8]> {
    const BEGIN: &[u8] = b"-----BEGIN PGP PUBLIC KEY BLOCK-----";
    const END: &[u8] = b"-----END PGP PUBLIC KEY BLOCK-----";
    let mut out = Vec::new();
    let mut rest = bytes;
    while let Some(start) = memchr::memmem::find(rest, BEGIN) {
        let block = &rest[start..];
        let Some(end) = memchr::memmem::find(block, END) else {
            out.push(block);
            break;
        };
        out.push(&block[..end + END.len()]);
        rest = &block[end + END.len()..];
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    crate::fsio::hex(bytes).to_ascii_uppercase()
}
