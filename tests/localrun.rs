//! The local runner on workflows written here: expressions, step outputs, `if:`, `GITHUB_PATH`
//! and `GITHUB_ENV`, hidden environment, and every way a job fails with its reason.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or benchmark stops at the first surprise

use kfleet::localrun::{JobTarget, RunnerConfig};
use std::collections::BTreeMap;

fn runner(workflow: &str) -> (tempfile::TempDir, RunnerConfig) {
    let dir = tempfile::tempdir().unwrap();
    let checkout = dir.path().join("checkout");
    std::fs::create_dir_all(checkout.join(".github/workflows")).unwrap();
    std::fs::write(checkout.join(".github/workflows/job.yml"), workflow).unwrap();
    std::fs::write(checkout.join("README"), "the driver\n").unwrap();
    let config = RunnerConfig {
        checkout,
        work_dir: dir.path().join("work"),
        vars: BTreeMap::from([("MODULE".into(), "kdriver".into())]),
        secrets: BTreeMap::new(),
        passed_env: vec![],
        env: BTreeMap::new(),
        host_only: None,
    };
    (dir, config)
}

fn target() -> JobTarget {
    JobTarget {
        api_url: "http://127.0.0.1:9".into(),
        repo: "acme/kdriver".into(),
        token: "sandbox-token".into(),
        run_id: 41,
    }
}

fn inputs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn run(config: &RunnerConfig, inputs: &BTreeMap<String, String>) -> kfleet::localrun::JobOutcome {
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(config.run("job.yml", inputs, &target()))
}

const JOB: &str = r#"
name: job
on: workflow_dispatch
jobs:
  build:
    runs-on: ${{ inputs.architecture == 'aarch64' && 'arm' || 'x86' }}
    timeout-minutes: 5
    env:
      KERNEL: ${{ inputs.kernel_version }}
      MODULE: ${{ vars.MODULE || 'other' }}
      FLAVOUR: ${{ vars.FLAVOUR || 'generic' }}
    steps:
      - uses: actions/checkout@08c6903cd8c0fde910a37f88322edcfb5dd907a8
      - name: Make a tool and an output
        id: make
        run: |
          mkdir -p "$RUNNER_TEMP/bin"
          printf '#!/bin/sh\necho tool-ran\n' > "$RUNNER_TEMP/bin/kfleet-tool"
          chmod +x "$RUNNER_TEMP/bin/kfleet-tool"
          echo "$RUNNER_TEMP/bin" >> "$GITHUB_PATH"
          echo "built=yes" >> "$GITHUB_OUTPUT"
          { echo "notes<<EOF"; echo "two"; echo "lines"; echo "EOF"; } >> "$GITHUB_OUTPUT"
          echo "FROM_ENV_FILE=carried" >> "$GITHUB_ENV"
      - name: Use them
        if: steps.make.outputs.built == 'yes'
        env:
          NOTES: ${{ steps.make.outputs.notes }}
          TOKEN: ${{ github.token }}
        run: |
          test -f README
          test -z "${CARGO_MANIFEST_DIR:-}"
          test "$GITHUB_REPOSITORY" = acme/kdriver
          test "$TOKEN" = sandbox-token
          printf '%s|%s|%s|%s|%s|%s\n' "$(kfleet-tool)" "$KERNEL" "$MODULE" "$FLAVOUR" "$FROM_ENV_FILE" "$NOTES"
      - name: Skipped
        if: ${{ steps.make.outputs.built != 'yes' }}
        run: exit 1
"#;

