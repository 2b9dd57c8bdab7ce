//! The build state store for real: the claim contract on SQLite and on a throwaway PostgreSQL,
//! SQLite through a kill -9 mid-write, and three `kfleet serve` replicas on one store against
//! the sandbox forge: a storm of build requests, a replica killed during it, replicas killed
//! while GitHub rate-limits and stalls their dispatches, the database stopped and started again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/postgres.rs"]
mod postgres;

use chrono::Utc;
use kfleet::artifacts::{AssetTemplate, DEFAULT_ASSET_TEMPLATE};
use kfleet::forge::{Faults, Release, Sandbox, SandboxOptions, Simulation, read_release_file};
use kfleet::identity::KernelIdentity;
use kfleet::state::{Claim, NewClaim, Phase, StateSpec, Store};
use postgres::Postgres;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOKEN: &str = "ghp_stateSECRET0123456789";
const CLIENT: &str = "node-client-token-0123456789";
const REPO: &str = "acme/kdriver";
const VERSIONS: [&str; 2] = ["v1.0.0", "v1.1.0"];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn releases() -> Vec<Release> {
    read_release_file(&fixtures().join("small-releases.json")).unwrap()
}

async fn sandbox(queue_ms: u64, run_ms: u64) -> Sandbox {
    Sandbox::start(
        "127.0.0.1:0".parse().unwrap(),
        releases(),
        SandboxOptions {
            token: Some(TOKEN.into()),
            repo: REPO.into(),
            faults: Faults::default(),
            simulation: Simulation {
                queue_time: Duration::from_millis(queue_ms),
                run_time: Duration::from_millis(run_ms),
                fail_rate: 0.0,
                ..Simulation::default()
            },
            clock: Default::default(),
            assets_dir: None,
        },
    )
    .await
    .unwrap()
}

/// `n` real kernels with no artifact in either driver version.
fn missing_kernels(n: usize) -> Vec<KernelIdentity> {
    let template = AssetTemplate::compile(DEFAULT_ASSET_TEMPLATE, "kdriver").unwrap();
    let built: HashSet<String> = releases()
        .iter()
        .flat_map(|r| r.assets.iter().map(|a| a.name.clone()))
        .collect();
    let ids: Vec<KernelIdentity> = kfleet::sample::real_identities()
        .into_iter()
        .filter(|id| {
            VERSIONS
                .iter()
                .all(|v| !built.contains(&template.render(id, v)))
        })
        .take(n)
        .collect();
    assert_eq!(ids.len(), n);
    ids
}

fn body(id: &KernelIdentity, version: &str) -> Value {
    json!({
        "kernel_version": id.kernel_version,
        "architecture": id.architecture.as_str(),
        "distribution": id.distribution.as_str(),
        "distro_version": id.distro_version,
        "driver_version": version,
    })
}

fn claim<'a>(rid: &'a str, key: &'a str, owner: &'a str, lease: Duration) -> NewClaim<'a> {
    NewClaim {
        request_id: rid,
        key,
        driver_version: "v1.0.0",
        owner,
        now: Utc::now(),
        lease,
    }
}

