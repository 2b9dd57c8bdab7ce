//! The local runner: runs a build workflow's job on this machine the way a GitHub runner would,
//! so the workflow's own shell is what gets tested. It reads the job from the workflow file of a
//! driver checkout, evaluates its expressions (inputs, vars, secrets, step outputs), copies the
//! checkout into a workspace for `actions/checkout`, and runs every `run:` step with bash
//! (`-eo pipefail`, as GitHub does), with `GITHUB_OUTPUT`, `GITHUB_ENV` and `GITHUB_PATH`
//! honoured, the job's timeout enforced, and the output kept in a log.

pub mod expr;

use crate::text::Cause;
use expr::Contexts;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use yaml_rust2::{Yaml, YamlLoader};

/// Why the local runner cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("the checkout {path}: {source}")]
    Checkout { path: String, source: Cause },
    #[error(
        "the checkout {path} has no .github/workflows/build-driver.yml; run `kfleet workflow init` in the driver repository"
    )]
    NoWorkflow { path: String },
    #[error("the runner's work directory {path}: {source}")]
    WorkDir { path: String, source: Cause },
    #[error("{0}")]
    Stage(String),
}

/// Where jobs run and what they are told.
#[derive(Clone, Debug)]
pub struct RunnerConfig {
    /// The driver repository: its `.github/workflows/` holds the workflows, and `actions/checkout`
    /// copies it into the job's workspace.
    pub checkout: PathBuf,
    /// Per-run workspaces, temp directories and logs: a directory only this user controls (it holds
    /// the kfleet binary the job's install step runs).
    pub work_dir: PathBuf,
    /// Repository variables (`vars.*`).
    pub vars: BTreeMap<String, String>,
    /// Secrets (`secrets.*`).
    pub secrets: BTreeMap<String, String>,
    /// Environment variables of this process a job sees besides [`PASSED`] (which GitHub's runner
    /// would set, or the job needs to reach a container engine or a proxy).
    pub passed_env: Vec<String>,
    /// Set for every job (after this process's own environment).
    pub env: BTreeMap<String, String>,
    /// Without a container engine the build runs on this host (`KFLEET_EXTRACT=1`): only
    /// kernels of the host's own distribution and release (`ID`, `VERSION_ID`) can be built.
    pub host_only: Option<(String, String)>,
}

/// What a job inherits from the process that runs it: an allow-list, as a GitHub runner starts a
/// job with an environment of its own. Tokens, database URLs, cloud keys, agent sockets and every
/// kfleet setting but the header sources stay out.
const PASSED: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TMPDIR",
    "TERM",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "DOCKER_HOST",
    "DOCKER_CONFIG",
    "CONTAINER_HOST",
    "XDG_RUNTIME_DIR",
    "KFLEET_HEADER_SOURCES",
];

/// Whether a variable of this process reaches jobs.
fn passed(name: &str, extra: &[String]) -> bool {
    PASSED.contains(&name) || name.starts_with("LC_") || extra.iter().any(|e| e == name)
}

/// The variable GitHub's runner marks a job's processes with; the job's end kills every process
/// that still carries it, however it detached (`setsid`, double fork, `nohup`).
const TRACKING_VAR: &str = "RUNNER_TRACKING_ID";

