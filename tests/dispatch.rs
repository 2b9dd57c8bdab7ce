//! Dispatch through the planner against the sandbox forge over real HTTP on 127.0.0.1: one run per
//! identity however many ask, the build state across restarts, the run-details fallback, deadlines, and
//! the coverage flip to `covered` end to end.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or benchmark stops at the first surprise

use assert_cmd::Command;
use kfleet::artifacts::{AssetTemplate, DEFAULT_ASSET_TEMPLATE};
use kfleet::builds::{Decision, Planner, PlannerConfig};
use kfleet::clock::{ManualClock, SharedClock};
use kfleet::forge::{
    Faults, GithubClient, RetryPolicy, RunStatus, Sandbox, SandboxOptions, Simulation,
    read_release_file,
};
use kfleet::identity::KernelIdentity;
use kfleet::state::Store;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const TOKEN: &str = "ghp_dispatchSECRET987654321";
const REPO: &str = "acme/kdriver";
const MISSING: &str = "amazonlinux/2023/x86_64/6.1.66-91.160.amzn2023.x86_64";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

async fn sandbox(simulation: Simulation) -> Sandbox {
    sandbox_on(simulation, SharedClock::default()).await
}

/// A sandbox whose runs progress by `clock` (a manual clock: only when the test moves it).
async fn sandbox_on(simulation: Simulation, clock: SharedClock) -> Sandbox {
    let releases = read_release_file(&fixtures().join("small-releases.json")).unwrap();
    Sandbox::start(
        "127.0.0.1:0".parse().unwrap(),
        releases,
        SandboxOptions {
            token: Some(TOKEN.into()),
            repo: REPO.into(),
            faults: Faults::default(),
            simulation,
            clock,
            assets_dir: None,
        },
    )
    .await
    .unwrap()
}

fn quick(queue_ms: u64, run_ms: u64) -> Simulation {
    Simulation {
        queue_time: Duration::from_millis(queue_ms),
        run_time: Duration::from_millis(run_ms),
        fail_rate: 0.0,
        ..Simulation::default()
    }
}

/// The GitHub client on `sb` with the default retry policy.
fn sandbox_client(sb: &Sandbox) -> GithubClient {
    GithubClient::new(
        &sb.base_url(),
        REPO.parse().unwrap(),
        TOKEN.into(),
        RetryPolicy::default(),
        None,
    )
    .unwrap()
}

async fn planner(sb: &Sandbox, state_dir: &Path, deadline: Duration, cancel: bool) -> Planner {
    let client = GithubClient::new(
        &sb.base_url(),
        REPO.parse().unwrap(),
        TOKEN.into(),
        RetryPolicy {
            min_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            run_lookup_attempts: 40,
            run_lookup_interval: Duration::from_millis(50),
            ..RetryPolicy::default()
        },
        None,
    )
    .unwrap();
    Planner::new(
        Arc::new(client),
        AssetTemplate::compile(DEFAULT_ASSET_TEMPLATE, "kdriver").unwrap(),
        PlannerConfig {
            workflow: "build-driver.yml".into(),
            git_ref: "main".into(),
            driver_version: "v1.1.0".into(),
            deadline,
            cancel_on_timeout: cancel,
            claim_lease: Duration::from_secs(60),
            dispatch_interval: Duration::ZERO,
            batch_workflow: "build-batch.yml".into(),
        },
        Store::in_dir(state_dir).await.unwrap(),
    )
}

fn id(key: &str) -> KernelIdentity {
    KernelIdentity::from_key(key).unwrap()
}

fn ids(keys: &[String]) -> Vec<KernelIdentity> {
    keys.iter().map(|k| id(k)).collect()
}

async fn one(p: &Planner, key: &str) -> Decision {
    p.plan_many(&[id(key)], false).await.unwrap().remove(0).1
}

