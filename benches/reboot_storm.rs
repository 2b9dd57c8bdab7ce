//! Reboot storm: 10,000 `POST /build` from many concurrent clients over a few hundred identities,
//! most already built, against `kfleet serve` with the sandbox forge behind it, over loopback HTTP.
//! Reports throughput, p50/p99 latency, GitHub calls and dispatches, and checks every answer.
//!
//!     cargo bench --bench reboot_storm
//!
//! Runs on each state store (SQLite in a temporary directory; PostgreSQL in a throwaway cluster
//! started like the tests do, which needs the server's binaries under /usr/lib/postgresql), each
//! without dispatch pacing and with the 750 ms pacing kfleet uses against GitHub.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or benchmark stops at the first surprise

#[path = "../tests/support/postgres.rs"]
#[allow(dead_code)] // the tests also stop and restart the server
mod postgres;

use kfleet::artifacts::{AssetTemplate, DEFAULT_ASSET_TEMPLATE};
use kfleet::builds::{Planner, PlannerConfig};
use kfleet::forge::{
    Forge, Release, ReleaseAsset, RetryPolicy, SandboxForge, SandboxOptions, Simulation,
};
use kfleet::identity::KernelIdentity;
use kfleet::sample::real_identities;
use kfleet::service::{ServiceOptions, ServiceState, router};
use kfleet::state::{StateSpec, Store};
use sha2::Digest;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const REQUESTS: usize = 10_000;
const CLIENTS: usize = 200;
const IDENTITIES: usize = 300;
const BUILT: usize = 270;
const TOKEN: &str = "storm-client-token-0123456789";
const VERSION: &str = "v1.0.0";

struct Outcome {
    label: String,
    wall: Duration,
    all_dispatched: Duration,
    latencies: Vec<Duration>,
    github_calls: u64,
    dispatches: u64,
    missing_hit: usize,
    wrong: usize,
}

fn release(ids: &[KernelIdentity], template: &AssetTemplate) -> Release {
    let assets = ids[..BUILT]
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let name = template.render(id, VERSION);
            let digest: String = sha2::Sha256::digest(name.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            ReleaseAsset {
                id: Some(i as u64 + 1),
                size: Some(name.len() as u64),
                browser_download_url: None,
                digest: Some(format!("sha256:{digest}")),
                updated_at: None,
                name,
            }
        })
        .collect();
    Release {
        id: Some(1),
        tag_name: VERSION.into(),
        name: None,
        draft: false,
        prerelease: false,
        created_at: Some(chrono::Utc::now()),
        published_at: Some(chrono::Utc::now()),
        html_url: None,
        immutable: false,
        assets,
    }
}