#[test]
fn steps_run_with_expressions_outputs_path_and_env_files() {
    let (_dir, config) = runner(JOB);
    let outcome = run(&config, &inputs(&[("kernel_version", "6.1.0-18-amd64")]));
    assert!(
        outcome.success,
        "{}\n{}",
        outcome.summary,
        std::fs::read_to_string(&outcome.log).unwrap_or_default()
    );
    let names: Vec<&str> = outcome.steps.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["step 1", "Make a tool and an output", "Use them"]);
    let log = std::fs::read_to_string(&outcome.log).unwrap();
    assert!(
        log.contains("tool-ran|6.1.0-18-amd64|kdriver|generic|carried|two\nlines\n"),
        "{log}"
    );
    assert!(
        !config.work_dir.join("run-41/workspace").exists(),
        "a run that succeeded keeps only its log"
    );
    assert!(log.contains("## Skipped (skipped:"), "{log}");
}

#[test]
fn a_failing_step_fails_the_job_with_its_name_code_and_last_output() {
    let (_dir, config) = runner(
        r#"
jobs:
  build:
    steps:
      - name: Fine
        run: echo fine
      - name: Breaks
        run: |
          echo "cannot find linux-headers-6.1.0-18-amd64" >&2
          false
          echo never
      - name: After
        run: touch after
      - name: Clean up
        if: always()
        run: touch cleaned
      - name: Only on failure
        if: ${{ failure() }}
        run: echo "the build failed" > failure-noted
"#,
    );
    let outcome = run(&config, &BTreeMap::new());
    assert!(!outcome.success);
    assert!(
        outcome
            .summary
            .contains("step 'Breaks' failed: exit code 1"),
        "{}",
        outcome.summary
    );
    assert!(
        outcome
            .summary
            .contains("cannot find linux-headers-6.1.0-18-amd64"),
        "{}",
        outcome.summary
    );
    assert!(!outcome.summary.contains("never"));
    let workspace = config.work_dir.join("run-41/workspace");
    assert!(!workspace.join("after").exists());
    // As on GitHub: after a failure, the steps that ask with always() or failure() still run,
    // and the job still failed at the first failure.
    assert!(workspace.join("cleaned").exists());
    assert!(workspace.join("failure-noted").exists());
    assert!(
        config.work_dir.join("run-41/workspace").is_dir(),
        "a failed run keeps its workspace to look at"
    );
}

#[test]
fn what_the_runner_cannot_do_is_a_failed_job_that_says_so() {
    let cases = [
        (
            "jobs:\n  build:\n    steps:\n      - uses: docker/login-action@v3\n",
            "(skipped) actions/attest-build-provenance only, not docker/login-action@v3",
        ),
        (
            "jobs:\n  build:\n    steps:\n      - run: echo ${{ fromJSON(inputs.x) }}\n        env:\n          X: ${{ toJSON(inputs) }}\n",
            "toJSON() is not supported",
        ),
        (
            "jobs:\n  build:\n    uses: ./.github/workflows/other.yml\n",
            "has no job with steps",
        ),
        ("jobs: [unclosed\n", "is not valid YAML"),
    ];
    for (workflow, reason) in cases {
        let (_dir, config) = runner(workflow);
        let outcome = run(&config, &BTreeMap::new());
        assert!(!outcome.success, "{workflow}");
        assert!(
            outcome.summary.contains(reason),
            "{workflow}: {}",
            outcome.summary
        );
    }
}

#[test]
fn without_a_container_engine_only_the_hosts_own_release_is_built() {
    let (_dir, mut config) = runner("jobs:\n  build:\n    steps:\n      - run: touch built\n");
    config.host_only = Some(("debian".into(), "12".into()));
    let outcome = run(
        &config,
        &inputs(&[("distribution", "ubuntu"), ("distro_version", "22.04")]),
    );
    assert!(!outcome.success);
    assert!(
        outcome.summary.contains("this host (debian 12) has no working docker or podman, so it builds only debian/12 kernels, not ubuntu/22.04"),
        "{}",
        outcome.summary
    );
    let outcome = run(
        &config,
        &inputs(&[("distribution", "debian"), ("distro_version", "12")]),
    );
    assert!(outcome.success, "{}", outcome.summary);
}

