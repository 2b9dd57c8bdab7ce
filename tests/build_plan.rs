//! Build plans (`kfleet build-plan`, `assets/build-environments.toml`) for every real kernel in
//! the fixtures, and the archived-release and compiler cases named explicitly.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or benchmark stops at the first surprise

use assert_cmd::Command;
use kfleet::buildenv::{Digests, Planned, plan};
use kfleet::headers::Chain;
use kfleet::identity::{Distribution, KernelIdentity};
use std::path::Path;

fn fixture_identities() -> Vec<KernelIdentity> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut ids = Vec::new();
    for file in ["real-kernels.csv", "edge-kernels.csv"] {
        let mut reader = csv::Reader::from_path(dir.join(file)).unwrap();
        for row in reader.records() {
            let row = row.unwrap();
            if let Ok(id) = KernelIdentity::parse(&row[0], &row[1], &row[2], &row[3]) {
                ids.push(id);
            }
        }
    }
    ids
}

/// Every valid identity of the fixtures has a plan with an image, install commands and the
/// header packages the chain fetches, or is unsupported with a reason; every family the header
/// chain serves is planned.
#[test]
fn every_real_kernel_has_a_plan_or_a_reason() {
    let chain = Chain::builtin();
    let ids = fixture_identities();
    assert!(ids.len() > 400, "{}", ids.len());
    let (mut planned, mut unsupported) = (0, Vec::new());
    for id in &ids {
        match plan(id, &chain, &Digests::default()) {
            Planned::Plan(p) => {
                planned += 1;
                assert!(p.image.contains(':'), "{id}: {}", p.image);
                assert!(
                    !p.install_toolchain.is_empty() && !p.install_headers.is_empty(),
                    "{id}"
                );
                let served = kfleet::headers::plan(&chain, id)
                    .iter()
                    .any(|s| s.problem.is_none() && !s.packages.is_empty());
                if served {
                    assert!(!p.header_packages.is_empty(), "{id}: no header packages");
                } else {
                    assert!(
                        p.notes
                            .iter()
                            .any(|n| n.contains("the header chain has no source")),
                        "{id}: {:?}",
                        p.notes
                    );
                }
                let env = p.to_env();
                assert!(env.lines().all(|l| l.starts_with("KFLEET_")), "{id}: {env}");
                assert!(env.contains(&format!("KFLEET_IDENTITY={}\n", id.key())));
            }
            Planned::Unsupported { reason, .. } => {
                assert!(reason.len() > 20, "{id}: '{reason}'");
                unsupported.push((id.key(), reason));
            }
        }
    }
    for (key, reason) in &unsupported {
        let family = key.split('/').next().unwrap();
        assert!(
            family == "rhel" || key.starts_with("centos/6/"),
            "{key} has a header chain but no build plan: {reason}"
        );
    }
    assert!(
        planned as f64 > ids.len() as f64 * 0.95,
        "{planned} of {}",
        ids.len()
    );
    for family in [
        Distribution::Ubuntu,
        Distribution::Debian,
        Distribution::Fedora,
        Distribution::Centos,
        Distribution::Amazonlinux,
        Distribution::Almalinux,
        Distribution::Rocky,
    ] {
        assert!(
            ids.iter()
                .filter(|id| id.distribution == family)
                .any(|id| matches!(plan(id, &chain, &Digests::default()), Planned::Plan(_))),
            "{family:?}"
        );
    }
}

fn kfleet() -> Command {
    let mut c = Command::cargo_bin("kfleet").unwrap();
    c.env("XDG_CONFIG_HOME", "/nonexistent")
        .env_remove("KFLEET_HEADER_SOURCES");
    c
}

