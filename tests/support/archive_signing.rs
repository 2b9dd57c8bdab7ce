//! Signing as a distribution's archive does, with the tests' own key (made by gpg, see
//! tests/fixtures/openpgp/README.md): a clear-signed `InRelease` listing the SHA256 of a
//! suite's index files, and a detached `repomd.xml.asc`.

use pgp::composed::{CleartextSignedMessage, Deserializable, DetachedSignature, SignedSecretKey};
use pgp::crypto::hash::HashAlgorithm;
use pgp::types::Password;
use rand::SeedableRng;
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/openpgp")
        .join(name)
}

/// The public keyring a source names in `signed_by` to trust the test archive.
pub fn keyring_path() -> PathBuf {
    fixture("test-archive.pub.asc")
}

fn secret(name: &str) -> SignedSecretKey {
    let armored = std::fs::read_to_string(fixture(name)).unwrap();
    SignedSecretKey::from_string(&armored).unwrap().0
}

/// `text` clear-signed with the archive's signing subkey, as `InRelease` is.
pub fn clearsign(text: &str) -> Vec<u8> {
    clearsign_with("test-archive.sec.asc", text)
}

/// `text` clear-signed by another key (one the sources do not trust).
pub fn clearsign_with(key: &str, text: &str) -> Vec<u8> {
    let key = secret(key);
    let rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
    let message = match key.secret_subkeys.first() {
        Some(sub) => CleartextSignedMessage::sign(rng, text, &sub.key, &Password::empty()),
        None => CleartextSignedMessage::sign(rng, text, &key.primary_key, &Password::empty()),
    }
    .unwrap();
    message
        .to_armored_string(Default::default())
        .unwrap()
        .into_bytes()
}

/// A detached signature over `data`, armoured, as `repomd.xml.asc` is.
pub fn detach_sign(data: &[u8]) -> Vec<u8> {
    let key = secret("test-archive.sec.asc");
    let rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
    let sub = &key.secret_subkeys[0].key;
    DetachedSignature::sign_binary_data(rng, sub, &Password::empty(), HashAlgorithm::Sha256, data)
        .unwrap()
        .to_armored_bytes(Default::default())
        .unwrap()
}

/// The `Release` of a suite whose index files are `files` (path under `dists/{suite}/`, bytes).
pub fn release(files: &[(String, Vec<u8>)]) -> String {
    use sha2::Digest;
    let mut text = String::from(
        "Origin: kfleet test\nLabel: kfleet test\nSuite: test\nDate: Mon, 07 Dec 2026 04:00:00 UTC\n\
         Valid-Until: Fri, 31 Dec 2100 00:00:00 UTC\nSHA256:\n",
    );
    for (path, body) in files {
        let hash: String = sha2::Sha256::digest(body)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        text.push_str(&format!(" {hash} {} {path}\n", body.len()));
    }
    text
}
