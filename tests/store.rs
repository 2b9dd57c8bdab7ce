//! An OCI registry as the artifact store, against a real registry (CNCF distribution, Debian's
//! `docker-registry`) on 127.0.0.1: what `kfleet store push` writes is read back by skopeo, a
//! client kfleet did not write; `report` counts coverage from the registry's tag list across
//! pages; `ensure` pulls from a registry that wants a login, and refuses a manifest that names
//! another driver.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or benchmark stops at the first surprise

#[path = "support/registry.rs"]
mod registry;

use registry::Registry;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const REPO: &str = "fleet/kdriver";

fn kfleet() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kfleet"));
    cmd.env("XDG_CONFIG_HOME", "/nonexistent")
        .env_remove("KFLEET_STORE")
        .env_remove("KFLEET_REGISTRY_USERNAME")
        .env_remove("KFLEET_REGISTRY_PASSWORD");
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A driver package as the build job makes one: a `.tar.xz` holding a `.ko` whose `.modinfo`
/// names its vermagic (an object file gcc compiles with that section).
fn package(dir: &Path, name: &str, vermagic: &str) -> PathBuf {
    let work = tempfile::tempdir().unwrap();
    let c = work.path().join("kdriver.c");
    std::fs::write(
        &c,
        format!(
            "__attribute__((section(\".modinfo\"), used)) static const char info[] = \"vermagic={vermagic}\\0name=kdriver\";\n"
        ),
    )
    .unwrap();
    let out = run(Command::new("gcc")
        .args(["-c", "-o"])
        .arg(work.path().join("kdriver.ko"))
        .arg(&c));
    assert!(out.status.success(), "{}", text(&out));
    let path = dir.join(name);
    let out = run(Command::new("tar")
        .arg("-cJf")
        .arg(&path)
        .arg("-C")
        .arg(work.path())
        .arg("kdriver.ko"));
    assert!(out.status.success(), "{}", text(&out));
    path
}

fn asset(distribution: &str, version: &str, kernel: &str) -> String {
    format!("kdriver-1.4.2-{distribution}-{version}-x86_64-{kernel}.tar.xz")
}

