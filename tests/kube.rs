//! Live Kubernetes inventories through the real kube-rs client against a fixture API server on
//! 127.0.0.1: paged listing, merged contexts, the same identities as the NodeList file, clear
//! errors; and, in the dashboard, a watch that moves coverage as nodes reboot, reconnects when
//! dropped and relists on 410 Gone.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test stops at the first surprise

#[path = "support/kube.rs"]
mod kube_fixture;

use assert_cmd::Command;
use kube_fixture::{KubeFixture, kubeconfig, node, recorded_nodes};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("sample-data")
        .join(name)
}

/// `kfleet report … -r small-releases.json` with `KUBECONFIG` set; (exit ok, stdout, stderr).
async fn report(kubeconfig: &Path, inventories: &[&str], format: &str) -> (bool, String, String) {
    let mut cmd = Command::cargo_bin("kfleet").unwrap();
    cmd.env("XDG_CONFIG_HOME", "/nonexistent")
        .env("KUBECONFIG", kubeconfig)
        .env_remove("KFLEET_MODULE")
        .arg("report");
    for i in inventories {
        cmd.arg("-i").arg(i);
    }
    cmd.arg("-r")
        .arg(fixture("small-releases.json"))
        .args(["--format", format]);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// (key, nodes, status) of every identity, and the summary's node and bad-row counts.
fn shape(json: &str) -> (Vec<(String, u64, String)>, u64, u64) {
    let r: Value = serde_json::from_str(json).unwrap();
    let ids = r["identities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["key"].as_str().unwrap().to_string(),
                i["nodes"].as_u64().unwrap(),
                i["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (
        ids,
        r["summary"]["nodes"].as_u64().unwrap(),
        r["summary"]["bad_rows"].as_u64().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kube_context_reads_the_same_fleet_as_the_nodelist_file() {
    let recorded = recorded_nodes(&sample("nodes.json"));
    assert_eq!(recorded.len(), 39);
    let eu = KubeFixture::start(recorded.clone()).await;
    let us = KubeFixture::start(recorded).await;
    // Pages of 7: 39 nodes take 6 pages and 5 continue tokens.
    eu.max_page(7);
    let dir = tempfile::tempdir().unwrap();
    let config = kubeconfig(dir.path(), &[("prod-eu", &eu.url), ("prod-us", &us.url)]);

    let file = sample("nodes.json").display().to_string();
    let (ok, from_file, stderr) = report(&config, &[&file], "json").await;
    assert!(ok, "{stderr}");
    let (ok, from_kube, stderr) = report(&config, &["kube:prod-eu"], "json").await;
    assert!(ok, "{stderr}");
    assert_eq!(shape(&from_kube), shape(&from_file));
    assert!(
        stderr.contains(
            "kube:prod-eu: node ip-10-0-9-99.ec2.internal: status.nodeInfo.kernelVersion is missing"
        ),
        "{stderr}"
    );
    let lists = eu.lists();
    assert_eq!(lists.len(), 6, "{lists:?}");
    assert!(
        lists.iter().all(|(limit, _)| *limit == Some(500)),
        "{lists:?}"
    );
    assert_eq!(lists.iter().filter(|(_, cont)| *cont).count(), 5);
    let r: Value = serde_json::from_str(&from_kube).unwrap();
    assert!(
        r["identities"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["contexts"] == serde_json::json!(["prod-eu"])),
        "every identity names its context"
    );

    // The current context is prod-eu.
    let (ok, current, stderr) = report(&config, &["kube:"], "json").await;
    assert!(ok, "{stderr}");
    assert_eq!(shape(&current), shape(&from_file));

    // Two clusters merge; the CSV names both contexts.
    let (ok, both, stderr) = report(&config, &["kube:prod-eu", "kube:prod-us"], "csv").await;
    assert!(ok, "{stderr}");
    let mut lines = both.lines();
    assert!(lines.next().unwrap().ends_with(",contexts"));
    let ubuntu = lines
        .find(|l| l.starts_with("ubuntu,22.04,x86_64,5.15.0-1034-aws,"))
        .unwrap_or_else(|| panic!("{both}"));
    let (ids, _, _) = shape(&from_file);
    let single = ids
        .iter()
        .find(|(k, _, _)| k == "ubuntu/22.04/x86_64/5.15.0-1034-aws")
        .unwrap()
        .1;
    assert!(
        ubuntu.starts_with(&format!(
            "ubuntu,22.04,x86_64,5.15.0-1034-aws,{},",
            single * 2
        )),
        "{ubuntu}"
    );
    assert!(ubuntu.ends_with(",prod-eu prod-us"), "{ubuntu}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_continue_token_lists_again_from_the_start() {
    let nodes: Vec<Value> = (0..25)
        .map(|i| {
            node(
                &format!("n{i:03}"),
                "Ubuntu 22.04.4 LTS",
                "5.15.0-91-generic",
                "amd64",
            )
        })
        .collect();
    let api = KubeFixture::start(nodes).await;
    api.max_page(10);
    let dir = tempfile::tempdir().unwrap();
    let source = kfleet::inventory::kube::KubeSource {
        context: Some("c".into()),
        kubeconfig: Some(kubeconfig(dir.path(), &[("c", &api.url)])),
    };
    // The first page's continue token has expired by the time it is used.
    api.expire_next_continue_token();
    let listed = kfleet::inventory::kube::list(&source, 500).await.unwrap();
    assert_eq!(listed.len(), 25, "no node lost nor counted twice");
    let lists = api.lists();
    let fresh_starts = lists.iter().filter(|(_, cont)| !cont).count();
    assert_eq!(fresh_starts, 2, "the listing started over once: {lists:?}");
    assert_eq!(lists.len(), 2 + 3, "{lists:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_context_or_a_refused_token_is_a_clear_error_without_the_token() {
    let api = KubeFixture::start(vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = kubeconfig(dir.path(), &[("prod-eu", &api.url)]);
    let (ok, _, stderr) = report(&config, &["kube:staging"], "json").await;
    assert!(!ok);
    assert!(stderr.contains("kube:staging"), "{stderr}");
    assert!(stderr.contains("staging"), "{stderr}");

    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(kube_fixture::TOKEN, "a-revoked-token-0123456789");
    std::fs::write(&config, text).unwrap();
    let (ok, _, stderr) = report(&config, &["kube:prod-eu"], "json").await;
    assert!(!ok);
    assert!(
        stderr.contains("cannot list nodes in kube context 'prod-eu'"),
        "{stderr}"
    );
    assert!(stderr.contains("Unauthorized"), "{stderr}");
    assert!(!stderr.contains("a-revoked-token"), "{stderr}");
}

/// Real clusters speak TLS: the kubeconfig's CA is trusted and the listing works; without that
/// CA, or over plain HTTP to the TLS port, it is refused with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_is_read_with_its_ca_and_refused_without_it() {
    let nodes = recorded_nodes(&sample("nodes.json"));
    let dir = tempfile::tempdir().unwrap();
    let (api, ca) = KubeFixture::start_tls(nodes, dir.path()).await;
    assert!(api.url.starts_with("https://127.0.0.1:"));
    let trusted = kube_fixture::kubeconfig_with_ca(dir.path(), &[("tls", &api.url)], Some(&ca));
    let file = sample("nodes.json").display().to_string();
    let (ok, from_file, stderr) = report(&trusted, &[&file], "json").await;
    assert!(ok, "{stderr}");
    let (ok, from_kube, stderr) = report(&trusted, &["kube:tls"], "json").await;
    assert!(ok, "{stderr}");
    assert_eq!(shape(&from_kube), shape(&from_file));

    let other = tempfile::tempdir().unwrap();
    let untrusted = kubeconfig(other.path(), &[("tls", &api.url)]);
    let (ok, _, stderr) = report(&untrusted, &["kube:tls"], "json").await;
    assert!(!ok);
    assert!(
        stderr.contains("cannot list nodes in kube context 'tls'"),
        "{stderr}"
    );
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");

    let plain = kubeconfig(
        other.path(),
        &[("tls", &api.url.replace("https://", "http://"))],
    );
    let (ok, _, stderr) = report(&plain, &["kube:tls"], "json").await;
    assert!(!ok, "plain HTTP to a TLS port lists nothing");
    assert!(
        stderr.contains("cannot list nodes in kube context 'tls'"),
        "{stderr}"
    );
}

/// An API server that answers 503 for a moment is asked again; one that keeps answering 503
/// fails the report in seconds, with the server's reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_api_server_is_asked_again_briefly() {
    let api = KubeFixture::start(recorded_nodes(&sample("nodes.json"))).await;
    let dir = tempfile::tempdir().unwrap();
    let config = kubeconfig(dir.path(), &[("busy", &api.url)]);
    api.refuse_next_lists(2);
    let (ok, out, stderr) = report(&config, &["kube:busy"], "json").await;
    assert!(ok, "{stderr}");
    assert_eq!(shape(&out).1, 38);

    api.refuse_lists(true);
    let started = std::time::Instant::now();
    let (ok, _, stderr) = report(&config, &["kube:busy"], "json").await;
    assert!(!ok);
    assert!(
        stderr.contains("cannot list nodes in kube context 'busy'")
            && stderr.contains(
                "503 ServiceUnavailable: the server is currently unable to handle the request"
            ),
        "{stderr}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

/// A kubeconfig whose cluster says `insecure-skip-tls-verify: true` is refused unless the
/// operator passes `--kube-insecure-skip-tls-verify`, and then read with a warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skipping_tls_verification_needs_the_flag_and_warns() {
    let nodes = recorded_nodes(&sample("nodes.json"));
    let dir = tempfile::tempdir().unwrap();
    let (api, _ca) = KubeFixture::start_tls(nodes, dir.path()).await;
    let other = tempfile::tempdir().unwrap();
    let config = kubeconfig(other.path(), &[("lab", &api.url)]);
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("server: {}\n", api.url),
        &format!("server: {}\n    insecure-skip-tls-verify: true\n", api.url),
    );
    std::fs::write(&config, text).unwrap();
    let run = move |extra: &'static [&'static str]| {
        let mut cmd = Command::cargo_bin("kfleet").unwrap();
        cmd.env("XDG_CONFIG_HOME", "/nonexistent")
            .env("KUBECONFIG", &config)
            .args(extra)
            .args(["report", "-i", "kube:lab", "-r"])
            .arg(fixture("small-releases.json"))
            .args(["--format", "json"]);
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, stderr) = tokio::task::spawn_blocking(move || {
        let refused = run(&[]);
        let allowed = run(&["--kube-insecure-skip-tls-verify"]);
        (refused, allowed)
    })
    .await
    .map(|((ok, refused), allowed)| {
        assert!(!ok, "{refused}");
        assert!(
            refused.contains("sets insecure-skip-tls-verify")
                && refused.contains("--kube-insecure-skip-tls-verify"),
            "{refused}"
        );
        allowed
    })
    .unwrap();
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("not verifying the API server's certificate"),
        "{stderr}"
    );
}

/// An API server on 127.0.0.1 that answers a watch with an event that never ends, and a node
/// list with bytes that never end (or, `list_ok`, an empty list).
async fn endless_api(list_ok: bool) -> String {
    use axum::extract::RawQuery;
    use futures_util::StreamExt;
    let app = axum::Router::new().route(
        "/api/v1/nodes",
        axum::routing::get(move |RawQuery(query): RawQuery| async move {
            let watch = query.unwrap_or_default().contains("watch=true");
            if !watch && list_ok {
                return axum::response::Response::builder()
                    .header("content-type", "application/json")
                    .body(axum::body::Body::from(
                        "{\"kind\":\"NodeList\",\"apiVersion\":\"v1\",\"metadata\":{\"resourceVersion\":\"1\"},\"items\":[]}",
                    ))
                    .unwrap();
            }
            let endless = futures_util::stream::unfold((), |()| async {
                Some((
                    Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b' '; 1 << 16])),
                    (),
                ))
            });
            let head = if watch {
                "{\"type\":\"ADDED\",\"object\":"
            } else {
                "{\"kind\":\"NodeList\",\"apiVersion\":\"v1\",\"metadata\":{},\"items\":["
            };
            let body = futures_util::stream::once(async move {
                Ok::<_, std::io::Error>(bytes::Bytes::from_static(head.as_bytes()))
            })
            .chain(endless);
            axum::response::Response::builder()
                .header("content-type", "application/json")
                .body(axum::body::Body::from_stream(body))
                .unwrap()
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// A list answer and a watch event each have a size cap: an API server that sends without end
/// is an error that says so, not memory without end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_that_sends_without_end_is_cut_off() {
    let url = endless_api(false).await;
    let dir = tempfile::tempdir().unwrap();
    let source = kfleet::inventory::kube::KubeSource {
        context: Some("big".into()),
        kubeconfig: Some(kubeconfig(dir.path(), &[("big", &url)])),
    };
    let err = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        kfleet::inventory::kube::list(&source, 500),
    )
    .await
    .expect("the listing was cut off")
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("an answer over 67108864 bytes"), "{err}");

    // The watch: the list is fine, then an event that never ends.
    let url = endless_api(true).await;
    let dir = tempfile::tempdir().unwrap();
    let source = kfleet::inventory::kube::KubeSource {
        context: Some("big".into()),
        kubeconfig: Some(kubeconfig(dir.path(), &[("big", &url)])),
    };
    let mut updates = kfleet::inventory::kube::watch(vec![source]);
    let mut notices = Vec::new();
    let found = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while let Some(update) = updates.recv().await {
            if let kfleet::inventory::kube::WatchUpdate::Notice(n) = update {
                if n.contains("a watch event over 4194304 bytes") {
                    return true;
                }
                notices.push(n);
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "{notices:?}");
}

/// `kfleet nodes` on a live context: the nodes that run one identity, with their context and
/// labels, as many as `report` counts for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_of_an_identity_come_from_a_live_context_with_their_labels() {
    let eu = KubeFixture::start(recorded_nodes(&sample("nodes.json"))).await;
    eu.max_page(7);
    let dir = tempfile::tempdir().unwrap();
    let config = kubeconfig(dir.path(), &[("prod-eu", &eu.url)]);
    let (ok, from_kube, stderr) = report(&config, &["kube:prod-eu"], "json").await;
    assert!(ok, "{stderr}");
    let (ids, _, _) = shape(&from_kube);
    let (key, nodes, _) = ids[0].clone();
    let mut cmd = Command::cargo_bin("kfleet").unwrap();
    cmd.env("XDG_CONFIG_HOME", "/nonexistent")
        .env("KUBECONFIG", &config)
        .args(["nodes", &key, "-i", "kube:prod-eu", "--format", "json"]);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["total"], nodes, "{v}");
    let listed = v["nodes"].as_array().unwrap();
    assert_eq!(listed.len() as u64, nodes);
    for n in listed {
        assert_eq!(n["source"], "kube:prod-eu", "{n}");
        assert_eq!(n["labels"]["kubernetes.io/os"], "linux", "{n}");
        assert!(n["name"].as_str().unwrap().ends_with(".internal"), "{n}");
    }
}