impl RunnerConfig {
    /// A runner for the sandbox: jobs run in `work_dir` from the driver `checkout`, and download
    /// this very kfleet binary as the release the workflow pins (staged with its sha256 under
    /// `work_dir/dist`, reached through the `KFLEET_DOWNLOAD` variable), so the workflow's install
    /// step runs for real. The build runs in docker or podman when one works, else on this host
    /// for the host's own distribution and release.
    pub fn for_sandbox(checkout: &Path, work_dir: &Path) -> Result<Self, SetupError> {
        let checkout = std::fs::canonicalize(checkout).map_err(|e| SetupError::Checkout {
            path: checkout.display().to_string(),
            source: Cause::of(e),
        })?;
        if !checkout
            .join(".github/workflows/build-driver.yml")
            .is_file()
        {
            return Err(SetupError::NoWorkflow {
                path: checkout.display().to_string(),
            });
        }
        crate::fsio::own_private_dir(work_dir).map_err(|e| SetupError::WorkDir {
            path: work_dir.display().to_string(),
            source: Cause::of(e),
        })?;
        let version = env!("CARGO_PKG_VERSION");
        let dist = work_dir.join("dist");
        let release = dist.join(format!("v{version}"));
        std::fs::create_dir_all(&release)
            .map_err(|e| SetupError::Stage(format!("cannot create {}: {e}", release.display())))?;
        let exe = std::env::current_exe()
            .map_err(|e| SetupError::Stage(format!("cannot find kfleet itself: {e}")))?;
        let name = format!("kfleet-{version}-{}-linux", std::env::consts::ARCH);
        let bytes = std::fs::read(&exe)
            .map_err(|e| SetupError::Stage(format!("cannot read {}: {e}", exe.display())))?;
        let digest = crate::fsio::hex(&<sha2::Sha256 as sha2::Digest>::digest(&bytes));
        crate::fsio::write_atomic(&release.join(&name), &bytes)
            .and_then(|()| {
                crate::fsio::write_atomic(
                    &release.join(format!("{name}.sha256")),
                    format!("{digest}  {name}\n").as_bytes(),
                )
            })
            .map_err(|e| {
                SetupError::Stage(format!("cannot stage kfleet in {}: {e}", release.display()))
            })?;
        let vars = BTreeMap::from([
            ("KFLEET_VERSION".to_string(), version.to_string()),
            (
                "KFLEET_DOWNLOAD".to_string(),
                format!("file://{}", dist.display()),
            ),
        ]);
        let mut env = BTreeMap::new();
        for dir in ["config", "state", "cache"] {
            let xdg = work_dir.join("xdg").join(dir);
            env.insert(
                format!("XDG_{}_HOME", dir.to_uppercase()),
                xdg.display().to_string(),
            );
        }
        let works = |engine: &str| {
            std::process::Command::new(engine)
                .arg("info")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let mut host_only = None;
        if works("docker") {
        } else if works("podman") {
            env.insert("KFLEET_CONTAINER_ENGINE".into(), "podman".into());
        } else {
            env.insert("KFLEET_EXTRACT".into(), "1".into());
            let os = std::fs::read_to_string("/etc/os-release")
                .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
                .unwrap_or_default();
            let fields = crate::identity::parse_os_release(&os);
            host_only = Some((
                fields.get("ID").cloned().unwrap_or_default(),
                fields.get("VERSION_ID").cloned().unwrap_or_default(),
            ));
        }
        Ok(Self {
            checkout,
            work_dir: work_dir.to_path_buf(),
            vars,
            secrets: BTreeMap::new(),
            passed_env: Vec::new(),
            env,
            host_only,
        })
    }
}

/// What a job is run against: the forge's API and repository, and the token `github.token` gives.
#[derive(Clone, Debug)]
pub struct JobTarget {
    pub api_url: String,
    pub repo: String,
    pub token: String,
    pub run_id: u64,
}

/// How a job ended.
#[derive(Clone, Debug, PartialEq)]
pub struct JobOutcome {
    pub success: bool,
    /// Why it failed (the step and its last lines of output), or what it did.
    pub summary: String,
    pub log: PathBuf,
    /// Each step that ran, with how long it took.
    pub steps: Vec<(String, Duration)>,
}

/// One step of a job, as the workflow says it.
#[derive(Clone, Debug)]
struct Step {
    name: String,
    id: Option<String>,
    condition: Option<String>,
    env: Vec<(String, String)>,
    action: Action,
}

#[derive(Clone, Debug)]
enum Action {
    Run(String),
    Checkout,
    /// `actions/attest-build-provenance`: signing needs GitHub's OIDC token, which a local run
    /// has not; the step is skipped with a line in the log, and sets no outputs.
    Attest,
    Uses(String),
}

#[derive(Clone, Debug)]
struct Job {
    env: Vec<(String, String)>,
    timeout: Duration,
    steps: Vec<Step>,
}

fn scalar(y: &Yaml) -> Option<String> {
    match y {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

fn env_map(y: &Yaml) -> Vec<(String, String)> {
    y.as_hash()
        .map(|h| {
            h.iter()
                .filter_map(|(k, v)| Some((scalar(k)?, scalar(v).unwrap_or_default())))
                .collect()
        })
        .unwrap_or_default()
}

/// The one job of a workflow file that has steps.
fn read_job(path: &Path) -> Result<Job, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the workflow {}: {e}", path.display()))?;
    let docs = YamlLoader::load_from_str(&text)
        .map_err(|e| format!("{} is not valid YAML: {e}", path.display()))?;
    let doc = docs
        .first()
        .ok_or_else(|| format!("{} is empty", path.display()))?;
    let jobs = doc["jobs"]
        .as_hash()
        .ok_or_else(|| format!("{} has no jobs", path.display()))?;
    let job = jobs
        .values()
        .find(|j| j["steps"].as_vec().is_some())
        .ok_or_else(|| {
            format!(
                "{} has no job with steps (a job that calls a reusable workflow is run through that workflow)",
                path.display()
            )
        })?;
    let minutes = job["timeout-minutes"].as_i64().unwrap_or(360).clamp(1, 360) as u64;
    let mut steps = Vec::new();
    for (i, s) in job["steps"].as_vec().into_iter().flatten().enumerate() {
        let action = if let Some(run) = s["run"].as_str() {
            Action::Run(run.to_string())
        } else if let Some(uses) = s["uses"].as_str() {
            if uses.starts_with("actions/checkout@") {
                Action::Checkout
            } else if uses.starts_with("actions/attest-build-provenance@") {
                Action::Attest
            } else {
                Action::Uses(uses.to_string())
            }
        } else {
            return Err(format!(
                "{}: step {} has neither run: nor uses:",
                path.display(),
                i + 1
            ));
        };
        steps.push(Step {
            name: s["name"]
                .as_str()
                .map_or_else(|| format!("step {}", i + 1), str::to_string),
            id: s["id"].as_str().map(str::to_string),
            condition: scalar(&s["if"]),
            env: env_map(&s["env"]),
            action,
        });
    }
    Ok(Job {
        env: env_map(&job["env"]),
        timeout: Duration::from_secs(minutes * 60),
        steps,
    })
}

/// `KEY=value` lines and `KEY<<DELIM` blocks of a `GITHUB_OUTPUT`/`GITHUB_ENV` file.
fn read_key_values(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some((key, delim)) = line.split_once("<<") {
            let mut value = Vec::new();
            for l in lines.by_ref() {
                if l == delim {
                    break;
                }
                value.push(l);
            }
            out.push((key.to_string(), value.join("\n")));
        } else if let Some((key, value)) = line.split_once('=') {
            out.push((key.to_string(), value.to_string()));
        }
    }
    out
}

/// The last `n` lines of a file, for a failure's summary.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl RunnerConfig {
    /// Runs the job of `workflow` (a file name in the checkout's `.github/workflows/`) with
    /// `inputs`. Never panics; every way it can fail is a failed outcome with its reason.
    pub async fn run(
        &self,
        workflow: &str,
        inputs: &BTreeMap<String, String>,
        target: &JobTarget,
    ) -> JobOutcome {
        let dir = self.work_dir.join(format!("run-{}", target.run_id));
        let log = dir.join("job.log");
        let fail = |summary: String, steps| JobOutcome {
            success: false,
            summary,
            log: log.clone(),
            steps,
        };
        if let Err(e) = crate::fsio::own_private_dir(&self.work_dir) {
            return fail(format!("the runner's work directory: {e}"), vec![]);
        }
        if workflow.contains(['/', '\\']) || workflow.starts_with('.') {
            return fail(
                format!("workflow name '{workflow}' is not a file name"),
                vec![],
            );
        }
        if let Some((distribution, version)) = &self.host_only {
            let wanted = |k: &str| inputs.get(k).map_or("", String::as_str);
            if wanted("distribution") != distribution || wanted("distro_version") != version {
                return fail(
                    format!(
                        "this host ({distribution} {version}) has no working docker or podman, so it builds only {distribution}/{version} kernels, not {}/{}",
                        wanted("distribution"),
                        wanted("distro_version")
                    ),
                    vec![],
                );
            }
        }
        let job = match read_job(&self.checkout.join(".github/workflows").join(workflow)) {
            Ok(job) => job,
            Err(e) => return fail(e, vec![]),
        };
        let workspace = dir.join("workspace");
        let temp = dir.join("temp");
        for d in [&workspace, &temp] {
            if let Err(e) = std::fs::create_dir_all(d) {
                return fail(format!("cannot create {}: {e}", d.display()), vec![]);
            }
        }
        let tracking = match crate::fsio::random_hex(16) {
            Ok(id) => format!("kfleet-job-{id}"),
            Err(e) => return fail(e.to_string(), vec![]),
        };
        // Whatever way the job ends (done, failed, timed out, abandoned), what it started ends too.
        let _processes = JobProcesses(tracking.clone());
        let started = Instant::now();
        match tokio::time::timeout(
            job.timeout,
            self.steps(
                &job,
                inputs,
                target,
                &JobDirs {
                    workspace: &workspace,
                    temp: &temp,
                    log: &log,
                    tracking: &tracking,
                },
            ),
        )
        .await
        {
            Ok(Ok(steps)) => {
                // A run that succeeded keeps its log only; a failed one keeps everything to look at.
                for d in [&workspace, &temp] {
                    let _ = std::fs::remove_dir_all(d);
                }
                JobOutcome {
                    success: true,
                    summary: format!(
                        "{} steps in {:.1}s ({})",
                        steps.len(),
                        started.elapsed().as_secs_f64(),
                        steps
                            .iter()
                            .map(|(name, took)| format!("{name}: {:.1}s", took.as_secs_f64()))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    log,
                    steps,
                }
            }
            Ok(Err((reason, steps))) => fail(reason, steps),
            Err(_) => fail(
                format!(
                    "the job ran past its timeout-minutes ({}m) and was stopped",
                    job.timeout.as_secs() / 60
                ),
                vec![],
            ),
        }
    }

    async fn steps(
        &self,
        job: &Job,
        inputs: &BTreeMap<String, String>,
        target: &JobTarget,
        dirs: &JobDirs<'_>,
    ) -> Result<Vec<(String, Duration)>, (String, Vec<(String, Duration)>)> {
        let JobDirs {
            workspace,
            temp,
            log,
            tracking,
        } = *dirs;
        let mut done = Vec::new();
        let mut ctx = Contexts::default();
        for (k, v) in inputs {
            ctx.set(&format!("inputs.{k}"), v);
        }
        for (k, v) in &self.vars {
            ctx.set(&format!("vars.{k}"), v);
        }
        for (k, v) in &self.secrets {
            ctx.set(&format!("secrets.{k}"), v);
        }
        ctx.set("github.token", &target.token);
        ctx.set("github.repository", &target.repo);
        let mut env: BTreeMap<String, String> = std::env::vars()
            .filter(|(k, _)| passed(k, &self.passed_env))
            .collect();
        let path_of = |p: &Path| p.display().to_string();
        let fixed = [
            ("CI", "true".to_string()),
            ("GITHUB_ACTIONS", "true".to_string()),
            ("GITHUB_REPOSITORY", target.repo.clone()),
            ("GITHUB_API_URL", target.api_url.clone()),
            ("GITHUB_SERVER_URL", target.api_url.clone()),
            ("GITHUB_RUN_ID", target.run_id.to_string()),
            ("GITHUB_WORKSPACE", path_of(workspace)),
            ("RUNNER_TEMP", path_of(temp)),
            ("RUNNER_OS", "Linux".to_string()),
            (TRACKING_VAR, tracking.to_string()),
        ];
        env.extend(fixed.map(|(k, v)| (k.to_string(), v)));
        env.extend(self.env.clone());
        let mut job_env = Vec::new();
        for (k, v) in &job.env {
            let v = substitute(v, &ctx).map_err(|e| (format!("job env {k}: {e}"), vec![]))?;
            job_env.push((k.clone(), v));
        }
        env.extend(job_env);
        let logfile = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| (format!("cannot write {}: {e}", log.display()), vec![]))?;
        let mask = Mask::new(
            self.secrets
                .values()
                .chain(std::iter::once(&target.token))
                .map(String::as_str),
        );
        let mut logfile = MaskedLog::new(logfile, mask);
        // The first failure; the steps after it run only where their `if:` asks (`always()`).
        let mut failed: Option<String> = None;
        for (n, step) in job.steps.iter().enumerate() {
            use std::io::Write as _;
            match expr::step_runs(step.condition.as_deref(), &ctx) {
                Ok(true) => {}
                Ok(false) => {
                    let why = step
                        .condition
                        .as_deref()
                        .unwrap_or("an earlier step failed");
                    let _ = writeln!(logfile, "## {} (skipped: {why})", step.name);
                    continue;
                }
                Err(e) => {
                    return Err((format!("step '{}': if: {e}", step.name), done));
                }
            }
            let _ = writeln!(logfile, "## {}", step.name);
            let started = Instant::now();
            let mut step_env = env.clone();
            for (k, v) in &step.env {
                let v = substitute(v, &ctx)
                    .map_err(|e| (format!("step '{}': env {k}: {e}", step.name), done.clone()))?;
                step_env.insert(k.clone(), v);
            }
            let files = ["output", "env", "path"].map(|f| temp.join(format!("_{f}_{n}")));
            for f in &files {
                let _ = std::fs::write(f, b"");
            }
            step_env.insert("GITHUB_OUTPUT".into(), path_of(&files[0]));
            step_env.insert("GITHUB_ENV".into(), path_of(&files[1]));
            step_env.insert("GITHUB_PATH".into(), path_of(&files[2]));
            let status = match &step.action {
                Action::Checkout => {
                    let (from, to) = (self.checkout.clone(), workspace.to_path_buf());
                    match tokio::task::spawn_blocking(move || copy_tree(&from, &to)).await {
                        Ok(Ok(skipped)) => {
                            for path in skipped {
                                let _ = writeln!(
                                    logfile,
                                    "actions/checkout: skipped {} (not a file, directory or symbolic link)",
                                    path.display()
                                );
                            }
                            Ok(())
                        }
                        Ok(Err(e)) => Err(format!("actions/checkout: {e}")),
                        Err(e) => Err(format!("actions/checkout: {e}")),
                    }
                }
                Action::Attest => {
                    let _ = writeln!(
                        logfile,
                        "actions/attest-build-provenance: skipped (a local run has no GitHub OIDC token to sign with); this artifact has no provenance"
                    );
                    Ok(())
                }
                Action::Uses(uses) => Err(format!(
                    "the local runner runs run: steps, actions/checkout and (skipped) actions/attest-build-provenance only, not {uses}"
                )),
                // GitHub substitutes expressions in scripts too (kfleet's workflows keep them out).
                Action::Run(script) => match substitute(script, &ctx) {
                    Ok(script) => {
                        run_script(&script, temp, n, workspace, &step_env, &mut logfile).await
                    }
                    Err(e) => Err(e),
                },
            };
            done.push((step.name.clone(), started.elapsed()));
            if let Err(e) = status {
                let _ = logfile.flush();
                if failed.is_none() {
                    failed = Some(format!(
                        "step '{}' failed: {e}; last output:\n{}",
                        step.name,
                        tail(log, 8)
                    ));
                }
                ctx.set_failed();
                continue;
            }
            if let Some(id) = &step.id {
                for (k, v) in read_key_values(&files[0]) {
                    ctx.set(&format!("steps.{id}.outputs.{k}"), v);
                }
            }
            env.extend(read_key_values(&files[1]));
            for dir in std::fs::read_to_string(&files[2])
                .unwrap_or_default()
                .lines()
            {
                let dir = dir.trim();
                if !dir.is_empty() {
                    let old = env.get("PATH").cloned().unwrap_or_default();
                    env.insert("PATH".into(), format!("{dir}:{old}"));
                }
            }
        }
        match failed {
            Some(message) => Err((message, done)),
            None => Ok(done),
        }
    }
}

