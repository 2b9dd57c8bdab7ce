//! No node boots into a kernel without its driver: `kfleet hook install` writes the hook the
//! distribution's kernel tooling runs (driven here by the real `run-parts` and `kernel-install`)
//! and the boot unit, `hook remove` takes back only kfleet's files, and `ensure --all-installed`
//! asks for every kernel installed on a host root.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or benchmark stops at the first surprise

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn kfleet() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kfleet"));
    cmd.env("XDG_CONFIG_HOME", "/nonexistent");
    cmd
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A root with an os-release naming `id`, and a stand-in for kfleet on the node that records
/// how it was called (and the environment the hook gave it), sleeps `STUB_SLEEP` seconds and
/// exits `STUB_EXIT`.
fn node(id: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("etc/kfleet")).unwrap();
    std::fs::write(
        root.path().join("etc/os-release"),
        format!("ID={id}\nVERSION_ID=\"12\"\n"),
    )
    .unwrap();
    std::fs::write(
        root.path().join("etc/kfleet/ensure.env"),
        "KFLEET_SERVICE=https://kfleet.internal\nKFLEET_DRIVER_VERSION=1.4.2\n",
    )
    .unwrap();
    let stub = root.path().join("stub-kfleet");
    let calls = root.path().join("calls");
    std::fs::write(
        &stub,
        format!(
            "#!/bin/sh\necho \"$* service=$KFLEET_SERVICE\" >> '{}'\nsleep \"${{STUB_SLEEP:-0}}\"\nexit \"${{STUB_EXIT:-0}}\"\n",
            calls.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    (root, stub, calls)
}

fn hook_install(root: &Path, stub: &Path, extra: &[&str]) -> Output {
    kfleet()
        .args(["hook", "install", "--root"])
        .arg(root)
        .arg("--kfleet")
        .arg(stub)
        .arg("--env-file")
        .arg(root.join("etc/kfleet/ensure.env"))
        .args(extra)
        .output()
        .unwrap()
}

/// On Debian the hook goes to /etc/kernel/postinst.d, where the real `run-parts` runs it as
/// apt's kernel postinst does: it asks for the new kernel's driver with the node's settings,
/// installs it without loading it, and holds the package manager no longer than --timeout,
/// saying that the boot unit tries again. The unit and its enabling link are written beside it;
/// `hook remove` takes them back, but never a file that is not kfleet's.
#[test]
fn the_debian_hook_runs_under_run_parts_within_its_time_bound() {
    let (root, stub, calls) = node("debian");
    let out = hook_install(root.path(), &stub, &["--timeout", "2s"]);
    assert!(out.status.success(), "{}", text(&out));
    let hook = root.path().join("etc/kernel/postinst.d/zz-kfleet");
    assert!(String::from_utf8_lossy(&out.stdout).contains(&hook.display().to_string()));
    let unit =
        std::fs::read_to_string(root.path().join("etc/systemd/system/kfleet-ensure.service"))
            .unwrap();
    assert!(
        unit.contains(&format!("ExecStart={} ensure --install", stub.display())),
        "{unit}"
    );
    assert!(
        std::fs::symlink_metadata(
            root.path()
                .join("etc/systemd/system/multi-user.target.wants/kfleet-ensure.service")
        )
        .unwrap()
        .file_type()
        .is_symlink()
    );

    let run_parts = |sleep: &str| {
        let started = Instant::now();
        let out = Command::new("run-parts")
            .args(["--arg=6.1.0-99-amd64", "--arg=/boot/vmlinuz-6.1.0-99-amd64"])
            .arg(root.path().join("etc/kernel/postinst.d"))
            .env("STUB_SLEEP", sleep)
            .output()
            .expect("run-parts (debianutils)");
        (out, started.elapsed())
    };
    let (out, _) = run_parts("0");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(&calls).unwrap(),
        "ensure --kernel-version 6.1.0-99-amd64 --install --no-load service=https://kfleet.internal\n"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the driver for 6.1.0-99-amd64 is installed")
    );
    // A service that does not answer in time: the package manager goes on, the unit retries.
    let (out, took) = run_parts("30");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        took < Duration::from_secs(15),
        "held the package manager {took:?}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("tries again at boot"),
        "{}",
        text(&out)
    );

    // Another tool's file where kfleet's would go is neither replaced nor removed.
    let foreign = root.path().join("etc/kernel/install.d/50-kfleet.install");
    std::fs::create_dir_all(foreign.parent().unwrap()).unwrap();
    std::fs::write(&foreign, "#!/bin/sh\n# someone else's\n").unwrap();
    let refused = hook_install(root.path(), &stub, &["--kind", "kernel-install"]);
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("is not kfleet's"));
    let removed = kfleet()
        .args(["hook", "remove", "--root"])
        .arg(root.path())
        .output()
        .unwrap();
    assert!(removed.status.success(), "{}", text(&removed));
    assert!(!hook.exists());
    assert!(
        !root
            .path()
            .join("etc/systemd/system/kfleet-ensure.service")
            .exists()
    );
    assert!(
        std::fs::symlink_metadata(
            root.path()
                .join("etc/systemd/system/multi-user.target.wants/kfleet-ensure.service")
        )
        .is_err()
    );
    assert_eq!(
        std::fs::read_to_string(&foreign).unwrap(),
        "#!/bin/sh\n# someone else's\n"
    );
}