#[test]
fn the_plan_names_the_archive_the_vault_and_the_kernels_compiler() {
    let text = |key: &str| {
        let out = kfleet().args(["build-plan", key]).assert().success();
        String::from_utf8_lossy(&out.get_output().stdout).into_owned()
    };
    let al2 = text("amazonlinux/2/x86_64/5.10.215-203.850.amzn2.x86_64");
    assert!(
        al2.contains("image         docker.io/library/amazonlinux:2 (tag, not pinned)"),
        "{al2}"
    );
    assert!(al2.contains("gcc 10 (gcc10-gcc from gcc10)"), "{al2}");
    assert!(al2.contains("kernel's gcc  10"), "{al2}");
    assert!(
        al2.contains("headers       kernel-devel-5.10.215-203.850.amzn2.x86_64 kernel-headers-5.10.215-203.850.amzn2.x86_64"),
        "{al2}"
    );
    let buster = text("debian/10/x86_64/4.19.0-27-amd64");
    assert!(
        buster.contains("archive.debian.org/debian buster main"),
        "{buster}"
    );
    let c7 = text("centos/7/x86_64/3.10.0-1160.119.1.el7.x86_64");
    assert!(c7.contains("vault.centos.org/7.9.2009"), "{c7}");
    let hwe = text("ubuntu/22.04/x86_64/6.8.0-40-generic");
    assert!(hwe.contains("builds 6.8 kernels with gcc 12"), "{hwe}");
    assert!(hwe.contains("linux-headers-6.8.0-40-generic"), "{hwe}");

    let env = kfleet()
        .args([
            "build-plan",
            "debian/12/x86_64/6.1.0-18-amd64",
            "--format",
            "env",
        ])
        .assert()
        .success();
    let env = String::from_utf8_lossy(&env.get_output().stdout).into_owned();
    assert!(
        env.contains("KFLEET_IMAGE=docker.io/library/debian:12\n"),
        "{env}"
    );
    assert!(env.contains("KFLEET_COMPILERS=12=gcc-12:gcc-12\n"), "{env}");

    let json = kfleet()
        .args([
            "build-plan",
            "debian/14/x86_64/6.16.3+deb14-amd64",
            "-f",
            "json",
        ])
        .assert()
        .code(1);
    let out = json.get_output();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verdict"], "unsupported");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "unsupported: debian/14/x86_64/6.16.3+deb14-amd64: no build environment for debian 14: add one to assets/build-environments.toml"
        )
    );
}

/// The gcc the plan expects for Ubuntu 22.04's HWE and cloud kernels is the one their own headers
/// name: CONFIG_CC_VERSION_TEXT recorded from the real packages of archive.ubuntu.com.
#[test]
fn ubuntu_22_04_plans_expect_the_gcc_the_real_headers_name() {
    let recorded = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/ubuntu-22.04-kernel-compilers.csv"),
    )
    .unwrap();
    let mut wrong = Vec::new();
    let mut checked = 0;
    for line in recorded.lines().filter(|l| !l.starts_with('#')) {
        let (kernel, text) = line.split_once(',').unwrap();
        let real = text
            .split_once("-linux-gnu-gcc-")
            .and_then(|(_, rest)| rest.split_once(' '))
            .map(|(major, _)| major)
            .unwrap_or_else(|| panic!("no gcc major in {text}"));
        let out = kfleet()
            .args([
                "build-plan",
                &format!("ubuntu/22.04/x86_64/{kernel}"),
                "--format",
                "env",
            ])
            .assert()
            .success();
        let env = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
        let expected = env
            .lines()
            .find_map(|l| l.strip_prefix("KFLEET_EXPECTED_GCC="))
            .unwrap_or("");
        if expected != real {
            wrong.push(format!("{kernel}: plan {expected:?}, headers gcc-{real}"));
        }
        checked += 1;
    }
    assert!(checked >= 20, "{checked} kernels recorded");
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// A registry on 127.0.0.1 speaking the distribution API as Docker Hub does: a 401 with a bearer
/// challenge, a token service, then the manifest's digest for the token's scope.
struct Registry {
    url: String,
    _rt: tokio::runtime::Runtime,
}

const DEBIAN_DIGEST: &str =
    "sha256:0d8498a0e9e6a60011df39aab78534cfe940785e7c59d19dfae1eb53ea59babe";
const AL2_DIGEST: &str = "sha256:1f2bb6d5cd7c6a9f3bb4c3b8b7b0a96a4f1c2f6a1a0b9c8d7e6f5a4b3c2d1e0f";