/// Where one job runs, and the mark its processes carry.
#[derive(Clone, Copy)]
struct JobDirs<'a> {
    workspace: &'a Path,
    temp: &'a Path,
    log: &'a Path,
    tracking: &'a str,
}

fn substitute(text: &str, ctx: &Contexts) -> Result<String, String> {
    expr::substitute(text, ctx)
}

/// Runs one `run:` script as GitHub's default bash shell does, its output appended to the log
/// with the secrets masked.
async fn run_script(
    script: &str,
    temp: &Path,
    n: usize,
    workspace: &Path,
    env: &BTreeMap<String, String>,
    log: &mut MaskedLog,
) -> Result<(), String> {
    let file = temp.join(format!("_step_{n}.sh"));
    std::fs::write(&file, script).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    // A process group of its own: a stopped job (timeout, cancel) takes make and the compilers
    // with it, not only bash.
    let mut child = tokio::process::Command::new("bash")
        .args(["--noprofile", "--norc", "-eo", "pipefail"])
        .arg(&file)
        .current_dir(workspace)
        .env_clear()
        .envs(env)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start bash: {e}"))?;
    let mut group = GroupKill(child.id());
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err("cannot read the step's output".into());
    };
    let (tx, mut lines) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
    let forwarders = [
        tokio::spawn(forward_lines(stdout, tx.clone())),
        tokio::spawn(forward_lines(stderr, tx)),
    ];
    let status = loop {
        tokio::select! {
            status = child.wait() => break status.map_err(|e| format!("cannot wait for bash: {e}"))?,
            Some(line) = lines.recv() => log.line(&line),
        }
    };
    // What the step printed before it ended; a background process that keeps the streams open
    // does not hold the step (the job's end stops it).
    while let Ok(Some(line)) = tokio::time::timeout(Duration::from_millis(200), lines.recv()).await
    {
        log.line(&line);
    }
    for f in forwarders {
        f.abort();
    }
    group.0 = None;
    if status.success() {
        Ok(())
    } else {
        Err(match status.code() {
            Some(code) => format!("exit code {code}"),
            None => "killed by a signal".to_string(),
        })
    }
}