fn skopeo(args: &[&str]) -> String {
    let out = run(Command::new("skopeo").args(args));
    assert!(out.status.success(), "skopeo {args:?}: {}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

fn push(registry: &Registry, files: &[&Path], login: bool) -> Output {
    let mut cmd = kfleet();
    cmd.args(["store", "push", "--store", &registry.store(REPO)])
        .args(["--driver-version", "1.4.2"])
        .args(files);
    if login {
        cmd.env("KFLEET_REGISTRY_USERNAME", registry::USER)
            .env("KFLEET_REGISTRY_PASSWORD", registry::PASSWORD);
    }
    run(&mut cmd)
}

/// `kfleet store push` writes each package as an OCI artifact: skopeo lists the tags (the
/// asset names, `+` and `_` escaped) and reads the manifest kfleet wrote (kfleet's artifact
/// type, the package as the one layer with its digest, the identity, driver version, vermagic
/// and sha256 as annotations), and copies the layer out byte for byte. A second push of the
/// same package changes nothing; another package under a pushed name is refused.
#[test]
fn pushed_drivers_are_oci_artifacts_that_skopeo_reads() {
    let registry = Registry::start(false);
    let dir = tempfile::tempdir().unwrap();
    let ubuntu = package(
        dir.path(),
        &asset("ubuntu", "22.04", "5.15.0-91-generic"),
        "5.15.0-91-generic SMP mod_unload modversions ",
    );
    let debian = package(
        dir.path(),
        &asset("debian", "13", "6.12.115+deb13.1-amd64"),
        "6.12.115+deb13.1-amd64 SMP preempt mod_unload modversions ",
    );
    let out = push(&registry, &[&ubuntu, &debian], false);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.matches("pushed to").count(), 2, "{stdout}");
    // The build job's check before it builds: one manifest, by the name's own tag.
    let has = |name: &str| {
        let out = run(kfleet()
            .args(["store", "has", "--store", &registry.store(REPO)])
            .args(["--driver-version", "1.4.2", name]));
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(
        has(&asset("debian", "13", "6.12.115+deb13.1-amd64")),
        "present\n"
    );
    assert_eq!(
        has(&asset("debian", "13", "6.12.57+deb13-amd64")),
        "absent\n"
    );
    assert_eq!(has("not-a-driver.tar.xz"), "absent\n");

    let tags: serde_json::Value = serde_json::from_str(&skopeo(&[
        "list-tags",
        "--tls-verify=false",
        &format!("docker://127.0.0.1:{}/{REPO}", registry.port),
    ]))
    .unwrap();
    let mut tags: Vec<&str> = tags["Tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    tags.sort();
    let debian_tag = "kdriver-1.4.2-debian-13-x86__64-6.12.115_pdeb13.1-amd64.tar.xz";
    assert_eq!(
        tags,
        [
            debian_tag,
            "kdriver-1.4.2-ubuntu-22.04-x86__64-5.15.0-91-generic.tar.xz"
        ]
    );

    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &registry.docker(REPO, debian_tag),
    ]);
    let manifest: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let bytes = std::fs::read(&debian).unwrap();
    let sha256 = kfleet::fsio::hex(&Sha256::digest(&bytes));
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(manifest["artifactType"], "application/vnd.kfleet.driver.v1");
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.empty.v1+json"
    );
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2, "{raw}");
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.kfleet.driver.v1.tar+xz"
    );
    // The package's kABI record (`kabi imports --json`): this module imports nothing.
    assert_eq!(
        layers[1]["mediaType"],
        "application/vnd.kfleet.kabi.v1+json"
    );
    assert_eq!(layers[0]["digest"], format!("sha256:{sha256}"));
    assert_eq!(layers[0]["size"], bytes.len() as u64);
    let notes = &manifest["annotations"];
    assert_eq!(
        notes["io.kfleet.identity"],
        "debian/13/x86_64/6.12.115+deb13.1-amd64"
    );
    assert_eq!(notes["io.kfleet.driver-version"], "1.4.2");
    assert_eq!(
        notes["io.kfleet.vermagic"],
        "6.12.115+deb13.1-amd64 SMP preempt mod_unload modversions "
    );
    assert_eq!(notes["io.kfleet.sha256"], sha256.as_str());
    assert_eq!(
        notes["org.opencontainers.image.title"],
        asset("debian", "13", "6.12.115+deb13.1-amd64")
    );

    // skopeo copies the artifact out and checks every digest on the way.
    let copy = tempfile::tempdir().unwrap();
    skopeo(&[
        "copy",
        "--insecure-policy",
        "--src-tls-verify=false",
        &registry.docker(REPO, debian_tag),
        &format!("dir:{}", copy.path().join("out").display()),
    ]);
    assert_eq!(
        std::fs::read(copy.path().join("out").join(&sha256)).unwrap(),
        bytes,
        "the layer skopeo copied is the package"
    );
    let record_digest = layers[1]["digest"].as_str().unwrap();
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            copy.path()
                .join("out")
                .join(record_digest.trim_start_matches("sha256:")),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        record["modules"][0]["vermagic"],
        "6.12.115+deb13.1-amd64 SMP preempt mod_unload modversions ",
        "{record}"
    );

    let again = push(&registry, &[&debian], false);
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("already in"),
        "{}",
        text(&again)
    );
    let other_dir = tempfile::tempdir().unwrap();
    let other = package(
        other_dir.path(),
        &asset("debian", "13", "6.12.115+deb13.1-amd64"),
        "6.12.115+deb13.1-amd64 SMP preempt mod_unload ",
    );
    let refused = push(&registry, &[&other], false);
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("never replaced"),
        "{}",
        text(&refused)
    );
    let still: serde_json::Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &registry.docker(REPO, debian_tag),
    ]))
    .unwrap();
    assert_eq!(still["layers"][0]["digest"], format!("sha256:{sha256}"));
}

/// A driver manifest as kfleet writes one, stored under `tag` with a plain HTTP client.
fn put_manifest(
    registry: &Registry,
    tag: &str,
    identity: &str,
    layer: &str,
    size: usize,
    config: &str,
) {
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.kfleet.driver.v1",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config, "size": 2},
        "layers": [{"mediaType": "application/vnd.kfleet.driver.v1.tar+xz", "digest": layer, "size": size}],
        "annotations": {
            "io.kfleet.identity": identity,
            "io.kfleet.driver-version": "1.4.2",
            "io.kfleet.sha256": layer.trim_start_matches("sha256:"),
        },
    });
    registry.put_manifest(REPO, tag, &manifest);
}

