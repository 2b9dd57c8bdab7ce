//! `kfleet identity`: what an operator sees when checking one kernel.

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
fn rhel_is_recognised_but_unsupported() {
    check("rhel", "9.4", "x86_64", "5.14.0-427.13.1.el9_4.x86_64")
        .code(1)
        .stdout("rhel/9.4/x86_64/5.14.0-427.13.1.el9_4.x86_64\n")
        .stderr(predicate::str::starts_with(
            "unsupported: RHEL is recognised but not built",
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
