//! The GitHub client against the sandbox forge over real HTTP on 127.0.0.1: pagination, ETags,
//! rate limits, retries, malformed bodies, bad tokens, and `kfleet report --repo`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or benchmark stops at the first surprise

use assert_cmd::Command;
use chrono::{Duration, TimeZone, Utc};
use kfleet::forge::{
    Faults, ForgeError, GithubClient, Release, ReleaseAsset, RetryPolicy, Sandbox, SandboxOptions,
    read_release_file,
};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Instant;

const TOKEN: &str = "ghp_sandboxSECRETtoken0123456789";
const REPO: &str = "acme/kdriver";

fn releases(n: usize) -> Vec<Release> {
    let base = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    (0..n)
        .map(|i| Release {
            id: Some(i as u64 + 1),
            tag_name: format!("v0.{i}.0"),
            name: None,
            draft: false,
            prerelease: false,
            created_at: Some(base + Duration::hours(i as i64)),
            published_at: Some(base + Duration::hours(i as i64)),
            html_url: None,
            immutable: false,
            assets: vec![ReleaseAsset {
                id: Some(10_000 + i as u64),
                name: format!("kdriver-v0.{i}.0-ubuntu-22.04-x86_64-5.15.0-91-generic.tar.xz"),
                size: Some(1),
                browser_download_url: None,
                digest: Some(format!("sha256:{i:064x}")),
                updated_at: None,
            }],
        })
        .collect()
}

async fn sandbox(n: usize) -> Sandbox {
    Sandbox::start(
        "127.0.0.1:0".parse().unwrap(),
        releases(n),
        SandboxOptions {
            token: Some(TOKEN.into()),
            repo: REPO.into(),
            ..SandboxOptions::default()
        },
    )
    .await
    .unwrap()
}

fn fast_policy() -> RetryPolicy {
    RetryPolicy {
        max_retries: 3,
        min_delay: std::time::Duration::from_millis(10),
        max_delay: std::time::Duration::from_millis(50),
        max_rate_limit_wait: std::time::Duration::from_secs(5),
        timeout: std::time::Duration::from_secs(5),
        run_lookup_attempts: 20,
        run_lookup_interval: std::time::Duration::from_millis(50),
    }
}

fn client(sandbox: &Sandbox, token: &str) -> GithubClient {
    GithubClient::new(
        &sandbox.base_url(),
        REPO.parse().unwrap(),
        token.to_string(),
        fast_policy(),
        None,
    )
    .unwrap()
}

#[tokio::test]
async fn three_pages_then_an_unchanged_listing_is_all_304() {
    let sb = sandbox(250).await;
    let gh = client(&sb, TOKEN);
    let first = gh.list_releases().await.unwrap();
    assert_eq!(first.pages, 3);
    assert_eq!(first.releases.len(), 250);
    assert_eq!(first.releases[0].tag_name, "v0.249.0", "newest first");
    assert!(!first.not_modified);
    assert_eq!(sb.requests(), 3);
    assert!(first.releases.iter().all(|r| r.assets[0].digest.is_some()));

    let second = gh.list_releases().await.unwrap();
    assert!(second.not_modified, "every page answered 304");
    assert_eq!(second.releases, first.releases);
    assert_eq!(sb.requests(), 6);
    assert_eq!(gh.stats().not_modified.load(Ordering::Relaxed), 3);

    let mut changed = releases(251);
    changed.truncate(251);
    sb.set_releases(changed);
    let third = gh.list_releases().await.unwrap();
    assert!(!third.not_modified);
    assert_eq!(third.releases.len(), 251);
}