#[tokio::test]
async fn ten_concurrent_requests_in_one_process_make_one_run() {
    let sb = sandbox(quick(60_000, 1000)).await;
    let dir = tempfile::tempdir().unwrap();
    let p = Arc::new(planner(&sb, dir.path(), Duration::from_secs(900), false).await);
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let p = p.clone();
            tokio::spawn(async move { one(&p, MISSING).await })
        })
        .collect();
    let mut dispatched = 0;
    for t in tasks {
        match t.await.unwrap() {
            Decision::Dispatched { .. } => dispatched += 1,
            Decision::Building { status, .. } => assert_eq!(status, Some(RunStatus::Queued)),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(dispatched, 1);
    assert_eq!(sb.dispatches(), 1);
}

#[tokio::test]
async fn the_state_store_keeps_a_restart_from_dispatching_again() {
    // The run stays out of listings, as GitHub's listing lags: only the store knows of it.
    let sb = sandbox(Simulation {
        listing_delay: Duration::from_secs(60),
        ..quick(60_000, 1000)
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let first = planner(&sb, dir.path(), Duration::from_secs(900), false).await;
    let Decision::Dispatched {
        run_id, request_id, ..
    } = one(&first, MISSING).await
    else {
        panic!("first request dispatches");
    };
    drop(first);
    let restarted = planner(&sb, dir.path(), Duration::from_secs(900), false).await;
    assert_eq!(
        one(&restarted, MISSING).await,
        Decision::Building {
            run_id: Some(run_id),
            status: Some(RunStatus::Queued),
            url: Some(format!("{}/{REPO}/actions/runs/{run_id}", sb.base_url())),
            request_id: Some(request_id),
        }
    );
    assert_eq!(sb.dispatches(), 1);

    let elsewhere = tempfile::tempdir().unwrap();
    let amnesiac = planner(&sb, elsewhere.path(), Duration::from_secs(900), false).await;
    assert!(matches!(
        one(&amnesiac, MISSING).await,
        Decision::Dispatched { .. }
    ));
    assert_eq!(
        sb.dispatches(),
        2,
        "without the store the lagging listing lets a second run through"
    );
}

#[tokio::test]
async fn a_server_without_run_details_gets_the_plain_dispatch() {
    let sb = sandbox(Simulation {
        reject_run_details: true,
        ..quick(60_000, 1000)
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let p = planner(&sb, dir.path(), Duration::from_secs(900), false).await;
    let Decision::Dispatched {
        run_id, request_id, ..
    } = one(&p, MISSING).await
    else {
        panic!("dispatches");
    };
    assert!(run_id > 0);
    assert_eq!(sb.dispatches(), 1, "the rejected request started nothing");
    let records = p.store().by_request_id(&request_id).await.unwrap();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].run_id, Some(run_id));
    assert_eq!(records[0].phase, kfleet::state::Phase::Dispatched);
}

#[tokio::test]
async fn a_502_on_dispatch_is_resent_only_when_no_run_started() {
    let sb = sandbox(quick(60_000, 1000)).await;
    let dir = tempfile::tempdir().unwrap();
    let p = planner(&sb, dir.path(), Duration::from_secs(900), false).await;
    sb.set_faults(Faults {
        dispatch_errors: 1,
        ..Faults::default()
    });
    assert!(matches!(
        one(&p, MISSING).await,
        Decision::Dispatched { .. }
    ));
    assert_eq!(
        sb.dispatches(),
        1,
        "the 502 started nothing, so the dispatch was sent again"
    );

    sb.set_faults(Faults {
        dispatch_errors_after_start: 1,
        ..Faults::default()
    });
    let other = "fedora/40/aarch64/6.8.9-300.fc40.aarch64";
    let Decision::Dispatched { run_id, .. } = one(&p, other).await else {
        panic!("dispatches");
    };
    assert_eq!(
        sb.dispatches(),
        2,
        "the run the 502 hid was found, not dispatched again"
    );
    assert!(run_id > 0);
}

#[tokio::test]
async fn invalid_and_available_identities_never_dispatch() {
    let sb = sandbox(quick(60_000, 1000)).await;
    let dir = tempfile::tempdir().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let p = planner(&sb, dir.path(), Duration::from_secs(900), false)
        .await
        .on_decided(move |key, d| log.lock().unwrap().push(format!("{key}: {}", d.describe())));
    let parsed = kfleet::builds::parse_keys(&[
        "fedora/39/x86_64/6.2.9-300.fc38.x86_64".to_string(),
        "ubuntu/22.04/x86_64/5.15.0-91-generic;reboot".to_string(),
        "ubuntu/22.04/x86_64/5.15.0-91-generic".to_string(),
        "rhel/9.4/x86_64/5.14.0-427.13.1.el9_4.x86_64".to_string(),
    ]);
    let valid: Vec<KernelIdentity> = parsed.iter().filter_map(|p| p.clone().ok()).collect();
    let planned = p.plan_many(&valid, false).await.unwrap();
    let out = kfleet::builds::merge_decisions(parsed, planned);
    assert!(
        matches!(&out[0].1, Decision::Invalid { reason } if reason == "fc38 in kernel_version but distro_version is 39")
    );
    assert!(matches!(&out[1].1, Decision::Invalid { reason } if reason.contains("inject")));
    assert!(
        matches!(&out[2].1, Decision::Available { asset, .. } if asset == "kdriver-v1.1.0-ubuntu-22.04-x86_64-5.15.0-91-generic.tar.xz")
    );
    assert!(matches!(&out[3].1, Decision::Unsupported { .. }));
    assert_eq!(sb.dispatches(), 0);
    let seen = seen.lock().unwrap();
    assert_eq!(
        *seen,
        [
            "ubuntu/22.04/x86_64/5.15.0-91-generic: available: kdriver-v1.1.0-ubuntu-22.04-x86_64-5.15.0-91-generic.tar.xz"
        ],
        "the planner hears only of identities; the keys that are none were decided by parsing"
    );
}

#[tokio::test]
async fn a_run_past_the_deadline_is_timed_out_and_cancelled() {
    let clock = ManualClock::new();
    let sb = sandbox_on(quick(0, 3_600_000), clock.clone().into()).await;
    let dir = tempfile::tempdir().unwrap();
    let p = planner(&sb, dir.path(), Duration::from_secs(900), true)
        .await
        .with_clock(clock.clone().into());
    let Decision::Dispatched { run_id, .. } = one(&p, MISSING).await else {
        panic!("dispatches");
    };
    clock.advance(Duration::from_secs(899));
    assert!(matches!(one(&p, MISSING).await, Decision::Building { .. }));
    clock.advance(Duration::from_secs(2));
    let d = one(&p, MISSING).await;
    assert!(
        matches!(d, Decision::TimedOut { run_id: Some(id), cancelled: true, .. } if id == run_id),
        "{d:?}"
    );
    let client = sandbox_client(&sb);
    let run = client.get_run(run_id).await.unwrap();
    assert_eq!(run.conclusion, Some(kfleet::forge::Conclusion::Cancelled));
    assert_eq!(
        client.cancel_run(run_id).await.unwrap(),
        kfleet::forge::CancelOutcome::AlreadyFinished,
        "409 on a finished run is reported, not an error"
    );
}

fn kfleet(sb_url: &str, state: &Path) -> Command {
    let mut cmd = Command::cargo_bin("kfleet").unwrap();
    cmd.env("XDG_CONFIG_HOME", "/nonexistent")
        .env("GITHUB_TOKEN", TOKEN)
        .env("KFLEET_REPO", REPO)
        .env("KFLEET_API_URL", sb_url)
        .env("KFLEET_STATE_DIR", state);
    cmd
}

/// Separate processes share one dispatch through the SQLite build state, then the run completes
/// and the report shows the identity covered.
#[test]
fn processes_share_one_dispatch_and_coverage_flips_to_covered() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sb = rt.block_on(sandbox(Simulation {
        listing_delay: Duration::from_secs(60),
        ..quick(200, 8000)
    }));
    let url = sb.base_url();
    let state = tempfile::tempdir().unwrap();
    let children: Vec<_> = (0..10)
        .map(|_| {
            kfleet(&url, state.path())
                .args(["dispatch", "--identity", MISSING])
                .output()
        })
        .collect();
    let mut lines = Vec::new();
    for out in children {
        let out = out.unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!String::from_utf8_lossy(&out.stderr).contains(TOKEN));
        lines.push(String::from_utf8(out.stdout).unwrap());
    }
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("dispatched run"))
            .count(),
        1,
        "{lines:?}"
    );
    assert_eq!(sb.dispatches(), 1);

    let report = |sb_url: &str| {
        let out = kfleet(sb_url, state.path())
            .arg("report")
            .arg("-i")
            .arg(fixtures().join("small-fleet.csv"))
            .args(["--format", "json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["identities"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["key"] == MISSING)
            .unwrap()["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // Generous times: ten processes start on a loaded 2-core machine.
    assert_eq!(report(&url), "building");
    let started = std::time::Instant::now();
    while report(&url) != "covered" {
        assert!(started.elapsed() < Duration::from_secs(60), "never covered");
        std::thread::sleep(Duration::from_millis(500));
    }
    let out = kfleet(&url, state.path())
        .args(["dispatch", "--identity", MISSING])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(
        "available: kdriver-v1.1.0-amazonlinux-2023-x86_64-6.1.66-91.160.amzn2023.x86_64.tar.xz"
    ));
    assert_eq!(sb.dispatches(), 1);
    drop(sb);
}

#[tokio::test]
async fn matrix_dispatch_chunks_at_256_and_uploads_every_artifact() {
    let clock = ManualClock::new();
    let sb = sandbox_on(quick(0, 200_000), clock.clone().into()).await;
    let dir = tempfile::tempdir().unwrap();
    let p = planner(&sb, dir.path(), Duration::from_secs(900), false)
        .await
        .with_clock(clock.clone().into());
    let keys: Vec<String> = (1..=600)
        .map(|n| format!("ubuntu/22.04/x86_64/5.15.0-{}-generic", 1000 + n))
        .chain(std::iter::once(
            "ubuntu/22.04/x86_64/5.15.0-91-generic".to_string(),
        ))
        .collect();
    let out = p.plan_matrix(&ids(&keys), false).await.unwrap();
    assert_eq!(sb.dispatches(), 3, "600 identities: 256 + 256 + 88");
    let mut per_run: std::collections::BTreeMap<u64, usize> = Default::default();
    for (_, d) in &out[..600] {
        let Decision::Dispatched { run_id, .. } = d else {
            panic!("{d:?}");
        };
        *per_run.entry(*run_id).or_default() += 1;
    }
    assert_eq!(
        per_run.values().copied().collect::<Vec<_>>(),
        vec![256, 256, 88]
    );
    assert!(matches!(out[600].1, Decision::Available { .. }));

    clock.advance(Duration::from_secs(201));
    let again = p.plan_matrix(&ids(&keys), false).await.unwrap();
    assert!(
        again
            .iter()
            .all(|(_, d)| matches!(d, Decision::Available { .. })),
        "every batch uploaded"
    );
    assert_eq!(sb.dispatches(), 3);
}

#[tokio::test]
async fn unknown_workflow_ref_or_inputs_are_rejected_like_github() {
    let sb = sandbox(quick(60_000, 1000)).await;
    let client = sandbox_client(&sb);
    let inputs = |extra: Option<(&str, &str)>| {
        let mut m = serde_json::json!({
            "kernel_version": "6.1.66-91.160.amzn2023.x86_64", "architecture": "x86_64",
            "distribution": "amazonlinux", "distro_version": "2023",
            "driver_version": "v1.1.0", "request_id": "r-1",
        });
        if let Some((k, v)) = extra {
            m[k] = serde_json::Value::String(v.into());
        }
        m.as_object().unwrap().clone()
    };
    let err = client
        .dispatch(
            "nope.yml",
            "main",
            &inputs(None),
            "r-1",
            &kfleet::forge::Unguarded,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, kfleet::forge::ForgeError::NotFound { .. }),
        "{err}"
    );
    let err = client
        .dispatch(
            "build-driver.yml",
            "nope",
            &inputs(None),
            "r-1",
            &kfleet::forge::Unguarded,
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("422: No ref found for: nope"),
        "{err}"
    );
    let err = client
        .dispatch(
            "build-driver.yml",
            "main",
            &inputs(Some(("extra", "x"))),
            "r-1",
            &kfleet::forge::Unguarded,
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("Unexpected inputs provided"),
        "{err}"
    );
    assert_eq!(sb.dispatches(), 0);
}

#[test]
fn runs_and_cancel_commands_show_what_happened() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sb = rt.block_on(sandbox(quick(0, 60_000)));
    let url = sb.base_url();
    let state = tempfile::tempdir().unwrap();
    let out = kfleet(&url, state.path())
        .args(["dispatch", "--identity", MISSING, "--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decisions: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(decisions[0]["outcome"], "dispatched");
    assert_eq!(decisions[0]["key"], MISSING);
    let run_id = decisions[0]["run_id"].as_u64().unwrap();

    let out = kfleet(&url, state.path())
        .args(["runs", "--format", "json"])
        .output()
        .unwrap();
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(runs[0]["id"], run_id);
    assert_eq!(runs[0]["identity"], MISSING);
    assert_eq!(runs[0]["status"], "in_progress");
    assert_eq!(runs[0]["deadline_secs"], 900);

    let out = kfleet(&url, state.path())
        .args(["runs", "--deadline", "0s", "--cancel-on-timeout"])
        .output()
        .unwrap();
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.starts_with("RUN"), "{table}");
    assert!(table.contains("timed-out, cancel requested"), "{table}");

    kfleet(&url, state.path())
        .args(["cancel", &run_id.to_string()])
        .assert()
        .success()
        .stdout(format!(
            "run {run_id} had already finished; nothing to cancel\n"
        ));
    let out = kfleet(&url, state.path())
        .args(["cancel", &run_id.to_string(), "--json"])
        .output()
        .unwrap();
    let said: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        said,
        serde_json::json!({"run_id": run_id, "cancel": "already_finished"})
    );

    // A cancelled run is not a failed build: the kernel is missing again, as before it.
    let out = kfleet(&url, state.path())
        .args(["report", "--format", "json", "-i"])
        .arg(fixtures().join("small-fleet.csv"))
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = report["identities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["key"] == MISSING)
        .unwrap();
    assert_eq!(row["status"], "missing", "{row}");
    drop(sb);
}

/// Dedup by run title reads every page: with 130 builds queued, a second machine with its own
/// build state dispatches none of them again.
#[tokio::test]
async fn a_second_machine_sees_every_page_of_queued_runs() {
    let sb = sandbox(quick(600_000, 1000)).await;
    let keys: Vec<String> = (0..130)
        .map(|i| format!("amazonlinux/2023/x86_64/6.1.{i}-1.1.amzn2023.x86_64"))
        .collect();
    let first = tempfile::tempdir().unwrap();
    let a = planner(&sb, first.path(), Duration::from_secs(900), false).await;
    let decided = a.plan_many(&ids(&keys), false).await.unwrap();
    assert!(
        decided
            .iter()
            .all(|(_, d)| matches!(d, Decision::Dispatched { .. }))
    );
    assert_eq!(sb.dispatches(), 130);

    let second = tempfile::tempdir().unwrap();
    let b = planner(&sb, second.path(), Duration::from_secs(900), false).await;
    let again = b.plan_many(&ids(&keys), false).await.unwrap();
    let building = again
        .iter()
        .filter(|(_, d)| matches!(d, Decision::Building { .. }))
        .count();
    assert_eq!(building, 130, "{:?}", &again[..3]);
    assert_eq!(sb.dispatches(), 130, "nothing dispatched twice");
}

/// A build of one kernel for one driver version does not stand in for another version's.
#[tokio::test]
async fn builds_are_keyed_by_identity_and_driver_version() {
    let sb = sandbox(quick(600_000, 1000)).await;
    let dir = tempfile::tempdir().unwrap();
    let p = planner(&sb, dir.path(), Duration::from_secs(900), false).await;
    assert!(matches!(
        one(&p, MISSING).await,
        Decision::Dispatched { .. }
    ));
    let older = p
        .plan_for_version(&[id(MISSING)], "v1.0.0")
        .await
        .unwrap()
        .remove(0)
        .1;
    assert!(matches!(older, Decision::Dispatched { .. }), "{older:?}");
    assert!(matches!(one(&p, MISSING).await, Decision::Building { .. }));
    // A second machine, without this build state, also tells the two apart by the run titles.
    let other = tempfile::tempdir().unwrap();
    let q = planner(&sb, other.path(), Duration::from_secs(900), false).await;
    let seen = q
        .plan_for_version(&[id(MISSING)], "v1.0.0")
        .await
        .unwrap()
        .remove(0)
        .1;
    assert!(matches!(seen, Decision::Building { .. }), "{seen:?}");
    assert_eq!(sb.dispatches(), 2);
}

/// With less than a tenth of the token's hourly budget left (`x-ratelimit-remaining`), the
/// planner spreads dispatches over what remains of the window instead of spending the rest at
/// once: the next dispatch waits its turn (minutes), where with budget to spare it went at once.
#[tokio::test]
async fn dispatches_slow_down_before_the_budget_runs_out() {
    let sb = sandbox(quick(60_000, 1000)).await;
    let dir = tempfile::tempdir().unwrap();
    let p = planner(&sb, dir.path(), Duration::from_secs(900), false).await;
    let keys: Vec<String> = (0..2)
        .map(|i| format!("amazonlinux/2023/x86_64/6.1.{i}-1.1.amzn2023.x86_64"))
        .collect();
    // Plenty left: both at once.
    let both = tokio::time::timeout(Duration::from_secs(20), p.plan_many(&ids(&keys), false))
        .await
        .expect("two dispatches with budget to spare do not wait")
        .unwrap();
    assert_eq!(sb.dispatches(), 2, "{both:?}");
    // Another client of the token spent all but 30 requests.
    sb.spend(5000 - 2 * 20 - 30);
    let more = ["amazonlinux/2023/x86_64/6.1.2-1.1.amzn2023.x86_64".to_string()];
    let slowed =
        tokio::time::timeout(Duration::from_secs(5), p.plan_many(&ids(&more), false)).await;
    assert!(slowed.is_err(), "the next dispatch waits for budget");
    assert_eq!(sb.dispatches(), 2);
}

/// An immutable release (GitHub refuses new assets once it is published) gets no dispatch: a
/// missing kernel is refused with what to do, an available one is still available.
#[tokio::test]
async fn nothing_is_dispatched_into_an_immutable_release() {
    let mut releases = read_release_file(&fixtures().join("small-releases.json")).unwrap();
    for r in releases.iter_mut().filter(|r| r.tag_name == "v1.1.0") {
        r.immutable = true;
    }
    let sb = Sandbox::start(
        "127.0.0.1:0".parse().unwrap(),
        releases,
        SandboxOptions {
            token: Some(TOKEN.into()),
            repo: REPO.into(),
            simulation: quick(60_000, 1000),
            ..SandboxOptions::default()
        },
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = planner(&sb, dir.path(), Duration::from_secs(900), false).await;
    let decision = one(&p, MISSING).await;
    match &decision {
        Decision::Refused { reason } => {
            assert!(reason.contains("release v1.1.0 is immutable"), "{reason}");
            assert!(reason.contains("draft"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(sb.dispatches(), 0);
}

/// While the builds `dispatch --missing` started run, the batch plan counts their nodes toward
/// the target instead of planning them again, and when the target is out of reach it says what
/// is left uncovered (by status), never blaming unsupported kernels for nodes that are building.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_batch_plan_counts_running_builds_and_names_what_is_left() {
    let sb = sandbox(quick(600_000, 600_000)).await;
    let state = tempfile::tempdir().unwrap();
    let url = sb.base_url();
    let dir = state.path().to_path_buf();
    let fleet = fixtures().join("small-fleet.csv");
    let report = move |format: &str| {
        let out = kfleet(&url, &dir)
            .arg("report")
            .arg("-i")
            .arg(&fleet)
            .args(["--format", format, "--target", "99"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let report_before = report.clone();
    let before: serde_json::Value = serde_json::from_str(
        &tokio::task::spawn_blocking(move || report_before("json"))
            .await
            .unwrap(),
    )
    .unwrap();
    let plan = &before["summary"]["batch_plan"];
    assert!(plan["builds"].as_u64().unwrap() > 0, "{plan}");
    assert_eq!(plan["nodes_building"], 0, "{plan}");

    let (url, dir, fleet) = (
        sb.base_url(),
        state.path().to_path_buf(),
        fixtures().join("small-fleet.csv"),
    );
    let dispatched = tokio::task::spawn_blocking(move || {
        kfleet(&url, &dir)
            .arg("dispatch")
            .arg("--missing")
            .arg("-i")
            .arg(&fleet)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        dispatched.status.success(),
        "{}",
        String::from_utf8_lossy(&dispatched.stderr)
    );
    assert!(sb.dispatches() > 0);

    let (json, text) = tokio::task::spawn_blocking(move || (report("json"), report("table")))
        .await
        .unwrap();
    let after: serde_json::Value = serde_json::from_str(&json).unwrap();
    let building: u64 = after["identities"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["status"] == "building")
        .map(|i| i["nodes"].as_u64().unwrap())
        .sum();
    assert!(building > 0, "{json}");
    let plan = &after["summary"]["batch_plan"];
    assert_eq!(plan["nodes_building"], building, "{plan}");
    let left: u64 = plan["left_uncovered"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert!(
        plan["left_uncovered"].get("building").is_none(),
        "running builds are not left uncovered: {plan}"
    );
    let nodes = after["summary"]["nodes"].as_u64().unwrap();
    let covered = after["summary"]["covered_nodes"].as_u64().unwrap();
    let gained = plan["nodes_gained"].as_u64().unwrap();
    assert_eq!(covered + building + gained + left, nodes, "{plan}");
    let sentence = text
        .lines()
        .find(|l| l.contains("atch plan"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        sentence.contains(&format!("{building} nodes whose build is running"))
            || sentence.contains(&format!(
                "once the running builds finish ({building} nodes)"
            )),
        "{sentence}"
    );
    if plan["reachable"] == false {
        assert!(sentence.contains("left uncovered are"), "{sentence}");
        assert!(!sentence.contains("building"), "{sentence}");
    }
}

/// A run's jobs and steps, and the tail of its log, through the client as GitHub serves them:
/// steps move with the run (queued, one in progress, done); a failed run's build step fails,
/// the steps after it are skipped, and the log (behind a redirect to a URL that takes no token)
/// ends with the error.
#[tokio::test]
async fn a_runs_jobs_steps_and_log_tail_follow_the_run() {
    let clock = ManualClock::new();
    let sb = sandbox_on(
        Simulation {
            queue_time: Duration::from_secs(10),
            run_time: Duration::from_secs(40),
            fail_rate: 1.0,
            ..Simulation::default()
        },
        clock.clone().into(),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let p = planner(&sb, dir.path(), Duration::from_secs(900), false).await;
    let decided = p
        .plan_many(&ids(&[MISSING.to_string()]), false)
        .await
        .unwrap();
    let Decision::Dispatched { run_id, .. } = decided[0].1 else {
        panic!("{decided:?}")
    };
    let client = sandbox_client(&sb);
    let states = |jobs: &[kfleet::forge::Job]| -> Vec<String> {
        jobs[0]
            .steps
            .iter()
            .map(|s| match s.conclusion {
                Some(c) => c.to_string(),
                None => s.status.map(|s| s.to_string()).unwrap_or_default(),
            })
            .collect()
    };
    let jobs = client.list_jobs(run_id).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].run_id, run_id);
    assert_eq!(states(&jobs), ["queued", "queued", "queued", "queued"]);

    clock.advance(Duration::from_secs(25));
    let jobs = client.list_jobs(run_id).await.unwrap();
    assert_eq!(
        states(&jobs),
        ["success", "in_progress", "queued", "queued"]
    );
    assert!(jobs[0].steps[0].completed_at.is_some());

    clock.advance(Duration::from_secs(30));
    let jobs = client.list_jobs(run_id).await.unwrap();
    assert_eq!(states(&jobs), ["success", "success", "failure", "skipped"]);
    assert_eq!(jobs[0].conclusion, Some(kfleet::forge::Conclusion::Failure));
    let tail = client.job_log_tail(jobs[0].id, 3).await.unwrap();
    assert_eq!(tail.lines().count(), 3, "{tail}");
    assert!(tail.contains("##[error]build failed"), "{tail}");

    // The redirect's URL is signed: another one is refused, and it never needed the token.
    let blob = reqwest::get(format!("{}/_job-logs/{run_id}/0000", sb.base_url()))
        .await
        .unwrap();
    assert_eq!(blob.status().as_u16(), 403);
    assert!(client.job_log_tail(1, 3).await.is_err(), "no such job");
}

/// `preflight` is the gate before a node pool moves to new kernels: it exits 0 only when every
/// target kernel has its driver, 2 while any is still to be built (dispatching it once, unless
/// --dry-run), and 1 when a target cannot be built at all.
#[test]
fn preflight_gates_an_upgrade_until_every_target_kernel_has_its_driver() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    // Runs that take an hour: the build stays open for the whole test.
    let sb = rt.block_on(sandbox(quick(0, 3_600_000)));
    let url = sb.base_url();
    let state = tempfile::tempdir().unwrap();
    let covered = "ubuntu/22.04/x86_64/5.15.0-91-generic";
    let targets = state.path().join("targets.txt");
    std::fs::write(
        &targets,
        format!("# the node pool's next image\n{covered}\n\n{MISSING}\n"),
    )
    .unwrap();
    let preflight = |extra: &[&str]| {
        kfleet(&url, state.path())
            .args(["preflight", "--driver-version", "v1.1.0"])
            .args(extra)
            .output()
            .unwrap()
    };
    let said = |out: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };

    let ready = preflight(&["--identity", covered]);
    assert_eq!(ready.status.code(), Some(0), "{}", said(&ready));
    assert!(said(&ready).contains("1 of 1 target kernels have a driver in v1.1.0"));

    let file = targets.to_str().unwrap();
    let dry = preflight(&["--target-kernels", file, "--dry-run"]);
    assert_eq!(dry.status.code(), Some(2), "{}", said(&dry));
    assert!(
        said(&dry).contains(&format!("{MISSING}: would dispatch")),
        "{}",
        said(&dry)
    );
    assert_eq!(sb.dispatches(), 0, "a dry run dispatches nothing");

    let first = preflight(&["--target-kernels", file]);
    assert_eq!(first.status.code(), Some(2), "{}", said(&first));
    assert!(said(&first).contains("dispatched run"), "{}", said(&first));
    assert!(said(&first).contains("1 still to be built: not ready"));
    let again = preflight(&["--target-kernels", file]);
    assert_eq!(again.status.code(), Some(2), "{}", said(&again));
    assert!(
        said(&again).contains("already building"),
        "{}",
        said(&again)
    );
    assert_eq!(
        sb.dispatches(),
        1,
        "the gate dispatches a missing kernel once"
    );

    let bad = preflight(&["--identity", "ubuntu/22.04/x86_64/not-a-kernel"]);
    assert_eq!(bad.status.code(), Some(1), "{}", said(&bad));
}

/// A kernel nodes have installed but do not run yet is built by `dispatch --missing` before
/// they reboot into it, though no node runs it and its node count alone would make it tail;
/// the report then shows it building.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatch_missing_builds_the_kernel_nodes_boot_next() {
    let sb = sandbox(quick(600_000, 600_000)).await;
    let state = tempfile::tempdir().unwrap();
    let fleet = state.path().join("fleet.csv");
    let mut text = String::from("os,version,arch,kernel,installed_kernels\n");
    for n in 0..50 {
        let installed = if n == 0 { "6.1.0-21-amd64" } else { "" };
        text.push_str(&format!("debian,12,x86_64,6.1.0-18-amd64,{installed}\n"));
    }
    std::fs::write(&fleet, text).unwrap();
    let (url, dir) = (sb.base_url(), state.path().to_path_buf());
    let (dispatched, report) = tokio::task::spawn_blocking(move || {
        let run = |args: &[&str]| {
            let out = kfleet(&url, &dir)
                .args(args)
                .arg("-i")
                .arg(&fleet)
                .args(["--driver-version", "v1.1.0"])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        };
        (
            run(&["dispatch", "--missing", "--dispatch-interval", "0s"]),
            run(&["report", "--format", "json"]),
        )
    })
    .await
    .unwrap();
    assert!(
        dispatched.contains("debian/12/x86_64/6.1.0-21-amd64"),
        "{dispatched}"
    );
    assert_eq!(
        sb.dispatches(),
        1,
        "the running kernel has its driver: {dispatched}"
    );
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    let next = report["identities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kernel_version"] == "6.1.0-21-amd64")
        .unwrap()
        .clone();
    assert_eq!(next["status"], "building", "{next}");
    assert_eq!(next["next_boot"], 1);
}
