//! The sandbox answers as GitHub does: githubkit, a client kfleet did not write whose models are
//! generated from GitHub's published REST description, dispatches builds and reads releases,
//! assets, workflows, runs, jobs, logs, the rate limit and the repository from it, parsing every
//! answer into those models (a missing required field or a wrong type fails the parse).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test stops at the first surprise

#[path = "support/python.rs"]
mod python;

use kfleet::clock::{ManualClock, SharedClock};
use kfleet::forge::{Faults, Sandbox, SandboxOptions, Simulation, load_releases};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const TOKEN: &str = "ghp_githubkitSECRET0123456789";
const GITHUBKIT: [&str; 4] = [
    "githubkit==0.16.1",
    "githubkit-schemas==26.10.21",
    "hishel[async,httpx]==1.3.0",
    "pydantic==2.14.4",
];
const BUILDS: &str = "6.1.0-44-amd64";
const FAILS: &str = "6.1.0-45-amd64";

fn drive(python: &Path, base: &str, args: &[&str]) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/githubkit_drive.py");
    let out = Command::new(python)
        .arg(script)
        .args([base, "example", "kdriver"])
        .args(args)
        .env("GITHUB_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "githubkit refused the sandbox's answers:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn githubkit_reads_every_sandbox_answer_in_githubs_documented_shapes() {
    let python = tokio::task::spawn_blocking(|| python::venv("githubkit", &GITHUBKIT))
        .await
        .unwrap();
    let clock = ManualClock::new();
    let releases =
        load_releases(&Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-data")).unwrap();
    let prerelease_assets = releases
        .iter()
        .find(|r| r.tag_name == "v0.6.0-rc.1")
        .map(|r| r.assets.len())
        .unwrap();
    let simulation = Simulation {
        queue_time: Duration::from_secs(5),
        run_time: Duration::from_secs(60),
        unresolvable: [format!("debian/12/x86_64/{FAILS}")].into(),
        ..Simulation::default()
    };
    let sandbox = Sandbox::start(
        "127.0.0.1:0".parse().unwrap(),
        releases,
        SandboxOptions {
            token: Some(TOKEN.into()),
            repo: "example/kdriver".into(),
            faults: Faults::default(),
            simulation,
            clock: SharedClock::from(clock.clone()),
            assets_dir: None,
        },
    )
    .await
    .unwrap();
    let base = sandbox.base_url();

    let py = python.clone();
    let url = base.clone();
    let dispatched =
        tokio::task::spawn_blocking(move || drive(&py, &url, &["dispatch", BUILDS, FAILS]))
            .await
            .unwrap();
    let runs = dispatched.as_array().unwrap();
    assert_eq!(runs.len(), 2);
    for run in runs {
        assert_eq!(run["status"], 200, "return_run_details answers 200: {run}");
        let id = run["id"].as_u64().unwrap();
        assert!(
            run["run_url"]
                .as_str()
                .unwrap()
                .ends_with(&format!("/repos/example/kdriver/actions/runs/{id}"))
        );
    }
    clock.advance(Duration::from_secs(120));

    let read = tokio::task::spawn_blocking(move || drive(&python, &base, &["read"]))
        .await
        .unwrap();
    // Releases across two pages of two, newest first; one by tag and by id; the latest is not the
    // prerelease.
    assert_eq!(
        read["releases"],
        serde_json::json!(["v0.6.0-rc.1", "v0.5.16", "v0.5.15"])
    );
    assert_eq!(read["by_id_tag"], "v0.6.0-rc.1");
    assert!(read["by_tag_id"].as_u64().is_some());
    assert_eq!(read["latest"], "v0.5.16");
    // The prerelease's listed assets across their pages, plus the one the successful build
    // uploaded.
    assert_eq!(read["assets"], prerelease_assets + 1, "{read}");
    assert_eq!(read["asset_digests"], serde_json::json!(["sha256"]));
    assert_eq!(read["asset_states"], serde_json::json!(["uploaded"]));
    assert_eq!(
        read["workflows"],
        serde_json::json!([
            ".github/workflows/build-driver.yml",
            ".github/workflows/build-batch.yml"
        ])
    );
    assert_eq!(read["workflow_by_id"], ".github/workflows/build-driver.yml");
    assert_eq!(read["runs"], 2);
    assert_eq!(read["repo_runs_completed"], 2);
    assert_eq!(read["run_repository"], "example/kdriver");
    let described = read["described"].as_array().unwrap();
    let by_kernel = |kernel: &str| {
        described
            .iter()
            .find(|r| r["title"].as_str().unwrap().contains(kernel))
            .unwrap_or_else(|| panic!("no run for {kernel}: {read}"))
    };
    let ok = by_kernel(BUILDS);
    let failed = by_kernel(FAILS);
    assert_eq!(ok["conclusion"], "success");
    assert_eq!(failed["conclusion"], "failure");
    for run in [ok, failed] {
        assert_eq!(run["status"], "completed");
        assert_eq!(run["head_branch"], "main");
        assert!(run["workflow_id"].as_u64().is_some());
        assert_eq!(run["archive"], serde_json::json!(["0_build.txt"]));
        assert_eq!(run["archive_equals_log"], true);
        assert_eq!(run["steps"].as_array().unwrap().len(), 4);
    }
    assert_eq!(
        failed["steps"][2],
        serde_json::json!(["Build the module", "failure"]),
        "{failed}"
    );
    assert_eq!(failed["steps"][3][1], "skipped");
    assert_eq!(failed["log_has_error"], true);
    assert_eq!(ok["log_has_error"], false);
    assert_eq!(read["cancel_completed"], 409);
    // The rate limit endpoint reports what the headers count, and costs nothing itself.
    assert_eq!(read["rate_core_used"], read["rate_header_used"]);
    assert!(read["rate_core_used"].as_u64().unwrap() > 10, "{read}");
    assert_eq!(read["repository"], "example/kdriver");
}