/// Validators kept on disk: the next process's first listing is conditional too, costs no rate
/// limit when unchanged, holds no token, and a damaged entry is only a miss.
#[tokio::test]
async fn the_next_process_starts_conditional_from_the_disk_cache() {
    let sb = sandbox(150).await;
    let cache = tempfile::tempdir().unwrap();
    let cached = || client(&sb, TOKEN).with_disk_cache(cache.path().join("http-cache"));
    let first = cached().list_releases().await.unwrap();
    assert!(!first.not_modified);
    assert_eq!(first.pages, 2);

    let next = cached();
    let second = next.list_releases().await.unwrap();
    assert!(
        second.not_modified,
        "a new client's first listing is all 304"
    );
    assert_eq!(second.releases, first.releases);
    assert_eq!(next.stats().not_modified.load(Ordering::Relaxed), 2);

    let files: Vec<_> = std::fs::read_dir(cache.path().join("http-cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let entries = files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "json"))
        .count();
    assert_eq!(
        (entries, files.len()),
        (2, 4),
        "one entry per page (its validators and its body): {files:?}"
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&cache.path().join("http-cache")), 0o700);
        for f in &files {
            assert_eq!(mode(f), 0o600, "{}", f.display());
        }
    }
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        assert!(!text.contains(TOKEN), "the token never reaches the cache");
        std::fs::write(f, &text[..text.len() / 2]).unwrap();
    }
    let damaged = cached();
    let third = damaged.list_releases().await.unwrap();
    assert!(!third.not_modified, "damaged entries are misses");
    assert_eq!(third.releases, first.releases);
    let fourth = cached().list_releases().await.unwrap();
    assert!(fourth.not_modified, "and were written again");
}