async fn storm(label: String, pacing: Duration, state: StateSpec) -> Outcome {
    let template = AssetTemplate::compile(DEFAULT_ASSET_TEMPLATE, "kdriver").expect("template");
    let ids: Vec<KernelIdentity> = real_identities().into_iter().take(IDENTITIES).collect();
    assert_eq!(
        ids.len(),
        IDENTITIES,
        "enough real identities ship with kfleet"
    );
    let forge = Arc::new(
        SandboxForge::start(
            vec![release(&ids, &template)],
            SandboxOptions {
                repo: "acme/kdriver".into(),
                simulation: Simulation {
                    queue_time: Duration::from_secs(30),
                    run_time: Duration::from_secs(60),
                    fail_rate: 0.0,
                    ..Simulation::default()
                },
                ..SandboxOptions::default()
            },
            RetryPolicy::default(),
        )
        .await
        .expect("sandbox starts"),
    );
    let dyn_forge: Arc<dyn Forge> = forge.clone();
    let planner = Planner::new(
        dyn_forge.clone(),
        template.clone(),
        PlannerConfig {
            workflow: "build-driver.yml".into(),
            git_ref: "main".into(),
            driver_version: String::new(),
            deadline: Duration::from_secs(900),
            cancel_on_timeout: false,
            claim_lease: Duration::from_secs(60),
            dispatch_interval: pacing,
            batch_workflow: "build-batch.yml".into(),
        },
        Store::open(&state).await.expect("state store opens"),
    );
    let state = ServiceState::new(
        dyn_forge,
        planner,
        template.clone(),
        ServiceOptions {
            client_tokens: vec![TOKEN.into()],
            rate_per_client: 1e9,
            ..ServiceOptions::default()
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let url = format!("{base}/build");
    tokio::spawn(async move { axum::serve(listener, router(state)).await });
    // As a Service would: nodes come once the replica is ready (its store answers).
    while !reqwest::get(format!("{base}/readyz"))
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Requests pick identities at random; a reboot storm brings every kind of node back at once.
    let mut rng = fastrand::Rng::with_seed(7);
    let picks: Vec<usize> = (0..REQUESTS).map(|_| rng.usize(..IDENTITIES)).collect();
    let missing_hit = picks
        .iter()
        .filter(|&&i| i >= BUILT)
        .collect::<HashSet<_>>()
        .len();
    let picks = Arc::new(picks);
    let ids = Arc::new(ids);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .build()
        .expect("client");
    let started = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (http, url, picks, ids) = (http.clone(), url.clone(), picks.clone(), ids.clone());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut answers: Vec<(usize, u16, serde_json::Value)> = Vec::new();
                for r in (c..REQUESTS).step_by(CLIENTS) {
                    let i = picks[r];
                    let id = &ids[i];
                    let body = serde_json::json!({
                        "kernel_version": id.kernel_version, "architecture": id.architecture.as_str(),
                        "distribution": id.distribution.as_str(), "distro_version": id.distro_version,
                        "driver_version": VERSION,
                    });
                    let t = Instant::now();
                    let resp = http.post(&url).bearer_auth(TOKEN).json(&body).send().await.expect("request");
                    let code = resp.status().as_u16();
                    let v: serde_json::Value = resp.json().await.unwrap_or_default();
                    lat.push(t.elapsed());
                    answers.push((i, code, v));
                }

                (lat, answers)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(REQUESTS);
    let mut wrong = 0;
    let mut ids_for: HashMap<usize, HashSet<String>> = HashMap::new();
    for t in tasks {
        let (lat, answers) = t.await.expect("client task");
        latencies.extend(lat);
        for (i, code, v) in answers {
            let ok = if i < BUILT {
                let name = template.render(&ids[i], VERSION);
                let digest: String = sha2::Sha256::digest(name.as_bytes())
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                code == 200 && v["status"] == "available" && v["sha256"] == digest.as_str()
            } else {
                if let Some(id) = v["id"].as_str() {
                    ids_for.entry(i).or_default().insert(id.to_string());
                }
                code == 202 && v["status"] == "queued"
            };
            if !ok {
                wrong += 1;
            }
        }
    }
    let wall = started.elapsed();
    // Dispatches run in the background, paced: wait for them (each missing identity once).
    let waiting = Instant::now();
    while (forge.sandbox().dispatches() as usize) < missing_hit
        && waiting.elapsed() < Duration::from_secs(120)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all_dispatched = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Every missing identity got exactly one id.
    wrong += ids_for.values().filter(|s| s.len() != 1).count();
    Outcome {
        label,
        wall,
        all_dispatched,
        latencies,
        github_calls: forge.stats().requests.load(Ordering::Relaxed),
        dispatches: forge.sandbox().dispatches(),
        missing_hit,
        wrong,
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let mut rows = Vec::new();
    for store in ["SQLite", "PostgreSQL"] {
        for (label, pacing) in [
            ("no pacing", Duration::ZERO),
            ("750 ms pacing", Duration::from_millis(750)),
        ] {
            // A fresh store per run: no build of an earlier run is joined.
            let dir = tempfile::tempdir().expect("temp dir");
            let pg = (store == "PostgreSQL").then(postgres::Postgres::start);
            let spec = match &pg {
                Some(pg) => StateSpec::Postgres(pg.url()),
                None => StateSpec::Sqlite(dir.path().join(kfleet::state::DB_FILE)),
            };
            let mut o = storm(format!("{store}, {label}"), pacing, spec).await;
            o.latencies.sort();
            rows.push(o);
        }
    }
    println!(
        "{REQUESTS} POST /build from {CLIENTS} concurrent clients over {IDENTITIES} identities ({BUILT} built), loopback, {} cores\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!(
        "| state store, dispatch pacing | wall | throughput | p50 | p99 | max | all dispatched after | GitHub calls | dispatches | missing identities asked for | wrong answers |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for o in &rows {
        println!(
            "| {} | {:.2} s | {:.0} req/s | {:.1} ms | {:.1} ms | {:.0} ms | {:.1} s | {} | {} | {} | {} |",
            o.label,
            o.wall.as_secs_f64(),
            REQUESTS as f64 / o.wall.as_secs_f64(),
            pct(&o.latencies, 0.50).as_secs_f64() * 1000.0,
            pct(&o.latencies, 0.99).as_secs_f64() * 1000.0,
            o.latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
            o.all_dispatched.as_secs_f64(),
            o.github_calls,
            o.dispatches,
            o.missing_hit,
            o.wrong
        );
    }
    let failed = rows
        .iter()
        .any(|o| o.wrong > 0 || o.dispatches as usize != o.missing_hit);
    if failed {
        eprintln!(
            "FAILED: wrong answers, or dispatches differ from the missing identities asked for"
        );
        std::process::exit(1);
    }
}