/// The registry's tag list comes in pages of at most 1000: with 1,100 drivers in the store,
/// `report --store` counts the fleet's kernels on the second page as covered too, and
/// `store list` lists every driver.
#[test]
fn report_reads_coverage_from_every_page_of_the_registry_tags() {
    let registry = Registry::start(false);
    let dir = tempfile::tempdir().unwrap();
    let layer_file = package(dir.path(), "layer.tar.xz", "5.15.0-1-generic SMP ");
    let layer_bytes = std::fs::read(&layer_file).unwrap();
    let layer = registry.put_blob(REPO, &layer_bytes);
    let config = registry.put_blob(REPO, b"{}");
    let kernels: Vec<String> = (1..=1100).map(|n| format!("5.15.0-{n}-generic")).collect();
    for kernel in &kernels {
        let name = asset("ubuntu", "22.04", kernel);
        let tag = name.replace('_', "__");
        let identity = format!("ubuntu/22.04/x86_64/{kernel}");
        put_manifest(
            &registry,
            &tag,
            &identity,
            &layer,
            layer_bytes.len(),
            &config,
        );
    }
    // The fleet runs kernel 1, kernel 999 (on the tag list's second page: tags sort as text,
    // so the second page holds kernels 909 to 999) and one kernel the store lacks.
    let fleet = dir.path().join("fleet.csv");
    std::fs::write(
        &fleet,
        "node,distribution,distro_version,architecture,kernel_version\n\
         a,ubuntu,22.04,x86_64,5.15.0-1-generic\n\
         b,ubuntu,22.04,x86_64,5.15.0-999-generic\n\
         c,ubuntu,22.04,x86_64,5.15.0-999-generic\n\
         d,ubuntu,22.04,x86_64,5.15.0-2000-generic\n",
    )
    .unwrap();
    let out = run(kfleet()
        .args(["report", "--store", &registry.store(REPO), "-i"])
        .arg(&fleet)
        .args(["--format", "json"]));
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let status = |kernel: &str| {
        report["identities"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["key"] == format!("ubuntu/22.04/x86_64/{kernel}"))
            .map(|r| r["status"].as_str().unwrap().to_string())
    };
    assert_eq!(
        status("5.15.0-999-generic").as_deref(),
        Some("covered"),
        "{}",
        text(&out)
    );
    assert_eq!(status("5.15.0-1-generic").as_deref(), Some("covered"));
    assert!(
        matches!(
            status("5.15.0-2000-generic").as_deref(),
            Some("missing" | "long-tail")
        ),
        "{}",
        text(&out)
    );
    assert_eq!(report["summary"]["driver_version"], "1.4.2");

    let listed = run(kfleet().args(["--json", "store", "list", "--store", &registry.store(REPO)]));
    assert!(listed.status.success(), "{}", text(&listed));
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed["drivers"].as_array().unwrap().len(), 1100);
}