/// The claim contract every store keeps.
async fn contract(store: &Store) {
    let key = "ubuntu/22.04/x86_64/5.15.0-1034-aws";
    let long = Duration::from_secs(60);
    let Claim::Won(first) = store.claim(&claim("r1", key, "a", long)).await.unwrap() else {
        panic!("the first claim wins");
    };
    assert_eq!(first.phase, Phase::Claimed);
    let Claim::Held(held) = store.claim(&claim("r2", key, "b", long)).await.unwrap() else {
        panic!("a second claim on an open build is refused");
    };
    assert_eq!(held.request_id, "r1");
    assert!(store.by_request_id("r2").await.unwrap().is_empty());
    assert!(
        store
            .take_over(&first, "b", Utc::now(), long, Duration::ZERO)
            .await
            .unwrap()
            .is_none(),
        "a live claim is not taken over"
    );
    let mut not_mine = first.clone();
    not_mine.owner = Some("b".into());
    assert!(!store.renew(&not_mine, Utc::now(), long).await.unwrap());
    assert!(store.renew(&first, Utc::now(), long).await.unwrap());
    assert!(
        store
            .mark_dispatched(&first, 42, Some("https://example.test/run/42"), Utc::now())
            .await
            .unwrap()
    );
    let open = store.open_build(key, "v1.0.0").await.unwrap().unwrap();
    assert_eq!((open.phase, open.run_id), (Phase::Dispatched, Some(42)));
    assert!(
        store
            .settle(&open, Phase::Finished, Some("failure"), Utc::now())
            .await
            .unwrap()
    );
    assert!(
        !store
            .settle(&open, Phase::Failed, None, Utc::now())
            .await
            .unwrap(),
        "a settled build stays as it ended"
    );
    // Settled: the next claim starts a new build, with a lease that ends at once.
    let Claim::Won(second) = store
        .claim(&claim("r3", key, "c", Duration::ZERO))
        .await
        .unwrap()
    else {
        panic!("a settled build does not hold the kernel");
    };
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(
        store
            .take_over(&second, "d", Utc::now(), long, long)
            .await
            .unwrap()
            .is_none(),
        "not before the lease and the longest send after it have passed"
    );
    let taken = store
        .take_over(&second, "d", Utc::now(), long, Duration::ZERO)
        .await
        .unwrap()
        .expect("an expired claim is taken over");
    assert_eq!(
        (
            taken.request_id.as_str(),
            taken.owner.as_deref(),
            taken.fence
        ),
        ("r3", Some("d"), second.fence + 1)
    );
    // The holder that lost it can neither renew it, record a run on it, nor end it.
    assert!(!store.renew(&second, Utc::now(), long).await.unwrap());
    assert!(
        !store
            .mark_dispatched(&second, 7, None, Utc::now())
            .await
            .unwrap()
    );
    assert!(!store.abandon(&second, "late", Utc::now()).await.unwrap());
    let still = store.open_build(key, "v1.0.0").await.unwrap().unwrap();
    assert_eq!(
        (still.phase, still.owner.as_deref()),
        (Phase::Claimed, Some("d"))
    );
    assert!(
        store
            .take_over(&second, "e", Utc::now(), long, Duration::ZERO)
            .await
            .unwrap()
            .is_none(),
        "only once"
    );
    // Leases run on the database's clock: a replica whose clock is ten minutes ahead cannot
    // take a live claim over early.
    let Claim::Won(live) = store
        .claim(&claim("r5", "debian/12/x86_64/6.1.0-18-amd64", "f", long))
        .await
        .unwrap()
    else {
        panic!("a claim on another kernel wins");
    };
    let ahead = Utc::now() + chrono::Duration::minutes(10);
    assert!(
        store
            .take_over(&live, "g", ahead, long, Duration::ZERO)
            .await
            .unwrap()
            .is_none(),
        "a skewed clock does not end a lease"
    );
    assert_eq!(store.history(key, "v1.0.0").await.unwrap().len(), 2);
    assert_eq!(
        store
            .prune(Utc::now() + chrono::Duration::days(1))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store.history(key, "v1.0.0").await.unwrap().len(),
        1,
        "open builds stay"
    );
    store.ping().await.unwrap();
}

