//! Repository signatures through kfleet's OpenPGP verifier: a real Debian `InRelease` against
//! Debian's real archive keyring, and files `gpg` signed with the tests' own keys (see
//! tests/fixtures/openpgp/README.md).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test stops at the first surprise

use kfleet::openpgp::Keyring;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/openpgp")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn keyring(name: &str) -> Keyring {
    Keyring::parse(name, &fixture(name)).unwrap()
}

fn debian() -> Keyring {
    Keyring::read(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("assets/keyrings/debian-archive-keyring.gpg"),
    )
    .unwrap()
}

/// 2026-05-21: the day after the real InRelease was published.
fn may_2026() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_779_321_600)
}

#[test]
fn a_real_debian_inrelease_verifies_against_debians_keyring() {
    let (text, signer) = debian()
        .verify_cleartext(&fixture("debian-bookworm-updates.InRelease"), may_2026())
        .unwrap();
    assert!(text.starts_with("Origin: Debian\n"), "{}", &text[..200]);
    assert!(
        text.contains("\nCodename: bookworm-updates\n"),
        "{}",
        &text[..300]
    );
    assert!(text.contains(" main/binary-amd64/Packages.xz\n"));
    assert!(
        !text.contains("BEGIN PGP"),
        "only the signed text is returned"
    );
    // The first of its two signatures: bookworm's archive key, through its signing subkey.
    assert_eq!(
        signer.to_string(),
        "Debian Archive Automatic Signing Key (12/bookworm) <ftpmaster@debian.org> \
         (4CB50190207B4758A3F73A796ED0E7B82643E131)"
    );
}

#[test]
fn one_changed_byte_of_a_real_inrelease_is_refused() {
    let mut bytes = fixture("debian-bookworm-updates.InRelease");
    let at = memchr(&bytes, b"Packages.xz").unwrap();
    bytes[at - 3] ^= 1;
    let e = debian().verify_cleartext(&bytes, may_2026()).unwrap_err();
    assert!(e.contains("does not verify"), "{e}");
}

#[test]
fn text_before_the_signed_message_is_refused() {
    let mut bytes = b"SHA256:\n 00 1 main/binary-amd64/Packages.xz\n".to_vec();
    bytes.extend(fixture("debian-bookworm-updates.InRelease"));
    let e = debian().verify_cleartext(&bytes, may_2026()).unwrap_err();
    assert!(e.contains("not a clear-signed message"), "{e}");
}

#[test]
fn a_signature_by_a_key_outside_the_keyring_names_the_key() {
    let e = keyring("test-archive.pub.asc")
        .verify_cleartext(&fixture("debian-bookworm-updates.InRelease"), may_2026())
        .unwrap_err();
    assert!(
        e.contains("which is not in keyring test-archive.pub.asc"),
        "{e}"
    );
    let e = keyring("test-archive.pub.asc")
        .verify_cleartext(&fixture("InRelease.other"), SystemTime::now())
        .unwrap_err();
    assert!(
        e.contains("signed by key 07D27B5B5337D0F4FCBF6F340C5FA0279DEDF0A5"),
        "{e}"
    );
}

#[test]
fn gpg_signatures_by_a_signing_subkey_verify() {
    let ring = keyring("test-archive.pub.asc");
    assert_eq!(
        ring.fingerprints(),
        ["7B77F83A1750B993F183FF83CE3B05E8C8D69559"]
    );
    let (text, signer) = ring
        .verify_cleartext(&fixture("InRelease"), SystemTime::now())
        .unwrap();
    assert_eq!(
        text,
        String::from_utf8(fixture("Release")).unwrap().trim_end()
    );
    assert_eq!(
        signer.fingerprint,
        "179F15D00B276F8CDABC94001CDAD09CEF527078"
    );
    assert!(
        text.contains("\n- a line that starts with a dash"),
        "dash-escaping undone"
    );
    let signer = ring
        .verify_detached(
            &fixture("Release"),
            &fixture("Release.gpg"),
            SystemTime::now(),
        )
        .unwrap();
    assert_eq!(
        signer.fingerprint,
        "179F15D00B276F8CDABC94001CDAD09CEF527078"
    );
}

#[test]
fn a_detached_signature_over_other_bytes_is_refused() {
    let mut release = fixture("Release");
    release.extend_from_slice(b" 00 1 main/binary-amd64/Packages.gz\n");
    let e = keyring("test-archive.pub.asc")
        .verify_detached(&release, &fixture("Release.gpg"), SystemTime::now())
        .unwrap_err();
    assert!(e.contains("does not verify"), "{e}");
    let e = keyring("test-archive.pub.asc")
        .verify_detached(&fixture("Release"), b"not a signature", SystemTime::now())
        .unwrap_err();
    assert!(e.contains("not an OpenPGP signature"), "{e}");
}

#[test]
fn an_expired_key_is_refused_with_its_date() {
    let ring = keyring("expired-archive.pub.asc");
    let e = ring
        .verify_cleartext(&fixture("InRelease.expired"), SystemTime::now())
        .unwrap_err();
    assert!(e.contains("the key expired on 2021-01-01"), "{e}");
    // While it was valid, the same signature verified.
    let june_2020 = UNIX_EPOCH + Duration::from_secs(1_591_000_000);
    ring.verify_cleartext(&fixture("InRelease.expired"), june_2020)
        .unwrap();
}