/// `ensure --store` on a node pulls its driver from a registry that wants a login: without one
/// it says which variables to set; with one it writes the verified package. A manifest under
/// this node's tag that names another kernel is refused, and nothing is written.
#[test]
fn ensure_pulls_from_an_authenticated_registry_and_refuses_a_manifest_for_another_kernel() {
    let registry = Registry::start(true);
    let dir = tempfile::tempdir().unwrap();
    let name = asset("ubuntu", "22.04", "5.15.0-91-generic");
    let file = package(dir.path(), &name, "5.15.0-91-generic SMP mod_unload ");
    let out = push(&registry, &[&file], false);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("KFLEET_REGISTRY_USERNAME"),
        "{}",
        text(&out)
    );
    let out = push(&registry, &[&file], true);
    assert!(out.status.success(), "{}", text(&out));

    let sandbox_dir = tempfile::tempdir().unwrap();
    std::fs::write(sandbox_dir.path().join("releases.json"), "[]").unwrap();
    let ensure = |kernel: &str, out_dir: &Path, login: bool| {
        let state = tempfile::tempdir().unwrap();
        let mut cmd = kfleet();
        cmd.env("GITHUB_TOKEN", "ghp_sandboxTOKEN0123456789")
            .env("KFLEET_STATE_DIR", state.path())
            .args(["ensure", "--repo", "acme/kdriver", "--api-url"])
            .arg(sandbox_url(&sandbox_dir))
            .args(["--store", &registry.store(REPO)])
            .args(["--driver-version", "1.4.2", "--deadline", "20s"])
            .args(["--distribution", "ubuntu", "--distro-version", "22.04"])
            .args(["--architecture", "x86_64", "--kernel-version", kernel])
            .arg("--out")
            .arg(out_dir);
        if login {
            cmd.env("KFLEET_REGISTRY_USERNAME", registry::USER)
                .env("KFLEET_REGISTRY_PASSWORD", registry::PASSWORD);
        }
        run(&mut cmd)
    };
    let out_dir = tempfile::tempdir().unwrap();
    let anonymous = ensure("5.15.0-91-generic", out_dir.path(), false);
    assert!(!anonymous.status.success(), "{}", text(&anonymous));
    assert!(
        String::from_utf8_lossy(&anonymous.stderr).contains("KFLEET_REGISTRY_PASSWORD"),
        "{}",
        text(&anonymous)
    );
    let pulled = ensure("5.15.0-91-generic", out_dir.path(), true);
    assert!(pulled.status.success(), "{}", text(&pulled));
    assert_eq!(
        std::fs::read(out_dir.path().join(&name)).unwrap(),
        std::fs::read(&file).unwrap()
    );

    // Under kernel 92's tag, a manifest that names kernel 91 (with a valid layer).
    let base = format!("http://127.0.0.1:{}", registry.port);
    let bytes = std::fs::read(&file).unwrap();
    let layer = format!("sha256:{}", kfleet::fsio::hex(&Sha256::digest(&bytes)));
    let config = format!("sha256:{}", kfleet::fsio::hex(&Sha256::digest(b"{}")));
    let liar = asset("ubuntu", "22.04", "5.15.0-92-generic").replace('_', "__");
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.kfleet.driver.v1",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config, "size": 2},
        "layers": [{"mediaType": "application/vnd.kfleet.driver.v1.tar+xz", "digest": layer, "size": bytes.len()}],
        "annotations": {
            "io.kfleet.identity": "ubuntu/22.04/x86_64/5.15.0-91-generic",
            "io.kfleet.driver-version": "1.4.2",
            "io.kfleet.sha256": layer.trim_start_matches("sha256:"),
        },
    });
    let (status, _, body) = registry::send(
        reqwest::Client::new()
            .put(format!("{base}/v2/{REPO}/manifests/{liar}"))
            .basic_auth(registry::USER, Some(registry::PASSWORD))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(manifest.to_string()),
    );
    assert_eq!(status, 201, "{body}");
    let empty = tempfile::tempdir().unwrap();
    let refused = ensure("5.15.0-92-generic", empty.path(), true);
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("not the driver asked for"),
        "{}",
        text(&refused)
    );
    assert_eq!(std::fs::read_dir(empty.path()).unwrap().count(), 0);
}

/// A sandbox forge serving `dir/releases.json` for the runs and dispatches `ensure` plans with.
fn sandbox_url(dir: &tempfile::TempDir) -> String {
    static SANDBOXES: std::sync::Mutex<Vec<(tokio::runtime::Runtime, kfleet::forge::Sandbox)>> =
        std::sync::Mutex::new(Vec::new());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let releases = kfleet::forge::load_releases(dir.path()).unwrap();
    let sandbox = rt
        .block_on(kfleet::forge::Sandbox::start(
            "127.0.0.1:0".parse().unwrap(),
            releases,
            kfleet::forge::SandboxOptions {
                repo: "acme/kdriver".into(),
                ..Default::default()
            },
        ))
        .unwrap();
    let url = sandbox.base_url();
    SANDBOXES.lock().unwrap().push((rt, sandbox));
    url
}

