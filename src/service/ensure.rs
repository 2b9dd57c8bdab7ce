//! The node side (`kfleet ensure`): ask the build service for this kernel's driver, wait for it
//! with backoff up to the deadline, download it, verify its sha256, and say where it is.

use super::{BuildRequest, BuildStatus};
use crate::identity::KernelIdentity;
use sha2::Digest;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct EnsureOptions {
    /// Base URL of `kfleet serve`.
    pub service: String,
    pub token: String,
    pub driver_version: String,
    /// Where the artifact is written.
    pub out: PathBuf,
    /// Longest wait for a build.
    pub deadline: Duration,
    /// First and longest pause between status polls.
    pub poll_min: Duration,
    pub poll_max: Duration,
}

/// How it ended, each with its own exit code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnsureOutcome {
    /// The verified artifact is at this path.
    Available(PathBuf),
    TimedOut(String),
    Failed(String),
    /// The service refused the identity (invalid or unsupported).
    Rejected(String),
}

impl EnsureOutcome {
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Available(_) => 0,
            Self::TimedOut(_) => 3,
            Self::Failed(_) => 4,
            Self::Rejected(_) => 5,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EnsureError {
    #[error(
        "the build service at {0} rejected the token (401); check KFLEET_SERVICE_TOKEN or --token-file"
    )]
    Unauthorized(String),
    #[error("{url}: {message}")]
    Http { url: String, message: String },
    #[error("{name}: sha256 is {actual} but the service says {expected}; nothing was kept")]
    ChecksumMismatch {
        name: String,
        expected: String,
        actual: String,
    },
    #[error("the service said available but gave no {0}")]
    Incomplete(&'static str),
    #[error("cannot write {path}: {message}")]
    Write { path: String, message: String },
}

struct Client<'a> {
    http: reqwest::Client,
    options: &'a EnsureOptions,
}

impl Client<'_> {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.options.service.trim_end_matches('/'))
    }

    /// Sends a request; `Ok(None)` for answers worth retrying (5xx, 429, transport errors).
    async fn call(
        &self,
        request: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<Option<(u16, BuildStatus)>, EnsureError> {
        let response = match request.bearer_auth(&self.options.token).send().await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("waiting: {url}: {e}; retrying");
                return Ok(None);
            }
        };
        let code = response.status().as_u16();
        if code == 401 {
            return Err(EnsureError::Unauthorized(self.options.service.clone()));
        }
        if code == 429 || code >= 500 {
            eprintln!("waiting: {url} answered {code}; retrying");
            return Ok(None);
        }
        let body = response.bytes().await.map_err(|e| EnsureError::Http {
            url: url.to_string(),
            message: e.to_string(),
        })?;
        let status: BuildStatus = serde_json::from_slice(&body).map_err(|e| EnsureError::Http {
            url: url.to_string(),
            message: format!("answered {code} with a body that is not a build status: {e}"),
        })?;
        Ok(Some((code, status)))
    }

    async fn download(&self, status: &BuildStatus) -> Result<PathBuf, EnsureError> {
        let url = status
            .download_url
            .clone()
            .ok_or(EnsureError::Incomplete("download_url"))?;
        let expected = status
            .sha256
            .clone()
            .ok_or(EnsureError::Incomplete("sha256"))?;
        download_verified(&self.http, &url, &expected, &self.options.out).await
    }
}