#[test]
fn keyrings_that_hold_no_key_are_refused() {
    for bytes in [
        &b""[..],
        b"hello",
        b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nAAAA\n-----END PGP PUBLIC KEY BLOCK-----\n",
    ] {
        let e = Keyring::parse("bad.asc", bytes).unwrap_err();
        assert!(e.contains("bad.asc"), "{e}");
    }
    let mut two = fixture("test-archive.pub.asc");
    two.extend(fixture("other-archive.pub.asc"));
    assert_eq!(
        Keyring::parse("two.asc", &two)
            .unwrap()
            .fingerprints()
            .len(),
        2
    );
}

fn memchr(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn an_rpm_signed_by_rpmsign_verifies_and_altered_ones_do_not() {
    use kfleet::headers::trust::verify_rpm;
    let ring = keyring("test-archive.pub.asc");
    let signed = fixture("kernel-devel-signed.rpm");
    let signer = verify_rpm(&signed, &ring).unwrap();
    assert_eq!(
        signer.fingerprint,
        "179F15D00B276F8CDABC94001CDAD09CEF527078"
    );

    let e = verify_rpm(&fixture("kernel-devel-other.rpm"), &ring).unwrap_err();
    assert!(
        e.contains("07D27B5B5337D0F4FCBF6F340C5FA0279DEDF0A5") || e.contains("0C5FA0279DEDF0A5"),
        "{e}"
    );
    assert!(e.contains("not in keyring"), "{e}");
    let e = verify_rpm(&fixture("kernel-devel-unsigned.rpm"), &ring).unwrap_err();
    assert!(e.contains("carries no OpenPGP signature"), "{e}");

    // The last byte of the payload (xz's footer), then a byte of the header's data.
    let mut payload = signed.clone();
    *payload.last_mut().unwrap() ^= 1;
    let e = verify_rpm(&payload, &ring).unwrap_err();
    assert!(e.contains("payload digest mismatch"), "{e}");
    let mut header = signed.clone();
    let at = memchr(&header, b"kfleet test package").unwrap();
    header[at] ^= 0x20;
    let e = verify_rpm(&header, &ring).unwrap_err();
    assert!(e.contains("does not verify"), "{e}");
    assert!(
        verify_rpm(b"not an rpm", &ring)
            .unwrap_err()
            .contains("not an RPM")
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

    /// Hostile bytes where a signed index, a signature or an RPM should be: an error, never a
    /// panic, and never a verified signer.
    #[test]
    fn hostile_bytes_never_verify(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048), at in 0usize..6329) {
        let ring = keyring("test-archive.pub.asc");
        let now = SystemTime::now();
        proptest::prop_assert!(ring.verify_cleartext(&bytes, now).is_err());
        proptest::prop_assert!(ring.verify_detached(b"data", &bytes, now).is_err());
        proptest::prop_assert!(kfleet::headers::trust::verify_rpm(&bytes, &ring).is_err());
        // One flipped byte anywhere in a signed RPM: refused, or the very same bytes verified
        // (a flip inside the lead, which nothing signs, changes nothing rpm reads).
        let mut rpm = fixture("kernel-devel-signed.rpm");
        let at = at % rpm.len();
        rpm[at] ^= 0x5a;
        if kfleet::headers::trust::verify_rpm(&rpm, &ring).is_ok() {
            proptest::prop_assert!(at < 96 || (96..rpm_signature_end()).contains(&at), "byte {} flipped and still verified", at);
        }
    }
}

/// Where the signature header of the signed fixture RPM ends (lead, then the signature header
/// and its padding): bytes there are not covered by the header signature.
fn rpm_signature_end() -> usize {
    let rpm = fixture("kernel-devel-signed.rpm");
    let word = |i: usize| u32::from_be_bytes([rpm[i], rpm[i + 1], rpm[i + 2], rpm[i + 3]]) as usize;
    let (entries, data) = (word(96 + 8), word(96 + 12));
    (96 + 16 + 16 * entries + data).next_multiple_of(8)
}

#[test]
fn the_built_in_archive_keyrings_are_the_distributions_keys() {
    let assets = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/keyrings");
    let ubuntu = Keyring::read(&assets.join("ubuntu-archive-2018.asc")).unwrap();
    assert_eq!(
        ubuntu.fingerprints(),
        ["F6ECB3762474EDA9D21B7022871920D1991BC93C"]
    );
    let debian = debian().fingerprints();
    for fingerprint in [
        // Archive keys of Debian 12 and 13, and bookworm's security key.
        "B8B80B5B623EAB6AD8775C45B7C5D7D6350947F8",
        "05AB90340C0C5E797F44A8C8254CF3B5AEC0A8F0",
        "04B54C3CDCA79751B16BC6B5225629DF75B188BD",
    ] {
        assert!(
            debian.iter().any(|f| f == fingerprint),
            "{fingerprint}: {debian:?}"
        );
    }
}