fn registry(bad_digest: bool) -> Registry {
    use axum::http::{HeaderMap, StatusCode, Uri};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let realm = format!("{url}/token");
    let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
        let realm = realm.clone();
        async move {
            let path = uri.path().to_string();
            if path == "/token" {
                let query = uri.query().unwrap_or("");
                assert!(query.contains("service=registry.example"), "{query}");
                let scope = query.split("scope=").nth(1).unwrap_or("").to_string();
                return (StatusCode::OK, HeaderMap::new(), format!("{{\"token\":\"t:{scope}\"}}"));
            }
            let Some(rest) = path.strip_prefix("/v2/") else {
                return (StatusCode::NOT_FOUND, HeaderMap::new(), String::new());
            };
            let (repo, tag) = rest.split_once("/manifests/").unwrap();
            let scope = format!("repository%3A{}%3Apull", repo.replace('/', "%2F"));
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let mut out = HeaderMap::new();
            if auth != format!("Bearer t:{scope}") {
                out.insert(
                    "www-authenticate",
                    format!("Bearer realm=\"{realm}\",service=\"registry.example\",scope=\"repository:{repo}:pull\"")
                        .parse()
                        .unwrap(),
                );
                return (StatusCode::UNAUTHORIZED, out, String::new());
            }
            let accept = headers.get("accept").and_then(|v| v.to_str().ok()).unwrap_or("");
            assert!(accept.contains("application/vnd.oci.image.index.v1+json"), "{accept}");
            let digest = match (repo, tag) {
                ("library/debian", "12") if bad_digest => "md5:1234",
                ("library/debian", "12") => DEBIAN_DIGEST,
                ("library/amazonlinux", "2") => AL2_DIGEST,
                _ => return (StatusCode::NOT_FOUND, out, String::new()),
            };
            out.insert("docker-content-digest", digest.parse().unwrap());
            (StatusCode::OK, out, String::new())
        }
    });
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    Registry { url, _rt: rt }
}

/// `kfleet images pin` reads each image's digest through the token challenge and writes the
/// digests file; `build-plan --digests` then names image@digest; a tag the registry lacks and a
/// digest that is not sha256 are errors naming the image, and leave the file as it was.
#[test]
fn images_are_pinned_from_the_registry_and_the_plan_uses_the_digest() {
    let reg = registry(false);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("image-digests.toml");
    let pin = |reg: &Registry, keys: &[&str]| {
        let mut c = kfleet();
        c.args(["images", "pin", "--out"])
            .arg(&file)
            .args(["--registry", &format!("docker.io={}", reg.url)]);
        for k in keys {
            c.args(["--identity", k]);
        }
        c.assert()
    };
    let debian = "debian/12/x86_64/6.1.0-18-amd64";
    let al2 = "amazonlinux/2/x86_64/5.10.215-203.850.amzn2.x86_64";
    pin(&reg, &[debian, "debian/12/x86_64/6.1.0-17-amd64", al2]).success();
    let written = std::fs::read_to_string(&file).unwrap();
    assert!(
        written.contains(&format!(
            "\"docker.io/library/debian:12\" = \"{DEBIAN_DIGEST}\""
        )),
        "{written}"
    );
    assert!(written.contains(AL2_DIGEST), "{written}");

    let shown = kfleet()
        .args(["build-plan", debian, "--digests"])
        .arg(&file)
        .assert()
        .success();
    let shown = String::from_utf8_lossy(&shown.get_output().stdout).into_owned();
    assert!(
        shown.contains(&format!(
            "image         docker.io/library/debian:12@{DEBIAN_DIGEST}\n"
        )),
        "{shown}"
    );
    let env = kfleet()
        .args(["build-plan", al2, "--format", "env", "--digests"])
        .arg(&file)
        .assert()
        .success();
    let env = String::from_utf8_lossy(&env.get_output().stdout).into_owned();
    assert!(
        env.contains(&format!(
            "KFLEET_IMAGE=docker.io/library/amazonlinux:2@{AL2_DIGEST}\n"
        )),
        "{env}"
    );

    let missing = pin(&reg, &["ubuntu/22.04/x86_64/5.15.0-91-generic"]).code(1);
    let stderr = String::from_utf8_lossy(&missing.get_output().stderr).into_owned();
    assert!(
        stderr.contains("docker.io/library/ubuntu:22.04")
            && stderr.contains("no such image or tag (404)"),
        "{stderr}"
    );
    let bad = registry(true);
    let refused = pin(&bad, &[debian]).code(1);
    let stderr = String::from_utf8_lossy(&refused.get_output().stderr).into_owned();
    assert!(
        stderr.contains("gave no sha256 digest (Docker-Content-Digest: 'md5:1234')"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        written,
        "the file is unchanged"
    );

    std::fs::write(
        &file,
        "[digests]\n\"docker.io/library/debian:12\" = \"latest\"\n",
    )
    .unwrap();
    let damaged = kfleet()
        .args(["build-plan", debian, "--digests"])
        .arg(&file)
        .assert()
        .code(1);
    let stderr = String::from_utf8_lossy(&damaged.get_output().stderr).into_owned();
    assert!(
        stderr.contains("a digest is sha256: and 64 lowercase hex digits"),
        "{stderr}"
    );
}

/// A token realm that never stops sending is cut off at 64 KiB (the body is read with a cap,
/// not whole and then measured), and one that announces gigabytes is refused before reading.
#[test]
fn a_token_service_that_sends_without_end_is_cut_off() {
    use axum::http::{HeaderMap, StatusCode, Uri};
    use axum::response::IntoResponse;
    for announced in [false, true] {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let realm = format!("{url}/token");
        let app = axum::Router::new().fallback(move |uri: Uri| {
            let realm = realm.clone();
            async move {
                if uri.path() == "/token" {
                    let endless = futures_util::stream::unfold((), |()| async {
                        Some((
                            Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'a'; 1 << 16])),
                            (),
                        ))
                    });
                    let mut response = axum::body::Body::from_stream(endless).into_response();
                    if announced {
                        response
                            .headers_mut()
                            .insert("content-length", "3000000000".parse().unwrap());
                    }
                    return response;
                }
                let mut out = HeaderMap::new();
                out.insert(
                    "www-authenticate",
                    format!("Bearer realm=\"{realm}\",service=\"registry.example\"")
                        .parse()
                        .unwrap(),
                );
                (StatusCode::UNAUTHORIZED, out).into_response()
            }
        });
        rt.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("timeout")
            .arg("60")
            .arg(env!("CARGO_BIN_EXE_kfleet"))
            .env("XDG_CONFIG_HOME", "/nonexistent")
            .args(["images", "pin", "--out"])
            .arg(dir.path().join("digests.toml"))
            .args(["--registry", &format!("docker.io={url}")])
            .args(["--identity", "debian/12/x86_64/6.1.0-18-amd64"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("is over 64 KiB"), "{stderr}");
    }
}