/// `serve --store` answers from the registry's tags: a node with `ensure --store` pulls the
/// driver it is told is there, and a node without one is told to name the store.
#[test]
fn a_service_with_a_store_sends_its_nodes_to_the_registry() {
    use std::io::BufRead as _;
    let registry = Registry::start(false);
    let dir = tempfile::tempdir().unwrap();
    let name = asset("ubuntu", "22.04", "5.15.0-91-generic");
    let file = package(dir.path(), &name, "5.15.0-91-generic SMP mod_unload ");
    let out = push(&registry, &[&file], false);
    assert!(out.status.success(), "{}", text(&out));

    let sandbox = tempfile::tempdir().unwrap();
    std::fs::write(sandbox.path().join("releases.json"), "[]").unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut service = kfleet()
        .args(["serve", "--listen", "127.0.0.1:0", "--sandbox"])
        .arg(sandbox.path())
        .args(["--store", &registry.store(REPO)])
        .env("KFLEET_CLIENT_TOKENS", "node-token-0123456789")
        .env("KFLEET_STATE_DIR", state.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(service.stderr.take().unwrap()).lines();
    let url = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|line| {
            line.split("kfleet build service on ")
                .nth(1)
                .map(|rest| rest.split_whitespace().next().unwrap_or("").to_string())
        })
        .expect("the service says where it listens");
    std::thread::spawn(move || lines.for_each(drop));

    let ensure = |store: bool, out_dir: &Path| {
        let mut cmd = kfleet();
        cmd.env("KFLEET_SERVICE_TOKEN", "node-token-0123456789")
            .args(["ensure", "--service", &url, "--driver-version", "1.4.2"])
            .args(["--deadline", "20s"])
            .args(["--distribution", "ubuntu", "--distro-version", "22.04"])
            .args([
                "--architecture",
                "x86_64",
                "--kernel-version",
                "5.15.0-91-generic",
            ])
            .arg("--out")
            .arg(out_dir);
        if store {
            cmd.args(["--store", &registry.store(REPO)]);
        }
        run(&mut cmd)
    };
    let bare = tempfile::tempdir().unwrap();
    let told = ensure(false, bare.path());
    assert_eq!(told.status.code(), Some(1), "{}", text(&told));
    assert!(
        String::from_utf8_lossy(&told.stderr).contains("pass --store oci://"),
        "{}",
        text(&told)
    );
    assert_eq!(std::fs::read_dir(bare.path()).unwrap().count(), 0);

    let out_dir = tempfile::tempdir().unwrap();
    let pulled = ensure(true, out_dir.path());
    assert!(pulled.status.success(), "{}", text(&pulled));
    assert_eq!(
        std::fs::read(out_dir.path().join(&name)).unwrap(),
        std::fs::read(&file).unwrap()
    );
    let _ = service.kill();
    let _ = service.wait();
}

/// A registry behind a token service (as GHCR and Docker Hub are): kfleet answers the Bearer
/// challenge with a token for the repository's scope from the realm, pull for reads and
/// pull,push for a push, reuses it across requests, and never prints it. Without a login the
/// token service refuses, and kfleet says which variables to set.
#[test]
fn a_registry_behind_bearer_tokens_is_pushed_and_pulled_with_scoped_tokens() {
    use std::sync::atomic::Ordering;
    let registry = Registry::start(false);
    let proxy = registry::TokenProxy::start(&registry, REPO);
    let dir = tempfile::tempdir().unwrap();
    let name = asset("ubuntu", "22.04", "5.15.0-91-generic");
    let file = package(dir.path(), &name, "5.15.0-91-generic SMP mod_unload ");
    let login = |cmd: &mut Command| {
        cmd.env("KFLEET_REGISTRY_USERNAME", registry::USER)
            .env("KFLEET_REGISTRY_PASSWORD", registry::PASSWORD);
    };

    let mut cmd = kfleet();
    cmd.args(["store", "push", "--store", &proxy.store(REPO)])
        .args(["--driver-version", "1.4.2"])
        .arg(&file);
    login(&mut cmd);
    let pushed = run(&mut cmd);
    assert!(pushed.status.success(), "{}", text(&pushed));
    // One pull token for the first look at the tag, one push token for the uploads, reused.
    let tokens = proxy.issued.load(Ordering::SeqCst);
    assert!((1..=3).contains(&tokens), "{tokens} tokens for one push");
    for secret in [
        registry::PULL_TOKEN,
        registry::PUSH_TOKEN,
        registry::PASSWORD,
    ] {
        assert!(!text(&pushed).contains(secret), "{}", text(&pushed));
    }

    let anonymous = run(kfleet().args(["store", "list", "--store", &proxy.store(REPO)]));
    assert!(!anonymous.status.success(), "{}", text(&anonymous));
    assert!(
        String::from_utf8_lossy(&anonymous.stderr).contains("KFLEET_REGISTRY_USERNAME"),
        "{}",
        text(&anonymous)
    );

    let mut cmd = kfleet();
    cmd.args(["--json", "store", "list", "--store", &proxy.store(REPO)]);
    login(&mut cmd);
    let listed = run(&mut cmd);
    assert!(listed.status.success(), "{}", text(&listed));
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(
        listed["drivers"][0]["identity"],
        "ubuntu/22.04/x86_64/5.15.0-91-generic"
    );

    // The same artifact through the token service and straight from the registry.
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &registry.docker(REPO, &name.replace('_', "__")),
    ]);
    let manifest: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(
        manifest["annotations"]["io.kfleet.identity"],
        "ubuntu/22.04/x86_64/5.15.0-91-generic"
    );
}

