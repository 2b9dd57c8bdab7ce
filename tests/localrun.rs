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
        hidden_env: vec!["CARGO_MANIFEST_DIR".into()],
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
    assert!(!config.work_dir.join("run-41/workspace/after").exists());
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
            "run: steps and actions/checkout only, not docker/login-action@v3",
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
