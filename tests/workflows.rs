//! The shipped workflows and build script: `kfleet workflow init`, and the script's refusals.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or benchmark stops at the first surprise

use assert_cmd::Command;
use predicates::prelude::*;
use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn workflow_init_writes_the_shipped_files_once() {
    let repo = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let mut c = Command::cargo_bin("kfleet").unwrap();
        c.current_dir(repo.path())
            .arg("workflow")
            .arg("init")
            .args(args);
        c
    };
    run(&[])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "wrote .github/workflows/build-driver.yml",
        ))
        .stdout(predicate::str::contains(
            "wrote .github/kfleet/build-module.sh",
        ));
    for (written, shipped) in [
        (
            ".github/workflows/build-driver.yml",
            "assets/workflows/build-driver.yml",
        ),
        (
            ".github/workflows/build-batch.yml",
            "assets/workflows/build-batch.yml",
        ),
        (".github/kfleet/build-module.sh", "assets/build-module.sh"),
    ] {
        assert_eq!(
            std::fs::read(repo.path().join(written)).unwrap(),
            std::fs::read(root().join(shipped)).unwrap(),
            "{written}"
        );
    }
    run(&[]).assert().code(1).stderr(predicate::str::contains(
        "already exist(s); pass --force to replace",
    ));
    run(&["--force"]).assert().success();
}

#[test]
fn the_workflows_keep_inputs_out_of_shell_and_name_runs_for_the_planner() {
    let driver = std::fs::read_to_string(root().join("assets/workflows/build-driver.yml")).unwrap();
    assert!(driver.contains(
        "run-name: kfleet ${{ inputs.distribution }}/${{ inputs.distro_version }}/${{ inputs.architecture }}/${{ inputs.kernel_version }} ${{ inputs.driver_version }} [${{ inputs.request_id }}]"
    ));
    // Every `run:` block reads inputs from the environment, never from an expression.
    let mut in_run = false;
    for line in driver.lines() {
        let t = line.trim_start();
        if t.starts_with("run:") {
            in_run = true;
            assert!(!t.contains("${{"), "expression in a run line: {line}");
            continue;
        }
        if in_run && (t.starts_with("- name:") || t.starts_with("if:") || t.starts_with("env:")) {
            in_run = false;
        }
        if in_run {
            assert!(!t.contains("${{"), "expression inside a run block: {line}");
        }
    }
    for input in [
        "kernel_version",
        "architecture",
        "distribution",
        "distro_version",
        "driver_version",
        "request_id",
    ] {
        assert!(driver.contains(&format!("      {input}:\n")), "{input}");
    }
    let batch = std::fs::read_to_string(root().join("assets/workflows/build-batch.yml")).unwrap();
    assert!(batch.contains("identity: ${{ fromJSON(inputs.identities) }}"));
    // GitHub Enterprise Server resolves ./ references; it may not know $/.
    assert!(batch.contains("uses: ./.github/workflows/build-driver.yml"));
}

#[test]
fn the_build_job_runs_the_kfleet_release_that_wrote_it() {
    let driver = std::fs::read_to_string(root().join("assets/workflows/build-driver.yml")).unwrap();
    let pinned = format!(
        "KFLEET_VERSION: ${{{{ vars.KFLEET_VERSION || '{}' }}}}",
        env!("CARGO_PKG_VERSION")
    );
    assert!(driver.contains(&pinned), "{pinned}");
    assert!(
        !driver.contains("cargo install"),
        "the job compiles nothing"
    );
    assert!(
        !driver.contains("gh release"),
        "GitHub calls go through kfleet"
    );
    assert!(driver.contains("kfleet release asset --tag"));
    assert!(driver.contains("kfleet release upload --tag"));
}

#[test]
fn the_build_script_refuses_unsafe_or_missing_identity_fields() {
    let script = root().join("assets/build-module.sh");
    let base = [
        ("DISTRIBUTION", "ubuntu"),
        ("DISTRO_VERSION", "22.04"),
        ("ARCHITECTURE", "x86_64"),
        ("KERNEL_VERSION", "5.15.0-91-generic"),
        ("DRIVER_VERSION", "v0.5.16"),
        ("MODULE", "kdriver"),
    ];
    let mut cmd = std::process::Command::new("bash");
    cmd.arg(&script)
        .args(["--headers", "h", "--module", "m", "--out", "o"]);
    for (k, v) in base {
        cmd.env(
            k,
            if k == "KERNEL_VERSION" {
                "5.15.0-91-generic;reboot"
            } else {
                v
            },
        );
    }
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("KERNEL_VERSION='5.15.0-91-generic;reboot' has characters outside")
    );

    let mut cmd = std::process::Command::new("bash");
    cmd.arg(&script)
        .args(["--headers", "h", "--module", "m", "--out", "o"])
        .env_remove("MODULE");
    for (k, v) in base.iter().filter(|(k, _)| *k != "MODULE") {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("MODULE is not set"));
}

/// The build script takes its environment from `kfleet build-plan --format env`: without a plan
/// (or IMAGE) there is no container to build in, a plan for another kernel and a line it does not
/// know are refused; nothing is run.
#[test]
fn the_build_script_takes_its_image_from_the_plan_and_checks_it() {
    let script = root().join("assets/build-module.sh");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("m")).unwrap();
    let run = |plan: Option<&str>| {
        let mut cmd = std::process::Command::new("bash");
        cmd.arg(&script).current_dir(dir.path());
        if let Some(text) = plan {
            std::fs::write(dir.path().join("plan.env"), text).unwrap();
            cmd.args(["--plan", "plan.env"]);
        }
        cmd.args(["--headers", "h", "--module", "m", "--out", "o"])
            .env_remove("IMAGE")
            .env("KFLEET_CONTAINER_ENGINE", "docker")
            .envs([
                ("DISTRIBUTION", "debian"),
                ("DISTRO_VERSION", "12"),
                ("ARCHITECTURE", "x86_64"),
                ("KERNEL_VERSION", "6.1.0-18-amd64"),
                ("DRIVER_VERSION", "1.0.0"),
                ("MODULE", "kdriver"),
            ]);
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(run(None).contains("no container image: pass --plan FILE"));
    let other = kfleet::buildenv::plan(
        &kfleet::identity::KernelIdentity::from_key("debian/12/x86_64/6.1.0-17-amd64").unwrap(),
        &kfleet::headers::Chain::builtin(),
        &kfleet::buildenv::Digests::default(),
    );
    let kfleet::buildenv::Planned::Plan(other) = other else {
        panic!("debian 12 has a plan")
    };
    assert!(run(Some(&other.to_env())).contains(
        "is the plan of debian/12/x86_64/6.1.0-17-amd64, not debian/12/x86_64/6.1.0-18-amd64"
    ));
    assert!(
        run(Some(
            "KFLEET_IDENTITY=debian/12/x86_64/6.1.0-18-amd64\nPATH=/tmp\n"
        ))
        .contains("unknown line 'PATH'")
    );
    assert!(!dir.path().join("o").exists(), "nothing was built");
}
