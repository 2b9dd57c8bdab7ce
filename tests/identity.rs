//! `kfleet identity`: what an operator sees when checking one kernel.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or benchmark stops at the first surprise

use assert_cmd::Command;
use predicates::prelude::*;

fn check(d: &str, v: &str, a: &str, k: &str) -> assert_cmd::assert::Assert {
    Command::cargo_bin("kfleet")
        .unwrap()
        .args([
            "identity",
            "check",
            "--distribution",
            d,
            "--distro-version",
            v,
        ])
        .args(["--architecture", a, "--kernel-version", k])
        .assert()
}

#[test]
fn valid_identity_prints_the_canonical_key() {
    check("al2023", "2023", "arm64", "6.1.66-91.160.amzn2023.aarch64")
        .success()
        .stdout("amazonlinux/2023/aarch64/6.1.66-91.160.amzn2023.aarch64\n");
}

#[test]
fn invalid_identity_prints_the_reason_and_exits_1() {
    check("fedora", "39", "x86_64", "6.2.9-300.fc38.x86_64")
        .code(1)
        .stdout("")
        .stderr("invalid: fc38 in kernel_version but distro_version is 39\n");
    check("ubuntu", "22.04", "x86_64", "5.15.0-91-generic;reboot")
        .code(1)
        .stderr(predicate::str::contains(
            "could inject into a shell or workflow",
        ));
}

#[test]
fn rhel_without_an_entitlement_is_unsupported() {
    check("rhel", "9.4", "x86_64", "5.14.0-427.13.1.el9_4.x86_64")
        .code(1)
        .stdout("rhel/9.4/x86_64/5.14.0-427.13.1.el9_4.x86_64\n")
        .stderr(predicate::str::starts_with(
            "unsupported: needs a Red Hat entitlement: RHEL's kernel headers are published to subscribed systems only",
        ));
}

#[test]
fn local_identity_reads_os_release() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("os-release");
    std::fs::write(&path, "NAME=\"Windows\"\nID=windows\nVERSION_ID=\"11\"\n").unwrap();
    Command::cargo_bin("kfleet")
        .unwrap()
        .args(["identity", "local", "--os-release"])
        .arg(&path)
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "unsupported: windows: this OS is not a build target",
        ));
    Command::cargo_bin("kfleet")
        .unwrap()
        .args([
            "identity",
            "local",
            "--os-release",
            "/nonexistent/os-release",
        ])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "cannot read /nonexistent/os-release",
        ));
}

/// Real kernels outside the tidy cases (pinned Alma/Rocky minors, EL real-time and variant
/// kernels, Ubuntu flavours of new kernel lines, end-of-life releases), each with the verdict
/// and reason an operator should see.
#[test]
fn edge_case_kernels_are_judged_right() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/edge-kernels.csv"),
    )
    .unwrap();
    let mut judged = 0;
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let checked = kfleet::identity::check(&kfleet::identity::RawIdentity {
            distribution: f[0],
            distro_version: f[1],
            architecture: f[2],
            kernel_version: f[3],
        });
        let (verdict, reason) = match &checked.verdict {
            kfleet::identity::Verdict::Valid(_) => ("valid", String::new()),
            kfleet::identity::Verdict::Invalid(r) => ("invalid", r.clone()),
            kfleet::identity::Verdict::Unsupported(r) => ("unsupported", r.clone()),
        };
        assert_eq!(verdict, f[4], "{line}: {reason}");
        assert!(reason.contains(f[5]), "{line}: {reason}");
        if verdict == "valid" {
            assert_eq!(
                checked.key(),
                format!("{}/{}/{}/{}", f[0], f[1], f[2], f[3]),
                "the key keeps the node's distro_version"
            );
        }
        judged += 1;
    }
    assert!(judged >= 35);
}
