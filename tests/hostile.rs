//! Hostile input and a hostile network, through the binary: a fake build service that names its
//! own files, sends too much or fails, a working-directory config that points the token
//! elsewhere, compression bombs, escape sequences and formulas in inventories, and flags a
//! command would ignore.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or benchmark stops at the first surprise

use assert_cmd::Command;
use sha2::Digest;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

const TOKEN: &str = "node-token-0123456789abcdef";
const KERNEL: &str = "6.1.66-91.160.amzn2023.x86_64";
const NAME: &str = "kdriver-v1.1.0-amazonlinux-2023-x86_64-6.1.66-91.160.amzn2023.x86_64.tar.xz";

fn kfleet() -> Command {
    let mut cmd = Command::cargo_bin("kfleet").unwrap();
    cmd.env("XDG_CONFIG_HOME", "/nonexistent")
        .env_remove("GITHUB_TOKEN")
        .env_remove("GH_TOKEN")
        .env_remove("KFLEET_CONFIG");
    cmd
}

/// A fake build service on 127.0.0.1: `POST /build` says available with `download_url` ending in
/// `file_name`; the download answers 503 `flaky` times, then `payload`.
struct FakeService {
    url: String,
    downloads: Arc<AtomicU32>,
    _rt: tokio::runtime::Runtime,
}

fn fake_service(file_name: &'static str, payload: Vec<u8>, flaky: u32) -> FakeService {
    fake_service_answering(file_name, payload, flaky, 503)
}

/// [`fake_service`] whose first `flaky` downloads answer `status`.
fn fake_service_answering(
    file_name: &'static str,
    payload: Vec<u8>,
    flaky: u32,
    status: u16,
) -> FakeService {
    use axum::http::StatusCode;
    use axum::routing::{get, post};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let digest = kfleet::fsio::hex(&sha2::Sha256::digest(&payload));
    let downloads = Arc::new(AtomicU32::new(0));
    let base = url.clone();
    let counter = downloads.clone();
    let payload = Arc::new(payload);
    let app = axum::Router::new()
        .route(
            "/build",
            post(move || {
                let body = serde_json::json!({
                    "status": "available",
                    "download_url": format!("{base}/files/{file_name}"),
                    "sha256": digest,
                });
                async move { axum::Json(body) }
            }),
        )
        .route(
            "/files/{name}",
            get(move || {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let payload = payload.clone();
                async move {
                    if n < flaky {
                        (StatusCode::from_u16(status).unwrap(), Vec::new())
                    } else {
                        (StatusCode::OK, payload.to_vec())
                    }
                }
            }),
        );
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    FakeService {
        url,
        downloads,
        _rt: rt,
    }
}