#[tokio::test]
async fn sqlite_keeps_the_claim_contract() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let store = Store::in_dir(&state).await.unwrap();
    contract(&store).await;
    assert_eq!(store.kind(), "sqlite");
    // The state is this user's alone: the directory 0700, the database and its WAL 0600.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state), 0o700);
    for entry in std::fs::read_dir(&state).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_keeps_the_claim_contract_and_hides_its_password() {
    let pg = Postgres::start();
    let store = Store::open(&StateSpec::Postgres(pg.url())).await.unwrap();
    contract(&store).await;
    let with_password = pg.url().replace("kfleet@", "kfleet:hunter2@");
    let labelled = Store::open(&StateSpec::Postgres(with_password))
        .await
        .unwrap();
    assert!(
        !labelled.label().contains("hunter2"),
        "{}",
        labelled.label()
    );
    // A password holding '/', '?' and '&' is the driver's to read: the label names user, host,
    // port and database only, and the TLS mode after it is kept (this server has no TLS, so a
    // connection that asks for it fails instead of going out in plain text).
    let tricky = pg
        .url()
        .replace("kfleet@", "kfleet:pa/ss?sslmode=disable&x@");
    let plain = Store::open(&StateSpec::Postgres(tricky.clone()))
        .await
        .unwrap();
    plain.ping().await.unwrap();
    let label = plain.label();
    assert!(
        !label.contains("pa/ss") && !label.contains("sslmode"),
        "{label}"
    );
    assert!(
        label.starts_with("postgres://kfleet@127.0.0.1:") && label.ends_with("/postgres"),
        "{label}"
    );
    let err = Store::open(&StateSpec::Postgres(format!("{tricky}?sslmode=require")))
        .await
        .unwrap()
        .ping()
        .await
        .unwrap_err()
        .to_string();
    assert!(!err.contains("pa/ss"), "{err}");
    assert!(
        err.to_lowercase().contains("tls") || err.contains("SSL") || err.contains("encryption"),
        "{err}"
    );
    let err = Store::open(&StateSpec::Postgres(
        pg.url().replace("kfleet@", "kfleet:p@ss@"),
    ))
    .await
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("%40") && !err.contains("p@ss"), "{err}");
    // Twenty claims at once on one kernel: one wins.
    let key = "debian/12/x86_64/6.1.0-27-cloud-amd64";
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let rid = format!("race-{i}");
                let owner = format!("o{i}");
                let c = NewClaim {
                    request_id: &rid,
                    key,
                    driver_version: "v1.0.0",
                    owner: &owner,
                    now: Utc::now(),
                    lease: Duration::from_secs(60),
                };
                matches!(store.claim(&c).await.unwrap(), Claim::Won(_))
            })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        won += usize::from(t.await.unwrap());
    }
    assert_eq!(won, 1);
}

/// A server that takes TLS connections only: the store connects with `sslmode=verify-full` and
/// the test CA, and refuses a server whose certificate it cannot verify.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_over_tls_verifies_the_server() {
    let (pg, ca) = Postgres::start_with_tls();
    let url = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        pg.url(),
        ca.display()
    );
    let store = Store::open(&StateSpec::Postgres(url)).await.unwrap();
    contract(&store).await;

    let plain = Store::open(&StateSpec::Postgres(pg.url())).await.unwrap();
    let err = plain.ping().await.unwrap_err().to_string();
    assert!(err.contains("no encryption"), "{err}");
    // The system's roots do not know the test CA.
    let unverified = format!("{}?sslmode=require", pg.url());
    let err = Store::open(&StateSpec::Postgres(unverified))
        .await
        .unwrap()
        .ping()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    let wrong = format!("{}?sslmode=bogus", pg.url());
    let err = Store::open(&StateSpec::Postgres(wrong))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("sslmode=bogus: use disable, require or verify-full"),
        "{err}"
    );
}

/// The child half of the kill -9 test: claims builds one after another, printing each request id
/// once its claim committed, until it is killed.
#[tokio::test]
#[ignore = "run by sqlite_loses_nothing_to_a_kill_9 as a child process"]
async fn sqlite_claim_writer() {
    let Some(db) = std::env::var_os("KFLEET_TEST_DB") else {
        return;
    };
    let round = std::env::var("KFLEET_TEST_ROUND").unwrap();
    let store = Store::open(&StateSpec::Sqlite(db.into())).await.unwrap();
    for i in 0.. {
        let rid = format!("w{round}-{i}");
        let key = format!("ubuntu/22.04/x86_64/5.15.0-{round}{i}-generic");
        let c = NewClaim {
            request_id: &rid,
            key: &key,
            driver_version: "v1.0.0",
            owner: "writer",
            now: Utc::now(),
            lease: Duration::from_secs(60),
        };
        assert!(matches!(store.claim(&c).await.unwrap(), Claim::Won(_)));
        println!("committed {rid}");
    }
}