#[path = "support/certs.rs"]
#[allow(dead_code)] // its openssl runner signs the test Sigstore
mod certs;
#[path = "support/sigstore.rs"]
#[allow(dead_code)] // this file signs with a log only
mod sigstore;

/// The build's Sigstore bundle beside a package is pushed with it as the manifest's second layer
/// (skopeo sees it); `ensure --require-provenance` pulls it with the package and verifies it
/// before writing, and refuses a driver pushed without one.
#[test]
fn provenance_travels_with_the_driver_in_the_registry() {
    use sigstore::{Dated, Signer, TestSigstore};
    let registry = Registry::start(false);
    let dir = tempfile::tempdir().unwrap();
    let signed = asset("ubuntu", "22.04", "5.15.0-91-generic");
    let file = package(dir.path(), &signed, "5.15.0-91-generic SMP mod_unload ");
    let digest = kfleet::fsio::hex(&Sha256::digest(std::fs::read(&file).unwrap()));
    let sigstore = TestSigstore::new();
    let bundle = sigstore.bundle(
        &signed,
        &digest,
        &Signer::build_driver("acme/kdriver"),
        Dated::Log,
        false,
    );
    std::fs::write(dir.path().join(format!("{signed}.sigstore.json")), &bundle).unwrap();
    let unsigned = asset("ubuntu", "22.04", "5.15.0-92-generic");
    let other = package(dir.path(), &unsigned, "5.15.0-92-generic SMP mod_unload ");
    let out = push(&registry, &[&file, &other], false);
    assert!(out.status.success(), "{}", text(&out));

    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!(
            "docker://127.0.0.1:{}/{REPO}:{}",
            registry.port,
            signed.replace('_', "__")
        ),
    ]);
    let manifest: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3, "{raw}");
    assert_eq!(
        layers[1]["mediaType"],
        "application/vnd.dev.sigstore.bundle.v0.3+json"
    );
    assert_eq!(
        layers[2]["mediaType"],
        "application/vnd.kfleet.kabi.v1+json"
    );
    assert_eq!(
        layers[1]["digest"],
        format!("sha256:{}", kfleet::fsio::hex(&Sha256::digest(&bundle)))
    );

    let root = sigstore.write_trust_root(&dir.path().join("trusted_root.json"));
    let sandbox_dir = tempfile::tempdir().unwrap();
    std::fs::write(sandbox_dir.path().join("releases.json"), "[]").unwrap();
    let ensure = |kernel: &str, out_dir: &Path| {
        let state = tempfile::tempdir().unwrap();
        run(kfleet()
            .env("GITHUB_TOKEN", "ghp_sandboxTOKEN0123456789")
            .env("KFLEET_STATE_DIR", state.path())
            .args(["ensure", "--repo", "acme/kdriver", "--api-url"])
            .arg(sandbox_url(&sandbox_dir))
            .args(["--store", &registry.store(REPO)])
            .args(["--driver-version", "1.4.2", "--deadline", "4s"])
            .args(["--distribution", "ubuntu", "--distro-version", "22.04"])
            .args(["--architecture", "x86_64", "--kernel-version", kernel])
            .args(["--require-provenance", "--trust-root"])
            .arg(&root)
            .arg("--out")
            .arg(out_dir))
    };
    let out_dir = tempfile::tempdir().unwrap();
    let pulled = ensure("5.15.0-91-generic", out_dir.path());
    assert!(pulled.status.success(), "{}", text(&pulled));
    assert!(
        String::from_utf8_lossy(&pulled.stderr)
            .contains("provenance verified: built by https://github.com/acme/kdriver/"),
        "{}",
        text(&pulled)
    );
    assert_eq!(
        std::fs::read(out_dir.path().join(&signed)).unwrap(),
        std::fs::read(&file).unwrap()
    );
    let empty = tempfile::tempdir().unwrap();
    let refused = ensure("5.15.0-92-generic", empty.path());
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("has no signed provenance beside it"),
        "{}",
        text(&refused)
    );
    assert_eq!(std::fs::read_dir(empty.path()).unwrap().count(), 0);
}