/// Downloads `url`, checks its sha256 against `expected`, and writes it into `out` atomically.
async fn download_verified(
    http: &reqwest::Client,
    url: &str,
    expected: &str,
    out: &std::path::Path,
) -> Result<PathBuf, EnsureError> {
    let name = url.rsplit('/').next().unwrap_or("").to_string();
    let err = |message: String| EnsureError::Http {
        url: url.to_string(),
        message,
    };
    if name.is_empty() || name.contains("..") {
        return Err(err("the download URL names no file".into()));
    }
    let response = http.get(url).send().await.map_err(|e| err(e.to_string()))?;
    if !response.status().is_success() {
        return Err(err(format!("HTTP {}", response.status().as_u16())));
    }
    let bytes = response.bytes().await.map_err(|e| err(e.to_string()))?;
    let actual: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let expected = expected.trim_start_matches("sha256:").to_ascii_lowercase();
    if actual != expected {
        return Err(EnsureError::ChecksumMismatch {
            name,
            expected,
            actual,
        });
    }
    std::fs::create_dir_all(out).map_err(|e| EnsureError::Write {
        path: out.display().to_string(),
        message: e.to_string(),
    })?;
    let path = out.join(&name);
    crate::report::write_atomic(&path, &bytes).map_err(|e| EnsureError::Write {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    Ok(path)
}

/// Without a service: the same planner against the forge directly (the node needs a GitHub
/// token), then the run is followed to the deadline and the artifact fetched from the release.
pub async fn ensure_direct(
    identity: &KernelIdentity,
    forge: &dyn crate::forge::Forge,
    planner: &crate::builds::Planner,
    template: &crate::identity::AssetTemplate,
    options: &EnsureOptions,
) -> Result<EnsureOutcome, EnsureError> {
    use crate::builds::Decision;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| EnsureError::Http {
            url: String::new(),
            message: e.to_string(),
        })?;
    let forge_err = |e: String| EnsureError::Http {
        url: forge.label(),
        message: e,
    };
    let key = identity.key();
    let started = Instant::now();
    let decision = planner
        .plan_for_version(std::slice::from_ref(&key), &options.driver_version)
        .await
        .map_err(|e| forge_err(e.to_string()))?
        .remove(0)
        .1;
    let run_id = match decision {
        Decision::Available {
            url: Some(url),
            digest: Some(digest),
            ..
        } => {
            return Ok(EnsureOutcome::Available(
                download_verified(&http, &url, &digest, &options.out).await?,
            ));
        }
        Decision::Dispatched { run_id, .. } => Some(run_id),
        Decision::Building { run_id, .. } => run_id,
        Decision::Available { .. } => None,
        Decision::TimedOut { .. } => {
            return Ok(EnsureOutcome::TimedOut(format!(
                "the build for {key} passed the deadline"
            )));
        }
        Decision::Invalid { reason } | Decision::Unsupported { reason } => {
            return Ok(EnsureOutcome::Rejected(reason));
        }
        Decision::WouldDispatch => None,
    };
    eprintln!(
        "building {key}{}",
        run_id.map(|r| format!(" (run {r})")).unwrap_or_default()
    );
    let mut pause = options.poll_min;
    loop {
        if let Some(run_id) = run_id {
            let run = forge
                .get_run(run_id)
                .await
                .map_err(|e| forge_err(e.to_string()))?;
            if run.is_finished() && run.conclusion.as_deref() != Some("success") {
                return Ok(EnsureOutcome::Failed(format!(
                    "the build for {key} failed{}",
                    run.html_url.map(|u| format!(": {u}")).unwrap_or_default()
                )));
            }
        }
        let listing = forge
            .list_releases()
            .await
            .map_err(|e| forge_err(e.to_string()))?;
        if let Ok(release) =
            crate::forge::select_release(&listing.releases, Some(&options.driver_version))
            && let Some(asset) = crate::forge::index_assets(release, template)
                .matched
                .into_iter()
                .find(|a| a.key == key)
            && let (Some(url), Some(digest)) = (asset.url, asset.digest)
        {
            return Ok(EnsureOutcome::Available(
                download_verified(&http, &url, &digest, &options.out).await?,
            ));
        }
        if started.elapsed() >= options.deadline {
            return Ok(EnsureOutcome::TimedOut(format!(
                "no driver for {key} within {:?}",
                options.deadline
            )));
        }
        let left = options.deadline.saturating_sub(started.elapsed());
        tokio::time::sleep(pause.min(left)).await;
        pause = (pause * 2).min(options.poll_max);
    }
}

/// Asks the service for `identity`'s driver and waits for it, at most `options.deadline`.
pub async fn ensure(
    identity: &KernelIdentity,
    options: &EnsureOptions,
) -> Result<EnsureOutcome, EnsureError> {
    let client = Client {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| EnsureError::Http {
                url: options.service.clone(),
                message: e.to_string(),
            })?,
        options,
    };
    let started = Instant::now();
    let request = BuildRequest {
        kernel_version: identity.kernel_version.clone(),
        architecture: identity.architecture.as_str().to_string(),
        distribution: identity.distribution.as_str().to_string(),
        distro_version: identity.distro_version.clone(),
        driver_version: options.driver_version.clone(),
    };
    let mut pause = options.poll_min;
    let build_url = client.url("/build");
    let mut id: Option<String> = None;
    loop {
        if started.elapsed() >= options.deadline {
            return Ok(EnsureOutcome::TimedOut(format!(
                "no driver for {} within {:?}",
                identity.key(),
                options.deadline
            )));
        }
        let answer = match &id {
            None => {
                client
                    .call(client.http.post(&build_url).json(&request), &build_url)
                    .await?
            }
            Some(id) => {
                let url = client.url(&format!("/status/{id}"));
                client.call(client.http.get(&url), &url).await?
            }
        };
        if let Some((code, status)) = answer {
            match (code, status.status.as_str()) {
                (200, "available") => {
                    return Ok(EnsureOutcome::Available(client.download(&status).await?));
                }
                (400, _) => return Ok(EnsureOutcome::Rejected(status.reason.unwrap_or_default())),
                (_, "failed") => {
                    return Ok(EnsureOutcome::Failed(format!(
                        "the build for {} failed{}",
                        identity.key(),
                        status.run_url.map(|u| format!(": {u}")).unwrap_or_default()
                    )));
                }
                (_, "timed_out") => {
                    return Ok(EnsureOutcome::TimedOut(format!(
                        "the build for {} timed out",
                        identity.key()
                    )));
                }
                (200 | 202, _) => {
                    if id.is_none() {
                        id = status.id.clone();
                        eprintln!(
                            "building {} (id {}){}",
                            identity.key(),
                            id.as_deref().unwrap_or("?"),
                            status.run_url.map(|u| format!(": {u}")).unwrap_or_default()
                        );
                    }
                }
                (code, _) => {
                    return Err(EnsureError::Http {
                        url: build_url,
                        message: format!(
                            "answered {code}: {}",
                            status.reason.unwrap_or(status.status)
                        ),
                    });
                }
            }
        }
        let left = options.deadline.saturating_sub(started.elapsed());
        tokio::time::sleep(pause.min(left)).await;
        pause = (pause * 2).min(options.poll_max);
    }
}