/// A process killed with SIGKILL in the middle of its writes: every claim it reported committed
/// is there, the database is intact, and the next process claims on.
#[tokio::test(flavor = "multi_thread")]
async fn sqlite_loses_nothing_to_a_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kfleet.db");
    for round in 0..3 {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "sqlite_claim_writer", "--ignored", "--nocapture"])
            .env("KFLEET_TEST_DB", &db)
            .env("KFLEET_TEST_ROUND", round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut committed = Vec::new();
        // Kill it at a different point each round.
        while committed.len() < 50 + round * 37 {
            let line = lines.next().unwrap().unwrap();
            if let Some(rid) = line.strip_prefix("committed ") {
                committed.push(rid.to_string());
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let store = Store::open(&StateSpec::Sqlite(db.clone())).await.unwrap();
        for rid in &committed {
            assert_eq!(
                store.by_request_id(rid).await.unwrap().len(),
                1,
                "round {round}: {rid} was reported committed"
            );
        }
        let check = rusqlite_integrity(&db);
        assert_eq!(check, "ok");
        let c = NewClaim {
            request_id: &format!("after-{round}"),
            key: &format!("fedora/40/x86_64/6.8.9-{round}.fc40.x86_64"),
            driver_version: "v1.0.0",
            owner: "next",
            now: Utc::now(),
            lease: Duration::from_secs(60),
        };
        assert!(matches!(store.claim(&c).await.unwrap(), Claim::Won(_)));
    }
}

fn rusqlite_integrity(db: &Path) -> String {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

/// One `kfleet serve` process.
struct Replica {
    child: Child,
    url: String,
    log: Arc<std::sync::Mutex<String>>,
    _state_dir: tempfile::TempDir,
}

impl Replica {
    fn start(forge: &str, state: &str, dispatch_interval: &str) -> Self {
        let state_dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("kfleet"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--repo",
                REPO,
                "--api-url",
                forge,
                "--state",
                state,
                "--claim-lease",
                "4s",
                "--dispatch-interval",
                dispatch_interval,
                "--listing-ttl",
                "1",
            ])
            .env("XDG_CONFIG_HOME", "/nonexistent")
            .env("GITHUB_TOKEN", TOKEN)
            .env("KFLEET_CLIENT_TOKENS", CLIENT)
            .env("KFLEET_STATE_DIR", state_dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("kfleet build service on ").nth(1) {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("the replica did not start: {}", log.lock().unwrap()));
        Self {
            child,
            url,
            log,
            _state_dir: state_dir,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asks a random replica, moving on to another when one refuses the connection or is not ready
/// (a client behind no load balancer). Returns the build id.
async fn ask(http: &reqwest::Client, urls: &[String], body: &Value) -> String {
    for _ in 0..200 {
        let url = &urls[fastrand::usize(..urls.len())];
        match http
            .post(format!("{url}/build"))
            .bearer_auth(CLIENT)
            .json(body)
            .send()
            .await
        {
            Ok(r) if r.status().as_u16() == 202 => {
                let v: Value = r.json().await.unwrap();
                return v["id"].as_str().unwrap().to_string();
            }
            Ok(r) if r.status().as_u16() == 503 => {}
            Ok(r) => panic!("{}: {}", r.status(), r.text().await.unwrap()),
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no replica answered {body}");
}

/// Polls `id` on the live replicas until its build has a run.
async fn wait_for_run(http: &reqwest::Client, urls: &[String], id: &str, within: Duration) {
    let started = Instant::now();
    loop {
        let url = &urls[fastrand::usize(..urls.len())];
        if let Ok(r) = http
            .get(format!("{url}/status/{id}"))
            .bearer_auth(CLIENT)
            .send()
            .await
            && r.status().is_success()
        {
            let v: Value = r.json().await.unwrap();
            if v["run_url"].is_string() {
                return;
            }
            assert!(
                matches!(v["status"].as_str(), Some("queued" | "in_progress")),
                "{id}: {v}"
            );
        }
        assert!(started.elapsed() < within, "{id} never got a run");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// 300 requests for 20 kernels and 2 driver versions at once, spread over the replicas; with
/// `kill`, the first replica is killed with SIGKILL partway through. Returns the ids per build.
async fn storm(
    replicas: &mut [Replica],
    kill: bool,
    pg: &Postgres,
) -> HashMap<(String, String), HashSet<String>> {
    let kernels = missing_kernels(20);
    let urls: Vec<String> = replicas.iter().map(|r| r.url.clone()).collect();
    let http = reqwest::Client::new();
    // With `kill`, the first replica is asked for four builds before the storm: it claims them
    // (before its 202) and dispatches them at its slow pace, so it holds claims when it is killed,
    // however the storm's requests happen to be spread.
    let mut first: Vec<((String, String), String)> = Vec::new();
    if kill {
        for id in &kernels[..4] {
            let rid = ask(
                &http,
                std::slice::from_ref(&urls[0]),
                &body(id, VERSIONS[0]),
            )
            .await;
            first.push(((id.key(), VERSIONS[0].to_string()), rid));
        }
    }
    let tasks: Vec<_> = (0..300)
        .map(|i| {
            let id = kernels[i % kernels.len()].clone();
            let version = VERSIONS[(i / kernels.len()) % 2];
            let (http, urls) = (http.clone(), urls.clone());
            tokio::spawn(async move {
                let rid = ask(&http, &urls, &body(&id, version)).await;
                ((id.key(), version.to_string()), rid)
            })
        })
        .collect();
    if kill {
        // Once the first replica holds claims it has not dispatched (dispatches are paced).
        let (client, connection) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let pattern = format!("%/{}/%", replicas[0].pid());
        let started = Instant::now();
        loop {
            let held: i64 = client
                .query_one(
                    "SELECT count(*) FROM builds WHERE phase = 'claimed' AND owner LIKE $1",
                    &[&pattern],
                )
                .await
                .map(|r| r.get(0))
                .unwrap_or(0);
            if held >= 1 {
                break;
            }
            // Generous: on a loaded 2-core machine three replicas start and claim slowly.
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "replica 0 never claimed; its log:\n{}",
                replicas[0].log.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        replicas[0].child.kill().unwrap();
        replicas[0].child.wait().unwrap();
    }
    let mut ids: HashMap<(String, String), HashSet<String>> = HashMap::new();
    for (build, rid) in first {
        ids.entry(build).or_default().insert(rid);
    }
    for t in tasks {
        let (build, rid) = t.await.unwrap();
        ids.entry(build).or_default().insert(rid);
    }
    let live: Vec<String> = replicas
        .iter()
        .skip(usize::from(kill))
        .map(|r| r.url.clone())
        .collect();
    // A killed replica's builds get their runs only after its claims' lease, the send bound, a
    // sweep and the survivors' paced take-over: on a loaded 2-core machine running the whole
    // state suite at once that has taken more than a minute.
    let within = Duration::from_secs(if kill { 180 } else { 60 });
    for rids in ids.values() {
        for rid in rids {
            wait_for_run(&http, &live, rid, within).await;
        }
    }
    ids
}

fn three_replicas(sb: &Sandbox, pg: &Postgres) -> Vec<Replica> {
    (0..3)
        .map(|_| Replica::start(&sb.base_url(), &pg.url(), "100ms"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_on_postgres_dispatch_each_build_once() {
    let pg = Postgres::start();
    let sb = sandbox(60_000, 60_000).await;
    let mut replicas = three_replicas(&sb, &pg);
    let ids = storm(&mut replicas, false, &pg).await;
    assert_eq!(ids.len(), 40);
    for (build, rids) in &ids {
        assert_eq!(rids.len(), 1, "{build:?} got several ids: {rids:?}");
    }
    assert_eq!(sb.dispatches(), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_mid_storm_loses_no_request_and_its_claims_are_settled() {
    let pg = Postgres::start();
    let sb = sandbox(60_000, 60_000).await;
    // Replica 0 paces its dispatches slowly, so it holds claims it has not dispatched yet for
    // long enough to be killed holding them even on a loaded machine.
    let mut replicas: Vec<Replica> = ["2s", "250ms", "250ms"]
        .iter()
        .map(|pace| Replica::start(&sb.base_url(), &pg.url(), pace))
        .collect();
    let ids = storm(&mut replicas, true, &pg).await;
    assert_eq!(ids.len(), 40);
    for (build, rids) in &ids {
        assert_eq!(rids.len(), 1, "{build:?} got several ids: {rids:?}");
    }
    assert_eq!(sb.dispatches(), 40);
    let survivors: String = replicas[1..]
        .iter()
        .map(|r| r.log.lock().unwrap().clone())
        .collect();
    assert!(
        survivors.contains("took over the claim"),
        "the killed replica's claims were settled by the others: {survivors}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_down_answers_503_and_the_service_resumes_when_it_returns() {
    let pg = Postgres::start();
    let sb = sandbox(60_000, 60_000).await;
    let replica = Replica::start(&sb.base_url(), &pg.url(), "0s");
    let http = reqwest::Client::new();
    let kernels = missing_kernels(2);
    let urls = vec![replica.url.clone()];
    let first = ask(&http, &urls, &body(&kernels[0], "v1.1.0")).await;
    wait_for_run(&http, &urls, &first, Duration::from_secs(30)).await;

    pg.stop();
    let r = http
        .post(format!("{}/build", replica.url))
        .bearer_auth(CLIENT)
        .json(&body(&kernels[1], "v1.1.0"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(r.headers()["retry-after"], "5");
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["reason"],
        "the build service cannot reach its state store right now; retry in a few seconds"
    );
    let ready = http
        .get(format!("{}/readyz", replica.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    let health = http
        .get(format!("{}/healthz", replica.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200, "alive, only not ready");
    assert!(
        health
            .text()
            .await
            .unwrap()
            .contains("store: postgres unreachable")
    );
    assert_eq!(sb.dispatches(), 1, "no dispatch without a claim");
    assert!(
        !replica.log.lock().unwrap().contains("panicked"),
        "{}",
        replica.log.lock().unwrap()
    );

    pg.start_again();
    let started = Instant::now();
    loop {
        let ready = http
            .get(format!("{}/readyz", replica.url))
            .send()
            .await
            .unwrap();
        if ready.status().is_success() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never ready again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let second = ask(&http, &urls, &body(&kernels[1], "v1.1.0")).await;
    wait_for_run(&http, &urls, &second, Duration::from_secs(30)).await;
    assert_eq!(sb.dispatches(), 2);
    assert_eq!(
        ask(&http, &urls, &body(&kernels[0], "v1.1.0")).await,
        first,
        "the build from before the outage is still joined"
    );
}

/// Two replicas on one store, a 4 s claim lease, and a dispatch GitHub answers with 429 and
/// `retry-after: 20`: the replica that waits loses its claim to the other one's sweep (after the
/// lease and the longest send), which dispatches; the waiting one renews before it would send
/// again, finds the claim taken (its fence raised) and does not send. One run, not two.
async fn one_run_when_a_rate_limit_outlasts_the_lease(state: &str) {
    one_run_when_the_forge_misbehaves(
        state,
        Faults {
            dispatch_rate_limits: 1,
            retry_after_secs: 20,
            ..Faults::default()
        },
        true,
    )
    .await;
}

/// Two replicas, one dispatch; `faults` make GitHub misbehave on it. With `taken_over`, the
/// waiting replica must lose its claim to the other one and say so.
async fn one_run_when_the_forge_misbehaves(state: &str, faults: Faults, taken_over: bool) {
    let sb = sandbox(60_000, 60_000).await;
    let a = Replica::start(&sb.base_url(), state, "0s");
    let b = Replica::start(&sb.base_url(), state, "0s");
    sb.set_faults(faults);
    let id = missing_kernels(1).remove(0);
    let http = reqwest::Client::new();
    let rid = ask(&http, std::slice::from_ref(&a.url), &body(&id, "v1.1.0")).await;
    let urls = [a.url.clone(), b.url.clone()];
    wait_for_run(&http, &urls, &rid, Duration::from_secs(60)).await;
    // Past the waiting replica's retry-after, when it would have sent again.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let logs = format!(
        "replica a:\n{}\nreplica b:\n{}",
        a.log.lock().unwrap(),
        b.log.lock().unwrap()
    );
    assert_eq!(sb.dispatches(), 1, "{logs}");
    if taken_over {
        assert!(logs.contains("took over the claim"), "{logs}");
        assert!(logs.contains("stopped dispatching"), "{logs}");
    }
}

/// GitHub starts the run but does not answer for 20 s: the replica's send gives up after 10 s,
/// finds its run by the request id and records it, before the other replica may take the claim
/// over (lease and the longest send): one run.
#[tokio::test(flavor = "multi_thread")]
async fn sqlite_replicas_dispatch_once_when_github_stalls() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kfleet.db");
    one_run_when_the_forge_misbehaves(
        &format!("sqlite:{}", db.display()),
        Faults {
            dispatch_stalls: 1,
            dispatch_stall: Duration::from_secs(20),
            ..Faults::default()
        },
        false,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_replicas_dispatch_once_when_a_rate_limit_outlasts_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kfleet.db");
    one_run_when_a_rate_limit_outlasts_the_lease(&format!("sqlite:{}", db.display())).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_replicas_dispatch_once_when_a_rate_limit_outlasts_the_lease() {
    let pg = Postgres::start();
    one_run_when_a_rate_limit_outlasts_the_lease(&pg.url()).await;
}

/// Waits until `replica`'s log contains `needle`.
async fn wait_for_log(replica: &Replica, needle: &str, within: Duration) {
    let started = Instant::now();
    while !replica.log.lock().unwrap().contains(needle) {
        assert!(
            started.elapsed() < within,
            "never logged {needle:?}: {}",
            replica.log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Three replicas on one store under a forge that rate-limits and stalls. Replica a is killed
/// with SIGKILL while it waits out a 429 on its dispatch (nothing started); replica b is killed
/// while GitHub stalls on its dispatch (the run started, unrecorded). Replica c takes both claims
/// over after their lease and the longest send: it dispatches the first and adopts the second's
/// run by its request id. One run per build, and both nodes' ids get theirs.
async fn one_run_per_build_when_replicas_die_under_rate_limits(state: &str) {
    let sb = sandbox(60_000, 60_000).await;
    let mut a = Replica::start(&sb.base_url(), state, "0s");
    let mut b = Replica::start(&sb.base_url(), state, "0s");
    let c = Replica::start(&sb.base_url(), state, "0s");
    let http = reqwest::Client::new();
    let kernels = missing_kernels(2);

    sb.set_faults(Faults {
        dispatch_rate_limits: 1,
        retry_after_secs: 30,
        ..Faults::default()
    });
    let first = ask(
        &http,
        std::slice::from_ref(&a.url),
        &body(&kernels[0], "v1.1.0"),
    )
    .await;
    wait_for_log(&a, "rate limited (429)", Duration::from_secs(30)).await;
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    assert_eq!(sb.dispatches(), 0, "a 429 starts nothing");

    sb.set_faults(Faults {
        dispatch_stalls: 1,
        dispatch_stall: Duration::from_secs(60),
        ..Faults::default()
    });
    let second = ask(
        &http,
        std::slice::from_ref(&b.url),
        &body(&kernels[1], "v1.1.0"),
    )
    .await;
    let started = Instant::now();
    while sb.dispatches() < 1 {
        assert!(started.elapsed() < Duration::from_secs(30), "b never sent");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    b.child.kill().unwrap();
    b.child.wait().unwrap();

    let urls = [c.url.clone()];
    wait_for_run(&http, &urls, &first, Duration::from_secs(90)).await;
    wait_for_run(&http, &urls, &second, Duration::from_secs(90)).await;
    let log = c.log.lock().unwrap().clone();
    assert_eq!(sb.dispatches(), 2, "one run per build: {log}");
    // The access log: one line per answered request, never the client's token.
    assert!(log.contains(&format!("GET /status/{first} 200 ")), "{log}");
    assert!(!log.contains(CLIENT), "{log}");
    assert_eq!(log.matches("took over the claim").count(), 2, "{log}");
    for (kernel, rid) in kernels.iter().zip([&first, &second]) {
        assert_eq!(
            ask(&http, &urls, &body(kernel, "v1.1.0")).await,
            *rid,
            "a later node joins the build its claim started"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_replicas_killed_under_rate_limits_leave_one_run_per_build() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kfleet.db");
    one_run_per_build_when_replicas_die_under_rate_limits(&format!("sqlite:{}", db.display()))
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_replicas_killed_under_rate_limits_leave_one_run_per_build() {
    let pg = Postgres::start();
    one_run_per_build_when_replicas_die_under_rate_limits(&pg.url()).await;
}