/// A job that is abandoned (its run cancelled, the service stopping) takes its whole process
/// group down: a background process a step started does not outlive it.
#[test]
fn an_abandoned_job_leaves_no_process_behind() {
    let (_dir, config) = runner(
        "jobs:\n  build:\n    steps:\n      - run: |\n          sleep 60 &\n          echo $! > \"$RUNNER_TEMP/pid\"\n          wait\n",
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pid_file = config.work_dir.join("run-41/temp/pid");
    let abandoned = rt.block_on(async {
        tokio::time::timeout(
            std::time::Duration::from_secs(2),
            config.run("job.yml", &BTreeMap::new(), &target()),
        )
        .await
    });
    assert!(abandoned.is_err(), "the job was still running");
    let pid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_string();
    let alive = || {
        std::path::Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z ")
    };
    for _ in 0..50 {
        if !alive() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("the step's background sleep {pid} outlived its job");
}

/// `kfleet sandbox --runner local` with `--runner-dir DIR`, stopped once it has either refused
/// the directory or named where its runs go; returns its stderr.
fn start_local_runner(runner_dir: Option<&std::path::Path>) -> String {
    use std::io::{BufRead as _, BufReader};
    let checkout = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(checkout.path().join(".github/workflows")).unwrap();
    std::fs::write(
        checkout.path().join(".github/workflows/build-driver.yml"),
        "jobs: {}\n",
    )
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("releases.json"), "[]").unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_kfleet"));
    cmd.args(["sandbox", "--listen", "127.0.0.1:0", "--runner", "local"])
        .arg("--data")
        .arg(data.path())
        .arg("--checkout")
        .arg(checkout.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    if let Some(dir) = runner_dir {
        cmd.arg("--runner-dir").arg(dir);
    }
    let mut child = cmd.spawn().unwrap();
    let mut stderr = String::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        stderr.push_str(&line);
        stderr.push('\n');
        if line.contains("work and logs in") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    stderr
}

/// Another local user must not be able to prepare the runner's work directory: kfleet stages the
/// binary the job's install step runs there.
#[test]
fn the_runner_directory_is_private_and_a_prepared_one_is_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    // The default is a new directory with a random name, mode 0700.
    let stderr = start_local_runner(None);
    let work = stderr
        .split("work and logs in ")
        .nth(1)
        .map(|rest| std::path::PathBuf::from(rest.trim()))
        .unwrap_or_else(|| panic!("{stderr}"));
    let mode = std::fs::metadata(&work).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{}", work.display());
    let name = work.file_name().unwrap().to_string_lossy().to_string();
    assert!(name.starts_with("kfleet-runner-"), "{name}");
    assert!(
        !name.ends_with(&std::process::id().to_string()) && name.len() > "kfleet-runner-".len() + 5,
        "{name}"
    );
    assert!(work.join("dist").is_dir());
    std::fs::remove_dir_all(&work).unwrap();

    let base = tempfile::tempdir().unwrap();
    let open = base.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let stderr = start_local_runner(Some(&open));
    assert!(
        stderr.contains("is writable by group or others (mode 777)"),
        "{stderr}"
    );
    assert!(!open.join("dist").exists(), "nothing was staged in it");

    let real = base.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let link = base.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let stderr = start_local_runner(Some(&link));
    assert!(stderr.contains("is a symbolic link"), "{stderr}");
    assert!(!real.join("dist").exists());

    // As root (CI), a directory handed to another user is refused too.
    if std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout == b"0\n")
    {
        let theirs = base.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(
            std::process::Command::new("chown")
                .args(["65534:65534"])
                .arg(&theirs)
                .status()
                .unwrap()
                .success()
        );
        let stderr = start_local_runner(Some(&theirs));
        assert!(stderr.contains("belongs to user 65534"), "{stderr}");
        assert!(!theirs.join("dist").exists());
    }

    // A directory of this user's own, 0700, is used.
    let mine = base.path().join("mine");
    let stderr = start_local_runner(Some(&mine));
    assert!(stderr.contains("work and logs in"), "{stderr}");
    assert!(mine.join("dist").is_dir());
}

