//! `kfleet gen-fleet`: deterministic synthetic fleets, and reports on them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or benchmark stops at the first surprise

use assert_cmd::Command;
use serde_json::Value;
use std::path::Path;

fn kfleet() -> Command {
    let mut cmd = Command::cargo_bin("kfleet").expect("binary is built");
    cmd.env("XDG_CONFIG_HOME", "/nonexistent")
        .env_remove("KFLEET_MODULE");
    cmd
}

fn generate(dir: &Path, nodes: &str, seed: &str) {
    kfleet()
        .args(["gen-fleet", "--nodes", nodes, "--seed", seed, "--out"])
        .arg(dir)
        .assert()
        .success();
}

#[test]
fn same_seed_same_files_other_seed_other_files() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let c = tempfile::tempdir().unwrap();
    generate(a.path(), "5000", "7");
    generate(b.path(), "5000", "7");
    generate(c.path(), "5000", "8");
    for f in ["fleet.csv", "releases.json"] {
        let fa = std::fs::read(a.path().join(f)).unwrap();
        assert_eq!(fa, std::fs::read(b.path().join(f)).unwrap(), "{f}");
        assert_ne!(fa, std::fs::read(c.path().join(f)).unwrap(), "{f}");
    }
}

/// A second run into the same directory keeps what is there unless told to replace it.
#[test]
fn existing_files_are_kept_without_force() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), "500", "7");
    let before = std::fs::read(dir.path().join("fleet.csv")).unwrap();
    let out = kfleet()
        .args(["gen-fleet", "--nodes", "600", "--seed", "8", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("fleet.csv and ")
            && stderr.contains("already exist; nothing was written (pass --force to replace them"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(dir.path().join("fleet.csv")).unwrap(), before);
    kfleet()
        .args([
            "gen-fleet",
            "--nodes",
            "600",
            "--seed",
            "8",
            "--force",
            "--out",
        ])
        .arg(dir.path())
        .assert()
        .success();
    assert_ne!(std::fs::read(dir.path().join("fleet.csv")).unwrap(), before);
}

#[test]
fn committed_sample_data_is_what_gen_fleet_writes() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), "3000", "1");
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-data");
    for f in ["fleet.csv", "releases.json"] {
        assert!(
            std::fs::read(dir.path().join(f)).unwrap() == std::fs::read(sample.join(f)).unwrap(),
            "sample-data/{f} is stale: regenerate with `kfleet gen-fleet --nodes 3000 --seed 1 --out sample-data --force`"
        );
    }
}

#[test]
fn report_on_a_generated_fleet_adds_up() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), "20000", "3");
    let csv = std::fs::read_to_string(dir.path().join("fleet.csv")).unwrap();
    let rows = csv.lines().count() as u64 - 1;
    let empty_kernel = csv.lines().filter(|l| l.ends_with(',')).count() as u64;
    let out = kfleet()
        .arg("report")
        .arg("-i")
        .arg(dir.path().join("fleet.csv"))
        .arg("-r")
        .arg(dir.path().join("releases.json"))
        .args(["--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &r["summary"];
    assert_eq!(s["bad_rows"].as_u64().unwrap(), empty_kernel);
    assert_eq!(s["nodes"].as_u64().unwrap(), rows - empty_kernel);
    assert_eq!(
        s["driver_version"], "v0.5.16",
        "the newer prerelease is skipped"
    );
    let statuses = s["statuses"].as_object().unwrap();
    let sum: u64 = statuses
        .values()
        .map(|c| c["nodes"].as_u64().unwrap())
        .sum();
    assert_eq!(
        sum,
        s["nodes"].as_u64().unwrap(),
        "every node has exactly one status"
    );
    for status in ["covered", "missing", "long-tail", "unsupported", "invalid"] {
        assert!(statuses[status]["nodes"].as_u64().unwrap() > 0, "{status}");
    }
    let covered = statuses["covered"]["nodes"].as_u64().unwrap() as f64;
    let pct = s["node_coverage_pct"].as_f64().unwrap();
    assert!((pct - covered * 100.0 / s["nodes"].as_f64().unwrap()).abs() < 0.01);
    let plan = &s["batch_plan"];
    assert!(plan["builds"].as_u64().unwrap() > 0);
    assert!(plan["node_coverage_after_pct"].as_f64().unwrap() >= 99.0);
    assert!(s["unused_artifacts"].as_u64().unwrap() > 0);
    assert_eq!(
        s["unrecognised_assets"], 2,
        "SHA256SUMS and the source tarball"
    );
    let ids = r["identities"].as_array().unwrap();
    assert!(
        ids.windows(2)
            .all(|w| w[0]["nodes"].as_u64() >= w[1]["nodes"].as_u64())
    );
}