#[tokio::test]
async fn server_errors_are_retried_and_counted() {
    let sb = sandbox(5).await;
    sb.set_faults(Faults {
        server_errors: 2,
        ..Faults::default()
    });
    let gh = client(&sb, TOKEN);
    let listing = gh.list_releases().await.unwrap();
    assert_eq!(listing.releases.len(), 5);
    assert_eq!(sb.requests(), 3, "two 502s, then the page");
    assert_eq!(gh.stats().retries.load(Ordering::Relaxed), 2);

    sb.set_faults(Faults {
        server_errors: 10,
        ..Faults::default()
    });
    let err = gh.list_releases().await.unwrap_err();
    assert!(
        matches!(err, ForgeError::GaveUp { attempts: 4, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("502"), "{err}");
}

#[tokio::test]
async fn a_connection_dropped_mid_body_is_retried() {
    let sb = sandbox(5).await;
    sb.set_faults(Faults {
        drop_connections: 1,
        ..Faults::default()
    });
    let gh = client(&sb, TOKEN);
    let listing = gh.list_releases().await.unwrap();
    assert_eq!(listing.releases.len(), 5);
    assert_eq!(sb.requests(), 2, "the dropped response, then the page");
    assert_eq!(gh.stats().retries.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_slow_server_times_out_and_is_retried_then_given_up() {
    let sb = sandbox(5).await;
    sb.set_faults(Faults {
        latency: std::time::Duration::from_millis(400),
        ..Faults::default()
    });
    let gh = GithubClient::new(
        &sb.base_url(),
        REPO.parse().unwrap(),
        TOKEN.into(),
        RetryPolicy {
            max_retries: 1,
            timeout: std::time::Duration::from_millis(100),
            ..fast_policy()
        },
        None,
    )
    .unwrap();
    let err = gh.list_releases().await.unwrap_err();
    assert!(
        matches!(err, ForgeError::GaveUp { attempts: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("no answer within"), "{err}");
}

#[tokio::test]
async fn rate_limit_with_retry_after_is_waited_out() {
    let sb = sandbox(5).await;
    sb.set_faults(Faults {
        rate_limit_after: Some(0),
        retry_after_secs: 1,
        ..Faults::default()
    });
    let gh = client(&sb, TOKEN);
    let started = Instant::now();
    let listing = gh.list_releases().await.unwrap();
    assert_eq!(listing.releases.len(), 5);
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(1),
        "waited as told"
    );
    assert_eq!(sb.requests(), 2);
    assert_eq!(gh.stats().rate_limit_waits.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn rate_limit_longer_than_allowed_is_an_error() {
    let sb = sandbox(5).await;
    sb.set_faults(Faults {
        rate_limit_after: Some(0),
        retry_after_secs: 3600,
        ..Faults::default()
    });
    let err = client(&sb, TOKEN).list_releases().await.unwrap_err();
    assert!(
        matches!(
            err,
            ForgeError::RateLimitTooLong {
                wait_secs: 3600,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn malformed_json_and_bad_token_are_clear_errors_without_the_token() {
    let sb = sandbox(5).await;
    sb.set_faults(Faults {
        malformed: 1,
        ..Faults::default()
    });
    let err = client(&sb, TOKEN).list_releases().await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ForgeError::Malformed { .. }), "{text}");
    assert!(
        text.contains("/repos/acme/kdriver/releases?per_page=100"),
        "{text}"
    );
    assert!(!text.contains(TOKEN));

    let wrong = "ghp_wrongTOKEN";
    let err = client(&sb, wrong).list_releases().await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ForgeError::Unauthorized { .. }), "{text}");
    assert!(text.contains("GITHUB_TOKEN"), "{text}");
    assert!(!text.contains(wrong));

    let err = GithubClient::new(
        &sb.base_url(),
        "acme/other".parse().unwrap(),
        TOKEN.into(),
        fast_policy(),
        None,
    )
    .unwrap()
    .list_releases()
    .await
    .unwrap_err();
    assert!(matches!(err, ForgeError::NotFound { .. }), "{err}");
}

#[tokio::test]
async fn an_unchanged_run_listing_is_a_304() {
    let sb = sandbox(1).await;
    let gh = client(&sb, TOKEN);
    assert!(
        gh.list_runs("build-driver.yml", None, None)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        gh.list_runs("build-driver.yml", None, None)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(gh.stats().not_modified.load(Ordering::Relaxed), 1);
}

/// `kfleet report --repo` reads the same listing over HTTP as `--releases` reads from the file.
#[test]
fn report_from_the_sandbox_matches_report_from_the_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fixture = root.join("tests/fixtures");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listing = read_release_file(&fixture.join("small-releases.json")).unwrap();
    let sb = rt.block_on(async {
        Sandbox::start(
            "127.0.0.1:0".parse().unwrap(),
            listing,
            SandboxOptions {
                token: Some(TOKEN.into()),
                repo: REPO.into(),
                faults: Faults {
                    server_errors: 1,
                    ..Faults::default()
                },
                ..SandboxOptions::default()
            },
        )
        .await
        .unwrap()
    });
    let run = |source: &[&str]| {
        let out = Command::cargo_bin("kfleet")
            .unwrap()
            .env("XDG_CONFIG_HOME", "/nonexistent")
            .env("GITHUB_TOKEN", TOKEN)
            .arg("report")
            .arg("-i")
            .arg(fixture.join("small-fleet.csv"))
            .args(source)
            .args(["--format", "json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(!stderr.contains(TOKEN), "the token never appears: {stderr}");
        (
            serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap(),
            stderr,
        )
    };
    let (from_file, _) = run(&[
        "--releases",
        fixture.join("small-releases.json").to_str().unwrap(),
    ]);
    let (from_forge, stderr) = run(&["--repo", REPO, "--api-url", &sb.base_url()]);
    assert_eq!(from_forge["summary"], from_file["summary"]);
    assert!(stderr.contains("waiting: "), "the retry is shown: {stderr}");
    assert!(stderr.contains("502"), "{stderr}");

    let out = Command::cargo_bin("kfleet")
        .unwrap()
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .env_remove("GITHUB_TOKEN")
        .env_remove("GH_TOKEN")
        .env("PATH", "/nonexistent")
        .arg("report")
        .arg("-i")
        .arg(fixture.join("small-fleet.csv"))
        .args(["--repo", REPO, "--api-url", &sb.base_url()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("no GitHub token: set GITHUB_TOKEN or GH_TOKEN")
    );
    drop(sb);
}

/// `--sandbox DIR` starts the sandbox forge in-process and reads it over loopback HTTP.
#[test]
fn the_in_process_sandbox_forge_serves_the_sample_data() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let state = tempfile::tempdir().unwrap();
    let run = |source: &[&str]| {
        let out = Command::cargo_bin("kfleet")
            .unwrap()
            .env("XDG_CONFIG_HOME", "/nonexistent")
            .env("KFLEET_STATE_DIR", state.path())
            .arg("report")
            .arg("-i")
            .arg(root.join("sample-data/fleet.csv"))
            .args(source)
            .args(["--format", "json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (v, String::from_utf8(out.stderr).unwrap())
    };
    let (from_file, _) = run(&[
        "--releases",
        root.join("sample-data/releases.json").to_str().unwrap(),
    ]);
    let (from_sandbox, stderr) = run(&["--sandbox", root.join("sample-data").to_str().unwrap()]);
    assert!(stderr.starts_with("SANDBOX http://127.0.0.1:"), "{stderr}");
    assert_eq!(from_sandbox["summary"], from_file["summary"]);

    // The README's sequence: builds dispatched to one sandbox end with it; the next command's
    // sandbox shows no ghost "building" rows, and the real build state holds none of them.
    let dispatched = Command::cargo_bin("kfleet")
        .unwrap()
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .env("KFLEET_STATE_DIR", state.path())
        .args(["dispatch", "--missing", "--dispatch-interval", "0s", "-i"])
        .arg(root.join("sample-data/fleet.csv"))
        .arg("--sandbox")
        .arg(root.join("sample-data"))
        .output()
        .unwrap();
    assert!(dispatched.status.success(), "{dispatched:?}");
    assert!(String::from_utf8_lossy(&dispatched.stdout).contains("dispatched run"));
    let (after, _) = run(&["--sandbox", root.join("sample-data").to_str().unwrap()]);
    assert_eq!(
        after["summary"]["statuses"]["building"]["nodes"], 0,
        "{}",
        after["summary"]
    );
    assert_eq!(after["summary"], from_file["summary"]);
    let kept: Vec<_> = walkdir(state.path())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "db"))
        .collect();
    assert!(
        kept.is_empty(),
        "sandbox builds in the real state: {kept:?}"
    );
}

fn walkdir(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walkdir(&path));
        }
        out.push(path);
    }
    out
}

/// `kfleet release`, as the build job runs it (repository and API from `GITHUB_REPOSITORY` and
/// `GITHUB_API_URL`, token from `GH_TOKEN`): absent, uploaded with its checksum, present; a
/// second upload replaces the first; a missing release and a bad file name are clear errors that
/// upload nothing; the token is never printed.
#[test]
fn the_build_jobs_release_calls_check_and_upload_through_kfleet() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _entered = rt.enter();
    let sandbox = rt.block_on(sandbox(3));
    let job = |args: &[&str]| {
        let mut c = Command::cargo_bin("kfleet").unwrap();
        c.env("XDG_CONFIG_HOME", "/nonexistent")
            .env_remove("KFLEET_REPO")
            .env_remove("KFLEET_API_URL")
            .env_remove("GITHUB_TOKEN")
            .env("GH_TOKEN", TOKEN)
            .env("GITHUB_REPOSITORY", REPO)
            .env("GITHUB_API_URL", sandbox.base_url())
            .arg("release")
            .args(args);
        c.assert()
    };
    let name = "kdriver-v0.1.0-debian-12-x86_64-6.1.0-18-amd64.tar.xz";
    job(&["asset", "--tag", "v0.1.0", name])
        .success()
        .stdout("absent\n");
    let dir = tempfile::tempdir().unwrap();
    let (asset, sum) = (
        dir.path().join(name),
        dir.path().join(format!("{name}.sha256")),
    );
    std::fs::write(&asset, b"first build").unwrap();
    std::fs::write(&sum, b"abc  first\n").unwrap();
    // One 502 on the way: the upload is retried.
    sandbox.set_faults(Faults {
        server_errors: 1,
        ..Faults::default()
    });
    let out = job(&[
        "upload",
        "--tag",
        "v0.1.0",
        asset.to_str().unwrap(),
        sum.to_str().unwrap(),
    ])
    .success();
    let printed = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(
        printed.contains(&format!("uploaded {name} to v0.1.0 (11 bytes, sha256:")),
        "{printed}"
    );
    job(&["asset", "--tag", "v0.1.0", name])
        .success()
        .stdout("present\n");

    std::fs::write(&asset, b"the rerun's build").unwrap();
    job(&["upload", "--tag", "v0.1.0", asset.to_str().unwrap()]).success();
    let listing = rt
        .block_on(client(&sandbox, TOKEN).list_releases())
        .unwrap();
    let release = listing
        .releases
        .iter()
        .find(|r| r.tag_name == "v0.1.0")
        .unwrap();
    let same: Vec<&ReleaseAsset> = release.assets.iter().filter(|a| a.name == name).collect();
    assert_eq!(same.len(), 1, "replaced, not added: {:?}", release.assets);
    let url = same[0].browser_download_url.clone().unwrap();
    let body = rt.block_on(async { reqwest::get(&url).await.unwrap().bytes().await.unwrap() });
    assert_eq!(&body[..], b"the rerun's build");

    let missing = job(&["asset", "--tag", "v9.9.9", name]).code(1);
    let stderr = String::from_utf8_lossy(&missing.get_output().stderr).into_owned();
    assert!(
        stderr.contains("release v9.9.9 does not exist in acme/kdriver")
            && stderr.contains("create it before building for it"),
        "{stderr}"
    );
    let odd = dir.path().join("kdriver 1.0.tar.xz");
    std::fs::write(&odd, b"x").unwrap();
    let refused = job(&["upload", "--tag", "v0.1.0", odd.to_str().unwrap()]).code(1);
    let stderr = String::from_utf8_lossy(&refused.get_output().stderr).into_owned();
    assert!(
        stderr.contains("asset name 'kdriver 1.0.tar.xz'"),
        "{stderr}"
    );
    assert!(!stderr.contains(TOKEN));
    let listing = rt
        .block_on(client(&sandbox, TOKEN).list_releases())
        .unwrap();
    let count: usize = listing.releases.iter().map(|r| r.assets.len()).sum();
    assert_eq!(
        count,
        3 + 2,
        "only the artifact and its checksum were added"
    );
}

/// `kfleet sandbox` without `--token` makes a random one and prints it; a client without it is
/// refused, and so is any host name but loopback's (a page that rebinds its own name to 127.0.0.1).
#[tokio::test]
async fn the_sandbox_command_has_a_token_and_answers_loopback_names_only() {
    use tokio::io::AsyncBufReadExt as _;
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("releases.json"), "[]").unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kfleet"))
        .args(["sandbox", "--listen", "127.0.0.1:0", "--data"])
        .arg(data.path())
        .env_remove("KFLEET_SANDBOX_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let base = stdout.next_line().await.unwrap().unwrap();
    let mut token = None;
    while let Some(line) = stderr.next_line().await.unwrap() {
        if let Some((_, t)) = line.split_once("sandbox token") {
            token = t.rsplit(": ").next().map(str::to_string);
            break;
        }
    }
    let token = token.expect("the sandbox prints the token it made");
    assert!(token.len() >= 32 + "sandbox-".len(), "{token}");
    let http = reqwest::Client::new();
    let releases = format!("{base}/repos/example/kdriver/releases");
    let anyone = http.get(&releases).send().await.unwrap();
    assert_eq!(anyone.status(), 401);
    let ok = http
        .get(&releases)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let port = base.rsplit(':').next().unwrap().trim_end_matches('/');
    for host in ["localhost", "127.0.0.1", "[::1]"] {
        let r = http
            .get(&releases)
            .bearer_auth(&token)
            .header("host", format!("{host}:{port}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{host}");
    }
    let rebound = http
        .get(&releases)
        .bearer_auth(&token)
        .header("host", format!("attacker.example:{port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), 421);
    assert!(
        rebound
            .text()
            .await
            .unwrap()
            .contains("loopback host names only")
    );
}

/// GitHub Enterprise serves its API under `/api/v3` and takes uploads at `/api/uploads`: a
/// release upload goes there, not under the API's path.
#[tokio::test]
async fn uploads_on_github_enterprise_go_to_api_uploads() {
    use axum::routing::{get, post};
    let app = axum::Router::new()
        .route(
            "/api/v3/repos/acme/kdriver/releases/tags/v1.0.0",
            get(|| async { axum::Json(serde_json::json!({"id": 5})) }),
        )
        .route(
            "/api/v3/repos/acme/kdriver/releases/5/assets",
            get(|| async { axum::Json(serde_json::json!([])) }),
        )
        .route(
            "/api/uploads/repos/acme/kdriver/releases/5/assets",
            post(|body: axum::body::Bytes| async move {
                use sha2::Digest as _;
                (
                    axum::http::StatusCode::CREATED,
                    axum::Json(serde_json::json!({
                        "id": 9, "name": "kdriver.tar.xz", "size": body.len(),
                        "digest": format!("sha256:{}", kfleet::fsio::hex(&sha2::Sha256::digest(&body))),
                        "browser_download_url": "https://ghe.example.com/acme/kdriver/releases/download/v1.0.0/kdriver.tar.xz"
                    })),
                )
            }),
        )
;
    let (addr, seen) = recording_server(app).await;
    let client = GithubClient::new(
        &format!("http://{addr}/api/v3"),
        REPO.parse().unwrap(),
        TOKEN.into(),
        fast_policy(),
        None,
    )
    .unwrap();
    let asset = client
        .upload_asset(
            "v1.0.0",
            "kdriver.tar.xz",
            bytes::Bytes::from_static(b"abc"),
        )
        .await
        .unwrap();
    assert_eq!(asset.name, "kdriver.tar.xz");
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.contains(&"POST /api/uploads/repos/acme/kdriver/releases/5/assets".to_string()),
        "{seen:?}"
    );
    assert!(!seen.iter().any(|s| s.contains("/api/v3/api/")), "{seen:?}");
}

/// An upload GitHub answers with another name, size or digest than what was sent is deleted
/// and fails; one into an immutable release is refused before anything is sent.
#[tokio::test]
async fn uploads_are_verified_and_immutable_releases_refused() {
    use axum::routing::{delete, get, post};
    let app = axum::Router::new()
        .route(
            "/repos/acme/kdriver/releases/tags/v1.0.0",
            get(|| async { axum::Json(serde_json::json!({"id": 5})) }),
        )
        .route(
            "/repos/acme/kdriver/releases/tags/v2.0.0",
            get(|| async { axum::Json(serde_json::json!({"id": 6, "immutable": true})) }),
        )
        .route(
            "/repos/acme/kdriver/releases/5/assets",
            get(|| async { axum::Json(serde_json::json!([])) }).post(|| async {
                (
                    axum::http::StatusCode::CREATED,
                    axum::Json(serde_json::json!({
                        "id": 9, "name": "other.tar.xz", "size": 1024,
                        "digest": "sha256:1111111111111111111111111111111111111111111111111111111111111111"
                    })),
                )
            }),
        )
        .route(
            "/repos/acme/kdriver/releases/assets/9",
            delete(|| async { axum::http::StatusCode::NO_CONTENT }),
        )
        .route(
            "/repos/acme/kdriver/releases/6/assets",
            post(|| async { axum::http::StatusCode::CREATED }),
        )
;
    let (addr, seen) = recording_server(app).await;
    let client = GithubClient::new(
        &format!("http://{addr}"),
        REPO.parse().unwrap(),
        TOKEN.into(),
        fast_policy(),
        None,
    )
    .unwrap();
    let err = client
        .upload_asset(
            "v1.0.0",
            "kdriver.tar.xz",
            bytes::Bytes::from_static(b"abc"),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("its name is 'other.tar.xz'"), "{err}");
    assert!(
        err.contains("its size is 1024, not the 3 bytes sent"),
        "{err}"
    );
    assert!(err.contains("its digest is sha256:1111"), "{err}");
    assert!(err.contains("it was deleted"), "{err}");
    assert!(
        seen.lock()
            .unwrap()
            .contains(&"DELETE /repos/acme/kdriver/releases/assets/9".to_string())
    );

    let err = client
        .upload_asset(
            "v2.0.0",
            "kdriver.tar.xz",
            bytes::Bytes::from_static(b"abc"),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("release v2.0.0 is immutable"), "{err}");
    assert!(
        !seen
            .lock()
            .unwrap()
            .iter()
            .any(|s| s.starts_with("POST /repos/acme/kdriver/releases/6")),
        "nothing was sent"
    );
}

/// Base64url without padding, as JWTs use it.
fn base64url(s: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        b'_' => 63,
        _ => panic!("not base64url: {c}"),
    };
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes() {
        acc = (acc << 6) | u32::from(value(c));
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// Checks a GitHub App JWT as GitHub does: RS256 by the App's key (openssl verifies the signature
/// with the public key), `iss` the App id, issued in the past, valid at most 10 minutes.
fn app_jwt_ok(authorization: Option<&str>, public_key: &Path, app_id: u64) -> Result<(), String> {
    let jwt = authorization
        .and_then(|a| a.strip_prefix("Bearer "))
        .ok_or("no bearer JWT")?;
    let parts: Vec<&str> = jwt.split('.').collect();
    if parts.len() != 3 {
        return Err("not a JWT".into());
    }
    let header: serde_json::Value = serde_json::from_slice(&base64url(parts[0])).unwrap();
    if header["alg"] != "RS256" {
        return Err(format!("alg {}", header["alg"]));
    }
    let claims: serde_json::Value = serde_json::from_slice(&base64url(parts[1])).unwrap();
    let iss_ok = claims["iss"].as_str() == Some(app_id.to_string().as_str())
        || claims["iss"].as_u64() == Some(app_id);
    let now = Utc::now().timestamp();
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    if !iss_ok || iat > now + 5 || exp <= now || exp - iat > 600 {
        return Err(format!("claims {claims}"));
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("input"),
        format!("{}.{}", parts[0], parts[1]),
    )
    .unwrap();
    std::fs::write(dir.path().join("sig"), base64url(parts[2])).unwrap();
    let verified = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(public_key)
        .arg("-signature")
        .arg(dir.path().join("sig"))
        .arg(dir.path().join("input"))
        .output()
        .unwrap();
    if verified.status.success() {
        Ok(())
    } else {
        Err("the JWT's signature does not verify with the App's public key".into())
    }
}

/// `--github-app-id`/`--github-app-key`: kfleet signs the App's JWT, finds the installation on the
/// repository, takes an installation token scoped to it, and calls the API with that token; a
/// token about to expire is replaced by a new one (scoped again) before a call, never sent
/// expired; a key that is not the App's is refused by the fixture (it checks the signature and
/// the claims).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_app_uses_installation_tokens_scoped_to_the_repository() {
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::{get, post};
    let keys = tempfile::tempdir().unwrap();
    let openssl = |args: &[&str]| {
        assert!(
            std::process::Command::new("openssl")
                .args(args)
                .current_dir(keys.path())
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap()
                .success()
        );
    };
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        "app.pem",
    ]);
    openssl(&["pkey", "-in", "app.pem", "-pubout", "-out", "app.pub"]);
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        "other.pem",
    ]);
    let public = keys.path().join("app.pub");
    let app_id = 123_456u64;
    // Tokens the fixture minted, with when each expires; GitHub's live an hour, these 32 s, so
    // the client (which renews within 30 s of the expiry) needs a new one after 2 s.
    let minted = std::sync::Arc::new(std::sync::Mutex::new(
        Vec::<(String, chrono::DateTime<Utc>)>::new(),
    ));
    let scopes = std::sync::Arc::new(std::sync::Mutex::new(Vec::<serde_json::Value>::new()));
    let (pk1, pk2, seen) = (public.clone(), public.clone(), scopes.clone());
    let (mint, valid) = (minted.clone(), minted.clone());
    let user = serde_json::json!({
        "login": "acme", "id": 1, "node_id": "MDQ6VXNlcjE=",
        "avatar_url": "https://github.com/images/error/acme.gif", "gravatar_id": "",
        "url": "https://api.github.com/users/acme", "html_url": "https://github.com/acme",
        "followers_url": "https://api.github.com/users/acme/followers",
        "following_url": "https://api.github.com/users/acme/following{/other_user}",
        "gists_url": "https://api.github.com/users/acme/gists{/gist_id}",
        "starred_url": "https://api.github.com/users/acme/starred{/owner}{/repo}",
        "subscriptions_url": "https://api.github.com/users/acme/subscriptions",
        "organizations_url": "https://api.github.com/users/acme/orgs",
        "repos_url": "https://api.github.com/users/acme/repos",
        "events_url": "https://api.github.com/users/acme/events{/privacy}",
        "received_events_url": "https://api.github.com/users/acme/received_events",
        "type": "Organization", "site_admin": false
    });
    let app = axum::Router::new()
        .route(
            "/repos/acme/kdriver/installation",
            get(move |headers: HeaderMap| {
                let (public, user) = (pk1.clone(), user.clone());
                async move {
                    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
                    if let Err(why) = app_jwt_ok(auth, &public, app_id) {
                        return (StatusCode::UNAUTHORIZED, axum::Json(serde_json::json!({"message": why})));
                    }
                    (
                        StatusCode::OK,
                        axum::Json(serde_json::json!({
                            "id": 77, "account": user, "app_id": app_id, "target_id": 1,
                            "target_type": "Organization",
                            "access_tokens_url": "https://api.github.com/app/installations/77/access_tokens",
                            "repositories_url": "https://api.github.com/installation/repositories",
                            "html_url": "https://github.com/organizations/acme/settings/installations/77",
                            "permissions": {"actions": "write", "contents": "write", "metadata": "read"},
                            "events": ["workflow_run"], "repository_selection": "selected",
                            "single_file_name": null,
                            "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"
                        })),
                    )
                }
            }),
        )
        .route(
            "/app/installations/77/access_tokens",
            post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let (public, seen, mint) = (pk2.clone(), seen.clone(), mint.clone());
                async move {
                    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
                    if let Err(why) = app_jwt_ok(auth, &public, app_id) {
                        return (StatusCode::UNAUTHORIZED, axum::Json(serde_json::json!({"message": why})));
                    }
                    seen.lock()
                        .unwrap()
                        .push(serde_json::from_slice(&body).unwrap_or_default());
                    let mut minted = mint.lock().unwrap();
                    let token = format!("ghs_installationTOKEN{}abcdef0123456789", minted.len());
                    let expires_at = Utc::now() + Duration::seconds(32);
                    minted.push((token.clone(), expires_at));
                    (
                        StatusCode::CREATED,
                        axum::Json(serde_json::json!({
                            "token": token,
                            "expires_at": expires_at.to_rfc3339(),
                            "permissions": {"actions": "write", "contents": "write"},
                            "repository_selection": "selected"
                        })),
                    )
                }
            }),
        )
        .route(
            "/repos/acme/kdriver/releases",
            get(move |headers: HeaderMap| {
                let valid = valid.clone();
                async move {
                    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
                    let token = auth.and_then(|a| a.strip_prefix("Bearer ").or_else(|| a.strip_prefix("token ")));
                    let live = valid
                        .lock()
                        .unwrap()
                        .iter()
                        .any(|(t, expires)| Some(t.as_str()) == token && *expires > Utc::now());
                    if !live {
                        return (StatusCode::UNAUTHORIZED, r#"{"message":"Bad credentials"}"#.to_string());
                    }
                    (StatusCode::OK, "[]".to_string())
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let api = format!("http://{addr}");

    let key = std::fs::read(keys.path().join("app.pem")).unwrap();
    let client = GithubClient::new_app(
        &api,
        REPO.parse().unwrap(),
        app_id,
        &key,
        fast_policy(),
        None,
    )
    .await
    .unwrap();
    let listing = client.list_releases().await.unwrap();
    assert!(listing.releases.is_empty());
    assert!(client.list_releases().await.is_ok());
    assert_eq!(
        minted.lock().unwrap().len(),
        1,
        "one token while it is fresh"
    );

    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let listing = client.list_releases().await.unwrap();
    assert!(listing.releases.is_empty());
    let scopes = scopes.lock().unwrap().clone();
    assert_eq!(scopes.len(), 2, "a token near its expiry is renewed");
    for scope in &scopes {
        assert_eq!(
            scope["repositories"],
            serde_json::json!(["kdriver"]),
            "{scopes:?}"
        );
    }

    // Another key is not the App's: the installation lookup is refused, with the reason.
    let refused = |key: Vec<u8>| {
        let api = api.clone();
        async move {
            GithubClient::new_app(
                &api,
                REPO.parse().unwrap(),
                app_id,
                &key,
                fast_policy(),
                None,
            )
            .await
            .err()
            .unwrap()
            .to_string()
        }
    };
    let err = refused(std::fs::read(keys.path().join("other.pem")).unwrap()).await;
    assert!(err.contains("installation"), "{err}");
    let err = refused(b"not a key".to_vec()).await;
    assert!(err.contains("not an RSA private key in PEM"), "{err}");
}

/// Serves `app` on 127.0.0.1, recording each request's method and path; returns its address and
/// the record.
async fn recording_server(
    app: axum::Router,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log = seen.clone();
    let app = app.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let log = log.clone();
            async move {
                log.lock()
                    .unwrap()
                    .push(format!("{} {}", req.method(), req.uri().path()));
                next.run(req).await
            }
        },
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, seen)
}