/// The longest piece of output written to the log as one line (a longer one is cut).
const MAX_LINE: usize = 64 * 1024;

/// Sends a stream's lines (each with its newline, at most [`MAX_LINE`] bytes) until it closes.
async fn forward_lines(
    mut stream: impl tokio::io::AsyncRead + Unpin,
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
) {
    use tokio::io::AsyncReadExt as _;
    let mut buf = vec![0u8; 8192];
    let mut pending = Vec::new();
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        while let Some(end) = memchr::memchr(b'\n', &pending) {
            let line: Vec<u8> = pending.drain(..=end).collect();
            if tx.send(line).await.is_err() {
                return;
            }
        }
        if pending.len() >= MAX_LINE && tx.send(std::mem::take(&mut pending)).await.is_err() {
            return;
        }
    }
    if !pending.is_empty() {
        let _ = tx.send(pending).await;
    }
}

/// The values a job's log must not show, as GitHub masks them: each line of every secret and the
/// job's token.
#[derive(Clone, Debug, Default)]
pub struct Mask(Vec<memchr::memmem::Finder<'static>>);

impl Mask {
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Self {
        let mut values: Vec<&str> = secrets
            .into_iter()
            .flat_map(str::lines)
            .map(str::trim)
            // Masking one or two characters would mask the log itself.
            .filter(|v| v.len() >= 3)
            .collect();
        // The longest first: a secret that holds another is masked whole.
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values.dedup();
        Self(
            values
                .into_iter()
                .map(|v| memchr::memmem::Finder::new(v.as_bytes()).into_owned())
                .collect(),
        )
    }

    /// `text` with every secret replaced by `***`.
    pub fn apply(&self, text: &[u8]) -> Vec<u8> {
        let mut out = text.to_vec();
        for finder in &self.0 {
            if finder.find(&out).is_none() {
                continue;
            }
            let mut masked = Vec::with_capacity(out.len());
            let mut rest = &out[..];
            while let Some(at) = finder.find(rest) {
                masked.extend_from_slice(&rest[..at]);
                masked.extend_from_slice(b"***");
                rest = &rest[at + finder.needle().len()..];
            }
            masked.extend_from_slice(rest);
            out = masked;
        }
        out
    }
}

/// The job's log: every step's output goes through the mask.
struct MaskedLog {
    file: std::fs::File,
    mask: Mask,
}

impl MaskedLog {
    fn new(file: std::fs::File, mask: Mask) -> Self {
        Self { file, mask }
    }

    fn line(&mut self, line: &[u8]) {
        use std::io::Write as _;
        let _ = self.file.write_all(&self.mask.apply(line));
    }
}

impl std::io::Write for MaskedLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.line(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Ends every process that still carries a job's tracking mark when dropped: after the job
/// succeeded, failed, timed out or was abandoned.
struct JobProcesses(String);

impl Drop for JobProcesses {
    fn drop(&mut self) {
        kill_marked(&self.0);
    }
}

/// Kills the processes whose environment holds `RUNNER_TRACKING_ID=mark`, again until none is
/// left (one may fork while the others are killed).
fn kill_marked(mark: &str) {
    let needle = format!("{TRACKING_VAR}={mark}");
    let me = std::process::id();
    for _ in 0..20 {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        let mut found = false;
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            if pid as u32 == me {
                continue;
            }
            let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
                continue;
            };
            if environ
                .split(|b| *b == 0)
                .any(|var| var == needle.as_bytes())
            {
                found = true;
                // SAFETY: kill has no memory preconditions; a pid that is gone is an error we ignore.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        if !found {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills a step's process group when the step is abandoned (its future dropped).
struct GroupKill(Option<u32>);

impl Drop for GroupKill {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: killpg has no memory preconditions; a group that is gone is an error we
            // ignore.
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
    }
}

/// Copies a directory tree (files, directories, symbolic links as links), as a checkout would
/// bring the repository; anything else (a FIFO, a socket, a device) is left out and returned, as
/// reading one could block the job forever. Runs on a blocking thread.
fn copy_tree(from: &Path, to: &Path) -> Result<Vec<PathBuf>, String> {
    let mut skipped = Vec::new();
    let entries =
        std::fs::read_dir(from).map_err(|e| format!("cannot read {}: {e}", from.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| e.to_string())?;
        let kind = entry.file_type().map_err(|e| e.to_string())?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            std::fs::create_dir_all(&target).map_err(|e| e.to_string())?;
            skipped.extend(copy_tree(&entry.path(), &target)?);
        } else if kind.is_symlink() {
            let link = std::fs::read_link(entry.path()).map_err(|e| e.to_string())?;
            std::os::unix::fs::symlink(link, &target).map_err(|e| e.to_string())?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target)
                .map_err(|e| format!("cannot copy {}: {e}", entry.path().display()))?;
        } else {
            skipped.push(entry.path());
        }
    }
    Ok(skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_see_an_allow_list_of_the_environment() {
        for name in [
            "GITHUB_TOKEN",
            "GH_TOKEN",
            "KFLEET_CLIENT_TOKENS",
            "KFLEET_SERVICE_TOKEN",
            "KFLEET_STATE_URL",
            "KFLEET_SANDBOX_TOKEN",
            "AWS_SECRET_ACCESS_KEY",
            "PGPASSWORD",
            "VAULT_TOKEN",
            "DATABASE_URL",
            "SSH_AUTH_SOCK",
        ] {
            assert!(!passed(name, &[]), "{name}");
        }
        assert!(passed("KFLEET_HEADER_SOURCES", &[]));
        assert!(passed("PATH", &[]) && passed("LC_ALL", &[]));
        assert!(passed("MY_MIRROR", &["MY_MIRROR".into()]));
    }

    #[test]
    fn secrets_are_masked_line_by_line() {
        let mask = Mask::new(["s3cr3t-value", "first line\nsecond line", "ab"]);
        assert_eq!(
            mask.apply(b"token s3cr3t-value, then second line and ab\n"),
            b"token ***, then *** and ab\n"
        );
    }
}