fn ensure(service: &str, out: &Path) -> Command {
    let mut cmd = kfleet();
    cmd.env("KFLEET_SERVICE_TOKEN", TOKEN)
        .args(["ensure", "--service", service, "--driver-version", "v1.1.0"])
        .args(["--deadline", "20s", "--distribution", "amazonlinux"])
        .args(["--distro-version", "2023", "--architecture", "x86_64"])
        .args(["--kernel-version", KERNEL, "--out"])
        .arg(out);
    cmd
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn ensure_names_the_file_itself_and_retries_a_flaky_download() {
    let fake = fake_service("authorized_keys", b"ssh-ed25519 AAAA attacker".to_vec(), 2);
    let out = tempfile::tempdir().unwrap();
    let run = ensure(&fake.url, out.path()).output().unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(files_in(out.path()), [NAME], "never the server's file name");
    assert_eq!(
        String::from_utf8_lossy(&run.stdout).trim(),
        out.path().join(NAME).display().to_string()
    );
    assert_eq!(
        fake.downloads.load(Ordering::SeqCst),
        3,
        "two 503s, then the file"
    );
}

/// While an upload is being replaced its download is a 404 for a moment: `ensure` asks again
/// until the deadline instead of giving up. What killed downloads left in `--out` is removed;
/// one another `ensure` is writing now is not.
#[test]
fn ensure_waits_out_an_asset_being_replaced_and_clears_stale_downloads() {
    let fake = fake_service_answering("x.tar.xz", b"the package".to_vec(), 2, 404);
    let out = tempfile::tempdir().unwrap();
    let stale = out.path().join(".kfleet-download-AbC123");
    let fresh = out.path().join(".kfleet-download-XyZ789");
    std::fs::write(&stale, vec![0u8; 4096]).unwrap();
    std::fs::write(&fresh, b"being written").unwrap();
    assert!(
        std::process::Command::new("touch")
            .args(["-d", "1 hour ago"])
            .arg(&stale)
            .status()
            .unwrap()
            .success()
    );
    let run = ensure(&fake.url, out.path()).output().unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert_eq!(fake.downloads.load(Ordering::SeqCst), 3, "{stderr}");
    assert!(stderr.contains("404"), "{stderr}");
    assert_eq!(files_in(out.path()), [".kfleet-download-XyZ789", NAME]);
    assert_eq!(
        std::fs::read(out.path().join(NAME)).unwrap(),
        b"the package"
    );
}

/// An asset template is a file name on the node: a working-directory kfleet.toml cannot set
/// it (nor the state directory), and one that would leave `--out` is refused wherever it comes
/// from.
#[test]
fn an_asset_template_cannot_write_outside_out() {
    let fake = fake_service("x.tar.xz", b"the package".to_vec(), 0);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::write(
        dir.path().join("kfleet.toml"),
        "asset_template = \"../../escaped-{module}-{driver_version}-{distribution}-{distro_version}-{architecture}-{kernel_version}\"\nstate_dir = \"/tmp/elsewhere\"\n",
    )
    .unwrap();
    let run = ensure(&fake.url, &out)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(stderr.contains("ignoring asset_template"), "{stderr}");
    assert!(stderr.contains("ignoring state_dir"), "{stderr}");
    assert_eq!(files_in(&out), [NAME]);
    assert!(
        !dir.path()
            .parent()
            .unwrap()
            .join("escaped-kdriver")
            .exists()
    );

    let run = ensure(&fake.url, &out)
        .args(["--asset-template", "../{module}-{driver_version}-{distribution}-{distro_version}-{architecture}-{kernel_version}"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("must make a plain file name"), "{stderr}");
}

#[test]
fn ensure_refuses_a_download_over_the_cap_and_keeps_nothing() {
    let fake = fake_service("x.tar.xz", vec![7u8; 3 << 20], 0);
    let out = tempfile::tempdir().unwrap();
    let run = ensure(&fake.url, out.path())
        .args(["--max-download", "1"])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("larger than 1048576 bytes"), "{stderr}");
    assert!(
        files_in(out.path()).is_empty(),
        "{:?}",
        files_in(out.path())
    );
}

#[test]
fn ensure_talks_https_unless_the_service_is_on_loopback() {
    let out = tempfile::tempdir().unwrap();
    let run = ensure("http://kfleet.example.invalid:8080", out.path())
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("plain http to a host that is not loopback")
            && stderr.contains("--insecure-http"),
        "{stderr}"
    );
}

/// A kfleet.toml that came with a checkout cannot send the GitHub token to its own host.
#[test]
fn a_working_directory_config_cannot_redirect_the_token() {
    let seen = Arc::new(AtomicU32::new(0));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let counter = seen.clone();
    let app = axum::Router::new().fallback(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        async { "[]" }
    });
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("kfleet.toml"),
        format!("api_url = \"{url}\"\nrepo = \"evil/kdriver\"\n"),
    )
    .unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let run = kfleet()
        .current_dir(dir.path())
        .env("GITHUB_TOKEN", "ghp_mustNOTleave0123456789")
        .args(["report", "-i"])
        .arg(fixtures.join("small-fleet.csv"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("ignoring api_url"), "{stderr}");
    assert!(stderr.contains("no release listing"), "{stderr}");
    assert_eq!(
        seen.load(Ordering::SeqCst),
        0,
        "no request reached the config's host"
    );

    // Named explicitly, the same file is trusted (it is on loopback).
    let run = kfleet()
        .current_dir(dir.path())
        .env("GITHUB_TOKEN", "ghp_mustNOTleave0123456789")
        .args(["--config", "kfleet.toml", "report", "-i"])
        .arg(fixtures.join("small-fleet.csv"))
        .output()
        .unwrap();
    assert!(
        seen.load(Ordering::SeqCst) > 0,
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

#[test]
fn the_github_token_is_only_sent_over_https() {
    let run = kfleet()
        .env("GITHUB_TOKEN", "ghp_mustNOTleave0123456789")
        .args([
            "runs",
            "--repo",
            "acme/kdriver",
            "--api-url",
            "http://ghe.example.invalid/api/v3",
        ])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("only sent over https://"), "{stderr}");
    assert!(!stderr.contains("ghp_mustNOT"), "{stderr}");
}

/// A small gzip file that expands a thousandfold is refused quickly, naming the file: a single
/// endless line (zeros), and endless empty lines.
#[test]
fn gzip_bomb_inventories_are_refused_with_the_file_named() {
    use std::io::Write;
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for (name, byte) in [("zeros.csv.gz", 0u8), ("newlines.csv.gz", b'\n')] {
        let dir = tempfile::tempdir().unwrap();
        let bomb = dir.path().join(name);
        let mut gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&bomb).unwrap(),
            flate2::Compression::default(),
        );
        gz.write_all(b"node,distribution,distro_version,architecture,kernel_version\n")
            .unwrap();
        let block = vec![byte; 1 << 20];
        for _ in 0..100 {
            gz.write_all(&block).unwrap();
        }
        gz.finish().unwrap();
        assert!(std::fs::metadata(&bomb).unwrap().len() < 1 << 20);
        let started = std::time::Instant::now();
        let run = kfleet()
            .args(["report", "-i"])
            .arg(&bomb)
            .arg("-r")
            .arg(fixtures.join("small-releases.json"))
            .output()
            .unwrap();
        assert_eq!(run.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(stderr.contains(name), "{stderr}");
        assert!(stderr.contains("refusing it"), "{stderr}");
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
    }
}

