//! What the build service spends of GitHub's hourly request budget while builds are open and
//! nodes poll them. Starts the sandbox forge (which answers `x-ratelimit-*` and charges every
//! request but a `304`, as GitHub does) and one `kfleet serve` process against it, asks for
//! `builds` missing kernels, waits until each has its run, then lets `nodes` nodes per build poll
//! `GET /status/{id}` every second for the window, and counts the charged requests the service
//! sent GitHub in that window. The runs move meanwhile (queued for 20 s, then in progress), so the
//! service's run listing changes as on GitHub.
//!
//!     cargo bench --bench github_budget
//!     KFLEET_BIN=/path/to/another/kfleet cargo bench --bench github_budget
//!
//! `KFLEET_BIN` measures another build of kfleet (an older commit) with the same sandbox and
//! the same nodes; `KFLEET_BUDGET_WINDOW` sets the window in seconds (default 30).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or benchmark stops at the first surprise

use kfleet::forge::{Faults, Release, Sandbox, SandboxOptions, Simulation};
use kfleet::sample::real_identities;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "ghp_budgetBENCH0123456789";
const CLIENT: &str = "budget-client-token-0123456789";
const REPO: &str = "acme/kdriver";
const VERSION: &str = "v1.0.0";
/// (open builds, nodes polling each).
const SCENARIOS: [(usize, usize); 4] = [(1, 1), (20, 1), (20, 20), (100, 5)];

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `kfleet serve` on a free port against `forge`; returns the process and its URL.
fn serve(bin: &str, forge: &str, state_dir: &std::path::Path) -> (Serve, String) {
    let db = state_dir.join("kfleet.db");
    let mut child = Command::new(bin)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--repo",
            REPO,
            "--api-url",
            forge,
        ])
        .args(["--state", &format!("sqlite:{}", db.display())])
        .args(["--dispatch-interval", "0s", "--client-rate", "1000"])
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .env("GITHUB_TOKEN", TOKEN)
        .env("KFLEET_CLIENT_TOKENS", CLIENT)
        .env("KFLEET_STATE_DIR", state_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("kfleet build service on ").nth(1) {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the service did not start");
    (Serve(child), url)
}

struct Measured {
    builds: usize,
    nodes: usize,
    answers: u64,
    charged: u64,
    window: Duration,
}

async fn measure(bin: &str, builds: usize, nodes: usize, window: Duration) -> Measured {
    let release = Release {
        id: Some(1),
        tag_name: VERSION.into(),
        name: None,
        draft: false,
        prerelease: false,
        created_at: Some(chrono::Utc::now()),
        published_at: Some(chrono::Utc::now()),
        html_url: None,
        immutable: false,
        assets: Vec::new(),
    };
    let sandbox = Sandbox::start(
        "127.0.0.1:0".parse().unwrap(),
        vec![release],
        SandboxOptions {
            token: Some(TOKEN.into()),
            repo: REPO.into(),
            faults: Faults::default(),
            simulation: Simulation {
                queue_time: Duration::from_secs(20),
                run_time: Duration::from_secs(600),
                fail_rate: 0.0,
                ..Simulation::default()
            },
            clock: Default::default(),
            assets_dir: None,
        },
    )
    .await
    .unwrap();
    let state_dir = tempfile::tempdir().unwrap();
    let (_serve, url) = serve(bin, &sandbox.base_url(), state_dir.path());
    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for id in real_identities().into_iter().take(builds) {
        let body = serde_json::json!({
            "kernel_version": id.kernel_version, "architecture": id.architecture.as_str(),
            "distribution": id.distribution.as_str(), "distro_version": id.distro_version,
            "driver_version": VERSION,
        });
        let answer: serde_json::Value = http
            .post(format!("{url}/build"))
            .bearer_auth(CLIENT)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(answer["id"].as_str().expect("a build id").to_string());
    }
    let started = Instant::now();
    for id in &ids {
        loop {
            let st: serde_json::Value = http
                .get(format!("{url}/status/{id}"))
                .bearer_auth(CLIENT)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if st["run_url"].is_string() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "{id} got no run: {st}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert_eq!(sandbox.dispatches(), builds as u64);
    let before = sandbox.charged();
    let until = tokio::time::Instant::now() + window;
    let pollers: Vec<_> = ids
        .iter()
        .flat_map(|id| std::iter::repeat_n(id.clone(), nodes))
        .map(|id| {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move {
                // Nodes start at different moments, as after a reboot wave.
                tokio::time::sleep(Duration::from_millis(fastrand::u64(..1000))).await;
                let mut answers = 0u64;
                while tokio::time::Instant::now() < until {
                    let r = http
                        .get(format!("{url}/status/{id}"))
                        .bearer_auth(CLIENT)
                        .send()
                        .await
                        .unwrap();
                    assert!(r.status().is_success(), "{}", r.status());
                    answers += 1;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                answers
            })
        })
        .collect();
    let mut answers = 0;
    for p in pollers {
        answers += p.await.unwrap();
    }
    let charged = sandbox.charged() - before;
    sandbox.shutdown().await;
    Measured {
        builds,
        nodes,
        answers,
        charged,
        window,
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let bin = std::env::var("KFLEET_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_kfleet").into());
    let window = Duration::from_secs(
        std::env::var("KFLEET_BUDGET_WINDOW")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(30),
    );
    println!("kfleet serve: {bin}");
    println!(
        "| open builds | nodes per build | status answers | charged GitHub requests in {}s | per hour | share of 5,000 |",
        window.as_secs()
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for (builds, nodes) in SCENARIOS {
        let m = measure(&bin, builds, nodes, window).await;
        let per_hour = m.charged as f64 * 3600.0 / m.window.as_secs_f64();
        println!(
            "| {} | {} | {} | {} | {:.0} | {:.0}% |",
            m.builds,
            m.nodes,
            m.answers,
            m.charged,
            per_hour,
            per_hour / 50.0
        );
    }
}
