//! Signed provenance: Sigstore bundles checked before a node trusts an artifact. A real GitHub
//! Actions attestation against Sigstore's real public trust root, then bundles the test signs
//! itself with a trust root of its own (a CA, a transparency log's key and a timestamp
//! authority, all made with `openssl`), each way a bundle can lie refused with its reason.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or benchmark stops at the first surprise

use base64::Engine as _;
use kfleet::provenance::{Policy, TrustRoots, verify};
use serde_json::{Value, json};

const REAL: &str = include_str!("fixtures/provenance/conda-attestation.sigstore.json");
/// The conda package the real attestation names.
const REAL_DIGEST: &str = "54303491a8418fbed24344b513546182c29b43bf282ceb433af65e2299f9271f";

fn real_policy() -> Policy {
    Policy {
        workflow: ".github/workflows/action.yaml".into(),
        ..Policy::github("prefix-dev/sigstore-example", Some("refs/heads/main"))
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

fn refused(bundle: &[u8], digest: &str, roots: &TrustRoots, policy: &Policy) -> String {
    match verify("x.sigstore.json", bundle, digest, roots, policy) {
        Ok(v) => panic!("accepted: {v:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_real_github_actions_attestation_verifies_against_sigstores_public_root() {
    let roots = TrustRoots::public_good();
    let verified = verify(
        "conda.sigstore.json",
        REAL.as_bytes(),
        REAL_DIGEST,
        &roots,
        &real_policy(),
    )
    .unwrap();
    assert_eq!(
        verified.signer,
        "https://github.com/prefix-dev/sigstore-example/.github/workflows/action.yaml@refs/heads/main"
    );
    assert_eq!(
        verified.identity.source_repository.as_deref(),
        Some("https://github.com/prefix-dev/sigstore-example")
    );
    assert!(
        verified.witnesses[0].contains("rekor.sigstore.dev at 2025-09-01"),
        "{:?}",
        verified.witnesses
    );
}

#[test]
fn the_real_attestation_is_refused_for_anything_it_does_not_vouch_for() {
    let roots = TrustRoots::public_good();
    let bundle = REAL.as_bytes();
    let other = "0".repeat(64);
    let e = refused(bundle, &other, &roots, &real_policy());
    assert!(
        e.contains("vouches for signed-package-2.1.0-hb0f4dca_0.conda"),
        "{e}"
    );
    assert!(
        e.contains(&format!("not for this artifact (sha256 {other})")),
        "{e}"
    );

    let cases = [
        (
            Policy::github("acme/kdriver", None),
            "a workflow of prefix-dev/sigstore-example, not of acme/kdriver",
        ),
        (
            Policy::github("prefix-dev/sigstore-example", None),
            "the workflow .github/workflows/action.yaml, not .github/workflows/build-driver.yml",
        ),
        (
            Policy {
                git_ref: Some("refs/tags/v1".into()),
                ..real_policy()
            },
            "a run from refs/heads/main, not from refs/tags/v1",
        ),
        (
            Policy {
                issuer: "https://gitlab.com".into(),
                ..real_policy()
            },
            "a token from https://token.actions.githubusercontent.com, not from https://gitlab.com",
        ),
    ];
    for (policy, reason) in cases {
        let e = refused(bundle, REAL_DIGEST, &roots, &policy);
        assert!(e.contains(reason), "{e}");
    }
}

/// A release attestation GitHub's own Sigstore instance made for `jdx/communique` v0.1.9: its
/// certificate authority signed, its timestamp authority dated, no public log. Private
/// repositories' workflow attestations come from the same instance.
const GITHUB_REAL: &str =
    include_str!("fixtures/provenance/github-release-attestation.sigstore.json");
/// `communique-x86_64-unknown-linux-gnu.tar.gz`, one of the six files it names.
const GITHUB_REAL_DIGEST: &str = "b958c6046bab52febf958c94974e1ffcc450bff78c28d7233e179bfd73828912";

#[test]
fn the_built_in_roots_date_and_chain_a_real_attestation_from_githubs_own_instance() {
    let builtin = TrustRoots::builtin();
    assert!(
        builtin
            .authorities
            .iter()
            .any(|a| a.name.contains("fulcio.githubapp.com"))
    );
    assert!(
        builtin
            .timestamp_authorities
            .iter()
            .any(|a| a.name.contains("timestamp.githubapp.com"))
    );
    assert_eq!(
        TrustRoots::github().authorities.len() + TrustRoots::public_good().authorities.len(),
        builtin.authorities.len()
    );
    let bundle = GITHUB_REAL.as_bytes();
    let policy = Policy::github("jdx/communique", None);
    // Signature, GitHub's timestamp, GitHub's chain and the subject all hold with the built-in
    // roots: what refuses it is the policy, since GitHub itself signed it, not a workflow.
    let e = refused(bundle, GITHUB_REAL_DIGEST, &builtin, &policy);
    assert!(
        e.contains("was signed with a token from no issuer, not from https://token.actions.githubusercontent.com"),
        "{e}"
    );
    // Another file: the subject check names what it does vouch for.
    let e = refused(bundle, &"0".repeat(64), &builtin, &policy);
    assert!(
        e.contains("vouches for communique-aarch64-apple-darwin.tar.gz (sha256 76f1fe85")
            && e.contains("and 4 other files, not for this artifact"),
        "{e}"
    );
    // Sigstore's public root alone does not know GitHub's timestamp authority.
    let e = refused(
        bundle,
        GITHUB_REAL_DIGEST,
        &TrustRoots::public_good(),
        &policy,
    );
    assert!(
        e.contains("no timestamp authority of the trust root signed it"),
        "{e}"
    );
    // GitHub's root alone dates and chains it too.
    let e = refused(bundle, GITHUB_REAL_DIGEST, &TrustRoots::github(), &policy);
    assert!(e.contains("a token from no issuer"), "{e}");
}

/// The real bundle with one JSON value changed by `edit`.
fn edited(edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut value: Value = serde_json::from_str(REAL).unwrap();
    edit(&mut value);
    serde_json::to_vec(&value).unwrap()
}

#[test]
fn a_real_attestation_changed_anywhere_is_refused() {
    let roots = TrustRoots::public_good();
    let policy = real_policy();
    // Another statement in the envelope: the signature no longer holds.
    let bundle = edited(|v| {
        let payload = unb64(v["dsseEnvelope"]["payload"].as_str().unwrap());
        let text = String::from_utf8(payload)
            .unwrap()
            .replace(REAL_DIGEST, &"1".repeat(64));
        v["dsseEnvelope"]["payload"] = json!(b64(text.as_bytes()));
    });
    let e = refused(&bundle, &"1".repeat(64), &roots, &policy);
    assert!(e.contains("its signature does not verify"), "{e}");

    // The log's promise for another time.
    let bundle = edited(|v| {
        v["verificationMaterial"]["tlogEntries"][0]["integratedTime"] = json!("1756728840");
    });
    let e = refused(&bundle, REAL_DIGEST, &roots, &policy);
    assert!(
        e.contains("the signed entry timestamp does not verify"),
        "{e}"
    );

    // An inclusion path that leads elsewhere.
    let bundle = edited(|v| {
        v["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]["hashes"][3] =
            json!(b64(&[7u8; 32]));
    });
    let e = refused(&bundle, REAL_DIGEST, &roots, &policy);
    assert!(
        e.contains("the inclusion proof does not lead to the root hash"),
        "{e}"
    );

    // No log entry and no timestamp: nothing dates the signature.
    let bundle = edited(|v| {
        v["verificationMaterial"]["tlogEntries"] = json!([]);
    });
    let e = refused(&bundle, REAL_DIGEST, &roots, &policy);
    assert!(
        e.contains("neither a transparency-log entry nor a timestamp"),
        "{e}"
    );
}

#[path = "support/certs.rs"]
#[allow(dead_code)] // its openssl runner signs the test Sigstore
mod certs;
#[path = "support/sigstore.rs"]
mod sigstore;
use sigstore::{Dated, Signer, TestSigstore};

const ARTIFACT: &[u8] = b"a driver package";

fn artifact_digest() -> String {
    kfleet::provenance::sha256_hex(ARTIFACT)
}

fn own(sigstore: &TestSigstore) -> TrustRoots {
    TrustRoots::parse(&sigstore.trust_root).unwrap()
}

#[test]
fn bundles_dated_by_a_log_or_by_a_timestamp_authority_verify_against_a_root_of_the_tests_own() {
    let sigstore = TestSigstore::new();
    let roots = own(&sigstore);
    let policy = Policy::github("acme/kdriver", Some("refs/heads/main"));
    let signer = Signer::build_driver("acme/kdriver");
    for dated in [Dated::Log, Dated::Timestamp] {
        let bundle = sigstore.bundle("pkg.tar.xz", &artifact_digest(), &signer, dated, false);
        let verified = verify(
            "pkg.tar.xz.sigstore.json",
            &bundle,
            &artifact_digest(),
            &roots,
            &policy,
        )
        .unwrap_or_else(|e| panic!("{dated:?}: {e}"));
        let witness = match dated {
            Dated::Log => "transparency log https://rekor.test at ",
            Dated::Timestamp => "timestamp authority https://timestamp.test at ",
        };
        assert!(
            verified.witnesses[0].starts_with(witness),
            "{:?}",
            verified.witnesses
        );
        // Sigstore's public root knows none of it.
        let e = refused(
            &bundle,
            &artifact_digest(),
            &TrustRoots::public_good(),
            &policy,
        );
        let expected = match dated {
            Dated::Log => "a log the trust root does not name",
            Dated::Timestamp => {
                "it does not chain to timestamp authority https://timestamp.sigstore.dev"
            }
        };
        assert!(e.contains(expected), "{dated:?}: {e}");
    }
}

#[test]
fn each_way_a_bundle_of_the_tests_own_can_lie_is_refused_with_its_reason() {
    let sigstore = TestSigstore::new();
    let roots = own(&sigstore);
    let policy = Policy::github("acme/kdriver", Some("refs/heads/main"));
    let ours = Signer::build_driver("acme/kdriver");
    let digest = artifact_digest();
    let cases: Vec<(&str, Vec<u8>, String, &str)> = vec![
        (
            "a tampered artifact",
            sigstore.bundle("pkg.tar.xz", &digest, &ours, Dated::Log, false),
            kfleet::provenance::sha256_hex(b"a driver package with a backdoor"),
            "not for this artifact",
        ),
        (
            "a bundle for another digest",
            sigstore.bundle(
                "pkg.tar.xz",
                &"ab".repeat(32),
                &ours,
                Dated::Timestamp,
                false,
            ),
            digest.clone(),
            "vouches for pkg.tar.xz (sha256 abab",
        ),
        (
            "another repository",
            sigstore.bundle(
                "pkg.tar.xz",
                &digest,
                &Signer::build_driver("mallory/kdriver"),
                Dated::Log,
                false,
            ),
            digest.clone(),
            "a workflow of mallory/kdriver, not of acme/kdriver",
        ),
        (
            "another workflow",
            sigstore.bundle(
                "pkg.tar.xz",
                &digest,
                &Signer {
                    workflow: ".github/workflows/pr.yml".into(),
                    ..ours.clone()
                },
                Dated::Log,
                false,
            ),
            digest.clone(),
            "the workflow .github/workflows/pr.yml, not .github/workflows/build-driver.yml",
        ),
        (
            "another ref",
            sigstore.bundle(
                "pkg.tar.xz",
                &digest,
                &Signer {
                    git_ref: "refs/pull/7/merge".into(),
                    ..ours.clone()
                },
                Dated::Timestamp,
                false,
            ),
            digest.clone(),
            "a run from refs/pull/7/merge, not from refs/heads/main",
        ),
        (
            "an untrusted root",
            sigstore.bundle("pkg.tar.xz", &digest, &ours, Dated::Timestamp, true),
            digest.clone(),
            "does not chain to certificate authority https://fulcio.test",
        ),
    ];
    for (what, bundle, artifact, reason) in cases {
        let e = refused(&bundle, &artifact, &roots, &policy);
        assert!(e.contains(reason), "{what}: {e}");
    }
}

/// A build service on 127.0.0.1 that says the driver is available and serves `payload` with
/// its sha256, and `bundle` as its Sigstore bundle when there is one.
struct FakeService {
    url: String,
    _rt: tokio::runtime::Runtime,
}

fn fake_service(payload: Vec<u8>, bundle: Option<Vec<u8>>) -> FakeService {
    use axum::routing::{get, post};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let digest = kfleet::provenance::sha256_hex(&payload);
    let base = url.clone();
    let has_bundle = bundle.is_some();
    let app = axum::Router::new()
        .route(
            "/build",
            post(move || {
                let mut body = json!({
                    "status": "available",
                    "download_url": format!("{base}/files/pkg.tar.xz"),
                    "sha256": digest,
                });
                if has_bundle {
                    body["provenance_url"] =
                        json!(format!("{base}/files/pkg.tar.xz.sigstore.json"));
                }
                async move { axum::Json(body) }
            }),
        )
        .route("/files/pkg.tar.xz", get(move || async move { payload }))
        .route(
            "/files/pkg.tar.xz.sigstore.json",
            get(move || async move { bundle.unwrap_or_default() }),
        );
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    FakeService { url, _rt: rt }
}

const KERNEL: &str = "6.1.66-91.160.amzn2023.x86_64";
const NAME: &str = "kdriver-v1.1.0-amazonlinux-2023-x86_64-6.1.66-91.160.amzn2023.x86_64.tar.xz";

fn ensure(
    service: &str,
    out: &std::path::Path,
    trust_root: &std::path::Path,
) -> std::process::Output {
    assert_cmd::Command::cargo_bin("kfleet")
        .unwrap()
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .env_remove("KFLEET_CONFIG")
        .env("KFLEET_SERVICE_TOKEN", "node-token-0123456789abcdef")
        .args(["ensure", "--service", service, "--driver-version", "v1.1.0"])
        .args(["--deadline", "4s", "--distribution", "amazonlinux"])
        .args(["--distro-version", "2023", "--architecture", "x86_64"])
        .args(["--kernel-version", KERNEL, "--require-provenance"])
        .args(["--provenance-repo", "acme/kdriver", "--trust-root"])
        .arg(trust_root)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

fn files_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn ensure_require_provenance_keeps_only_what_the_build_workflow_signed() {
    let sigstore = TestSigstore::new();
    let dir = tempfile::tempdir().unwrap();
    let root = sigstore.write_trust_root(&dir.path().join("trusted_root.json"));
    let ours = Signer::build_driver("acme/kdriver");
    let digest = artifact_digest();

    // Signed by the build workflow and logged: kept, and the log says by whom.
    let good = sigstore.bundle(NAME, &digest, &ours, Dated::Log, false);
    let fake = fake_service(ARTIFACT.to_vec(), Some(good.clone()));
    let out = tempfile::tempdir().unwrap();
    let run = ensure(&fake.url, out.path(), &root);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert_eq!(files_in(out.path()), [NAME]);
    assert!(
        stderr.contains("provenance verified: built by https://github.com/acme/kdriver/.github/workflows/build-driver.yml@refs/heads/main"),
        "{stderr}"
    );

    type Case = (&'static str, Vec<u8>, Option<Vec<u8>>, &'static str);
    let refusals: Vec<Case> = vec![
        (
            // Asked again until the deadline (the bundle may still be uploading), then named.
            "no bundle",
            ARTIFACT.to_vec(),
            None,
            "has no signed provenance beside it",
        ),
        (
            "a tampered artifact (its own sha256 published beside it)",
            b"a driver package with a backdoor".to_vec(),
            Some(good.clone()),
            "not for this artifact",
        ),
        (
            "another repository's workflow",
            ARTIFACT.to_vec(),
            Some(sigstore.bundle(
                NAME,
                &digest,
                &Signer::build_driver("mallory/kdriver"),
                Dated::Log,
                false,
            )),
            "a workflow of mallory/kdriver, not of acme/kdriver",
        ),
        (
            "a certificate from a CA no root names",
            ARTIFACT.to_vec(),
            Some(sigstore.bundle(NAME, &digest, &ours, Dated::Timestamp, true)),
            "does not chain to certificate authority https://fulcio.test",
        ),
        (
            "not a bundle",
            ARTIFACT.to_vec(),
            Some(b"<html>404</html>".to_vec()),
            "not a Sigstore bundle",
        ),
    ];
    for (what, payload, bundle, reason) in refusals {
        let fake = fake_service(payload, bundle);
        let out = tempfile::tempdir().unwrap();
        let run = ensure(&fake.url, out.path(), &root);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{what}: accepted");
        assert!(stderr.contains(reason), "{what}: {stderr}");
        assert!(stderr.contains("nothing was written"), "{what}: {stderr}");
        assert!(
            files_in(out.path()).is_empty(),
            "{what}: {:?}",
            files_in(out.path())
        );
    }
}

/// `kfleet install PACKAGE` for the test kernel into `root`.
fn install(package: &std::path::Path, root: &std::path::Path) -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("kfleet").unwrap();
    cmd.env("XDG_CONFIG_HOME", "/nonexistent")
        .arg("install")
        .arg(package)
        .args(["--kernel-version", KERNEL, "--root"])
        .arg(root);
    cmd
}

#[test]
fn install_require_provenance_refuses_a_package_its_bundle_does_not_vouch_for() {
    let sigstore = TestSigstore::new();
    let dir = tempfile::tempdir().unwrap();
    let root = sigstore.write_trust_root(&dir.path().join("trusted_root.json"));
    let package = dir.path().join("pkg.tar.xz");
    std::fs::write(&package, b"a driver package with a backdoor").unwrap();
    let bundle = sigstore.bundle(
        "pkg.tar.xz",
        &artifact_digest(),
        &Signer::build_driver("acme/kdriver"),
        Dated::Log,
        false,
    );
    std::fs::write(dir.path().join("pkg.tar.xz.sigstore.json"), bundle).unwrap();
    let target = tempfile::tempdir().unwrap();
    let run = install(&package, target.path())
        .args([
            "--require-provenance",
            "--provenance-repo",
            "acme/kdriver",
            "--trust-root",
        ])
        .arg(&root)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(stderr.contains("not for this artifact"), "{stderr}");
    assert!(stderr.contains("nothing was installed"), "{stderr}");
    assert!(files_in(target.path()).is_empty());

    // Without --provenance-repo there is no policy to check against.
    let run = install(&package, target.path())
        .arg("--require-provenance")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&run.stderr).contains("pass --provenance-repo OWNER/NAME"));
}

/// Where the real bundle's signed or signing values are: every base64 string whose change
/// must be refused (the statement, the signature, the certificate, the log entry, the log's
/// promise).
fn signed_spans() -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    for key in [
        "\"payload\"",
        "\"sig\"",
        "\"rawBytes\"",
        "\"canonicalizedBody\"",
        "\"signedEntryTimestamp\"",
    ] {
        let mut from = 0;
        while let Some(at) = REAL[from..].find(key) {
            let open = from + at + key.len() + REAL[from + at + key.len()..].find('"').unwrap() + 1;
            let close = open + REAL[open..].find('"').unwrap();
            spans.push((open, close));
            from = close;
        }
    }
    assert_eq!(spans.len(), 5, "{spans:?}");
    spans
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

    /// Any one byte of the real bundle changed: never a panic, whatever it does to the JSON.
    #[test]
    fn a_bundle_changed_anywhere_never_panics(at in 0usize..REAL.len(), byte in 0u8..=255) {
        let mut bytes = REAL.as_bytes().to_vec();
        bytes[at] = byte;
        let _ = verify("x", &bytes, REAL_DIGEST, &TrustRoots::public_good(), &real_policy());
    }

    /// Any one character of a signed or signing value changed to another base64 character: refused.
    #[test]
    fn a_bundle_with_any_signed_value_changed_is_refused(
        span in proptest::sample::select(signed_spans()),
        offset in 0usize..100_000,
        replacement in proptest::sample::select(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".to_vec()),
    ) {
        let (open, close) = span;
        let at = open + offset % (close - open);
        let mut bytes = REAL.as_bytes().to_vec();
        proptest::prop_assume!(bytes[at] != replacement && bytes[at] != b'=');
        bytes[at] = replacement;
        let refused = verify("x", &bytes, REAL_DIGEST, &TrustRoots::public_good(), &real_policy());
        proptest::prop_assert!(refused.is_err(), "byte {at} changed to {} was accepted", replacement as char);
    }
}

/// A release's `NAME.sigstore.json` is its package's bundle, not an asset of its own: the
/// listing pairs them, and a bundle without its package is an unrecognised asset.
#[test]
fn a_releases_bundles_are_paired_with_their_packages() {
    use kfleet::artifacts::{AssetTemplate, DEFAULT_ASSET_TEMPLATE, Release};
    let template = AssetTemplate::compile(DEFAULT_ASSET_TEMPLATE, "kdriver").unwrap();
    let asset = |name: &str| json!({"name": name, "browser_download_url": format!("https://example.test/{name}")});
    let release: Release = serde_json::from_value(json!({
        "tag_name": "v1.1.0",
        "assets": [
            asset(NAME),
            asset(&format!("{NAME}.sha256")),
            asset(&format!("{NAME}.sigstore.json")),
            asset("kdriver-v1.1.0-gone.tar.xz.sigstore.json"),
        ],
    }))
    .unwrap();
    let index = kfleet::artifacts::index_assets(&release, &template);
    assert_eq!(index.matched.len(), 1);
    assert_eq!(
        index.matched[0].provenance_url.as_deref(),
        Some(format!("https://example.test/{NAME}.sigstore.json").as_str())
    );
    let unrecognised: Vec<&str> = index.unrecognised.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(unrecognised, ["kdriver-v1.1.0-gone.tar.xz.sigstore.json"]);
}