/// Debian's and Ubuntu's kernels as their archives listed them in December 2026
/// (`tests/fixtures/archive-kernels.csv`, recorded by `record_archive_kernels.py` beside it: the
/// oldest and newest kernel of every release, suite, architecture and flavour, backports and
/// security included): each is a valid identity, has a build plan that fetches its own
/// `linux-headers-KERNEL`, and the header chain asks the suite it was listed in. A release the
/// main archive still serves is never sent only to old-releases.
#[test]
fn the_archives_kernels_of_late_2026_are_valid_planned_and_asked_where_they_are() {
    let chain = Chain::builtin();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/archive-kernels.csv");
    let mut reader = csv::Reader::from_path(path).unwrap();
    let mut checked = 0;
    for row in reader.records() {
        let row = row.unwrap();
        let (distribution, version, arch, kernel, suite) =
            (&row[0], &row[1], &row[2], &row[3], &row[4]);
        let id = KernelIdentity::parse(distribution, version, arch, kernel)
            .unwrap_or_else(|e| panic!("{distribution}/{version}/{arch}/{kernel}: {e}"));
        let Planned::Plan(p) = plan(&id, &chain, &Digests::default()) else {
            panic!("{id}: no plan");
        };
        assert_eq!(
            p.header_packages,
            [format!("linux-headers-{kernel}")],
            "{id}"
        );
        let asks = kfleet::headers::plan(&chain, &id)
            .iter()
            .filter(|s| s.problem.is_none())
            .flat_map(|s| s.urls.clone())
            .any(|u| u.contains(&format!("/dists/{suite}/")));
        assert!(asks, "{id}: no source asks dists/{suite}/");
        assert!(
            !p.setup
                .iter()
                .chain([&p.install_toolchain])
                .any(|c| c.starts_with("for f in") && c.contains("old-releases")),
            "{id}: sent to old-releases though {suite} is on the main archive: {p:?}"
        );
        checked += 1;
    }
    assert!(checked > 250, "{checked}");
}