/// Processes a job started end with it, however they detached: after success, after failure.
#[test]
fn what_a_job_started_ends_with_the_job() {
    let marks = tempfile::tempdir().unwrap();
    for (script, success) in [("true", true), ("false", false)] {
        let pid_file = marks.path().join(format!("pid-{success}"));
        let workflow = format!(
            "jobs:\n  build:\n    steps:\n      - run: |\n          setsid bash -c 'echo $$ > {pid}; exec sleep 300' > /dev/null 2>&1 < /dev/null &\n          nohup sleep 300 > /dev/null 2>&1 &\n          for _ in $(seq 50); do test -s {pid} && break; sleep 0.1; done\n          {script}\n",
            pid = pid_file.display()
        );
        let (_dir, config) = runner(&workflow);
        let outcome = run(&config, &BTreeMap::new());
        assert_eq!(outcome.success, success, "{}", outcome.summary);
        let pid = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .to_string();
        let alive = std::path::Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z ");
        assert!(!alive, "the job's setsid process {pid} outlived it");
    }
}

/// A FIFO in the driver checkout is not copied (reading it would block forever).
#[test]
fn a_fifo_in_the_checkout_does_not_hang_the_job() {
    let (_dir, config) = runner(
        "jobs:\n  build:\n    steps:\n      - uses: actions/checkout@v5\n      - run: test -f README && test ! -e pipe\n",
    );
    assert!(
        std::process::Command::new("mkfifo")
            .arg(config.checkout.join("pipe"))
            .status()
            .unwrap()
            .success()
    );
    let outcome = tokio::runtime::Runtime::new().unwrap().block_on(async {
        tokio::time::timeout(
            std::time::Duration::from_secs(20),
            config.run("job.yml", &BTreeMap::new(), &target()),
        )
        .await
        .expect("the job hung on the FIFO")
    });
    assert!(outcome.success, "{}", outcome.summary);
    let log = std::fs::read_to_string(&outcome.log).unwrap();
    assert!(log.contains("skipped") && log.contains("pipe"), "{log}");
}

const LEAKY: &[(&str, &str)] = &[
    ("AWS_SECRET_ACCESS_KEY", "aws-leak-0001"),
    ("PGPASSWORD", "pg-leak-0002"),
    ("VAULT_TOKEN", "vault-leak-0003"),
    ("DATABASE_URL", "postgres://u:db-leak-0004@h/db"),
    ("SSH_AUTH_SOCK", "/tmp/ssh-leak-0005"),
];

/// Run by `jobs_get_an_allow_list_of_the_environment_and_secrets_are_masked` in a child process
/// whose environment holds what must not leak.
#[test]
#[ignore = "run as a child process with secrets in its environment"]
fn child_job_with_a_leaky_environment() {
    let (_dir, mut config) = runner(
        "jobs:\n  build:\n    steps:\n      - env:\n          KEY: ${{ secrets.API_KEY }}\n        run: |\n          env\n          echo \"key is $KEY\"\n          echo \"token is ${{ github.token }}\"\n",
    );
    config
        .secrets
        .insert("API_KEY".into(), "api-key-value-0006".into());
    let outcome = run(&config, &BTreeMap::new());
    assert!(outcome.success, "{}", outcome.summary);
    let log = std::fs::read_to_string(&outcome.log).unwrap();
    for (name, value) in LEAKY {
        assert!(!log.contains(value), "{name} reached the job:\n{log}");
    }
    assert!(log.contains("key is ***\n"), "{log}");
    assert!(log.contains("token is ***\n"), "{log}");
    assert!(
        !log.contains("api-key-value-0006") && !log.contains("sandbox-token"),
        "{log}"
    );
    assert!(log.contains("PATH="), "{log}");
}

#[test]
fn jobs_get_an_allow_list_of_the_environment_and_secrets_are_masked() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_job_with_a_leaky_environment", "--ignored"])
        .envs(LEAKY.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