/// On Fedora (and EL, and any systemd system) the hook is a kernel-install plugin: the real
/// `kernel-install add` runs it for the new kernel, `kernel-install remove` does not.
#[test]
fn the_kernel_install_plugin_asks_on_add_only() {
    let (root, stub, calls) = node("fedora");
    let out = hook_install(root.path(), &stub, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let plugin = root.path().join("etc/kernel/install.d/50-kfleet.install");
    assert!(plugin.exists(), "{}", text(&out));
    let image = root.path().join("vmlinuz");
    std::fs::write(&image, "kernel").unwrap();
    let kernel_install = |action: &str| {
        let mut cmd = Command::new("kernel-install");
        cmd.arg(action).arg("6.8.9-300.fc40.x86_64");
        if action == "add" {
            cmd.arg(&image);
        }
        cmd.env("KERNEL_INSTALL_PLUGINS", &plugin)
            .env(
                "KERNEL_INSTALL_MACHINE_ID",
                "0123456789abcdef0123456789abcdef",
            )
            .env("KERNEL_INSTALL_LAYOUT", "other")
            .env("BOOT_ROOT", root.path().join("boot"))
            .output()
            .expect("kernel-install (systemd)")
    };
    let added = kernel_install("add");
    assert!(added.status.success(), "{}", text(&added));
    let removed = kernel_install("remove");
    assert!(removed.status.success(), "{}", text(&removed));
    assert_eq!(
        std::fs::read_to_string(&calls).unwrap(),
        "ensure --kernel-version 6.8.9-300.fc40.x86_64 --install --no-load service=https://kfleet.internal\n"
    );
}

/// `ensure --all-installed` asks for every kernel installed on the host root (a modules
/// directory with its kernel image beside it, in /boot or in the modules directory), each with
/// the host's own distribution, and downloads each verified driver.
#[test]
fn ensure_all_installed_gets_every_installed_kernels_driver() {
    let host = tempfile::tempdir().unwrap();
    let h = host.path();
    std::fs::create_dir_all(h.join("etc")).unwrap();
    std::fs::write(h.join("etc/os-release"), "ID=debian\nVERSION_ID=\"12\"\n").unwrap();
    for kernel in ["6.1.0-18-amd64", "6.1.0-20-amd64", "6.1.0-9-amd64"] {
        std::fs::create_dir_all(h.join("lib/modules").join(kernel)).unwrap();
    }
    std::fs::create_dir_all(h.join("boot")).unwrap();
    std::fs::write(h.join("boot/vmlinuz-6.1.0-18-amd64"), "k").unwrap();
    std::fs::write(h.join("lib/modules/6.1.0-20-amd64/vmlinuz"), "k").unwrap();
    // 6.1.0-9-amd64 left only a modules directory behind: it is not installed.

    let assets = tempfile::tempdir().unwrap();
    let names: Vec<String> = ["6.1.0-18-amd64", "6.1.0-20-amd64"]
        .iter()
        .map(|k| format!("kdriver-1.0.0-debian-12-x86_64-{k}.tar.xz"))
        .collect();
    let mut listed = Vec::new();
    for (i, name) in names.iter().enumerate() {
        std::fs::write(assets.path().join(name), format!("package {i}")).unwrap();
        listed.push(serde_json::json!({
            "id": 10 + i, "name": name, "size": 9, "digest": null,
            "browser_download_url": null, "updated_at": "2026-11-20T00:00:00Z"
        }));
    }
    let release = serde_json::json!([{
        "id": 1, "tag_name": "1.0.0", "name": "kdriver 1.0.0", "draft": false,
        "prerelease": false, "created_at": "2026-11-20T00:00:00Z",
        "published_at": "2026-11-20T00:00:00Z", "assets": listed,
    }]);
    let releases =
        kfleet::artifacts::parse_release_listing("releases.json", release.to_string().as_bytes())
            .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sandbox = rt
        .block_on(kfleet::forge::Sandbox::start(
            "127.0.0.1:0".parse().unwrap(),
            releases,
            kfleet::forge::SandboxOptions {
                repo: "acme/kdriver".into(),
                assets_dir: Some(assets.path().to_path_buf()),
                ..Default::default()
            },
        ))
        .unwrap();
    let (state, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let result = kfleet()
        .env("GITHUB_TOKEN", "ghp_sandboxTOKEN0123456789")
        .env("KFLEET_STATE_DIR", state.path())
        .args(["ensure", "--all-installed", "--host-root"])
        .arg(h)
        .args(["--repo", "acme/kdriver", "--api-url"])
        .arg(sandbox.base_url())
        .args(["--driver-version", "1.0.0", "--deadline", "30s", "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    assert!(result.status.success(), "{}", text(&result));
    let stdout = String::from_utf8_lossy(&result.stdout);
    for (i, name) in names.iter().enumerate() {
        assert_eq!(
            std::fs::read_to_string(out.path().join(name)).unwrap(),
            format!("package {i}")
        );
        assert!(stdout.contains(name.as_str()), "{stdout}");
    }
    assert!(!stdout.contains("6.1.0-9-amd64"), "{stdout}");
    drop(sandbox);
}

#[path = "support/kube.rs"]
mod kube;

/// A node created with the `kfleet.io/driver-missing` taint, beside another taint of its own.
fn tainted_node(name: &str) -> serde_json::Value {
    let mut node = kube::node(
        name,
        "Debian GNU/Linux 12 (bookworm)",
        "6.1.0-18-amd64",
        "amd64",
    );
    node["spec"]["taints"] = serde_json::json!([
        {"key": "kfleet.io/driver-missing", "effect": "NoSchedule"},
        {"key": "dedicated", "value": "gpu", "effect": "NoExecute"},
    ]);
    node
}

/// Once the driver is in, the node is labelled with the driver version, annotated with what
/// happened, and its driver-missing taint is removed (its other taints stay), through the API
/// server with the service account's token; a kubelet heartbeat landing between the read and
/// the patch makes the guarded patch fail, and the node is read again.
#[test]
fn a_ready_node_is_labelled_and_loses_its_driver_missing_taint() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fixture = rt.block_on(kube::KubeFixture::start(vec![tainted_node("ip-10-0-0-11")]));
    fixture.heartbeat_after_reads(1);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), format!("{}\n", kube::TOKEN)).unwrap();
    let target = kfleet::readiness::KubeTarget::in_cluster(
        Some(fixture.url.clone()),
        Some(dir.path().join("token")),
        None,
        Some("ip-10-0-0-11".into()),
    )
    .unwrap();
    let mark = kfleet::readiness::Mark {
        label: "v0.5.16".into(),
        status: "driver v0.5.16 installed and loaded for 6.1.0-18-amd64".into(),
        ready: true,
        installed: vec!["6.1.0-18-amd64".into(), "6.1.0-21-amd64".into()],
    };
    rt.block_on(kfleet::readiness::mark_node(&target, &mark))
        .unwrap();
    let node = fixture.node("ip-10-0-0-11");
    assert_eq!(
        node["metadata"]["labels"]["kfleet.io/driver-ready"],
        "v0.5.16"
    );
    assert_eq!(
        node["metadata"]["labels"]["kubernetes.io/hostname"], "ip-10-0-0-11",
        "other labels stay"
    );
    assert_eq!(
        node["metadata"]["annotations"]["kfleet.io/driver-status"],
        "driver v0.5.16 installed and loaded for 6.1.0-18-amd64"
    );
    assert_eq!(
        node["spec"]["taints"],
        serde_json::json!([{"key": "dedicated", "value": "gpu", "effect": "NoExecute"}])
    );
    assert_eq!(
        node["metadata"]["annotations"]["kfleet.io/installed-kernels"],
        "6.1.0-18-amd64 6.1.0-21-amd64"
    );
    // The cluster read as an inventory counts the kernel the node has installed but does not
    // run as next-boot demand: missing until it has a driver.
    let config = kube::kubeconfig(dir.path(), &[("prod", &fixture.url)]);
    let out = kfleet()
        .env("KUBECONFIG", &config)
        .args(["report", "-i", "kube:prod", "--format", "json", "-r"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/small-releases.json"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let next = report["identities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kernel_version"] == "6.1.0-21-amd64")
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(next["nodes"], 0);
    assert_eq!(next["next_boot"], 1);
    assert_eq!(next["status"], "missing");
    let kinds: Vec<String> = fixture.patches().into_iter().map(|(_, k)| k).collect();
    assert_eq!(
        kinds,
        [
            "application/merge-patch+json",
            "application/json-patch+json",
            "application/json-patch+json"
        ],
        "the label, then the taint patch twice: the first lost to the heartbeat"
    );

    // A wrong token is told apart, with what the service account needs.
    std::fs::write(dir.path().join("token"), "not-the-token").unwrap();
    let err = rt
        .block_on(kfleet::readiness::mark_node(&target, &mark))
        .unwrap_err()
        .to_string();
    assert!(err.contains("401") && err.contains("ClusterRole"), "{err}");
}

/// `ensure --mark-node` says on the node what happened: a host kfleet cannot build for is
/// labelled `unsupported` with the reason in the annotation, and keeps its taint.
#[test]
fn ensure_marks_a_node_it_cannot_serve_with_the_reason() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fixture = rt.block_on(kube::KubeFixture::start(vec![tainted_node("ip-10-0-0-12")]));
    let host = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(host.path().join("etc")).unwrap();
    std::fs::write(
        host.path().join("etc/os-release"),
        "ID=\"rhel\"\nVERSION_ID=\"9.4\"\n",
    )
    .unwrap();
    std::fs::write(host.path().join("token"), kube::TOKEN).unwrap();
    // Two kernels installed: the running one and the next; a third directory has no image.
    for (kernel, image) in [
        ("5.14.0-427.13.1.el9_4.x86_64", true),
        ("5.14.0-503.11.1.el9_5.x86_64", true),
        ("5.14.0-362.8.1.el9_3.x86_64", false),
    ] {
        let modules = host.path().join("lib/modules").join(kernel);
        std::fs::create_dir_all(&modules).unwrap();
        if image {
            std::fs::write(modules.join("vmlinuz"), b"kernel").unwrap();
        }
    }
    let out = kfleet()
        .env("KFLEET_SERVICE_TOKEN", "node-token")
        .args([
            "ensure",
            "--service",
            "http://127.0.0.1:9",
            "--driver-version",
            "1.0.0",
        ])
        .arg("--host-root")
        .arg(host.path())
        .args(["--kernel-version", "5.14.0-427.13.1.el9_4.x86_64"])
        .args([
            "--mark-node",
            "--node-name",
            "ip-10-0-0-12",
            "--kube-api",
            &fixture.url,
        ])
        .arg("--kube-token-file")
        .arg(host.path().join("token"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    let node = fixture.node("ip-10-0-0-12");
    assert_eq!(
        node["metadata"]["labels"]["kfleet.io/driver-ready"],
        "unsupported"
    );
    let status = node["metadata"]["annotations"]["kfleet.io/driver-status"]
        .as_str()
        .unwrap();
    assert!(status.contains("needs a Red Hat entitlement"), "{status}");
    assert_eq!(node["spec"]["taints"].as_array().unwrap().len(), 2);
    assert_eq!(
        node["metadata"]["annotations"]["kfleet.io/installed-kernels"],
        "5.14.0-427.13.1.el9_4.x86_64 5.14.0-503.11.1.el9_5.x86_64",
        "the kernels the node has installed, for the next-boot demand"
    );
}
