//! The build service over real HTTP, with the sandbox forge behind it: one dispatch however many
//! nodes ask, answers from the release listing, ids that survive a restart, the error codes, the
//! deadline, metrics, and `kfleet ensure` end to end.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or benchmark stops at the first surprise

use assert_cmd::Command;
use kfleet::artifacts::{AssetTemplate, DEFAULT_ASSET_TEMPLATE};
use kfleet::builds::{Planner, PlannerConfig};
use kfleet::clock::{ManualClock, SharedClock};
use kfleet::forge::{
    Forge, RetryPolicy, SandboxForge, SandboxOptions, Simulation, read_release_file,
};
use kfleet::service::{ServiceOptions, ServiceState, serve};
use kfleet::state::Store;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const CLIENT: &str = "node-token-0123456789abcdef";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn missing_body() -> Value {
    json!({"kernel_version": "6.1.66-91.160.amzn2023.x86_64", "architecture": "x86_64",
           "distribution": "amazonlinux", "distro_version": "2023", "driver_version": "v1.1.0"})
}

async fn forge(queue_ms: u64, run_ms: u64) -> Arc<SandboxForge> {
    forge_on(queue_ms, run_ms, SharedClock::default()).await
}

/// A sandbox forge whose runs progress by `clock`; the service built on it reads the same clock.
async fn forge_on(queue_ms: u64, run_ms: u64, clock: SharedClock) -> Arc<SandboxForge> {
    forge_simulating(
        Simulation {
            queue_time: Duration::from_millis(queue_ms),
            run_time: Duration::from_millis(run_ms),
            fail_rate: 0.0,
            ..Simulation::default()
        },
        clock,
    )
    .await
}

/// A sandbox forge whose runs behave as `simulation` says.
async fn forge_simulating(simulation: Simulation, clock: SharedClock) -> Arc<SandboxForge> {
    let releases = read_release_file(&fixtures().join("small-releases.json")).unwrap();
    Arc::new(
        SandboxForge::start(
            releases,
            SandboxOptions {
                repo: "acme/kdriver".into(),
                simulation,
                clock,
                ..SandboxOptions::default()
            },
            RetryPolicy {
                run_lookup_interval: Duration::from_millis(50),
                ..RetryPolicy::default()
            },
        )
        .await
        .unwrap(),
    )
}

