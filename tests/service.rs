//! The build service over real HTTP, with the sandbox forge behind it: one dispatch however many
//! nodes ask, answers from the release listing, ids that survive a restart, the error codes, the
//! deadline, metrics, and `kfleet ensure` end to end.

use assert_cmd::Command;
use kfleet::builds::{Planner, PlannerConfig};
use kfleet::forge::{
    Forge, RetryPolicy, SandboxForge, SandboxOptions, Simulation, read_release_file,
};
use kfleet::identity::{AssetTemplate, DEFAULT_ASSET_TEMPLATE};
use kfleet::service::{ServiceOptions, ServiceState, router};
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
    let releases = read_release_file(&fixtures().join("small-releases.json")).unwrap();
    Arc::new(
        SandboxForge::start(
            releases,
            SandboxOptions {
                repo: "acme/kdriver".into(),
                simulation: Simulation {
                    queue_time: Duration::from_millis(queue_ms),
                    run_time: Duration::from_millis(run_ms),
                    fail_rate: 0.0,
                    ..Simulation::default()
                },
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
    let forge: Arc<dyn Forge> = forge;
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
            state_dir: state_dir.to_path_buf(),
            dispatch_interval: Duration::ZERO,
            batch_workflow: "build-batch.yml".into(),
        },
    )
    .unwrap();
    let state = ServiceState::new(
        forge,
        planner,
        template,
        ServiceOptions {
            client_tokens: vec![CLIENT.into()],
            listing_ttl: Duration::from_millis(200),
            status_ttl: Duration::from_millis(50),
            deadline,
            rate_per_client: rate,
        },
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, router(state))
            .with_graceful_shutdown(async {
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

    let metrics = reqwest::get(format!("{}/metrics", svc.url))
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
    assert_eq!(
        reqwest::get(format!("{}/healthz", svc.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "ok\n"
    );
    assert_eq!(f.sandbox().dispatches(), 0);
    svc.stop().await;
}

#[tokio::test]
async fn a_stuck_build_turns_timed_out_at_the_deadline() {
    let f = forge(0, 60_000).await;
    let dir = tempfile::tempdir().unwrap();
    let svc = service(f.clone(), dir.path(), Duration::from_millis(400)).await;
    let (_, body) = post(&svc.url, &missing_body()).await;
    let id = body["id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(status(&svc.url, &id).await.1["status"], "in_progress");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(status(&svc.url, &id).await.1["status"], "timed_out");
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

#[tokio::test]
async fn each_client_is_rate_limited() {
    let f = forge(60_000, 1000).await;
    let dir = tempfile::tempdir().unwrap();
    let svc = service_with_rate(f, dir.path(), Duration::from_secs(900), 1.0).await;
    let mut codes = Vec::new();
    for _ in 0..12 {
        codes.push(status(&svc.url, "nope").await.0);
    }
    assert_eq!(codes[..10], [404; 10], "a burst of ten is allowed");
    assert_eq!(codes[11], 429);
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
    let run = |kernel: &str, distribution: &str, version: &str| {
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
                "60s",
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
    let built = run("5.15.0-91-generic", "ubuntu", "22.04");
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

    let fresh = run("6.1.66-91.160.amzn2023.x86_64", "amazonlinux", "2023");
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

/// The id a node gets is on disk before the node gets it.
#[tokio::test]
async fn an_accepted_request_is_recorded_before_the_answer() {
    let f = forge(60_000, 60_000).await;
    let dir = tempfile::tempdir().unwrap();
    let svc = service(f.clone(), dir.path(), Duration::from_secs(900)).await;
    let (code, body) = post(&svc.url, &missing_body()).await;
    assert_eq!(code, 202, "{body}");
    let id = body["id"].as_str().unwrap();
    let ledger = kfleet::builds::ledger::Ledger::open(dir.path())
        .unwrap()
        .load()
        .unwrap();
    let accepted = &ledger.accepted[id];
    assert_eq!(
        accepted.key,
        "amazonlinux/2023/x86_64/6.1.66-91.160.amzn2023.x86_64"
    );
    assert_eq!(accepted.driver_version.as_deref(), Some("v1.1.0"));
    svc.stop().await;
}

/// A crash after the 202 and before the dispatch was recorded: the restarted service dispatches
/// that very id once, so a node polling it gets its build; an id older than the deadline fails
/// with a reason instead of building for nobody.
#[tokio::test(flavor = "multi_thread")]
async fn a_crash_between_the_answer_and_the_dispatch_loses_no_id() {
    use kfleet::builds::ledger::{Ledger, LedgerEvent, LedgerRecord};
    let f = forge(0, 60_000).await;
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
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
    ledger
        .append(&accepted(key, "r-crashed", chrono::Duration::seconds(5)))
        .unwrap();
    ledger
        .append(&accepted(
            "ubuntu/22.04/x86_64/5.15.0-1034-aws",
            "r-stale",
            chrono::Duration::hours(2),
        ))
        .unwrap();
    // Accepted, dispatched and finished, then superseded by a later build of the same kernel:
    // neither planned again nor reported as lost.
    let earlier = "fedora/40/x86_64/6.8.9-300.fc40.x86_64";
    let mut done = accepted(earlier, "r-done", chrono::Duration::minutes(3));
    ledger.append(&done).unwrap();
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
        ledger.append(&done).unwrap();
    }

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
        "no dispatch was recorded for this request before the build service restarted; ask again"
    );
    assert_eq!(status(&svc.url, "r-done").await.0, 404);
    assert_eq!(f.sandbox().dispatches(), 1, "only the fresh one is built");
    let runs = f.list_runs("build-driver.yml", None).await.unwrap();
    assert!(
        runs[0].display_title.contains("[r-crashed]"),
        "{}",
        runs[0].display_title
    );
    svc.stop().await;
}