/// Raw strings from an inventory reach a terminal, a Markdown comment and a spreadsheet: no
/// escape sequences, no broken tables, no formulas.
#[test]
fn inventory_strings_cannot_drive_terminals_markdown_or_spreadsheets() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = dir.path().join("fleet.csv");
    std::fs::write(
        &fleet,
        "node,distribution,distro_version,architecture,kernel_version\n\
         n1,\"=HYPERLINK(\"\"http://x\"\")\",22.04,x86_64,5.15.0-91-generic\n\
         n2,ubuntu,22.04,x86_64,\"5.15.0-1-generic\x1b[2J\x1b]0;pwned\x07\"\n\
         n3,ubuntu,22.04,x86_64,\"5.15.0|<img src=x>|\"\n",
    )
    .unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let report = |format: &str| {
        let run = kfleet()
            .args(["report", "-i"])
            .arg(&fleet)
            .arg("-r")
            .arg(fixtures.join("small-releases.json"))
            .args(["--format", format, "--limit", "0"])
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        String::from_utf8(run.stdout).unwrap()
    };
    let table = report("table");
    assert!(
        !table.contains('\x1b') && !table.contains('\x07'),
        "{table:?}"
    );
    assert!(table.contains("5.15.0-1-generic?[2J?]0;pwned?"), "{table}");
    let csv = report("csv");
    assert!(csv.contains("\"'=hyperlink("), "{csv}");
    assert!(!csv.contains('\x1b'));
    let md = report("markdown");
    assert!(md.contains("5.15.0\\|\\<img src=x\\>\\|"), "{md}");
    assert!(!md.contains("|<img src=x>|"), "{md}");
    let html = report("html");
    assert!(html.contains("5.15.0|&lt;img src=x&gt;|"), "{html}");
    assert!(!html.contains("<img"), "{html}");
    assert!(!html.contains('\x1b') && !html.contains('\x07'), "{html:?}");
    assert!(
        html.contains("&quot;http://x&quot;") || !html.contains("\"http://x\""),
        "{html}"
    );
}

#[test]
fn formats_a_command_cannot_write_are_refused() {
    for args in [
        &["runs", "-f", "csv"][..],
        &["dispatch", "-f", "markdown", "--identity", "a/b/c/d"][..],
        &[
            "headers",
            "resolve",
            "-f",
            "csv",
            "ubuntu/22.04/x86_64/5.15.0-91-generic",
        ][..],
    ] {
        let run = kfleet().args(args).output().unwrap();
        assert_eq!(run.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(
            stderr.contains("possible values: table, json"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn the_client_rate_must_be_a_finite_rate_above_zero() {
    for bad in ["0", "-1", "inf", "NaN", "fast"] {
        let run = kfleet()
            .args(["serve", "--sandbox", "sample-data"])
            .arg(format!("--client-rate={bad}"))
            .output()
            .unwrap();
        assert_eq!(run.status.code(), Some(2), "{bad}");
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(stderr.contains("is not a rate"), "{bad}: {stderr}");
    }
}