struct Service {
    url: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Service {
    async fn stop(mut self) {
        let _ = self.shutdown.take().unwrap().send(());
        self.task.await.unwrap();
    }
}

async fn service(forge: Arc<SandboxForge>, state_dir: &Path, deadline: Duration) -> Service {
    service_with_rate(forge, state_dir, deadline, 1000.0).await
}

async fn service_with_rate(
    forge: Arc<SandboxForge>,
    state_dir: &Path,
    deadline: Duration,
    rate: f64,
) -> Service {
    service_with(
        forge,
        state_dir,
        ServiceOptions {
            deadline,
            rate_per_client: rate,
            ..test_options()
        },
    )
    .await
}

fn test_options() -> ServiceOptions {
    ServiceOptions {
        client_tokens: vec![CLIENT.into()],
        listing_ttl: Duration::from_millis(200),
        status_ttl: Duration::from_millis(50),
        rate_per_client: 1000.0,
        ..ServiceOptions::default()
    }
}

async fn service_with(
    forge: Arc<SandboxForge>,
    state_dir: &Path,
    options: ServiceOptions,
) -> Service {
    let clock = forge.sandbox().clock();
    let forge: Arc<dyn Forge> = forge;
    let deadline = options.deadline;
    let template = AssetTemplate::compile(DEFAULT_ASSET_TEMPLATE, "kdriver").unwrap();
    let planner = Planner::new(
        forge.clone(),
        template.clone(),
        PlannerConfig {
            workflow: "build-driver.yml".into(),
            git_ref: "main".into(),
            driver_version: String::new(),
            deadline,
            cancel_on_timeout: false,
            claim_lease: Duration::from_secs(60),
            dispatch_interval: Duration::ZERO,
            batch_workflow: "build-batch.yml".into(),
        },
        Store::in_dir(state_dir).await.unwrap(),
    )
    .with_clock(clock);
    let state = ServiceState::new(forge, planner, template, options);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        serve(listener, state, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    Service {
        url,
        shutdown: Some(tx),
        task,
    }
}

async fn post(url: &str, body: &Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{url}/build"))
        .bearer_auth(CLIENT)
        .json(body)
        .send()
        .await
        .unwrap();
    let code = r.status().as_u16();
    (code, r.json().await.unwrap_or(Value::Null))
}

/// Polls `GET /status/{id}` (up to 5 s) until `done` holds; returns the last answer.
async fn poll_status(url: &str, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut seen = Value::Null;
    for _ in 0..100 {
        seen = status(url, id).await.1;
        if done(&seen) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    seen
}

async fn status(url: &str, id: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .get(format!("{url}/status/{id}"))
        .bearer_auth(CLIENT)
        .send()
        .await
        .unwrap();
    let code = r.status().as_u16();
    (code, r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_concurrent_requests_for_one_missing_kernel_make_one_dispatch() {
    let f = forge(60_000, 1000).await;
    let dir = tempfile::tempdir().unwrap();
    let svc = service(f.clone(), dir.path(), Duration::from_secs(900)).await;
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let url = svc.url.clone();
            tokio::spawn(async move { post(&url, &missing_body()).await })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        let (code, body) = t.await.unwrap();
        assert_eq!(code, 202, "{body}");
        assert_eq!(body["status"], "queued");
        ids.insert(body["id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), 1, "every request joined the one build");
    let id = ids.into_iter().next().unwrap();
    // The id is handed out at once; the dispatch follows in the background.
    poll_status(&svc.url, &id, |st| st["run_url"].is_string()).await;
    assert_eq!(f.sandbox().dispatches(), 1);

    let anonymous = reqwest::get(format!("{}/metrics", svc.url)).await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 401, "metrics need the token");
    let metrics = reqwest::Client::new()
        .get(format!("{}/metrics", svc.url))
        .bearer_auth(CLIENT)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("kfleet_dispatches_total 1\n"), "{metrics}");
    assert!(
        metrics.contains("kfleet_dedup_hits_total 99\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kfleet_requests_total{outcome=\"accepted\"} 1\n"),
        "{metrics}"
    );
    let gh: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("kfleet_github_requests_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(gh < 20, "GitHub calls do not grow with requests: {gh}");
    svc.stop().await;
}

#[tokio::test]
async fn an_existing_artifact_is_answered_from_the_listing_without_a_dispatch() {
    let f = forge(60_000, 1000).await;
    let dir = tempfile::tempdir().unwrap();
    let svc = service(f.clone(), dir.path(), Duration::from_secs(900)).await;
    let body = json!({"kernel_version": "5.15.0-91-generic", "architecture": "amd64",
                      "distribution": "ubuntu", "distro_version": "22.04", "driver_version": "v1.1.0"});
    let (code, answer) = post(&svc.url, &body).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["status"], "available");
    assert_eq!(answer["sha256"], format!("{:064x}", 200));
    assert!(
        answer["download_url"]
            .as_str()
            .unwrap()
            .ends_with("/kdriver-v1.1.0-ubuntu-22.04-x86_64-5.15.0-91-generic.tar.xz")
    );
    assert_eq!(f.sandbox().dispatches(), 0);
    svc.stop().await;
}

#[tokio::test]
async fn a_restart_mid_build_keeps_the_id_and_its_status() {
    let f = forge(0, 60_000).await;
    let dir = tempfile::tempdir().unwrap();
    let first = service(f.clone(), dir.path(), Duration::from_secs(900)).await;
    let (_, body) = post(&first.url, &missing_body()).await;
    let id = body["id"].as_str().unwrap().to_string();
    let seen = poll_status(&first.url, &id, |st| st["status"] == "in_progress").await;
    assert_eq!(seen["status"], "in_progress", "{seen}");
    first.stop().await;

    let second = service(f.clone(), dir.path(), Duration::from_secs(900)).await;
    let (code, st) = status(&second.url, &id).await;
    assert_eq!(code, 200, "{st}");
    assert_eq!(st["status"], "in_progress");
    assert_eq!(st["id"], id.as_str());
    let (code, again) = post(&second.url, &missing_body()).await;
    assert_eq!(
        (code, again["id"].as_str()),
        (202, Some(id.as_str())),
        "a new request joins it"
    );
    assert_eq!(f.sandbox().dispatches(), 1);
    second.stop().await;
}

#[tokio::test]
async fn bad_requests_get_their_codes() {
    let f = forge(60_000, 1000).await;
    let dir = tempfile::tempdir().unwrap();
    let svc = service(f.clone(), dir.path(), Duration::from_secs(900)).await;
    let http = reqwest::Client::new();
    let build = format!("{}/build", svc.url);

    let mut invalid = missing_body();
    invalid["kernel_version"] = json!("6.1.66-91.160.amzn2.x86_64");
    let (code, body) = post(&svc.url, &invalid).await;
    assert_eq!(code, 400);
    assert_eq!(
        body["reason"],
        "amzn2 in kernel_version but distro_version is 2023"
    );

    let mut injected = missing_body();
    injected["kernel_version"] = json!("6.1.66;reboot");
    assert_eq!(post(&svc.url, &injected).await.0, 400);

    let big = json!({"kernel_version": "x".repeat(10_000)});
    let r = http
        .post(&build)
        .bearer_auth(CLIENT)
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);

    let r = http
        .post(&build)
        .bearer_auth(CLIENT)
        .body("kernel=1")
        .header("content-type", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 415);

    let r = http
        .post(&build)
        .json(&missing_body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = http
        .post(&build)
        .bearer_auth("wrong-token-0123456789")
        .json(&missing_body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = http
        .get(format!("{}/status/nope", svc.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(status(&svc.url, "nope").await.0, 404);
    let health = reqwest::get(format!("{}/healthz", svc.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        health.starts_with("ok\nstore: sqlite ok\ngithub: "),
        "{health}"
    );
    let ready = reqwest::get(format!("{}/readyz", svc.url)).await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    assert_eq!(f.sandbox().dispatches(), 0);
    svc.stop().await;
}

#[tokio::test]
async fn a_stuck_build_turns_timed_out_at_the_deadline() {
    let clock = ManualClock::new();
    let f = forge_on(0, 3_600_000, clock.clone().into()).await;
    let dir = tempfile::tempdir().unwrap();
    let svc = service(f.clone(), dir.path(), Duration::from_secs(900)).await;
    let (_, body) = post(&svc.url, &missing_body()).await;
    let id = body["id"].as_str().unwrap().to_string();
    // Statuses are cached for 50 ms of the service's clock: each poll moves it by 0.1 s.
    let poll = |done: fn(&Value) -> bool| {
        let (url, id, clock) = (svc.url.clone(), id.clone(), clock.clone());
        async move {
            let mut seen = Value::Null;
            for _ in 0..100 {
                clock.advance(Duration::from_millis(100));
                seen = status(&url, &id).await.1;
                if done(&seen) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            seen
        }
    };
    let running = poll(|st| st["status"] == "in_progress").await;
    assert_eq!(running["status"], "in_progress", "{running}");
    clock.advance(Duration::from_secs(880));
    assert_eq!(status(&svc.url, &id).await.1["status"], "in_progress");
    clock.advance(Duration::from_secs(20));
    let over = poll(|st| st["status"] == "timed_out").await;
    assert_eq!(over["status"], "timed_out", "{over}");
    svc.stop().await;
}

#[test]
fn ensure_end_to_end_returns_a_verified_file() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let f = rt.block_on(forge(100, 300));
    let dir = tempfile::tempdir().unwrap();
    let svc = rt.block_on(service(f.clone(), dir.path(), Duration::from_secs(900)));
    let out = tempfile::tempdir().unwrap();
    let run = Command::cargo_bin("kfleet")
        .unwrap()
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .env("KFLEET_SERVICE_TOKEN", CLIENT)
        .args([
            "ensure",
            "--service",
            &svc.url,
            "--driver-version",
            "v1.1.0",
            "--deadline",
            "60s",
        ])
        .args([
            "--distribution",
            "amazonlinux",
            "--distro-version",
            "2023",
            "--architecture",
            "x86_64",
        ])
        .args(["--kernel-version", "6.1.66-91.160.amzn2023.x86_64", "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let name = "kdriver-v1.1.0-amazonlinux-2023-x86_64-6.1.66-91.160.amzn2023.x86_64.tar.xz";
    let path = String::from_utf8(run.stdout).unwrap();
    assert_eq!(path.trim(), out.path().join(name).display().to_string());
    assert_eq!(
        std::fs::read(out.path().join(name)).unwrap(),
        name.as_bytes(),
        "the sandbox's artifact bytes"
    );
    assert!(
        String::from_utf8_lossy(&run.stderr)
            .contains("building amazonlinux/2023/x86_64/6.1.66-91.160.amzn2023.x86_64")
    );

    let rejected = Command::cargo_bin("kfleet")
        .unwrap()
        .env("KFLEET_SERVICE_TOKEN", CLIENT)
        .args([
            "ensure",
            "--service",
            &svc.url,
            "--driver-version",
            "v1.1.0",
        ])
        .args([
            "--distribution",
            "fedora",
            "--distro-version",
            "39",
            "--architecture",
            "x86_64",
        ])
        .args(["--kernel-version", "6.2.9-300.fc38.x86_64"])
        .output()
        .unwrap();
    assert_eq!(
        rejected.status.code(),
        Some(1),
        "the CLI itself refuses an invalid identity"
    );
    rt.block_on(svc.stop());
}

/// Only what can cost GitHub calls (a new id) is rate-limited per client: a reboot storm for
/// kernels that are already built, and status polls, are answered however many there are.
#[tokio::test]
async fn only_new_builds_are_rate_limited() {
    // The bucket refills on the service's clock: held still, no token comes back mid-test, however
    // slow the machine.
    let clock = ManualClock::new();
    let f = forge_on(60_000, 1000, clock.clone().into()).await;
    let dir = tempfile::tempdir().unwrap();
    let svc = service_with_rate(f.clone(), dir.path(), Duration::from_secs(900), 1.0).await;
    let built = json!({"kernel_version": "5.15.0-91-generic", "architecture": "x86_64",
                       "distribution": "ubuntu", "distro_version": "22.04", "driver_version": "v1.1.0"});
    for _ in 0..200 {
        assert_eq!(post(&svc.url, &built).await.0, 200);
    }
    for _ in 0..50 {
        assert_eq!(status(&svc.url, "nope").await.0, 404);
    }
    let mut codes = Vec::new();
    for i in 0..12 {
        let mut body = missing_body();
        body["kernel_version"] = json!(format!("6.1.{i}-1.1.amzn2023.x86_64"));
        codes.push(post(&svc.url, &body).await.0);
    }
    assert_eq!(
        codes[..10],
        [202; 10],
        "a burst of ten new builds is allowed"
    );
    assert_eq!(codes[10..], [429, 429]);
    clock.advance(Duration::from_secs(1));
    let mut body = missing_body();
    body["kernel_version"] = json!("6.1.99-1.1.amzn2023.x86_64");
    assert_eq!(
        post(&svc.url, &body).await.0,
        202,
        "one token a second comes back"
    );
    // Joining a build under way costs nothing either.
    let mut first = missing_body();
    first["kernel_version"] = json!("6.1.0-1.1.amzn2023.x86_64");
    assert_eq!(post(&svc.url, &first).await.0, 202);
    svc.stop().await;
}

/// `kfleet ensure --repo` asks GitHub (here the sandbox) directly with the same planner.
#[test]
fn ensure_without_a_service_goes_to_the_forge_directly() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let releases = read_release_file(&fixtures().join("small-releases.json")).unwrap();
    let sandbox = rt
        .block_on(kfleet::forge::Sandbox::start(
            "127.0.0.1:0".parse().unwrap(),
            releases,
            SandboxOptions {
                token: Some("ghp_directSECRET0123456789".into()),
                repo: "acme/kdriver".into(),
                simulation: Simulation {
                    queue_time: Duration::from_millis(100),
                    run_time: Duration::from_millis(300),
                    fail_rate: 0.0,
                    ..Simulation::default()
                },
                ..SandboxOptions::default()
            },
        ))
        .unwrap();
    let state = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let run = |kernel: &str, distribution: &str, version: &str, deadline: &str| {
        Command::cargo_bin("kfleet")
            .unwrap()
            .env("XDG_CONFIG_HOME", "/nonexistent")
            .env("GITHUB_TOKEN", "ghp_directSECRET0123456789")
            .env("KFLEET_STATE_DIR", state.path())
            .args([
                "ensure",
                "--repo",
                "acme/kdriver",
                "--api-url",
                &sandbox.base_url(),
            ])
            .args([
                "--driver-version",
                "v1.1.0",
                "--deadline",
                deadline,
                "--distribution",
                distribution,
            ])
            .args([
                "--distro-version",
                version,
                "--architecture",
                "x86_64",
                "--kernel-version",
                kernel,
                "--out",
            ])
            .arg(out.path())
            .output()
            .unwrap()
    };
    // A digest that does not match may be an asset being replaced: asked again until the
    // deadline, then the mismatch is the error.
    let built = run("5.15.0-91-generic", "ubuntu", "22.04", "3s");
    assert!(
        !built.status.success(),
        "the fixture's digests are not the served bytes"
    );
    assert!(
        String::from_utf8_lossy(&built.stderr).contains("sha256 is"),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    assert!(
        std::fs::read_dir(out.path()).unwrap().next().is_none(),
        "a mismatch keeps nothing"
    );

    let fresh = run(
        "6.1.66-91.160.amzn2023.x86_64",
        "amazonlinux",
        "2023",
        "60s",
    );
    assert!(
        fresh.status.success(),
        "{}",
        String::from_utf8_lossy(&fresh.stderr)
    );
    let name = "kdriver-v1.1.0-amazonlinux-2023-x86_64-6.1.66-91.160.amzn2023.x86_64.tar.xz";
    assert_eq!(
        String::from_utf8(fresh.stdout).unwrap().trim(),
        out.path().join(name).display().to_string()
    );
    assert_eq!(sandbox.dispatches(), 1);
    assert!(!String::from_utf8_lossy(&fresh.stderr).contains("ghp_directSECRET"));
    drop(sandbox);
}

/// The id a node gets is in the state store before the node gets it.
#[tokio::test]
async fn an_accepted_request_is_recorded_before_the_answer() {
    let f = forge(60_000, 60_000).await;
    let dir = tempfile::tempdir().unwrap();
    let svc = service(f.clone(), dir.path(), Duration::from_secs(900)).await;
    let (code, body) = post(&svc.url, &missing_body()).await;
    assert_eq!(code, 202, "{body}");
    let id = body["id"].as_str().unwrap();
    let store = Store::in_dir(dir.path()).await.unwrap();
    let records = store.by_request_id(id).await.unwrap();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(
        records[0].key,
        "amazonlinux/2023/x86_64/6.1.66-91.160.amzn2023.x86_64"
    );
    assert_eq!(records[0].driver_version, "v1.1.0");
    assert!(records[0].phase.is_open(), "{records:?}");
    svc.stop().await;
}

/// The ledger of an older kfleet, where a crash came after the 202 and before the dispatch was
/// recorded: the store imports it on first start, and the service dispatches that very id once,
/// so a node polling it gets its build; an id older than the deadline fails with a reason instead
/// of building for nobody. The old file is kept beside the database.
#[tokio::test(flavor = "multi_thread")]
async fn an_old_ledger_is_imported_and_its_undispatched_ids_are_built() {
    use kfleet::state::ledger::{LedgerEvent, LedgerRecord};
    let f = forge(0, 60_000).await;
    let dir = tempfile::tempdir().unwrap();
    let mut lines = String::new();
    let mut append = |r: &LedgerRecord| {
        lines.push_str(&serde_json::to_string(r).unwrap());
        lines.push('\n');
    };
    let accepted = |key: &str, rid: &str, ago: chrono::Duration| LedgerRecord {
        at: chrono::Utc::now() - ago,
        event: LedgerEvent::Accepted,
        key: key.into(),
        request_id: rid.into(),
        run_id: None,
        conclusion: None,
        url: None,
        driver_version: Some("v1.1.0".into()),
    };
    let key = "amazonlinux/2023/x86_64/6.1.66-91.160.amzn2023.x86_64";
    append(&accepted(key, "r-crashed", chrono::Duration::seconds(5)));
    append(&accepted(
        "ubuntu/22.04/x86_64/5.15.0-1034-aws",
        "r-stale",
        chrono::Duration::hours(2),
    ));
    // Accepted, dispatched and finished, then superseded by a later build of the same kernel:
    // neither planned again nor reported as lost.
    let earlier = "fedora/40/x86_64/6.8.9-300.fc40.x86_64";
    let mut done = accepted(earlier, "r-done", chrono::Duration::minutes(3));
    append(&done);
    for (rid, event) in [
        ("r-done", LedgerEvent::Dispatched),
        ("r-done", LedgerEvent::Finished),
        ("r-later", LedgerEvent::Dispatched),
        ("r-later", LedgerEvent::Finished),
    ] {
        done.event = event;
        done.request_id = rid.into();
        done.run_id = Some(7);
        done.conclusion = (event == LedgerEvent::Finished).then(|| "success".into());
        append(&done);
    }
    std::fs::write(dir.path().join("ledger.jsonl"), lines).unwrap();

    let svc = service(f.clone(), dir.path(), Duration::from_secs(900)).await;
    let seen = poll_status(&svc.url, "r-crashed", |st| st["status"] == "in_progress").await;
    assert_eq!(seen["status"], "in_progress", "{seen}");
    assert!(seen["run_url"].as_str().is_some(), "{seen}");
    let (code, again) = post(&svc.url, &missing_body()).await;
    assert_eq!((code, again["id"].as_str()), (202, Some("r-crashed")));

    let (code, stale) = status(&svc.url, "r-stale").await;
    assert_eq!(code, 200);
    assert_eq!(stale["status"], "failed");
    assert_eq!(
        stale["reason"],
        "no dispatch was recorded for this request before its build service stopped; ask again"
    );
    assert_eq!(status(&svc.url, "r-done").await.0, 404);
    assert_eq!(f.sandbox().dispatches(), 1, "only the fresh one is built");
    let runs = f.list_runs("build-driver.yml", None, None).await.unwrap();
    assert!(
        runs[0].display_title.contains("[r-crashed]"),
        "{}",
        runs[0].display_title
    );
    assert!(!dir.path().join("ledger.jsonl").exists());
    assert!(dir.path().join("ledger.jsonl.imported").exists());
    svc.stop().await;
}

/// A node that polls faster than the status cache lives still sees its build advance: only a
/// fetch from the forge renews the cached status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frequent_polling_does_not_starve_the_status() {
    let f = forge(50, 200).await;
    let dir = tempfile::tempdir().unwrap();
    let svc = service(f.clone(), dir.path(), Duration::from_secs(900)).await;
    let (code, body) = post(&svc.url, &missing_body()).await;
    assert_eq!(code, 202, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let mut seen = Value::Null;
    for _ in 0..1000 {
        seen = status(&svc.url, &id).await.1;
        if seen["status"] == "available" {
            break;
        }
        // Five polls per cached status lifetime (50 ms in these tests).
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(seen["status"], "available", "{seen}");
    svc.stop().await;
}

/// Builds are keyed by identity and driver version: a request for another release of the
/// driver is its own build, with its own id and run.
#[tokio::test]
async fn another_driver_version_is_another_build() {
    let f = forge(60_000, 1000).await;
    let dir = tempfile::tempdir().unwrap();
    let svc = service(f.clone(), dir.path(), Duration::from_secs(900)).await;
    let (_, new) = post(&svc.url, &missing_body()).await;
    let new_id = new["id"].as_str().unwrap().to_string();
    poll_status(&svc.url, &new_id, |st| st["run_url"].is_string()).await;
    let mut old_body = missing_body();
    old_body["driver_version"] = json!("v1.0.0");
    let (code, old) = post(&svc.url, &old_body).await;
    assert_eq!(code, 202, "{old}");
    let old_id = old["id"].as_str().unwrap().to_string();
    assert_ne!(old_id, new_id, "v1.0.0 does not join the v1.1.0 build");
    let old_status = poll_status(&svc.url, &old_id, |st| st["run_url"].is_string()).await;
    let new_status = status(&svc.url, &new_id).await.1;
    assert_ne!(old_status["run_url"], new_status["run_url"]);
    assert_eq!(f.sandbox().dispatches(), 2);
    svc.stop().await;
}

/// A release the listing lacks gets no id: the answer is 503 with Retry-After (the node asks
/// again) and the listing is read again, so a release published a moment ago is found.
#[tokio::test]
async fn an_unlisted_release_is_retried_and_found_once_published() {
    let f = forge(60_000, 1000).await;
    let dir = tempfile::tempdir().unwrap();
    let svc = service(f.clone(), dir.path(), Duration::from_secs(900)).await;
    let mut body = missing_body();
    body["driver_version"] = json!("v9.9.0");
    for _ in 0..5 {
        let (code, answer) = post(&svc.url, &body).await;
        assert_eq!(code, 503, "{answer}");
        assert!(
            answer["reason"]
                .as_str()
                .unwrap()
                .contains("no such release in the service's listing yet"),
            "{answer}"
        );
    }
    let raw = reqwest::Client::new()
        .post(format!("{}/build", svc.url))
        .bearer_auth(CLIENT)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(raw.headers()["retry-after"], "5");
    assert_eq!(f.sandbox().dispatches(), 0);
    let ledger = std::fs::read_to_string(dir.path().join("ledger.jsonl")).unwrap_or_default();
    assert!(ledger.is_empty(), "nothing accepted: {ledger}");

    // The release is published: the service sees it without a restart.
    let mut releases = read_release_file(&fixtures().join("small-releases.json")).unwrap();
    let mut published = releases[0].clone();
    published.tag_name = "v9.9.0".into();
    published.id = Some(999);
    published.draft = false;
    published.prerelease = false;
    published.published_at = Some(chrono::Utc::now());
    published.assets.clear();
    releases.push(published);
    f.sandbox().set_releases(releases);
    let mut last = (0, Value::Null);
    for _ in 0..100 {
        last = post(&svc.url, &body).await;
        if last.0 != 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last.0, 202, "{}", last.1);
    svc.stop().await;
}

/// After a restart against a forge that no longer knows the run, the id settles as failed with
/// the reason instead of answering 502 on every poll.
#[tokio::test]
async fn a_run_the_forge_forgot_settles_as_failed() {
    let f = forge(0, 60_000).await;
    let dir = tempfile::tempdir().unwrap();
    let first = service(f.clone(), dir.path(), Duration::from_secs(900)).await;
    let (_, body) = post(&first.url, &missing_body()).await;
    let id = body["id"].as_str().unwrap().to_string();
    poll_status(&first.url, &id, |st| st["run_url"].is_string()).await;
    first.stop().await;

    let other = forge(0, 60_000).await;
    let second = service(other, dir.path(), Duration::from_secs(900)).await;
    for _ in 0..3 {
        let (code, st) = status(&second.url, &id).await;
        assert_eq!(code, 200, "{st}");
        assert_eq!(st["status"], "failed", "{st}");
        assert!(
            st["reason"]
                .as_str()
                .unwrap()
                .contains("no longer known to the forge"),
            "{st}"
        );
    }
    second.stop().await;
}

/// A refresh of the listing that hangs (a rate-limit wait, a slow forge) does not hold up
/// requests: the last good listing answers them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_listing_refresh_does_not_block_requests() {
    let clock = ManualClock::new();
    let f = forge_on(60_000, 1000, clock.clone().into()).await;
    let dir = tempfile::tempdir().unwrap();
    let svc = service(f.clone(), dir.path(), Duration::from_secs(900)).await;
    let built = json!({"kernel_version": "5.15.0-91-generic", "architecture": "x86_64",
                       "distribution": "ubuntu", "distro_version": "22.04", "driver_version": "v1.1.0"});
    assert_eq!(post(&svc.url, &built).await.0, 200);
    f.sandbox().set_faults(kfleet::forge::Faults {
        latency: Duration::from_secs(20),
        ..Default::default()
    });
    // Past the listing's TTL (200 ms here): the next request starts a refresh that hangs.
    clock.advance(Duration::from_millis(300));
    let started = std::time::Instant::now();
    for _ in 0..20 {
        assert_eq!(post(&svc.url, &built).await.0, 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered from the last listing in {:?}",
        started.elapsed()
    );
    f.sandbox().set_faults(kfleet::forge::Faults::default());
    svc.stop().await;
}

/// Hostile or sloppy clients: the token is checked before the body is read (401 before 413),
/// `Bearer` in any case, error reasons do not reveal the forge's URL, and a client that sends
/// half a request is cut off without holding up shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_holds_against_hostile_clients() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let f = forge(60_000, 1000).await;
    let dir = tempfile::tempdir().unwrap();
    let svc = service_with(
        f.clone(),
        dir.path(),
        ServiceOptions {
            header_read_timeout: Duration::from_millis(300),
            shutdown_grace: Duration::from_millis(500),
            ..test_options()
        },
    )
    .await;
    // No token: the answer comes before the body is sent at all (a client that announces a large
    // body and never sends it still gets its 401). Raw TCP, because an HTTP client that keeps
    // writing the body after the refusal sees a broken pipe instead of the answer.
    let addr = svc.url.trim_start_matches("http://").to_string();
    let mut early = tokio::net::TcpStream::connect(&addr).await.unwrap();
    early
        .write_all(
            b"POST /build HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 100000\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), early.read(&mut head))
        .await
        .expect("an answer without the body")
        .unwrap();
    let head = String::from_utf8_lossy(&head[..n]);
    assert!(
        head.starts_with("HTTP/1.1 401"),
        "no token: refused before the body: {head}"
    );
    drop(early);
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/build", svc.url))
        .header("authorization", format!("bearer {CLIENT}"))
        .json(&missing_body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202, "the scheme is case-insensitive");

    // A client that never finishes its headers is disconnected after the header timeout.
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"POST /build HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(Duration::from_secs(3), slow.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(_)) | Ok(Err(_))),
        "the half-open connection was closed"
    );

    // An idle half-open client does not hold up shutdown past the grace period.
    let _idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let started = std::time::Instant::now();
    svc.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // With the forge gone, the reason says what to do without naming the forge's URL.
    let gone = forge(60_000, 1000).await;
    let base = gone.sandbox().base_url();
    gone.sandbox().set_faults(kfleet::forge::Faults {
        server_errors: 1000,
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let svc = service(gone.clone(), dir.path(), Duration::from_secs(900)).await;
    let (code, answer) = post(&svc.url, &missing_body()).await;
    assert_eq!(code, 502, "{answer}");
    let reason = answer["reason"].as_str().unwrap();
    assert!(
        !reason.contains(&base) && !reason.contains("127.0.0.1"),
        "{reason}"
    );
    svc.stop().await;
}

/// A build past its deadline settles as timed out (a new request starts a new build); settled
/// builds are deleted from the store after the retention, so it does not grow with every
/// request ever made.
#[tokio::test]
async fn settled_builds_are_pruned_after_the_retention() {
    let clock = ManualClock::new();
    let f = forge_on(3_600_000, 1000, clock.clone().into()).await;
    let dir = tempfile::tempdir().unwrap();
    let svc = service_with(
        f.clone(),
        dir.path(),
        ServiceOptions {
            retention: Duration::from_secs(3600),
            sweep_interval: Duration::from_millis(20),
            ..test_options()
        },
    )
    .await;
    let (_, first) = post(&svc.url, &missing_body()).await;
    let first = first["id"].as_str().unwrap().to_string();
    poll_status(&svc.url, &first, |st| st["run_url"].is_string()).await;
    clock.advance(Duration::from_secs(901));
    let (code, st) = status(&svc.url, &first).await;
    assert_eq!((code, st["status"].as_str()), (200, Some("timed_out")));
    let (_, second) = post(&svc.url, &missing_body()).await;
    assert_ne!(
        second["id"], first,
        "a timed-out build does not hold the kernel"
    );

    clock.advance(Duration::from_secs(3599));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        status(&svc.url, &first).await.0,
        200,
        "kept for the retention"
    );
    clock.advance(Duration::from_secs(2));
    let started = std::time::Instant::now();
    while status(&svc.url, &first).await.0 != 404 {
        assert!(started.elapsed() < Duration::from_secs(10), "never pruned");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    svc.stop().await;
}

/// What open builds cost: runs are read from one conditional run listing per interval for all of
/// them, so 20 open builds polled by 20 nodes for eight intervals cost a handful of charged GitHub
/// requests (304s are free), not one `get_run` per build per interval (160 before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_builds_polled_by_many_nodes_cost_a_fixed_budget() {
    use std::sync::atomic::Ordering;
    let f = forge(60_000, 600_000).await;
    let dir = tempfile::tempdir().unwrap();
    let interval = Duration::from_millis(250);
    let svc = service_with(
        f.clone(),
        dir.path(),
        ServiceOptions {
            status_ttl: interval,
            ..test_options()
        },
    )
    .await;
    let template = AssetTemplate::compile(DEFAULT_ASSET_TEMPLATE, "kdriver").unwrap();
    let built: std::collections::HashSet<String> =
        read_release_file(&fixtures().join("small-releases.json"))
            .unwrap()
            .iter()
            .flat_map(|r| r.assets.iter().map(|a| a.name.clone()))
            .collect();
    let kernels: Vec<_> = kfleet::sample::real_identities()
        .into_iter()
        .filter(|id| !built.contains(&template.render(id, "v1.1.0")))
        .take(20)
        .collect();
    let mut ids = Vec::new();
    for id in &kernels {
        let body = json!({"kernel_version": id.kernel_version, "architecture": id.architecture.as_str(),
            "distribution": id.distribution.as_str(), "distro_version": id.distro_version,
            "driver_version": "v1.1.0"});
        let (code, answer) = post(&svc.url, &body).await;
        assert_eq!(code, 202, "{answer}");
        ids.push(answer["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        poll_status(&svc.url, id, |st| st["run_url"].is_string()).await;
    }
    assert_eq!(f.sandbox().dispatches(), 20);
    // 304s first: a request counted between the two loads cannot make the difference negative.
    let charged = || {
        let s = f.stats();
        let not_modified = s.not_modified.load(Ordering::Relaxed);
        s.requests
            .load(Ordering::Relaxed)
            .saturating_sub(not_modified)
    };
    let before = charged();
    // 20 nodes, each polling its build every 50 ms, for eight run-poll intervals.
    let until = tokio::time::Instant::now() + interval * 8;
    let nodes: Vec<_> = ids
        .iter()
        .cloned()
        .map(|id| {
            let url = svc.url.clone();
            tokio::spawn(async move {
                let mut polls = 0;
                while tokio::time::Instant::now() < until {
                    let (code, st) = status(&url, &id).await;
                    assert_eq!(code, 200, "{st}");
                    assert_eq!(st["status"], "queued", "{st}");
                    polls += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                polls
            })
        })
        .collect();
    let mut polls = 0;
    for n in nodes {
        polls += n.await.unwrap();
    }
    let spent = charged().saturating_sub(before);
    assert!(polls >= 20 * 3, "{polls} polls");
    assert!(
        spent <= 8,
        "{spent} charged GitHub requests for {polls} status polls of 20 builds"
    );
    eprintln!("{polls} status polls of 20 open builds cost {spent} charged GitHub requests");
    // What the token has left, as GitHub last said, in /metrics and /healthz.
    let http = reqwest::Client::new();
    let metrics = http
        .get(format!("{}/metrics", svc.url))
        .bearer_auth(CLIENT)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let remaining: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("kfleet_github_ratelimit_remaining "))
        .unwrap_or_else(|| panic!("{metrics}"))
        .parse()
        .unwrap();
    assert!(remaining < 5000 && remaining > 4000, "{metrics}");
    assert!(
        metrics.contains("kfleet_github_ratelimit_limit 5000"),
        "{metrics}"
    );
    let health = http
        .get(format!("{}/healthz", svc.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        health.contains("of 5000 requests left, renewed in"),
        "{health}"
    );
    svc.stop().await;
}

/// A `workflow_run` delivery signed with the service's secret settles the build at once (the
/// run poll is a minute away); a forged, unsigned or repeated delivery changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_webhooks_settle_builds_and_forged_ones_change_nothing() {
    use hmac::{KeyInit, Mac};
    use kfleet::forge::{Conclusion, RunStatus};
    let secret = "webhook-secret-0123456789abcdef";
    let f = forge(60_000, 600_000).await;
    let dir = tempfile::tempdir().unwrap();
    let svc = service_with(
        f.clone(),
        dir.path(),
        ServiceOptions {
            status_ttl: Duration::from_secs(60),
            webhook_secret: Some(kfleet::service::Secret::new(secret.into())),
            ..test_options()
        },
    )
    .await;
    let (_, body) = post(&svc.url, &missing_body()).await;
    let id = body["id"].as_str().unwrap().to_string();
    poll_status(&svc.url, &id, |st| st["run_url"].is_string()).await;
    let mut run = f
        .list_runs("build-driver.yml", None, None)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.request_id() == Some(id.as_str()))
        .unwrap();
    run.status = Some(RunStatus::Completed);
    run.conclusion = Some(Conclusion::Failure);
    let event = serde_json::to_vec(&json!({"action": "completed", "workflow_run": run})).unwrap();
    let sign = |body: &[u8], key: &str| {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
        mac.update(body);
        format!("sha256={}", kfleet::fsio::hex(&mac.finalize().into_bytes()))
    };
    let deliver = |body: Vec<u8>, signature: Option<String>, delivery: &str| {
        let mut request = reqwest::Client::new()
            .post(format!("{}/webhooks/github", svc.url))
            .header("x-github-event", "workflow_run")
            .header("x-github-delivery", delivery)
            .header("content-type", "application/json")
            .body(body);
        if let Some(s) = signature {
            request = request.header("x-hub-signature-256", s);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    // Forged (another key) and unsigned: refused, the build stays as it was.
    assert_eq!(
        deliver(
            event.clone(),
            Some(sign(&event, "not-the-secret-0123")),
            "d-1"
        )
        .await,
        401
    );
    assert_eq!(deliver(event.clone(), None, "d-2").await, 401);
    assert_eq!(status(&svc.url, &id).await.1["status"], "queued");
    // Signed: settled now, not at the next run poll.
    assert_eq!(
        deliver(event.clone(), Some(sign(&event, secret)), "d-3").await,
        202
    );
    let (_, st) = status(&svc.url, &id).await;
    assert_eq!(st["status"], "failed", "{st}");
    assert!(st["reason"].as_str().unwrap().contains("failure"), "{st}");
    // A redelivery of the same id, even saying something else, changes nothing.
    run.conclusion = Some(Conclusion::Success);
    let other = serde_json::to_vec(&json!({"action": "completed", "workflow_run": run})).unwrap();
    assert_eq!(
        deliver(other.clone(), Some(sign(&other, secret)), "d-3").await,
        200
    );
    assert_eq!(status(&svc.url, &id).await.1["status"], "failed");
    svc.stop().await;
}

#[path = "support/certs.rs"]
#[allow(dead_code, clippy::unwrap_used)]
mod certs;

/// `serve --tls-cert --tls-key`: nodes reach the service over HTTPS (`ensure --ca-file` for a
/// private CA), a client that does not trust the CA or speaks plain HTTP gets nothing, and a
/// certificate rotated in place is served without a restart.
#[test]
fn the_service_speaks_tls_and_picks_up_a_rotated_certificate() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let f = rt.block_on(forge(100, 300));
    let dir = tempfile::tempdir().unwrap();
    let pki = tempfile::tempdir().unwrap();
    let ca = certs::issue(pki.path(), "server.key", "server.crt");
    let files = kfleet::service::tls::TlsFiles {
        cert: pki.path().join("server.crt"),
        key: pki.path().join("server.key"),
    };
    let svc = rt.block_on(service_with(
        f.clone(),
        dir.path(),
        ServiceOptions {
            tls: Some(files.clone()),
            ..test_options()
        },
    ));
    let https = svc.url.replace("http://", "https://");
    let trusting = |ca: &Path| {
        reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap(),
            )
            .build()
            .unwrap()
    };
    let healthz = |client: reqwest::Client, url: String| {
        rt.block_on(async move { client.get(format!("{url}/healthz")).send().await })
    };
    assert_eq!(healthz(trusting(&ca), https.clone()).unwrap().status(), 200);
    let err = healthz(reqwest::Client::new(), https.clone()).unwrap_err();
    assert!(
        format!("{err:?}").to_lowercase().contains("certificate"),
        "{err:?}"
    );
    assert!(
        healthz(reqwest::Client::new(), svc.url.clone()).is_err(),
        "plain HTTP"
    );

    // A node with the CA gets its driver over HTTPS.
    let out = tempfile::tempdir().unwrap();
    let ensure = |ca_file: Option<&Path>| {
        let mut cmd = Command::cargo_bin("kfleet").unwrap();
        cmd.env("XDG_CONFIG_HOME", "/nonexistent")
            .env("KFLEET_SERVICE_TOKEN", CLIENT)
            .args(["ensure", "--service", &https, "--driver-version", "v1.1.0"])
            .args(["--deadline", "60s", "--distribution", "amazonlinux"])
            .args(["--distro-version", "2023", "--architecture", "x86_64"])
            .args(["--kernel-version", "6.1.66-91.160.amzn2023.x86_64", "--out"])
            .arg(out.path());
        if let Some(ca) = ca_file {
            cmd.arg("--ca-file").arg(ca);
        }
        cmd.timeout(Duration::from_secs(90)).output().unwrap()
    };
    let got = ensure(Some(&ca));
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );

    // Rotated in place (a new CA's certificate renamed over the old files): served within the
    // reload check, to clients that trust only the new CA.
    let next = tempfile::tempdir().unwrap();
    let new_ca = certs::issue(next.path(), "server.key", "server.crt");
    for name in ["server.key", "server.crt"] {
        let staged = pki.path().join(format!("{name}.new"));
        std::fs::copy(next.path().join(name), &staged).unwrap();
        std::fs::rename(&staged, pki.path().join(name)).unwrap();
    }
    let started = std::time::Instant::now();
    loop {
        if healthz(trusting(&new_ca), https.clone()).is_ok() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the rotated certificate was not picked up"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        healthz(trusting(&ca), https.clone()).is_err(),
        "the old certificate is gone"
    );
    rt.block_on(svc.stop());
}

/// No dispatch storms: a kernel whose build run failed is answered `failed` (its run, and when a
/// retry is allowed) without a new dispatch or a GitHub call until the backoff passes; each
/// client token starts at most its quota of new builds an hour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_builds_back_off_and_clients_have_an_hourly_quota() {
    let failing = forge_simulating(
        Simulation {
            queue_time: Duration::from_millis(50),
            run_time: Duration::from_millis(100),
            fail_rate: 1.0,
            ..Simulation::default()
        },
        SharedClock::default(),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let svc = service_with(
        failing.clone(),
        dir.path(),
        ServiceOptions {
            builds_per_hour: 2,
            ..test_options()
        },
    )
    .await;
    let (_, first) = post(&svc.url, &missing_body()).await;
    let id = first["id"].as_str().unwrap().to_string();
    poll_status(&svc.url, &id, |st| st["status"] == "failed").await;
    let calls = failing
        .stats()
        .requests
        .load(std::sync::atomic::Ordering::Relaxed);
    for _ in 0..30 {
        let (code, again) = post(&svc.url, &missing_body()).await;
        assert_eq!(code, 200, "{again}");
        assert_eq!(again["status"], "failed", "{again}");
        assert!(again["run_url"].is_string(), "{again}");
        assert!(
            again["reason"]
                .as_str()
                .unwrap()
                .contains("kfleet builds it again after"),
            "{again}"
        );
    }
    assert_eq!(failing.sandbox().dispatches(), 1);
    // The run poll goes on (its listings are 304s); the 30 requests asked GitHub nothing.
    let after = failing
        .stats()
        .requests
        .load(std::sync::atomic::Ordering::Relaxed);
    let polls = after - calls;
    assert!(
        polls <= 10,
        "{polls} GitHub requests while 30 nodes asked for a failed kernel"
    );

    // The quota: 2 new builds an hour for this token; the first failed kernel was one.
    let other = |kernel: &str| {
        json!({"kernel_version": kernel, "architecture": "x86_64",
               "distribution": "amazonlinux", "distro_version": "2023", "driver_version": "v1.1.0"})
    };
    let (code, second) = post(&svc.url, &other("6.1.70-1.1.amzn2023.x86_64")).await;
    assert_eq!(code, 202, "{second}");
    let raw = reqwest::Client::new()
        .post(format!("{}/build", svc.url))
        .bearer_auth(CLIENT)
        .json(&other("6.1.71-1.1.amzn2023.x86_64"))
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status().as_u16(), 429);
    assert!(raw.headers().contains_key("retry-after"));
    let text = raw.text().await.unwrap();
    assert!(text.contains("quota"), "{text}");
    assert_eq!(failing.sandbox().dispatches(), 2);
    svc.stop().await;
}

/// A missing kernel of an immutable release is answered 409 with what to do, before any claim.
#[tokio::test]
async fn an_immutable_release_is_answered_before_a_claim() {
    let f = forge(60_000, 1000).await;
    let mut releases = read_release_file(&fixtures().join("small-releases.json")).unwrap();
    for r in releases.iter_mut().filter(|r| r.tag_name == "v1.1.0") {
        r.immutable = true;
    }
    f.sandbox().set_releases(releases);
    let dir = tempfile::tempdir().unwrap();
    let svc = service(f.clone(), dir.path(), Duration::from_secs(900)).await;
    let (code, answer) = post(&svc.url, &missing_body()).await;
    assert_eq!(code, 409, "{answer}");
    assert!(
        answer["reason"]
            .as_str()
            .unwrap()
            .contains("release v1.1.0 is immutable"),
        "{answer}"
    );
    assert_eq!(f.sandbox().dispatches(), 0);
    svc.stop().await;
}

/// While signed webhook deliveries arrive, the run poll stretches twelvefold (the events settle
/// builds); when they stop for two minutes, polling takes over at its own interval again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_stretch_the_run_poll_and_polling_resumes_when_they_stop() {
    use hmac::{KeyInit, Mac};
    use std::sync::atomic::Ordering;
    let secret = "webhook-secret-0123456789abcdef";
    let clock = ManualClock::new();
    let f = forge_on(60_000, 600_000, clock.clone().into()).await;
    let dir = tempfile::tempdir().unwrap();
    let interval = Duration::from_millis(100);
    let svc = service_with(
        f.clone(),
        dir.path(),
        ServiceOptions {
            status_ttl: interval,
            webhook_secret: Some(kfleet::service::Secret::new(secret.into())),
            ..test_options()
        },
    )
    .await;
    let (_, body) = post(&svc.url, &missing_body()).await;
    let id = body["id"].as_str().unwrap().to_string();
    poll_status(&svc.url, &id, |st| st["run_url"].is_string()).await;
    let requests = || f.stats().requests.load(Ordering::Relaxed);
    let window = interval * 15;
    let spent_over = |window: Duration| async move {
        let before = requests();
        tokio::time::sleep(window).await;
        requests() - before
    };
    let polling = spent_over(window).await;
    assert!(polling >= 8, "{polling} run polls in 15 intervals");

    let ping = br#"{"zen":"Keep it logically awesome.","hook_id":1}"#.to_vec();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(&ping);
    let signature = format!("sha256={}", kfleet::fsio::hex(&mac.finalize().into_bytes()));
    let code = reqwest::Client::new()
        .post(format!("{}/webhooks/github", svc.url))
        .header("x-github-event", "ping")
        .header("x-github-delivery", "d-ping")
        .header("x-hub-signature-256", signature)
        .body(ping)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(code, 200);
    // The poll in progress finishes its wait, then waits twelve intervals.
    tokio::time::sleep(interval * 2).await;
    let stretched = spent_over(window).await;
    assert!(
        stretched <= 2,
        "{stretched} run polls in 15 intervals while webhooks arrive (polling alone: {polling})"
    );

    clock.advance(Duration::from_secs(121));
    tokio::time::sleep(interval * 13).await;
    let resumed = spent_over(window).await;
    assert!(
        resumed >= 8,
        "{resumed} run polls in 15 intervals after webhooks stopped"
    );
    svc.stop().await;
}

/// `ensure` checks an artifact against GitHub's digest of the stored asset and against the
/// release's `.sha256` beside it: both agreeing, it installs; a `.sha256` that states another
/// hash (or names another file) keeps nothing and says which two disagree. The checksum file is
/// not reported as an unrecognised asset.
#[test]
fn ensure_checks_the_listing_digest_and_the_release_checksum_file() {
    use kfleet::forge::{GithubClient, RetryPolicy};
    use sha2::Digest;
    const TOKEN: &str = "ghp_checksumSECRET0123456789";
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _entered = rt.enter();
    let releases = read_release_file(&fixtures().join("small-releases.json")).unwrap();
    let sandbox = rt
        .block_on(kfleet::forge::Sandbox::start(
            "127.0.0.1:0".parse().unwrap(),
            releases,
            SandboxOptions {
                token: Some(TOKEN.into()),
                repo: "acme/kdriver".into(),
                ..SandboxOptions::default()
            },
        ))
        .unwrap();
    let client = GithubClient::new(
        &sandbox.base_url(),
        "acme/kdriver".parse().unwrap(),
        TOKEN.into(),
        RetryPolicy::default(),
        None,
    )
    .unwrap();
    let template = AssetTemplate::compile(DEFAULT_ASSET_TEMPLATE, "kdriver").unwrap();
    // Three kernels the release has no artifact for, each uploaded with a checksum file.
    let kernels = ["6.1.0-18-amd64", "6.1.0-17-amd64", "6.1.0-16-amd64"];
    let upload = |kernel: &str, checksum: &dyn Fn(&str, &str) -> String| {
        let id = kfleet::identity::KernelIdentity::from_key(&format!("debian/12/x86_64/{kernel}"))
            .unwrap();
        let name = template.render(&id, "v1.1.0");
        let bytes = format!("driver package for {kernel}").into_bytes();
        let hex = kfleet::fsio::hex(&sha2::Sha256::digest(&bytes));
        rt.block_on(client.upload_asset("v1.1.0", &name, bytes.into()))
            .unwrap();
        rt.block_on(client.upload_asset(
            "v1.1.0",
            &format!("{name}.sha256"),
            checksum(&hex, &name).into_bytes().into(),
        ))
        .unwrap();
        name
    };
    let good = upload(kernels[0], &|hex, name| format!("{hex}  {name}\n"));
    upload(kernels[1], &|_, name| {
        format!("{}  {name}\n", "ab".repeat(32))
    });
    upload(kernels[2], &|hex, _| {
        format!("{hex}  kdriver-other.tar.xz\n")
    });

    let state = tempfile::tempdir().unwrap();
    let run = |kernel: &str, out: &Path| {
        Command::cargo_bin("kfleet")
            .unwrap()
            .arg("--json")
            .env("XDG_CONFIG_HOME", "/nonexistent")
            .env("GITHUB_TOKEN", TOKEN)
            .env("KFLEET_STATE_DIR", state.path())
            .args(["ensure", "--repo", "acme/kdriver", "--api-url"])
            .arg(sandbox.base_url())
            .args(["--driver-version", "v1.1.0", "--deadline", "2s"])
            .args(["--distribution", "debian", "--distro-version", "12"])
            .args([
                "--architecture",
                "x86_64",
                "--kernel-version",
                kernel,
                "--out",
            ])
            .arg(out)
            .output()
            .unwrap()
    };
    let out = tempfile::tempdir().unwrap();
    let ok = run(kernels[0], out.path());
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(
        std::fs::read(out.path().join(&good)).unwrap(),
        format!("driver package for {}", kernels[0]).into_bytes()
    );
    let said: Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(said["status"], "available", "{said}");
    assert_eq!(said["path"], out.path().join(&good).display().to_string());

    let out = tempfile::tempdir().unwrap();
    let disagree = run(kernels[1], out.path());
    let stderr = String::from_utf8_lossy(&disagree.stderr);
    let said: Value = serde_json::from_slice(&disagree.stdout).unwrap_or_default();
    assert_ne!(said["status"], "available", "{said}");
    assert!(!disagree.status.success());
    assert!(
        stderr.contains("GitHub's digest of the stored asset is")
            && stderr.contains(&format!("the release's .sha256 says {}", "ab".repeat(32))),
        "{stderr}"
    );
    assert!(
        std::fs::read_dir(out.path()).unwrap().next().is_none(),
        "nothing kept"
    );

    let out = tempfile::tempdir().unwrap();
    let other = run(kernels[2], out.path());
    let stderr = String::from_utf8_lossy(&other.stderr);
    assert!(!other.status.success());
    assert!(
        stderr.contains("names kdriver-other.tar.xz, not the artifact"),
        "{stderr}"
    );
    assert!(
        std::fs::read_dir(out.path()).unwrap().next().is_none(),
        "nothing kept"
    );

    // The release's listing: three artifacts with their checksum files, none unrecognised.
    let listing = rt.block_on(client.list_releases()).unwrap();
    let release = listing
        .releases
        .iter()
        .find(|r| r.tag_name == "v1.1.0")
        .unwrap();
    let index = kfleet::artifacts::index_assets(release, &template);
    assert!(
        index
            .unrecognised
            .iter()
            .all(|u| !u.name.ends_with(".sha256")),
        "{:?}",
        index.unrecognised
    );
    let matched: Vec<_> = index
        .matched
        .iter()
        .filter(|a| a.checksum_url.is_some())
        .map(|a| a.name.clone())
        .collect();
    assert_eq!(matched.len(), 3, "{matched:?}");
    drop(sandbox);
}
