//! Clients and stores built from resolved settings: the forge (GitHub, a GitHub App, or the
//! sandbox), the local runner, the build state store and the OCI artifact store. Settings are
//! resolved in `settings.rs`; this file turns them into things that talk to the world.

use crate::artifacts::AssetTemplate;
use crate::cli::BuildArgs;
use crate::cli::ForgeArgs;
use crate::cli::ForgeRepoArgs;
use crate::cli::RunnerArgs;
use crate::cli::RunnerKind;
use crate::cli::StoreArgs;
use crate::cli::runtime;
use crate::config::Config;
use crate::forge::Forge;
use crate::forge::GITHUB_API;
use crate::forge::GithubClient;
use crate::forge::OciStore;
use crate::forge::RepoRef;
use crate::forge::RetryPolicy;
use crate::forge::SandboxForge;
use crate::forge::SandboxOptions;
use crate::forge::Simulation;
use crate::forge::StoreForge;
use crate::forge::load_releases;
use crate::forge::token_from_environment;
use crate::oci::Credentials;
use crate::state::StateSpec;
use crate::state::Store;
use anyhow::Context;
use anyhow::Result;
use std::sync::Arc;

impl BuildArgs {
    pub(crate) fn forge_client(&self, config: &Config) -> Result<Option<Arc<dyn Forge>>> {
        self.forge
            .client(config, &self.state_root(config).join("http-cache"))
    }

    pub(crate) fn client(&self, config: &Config) -> Result<Arc<dyn Forge>> {
        self.forge_client(config)?.ok_or_else(|| {
            anyhow::anyhow!("no repository: pass --repo OWNER/NAME (or set repo in kfleet.toml)")
        })
    }

    /// Where the build state lives: `--state`, else `kfleet.db` in the state directory. A
    /// sandbox forge's builds live only as long as the sandbox that runs them: without `--state`
    /// they go to a temporary directory of this command's own, so no later command sees a build
    /// "running" in a sandbox that has ended, and none mixes into the real build state.
    fn state_spec(&self, config: &Config, sandbox: bool) -> Result<StateSpec> {
        let url = self.state_url.as_deref().unwrap_or_default();
        let dir = if sandbox && url.is_empty() {
            if self.sandbox_state.get().is_none() {
                let made = tempfile::Builder::new()
                    .prefix("kfleet-sandbox-state-")
                    .tempdir()
                    .context("cannot make a directory for the sandbox's build state")?;
                let _ = self.sandbox_state.set(made);
            }
            self.sandbox_state
                .get()
                .map(|d| d.path().to_path_buf())
                .context("the sandbox's build state directory")?
        } else {
            self.state_root(config)
        };
        StateSpec::parse(url, &dir).map_err(|e| anyhow::anyhow!(e))
    }

    /// Opens the build state store.
    pub(crate) async fn store(&self, config: &Config) -> Result<Store> {
        self.store_for(config, self.forge.sandbox.is_some()).await
    }

    /// Opens the build state store; `sandbox`: the forge is a sandbox (the dashboard starts the
    /// built-in one without `--sandbox`).
    pub(crate) async fn store_for(&self, config: &Config, sandbox: bool) -> Result<Store> {
        let spec = self.state_spec(config, sandbox)?;
        Store::open(&spec)
            .await
            .context("cannot open the build state store")
    }
}

impl ForgeArgs {
    /// The forge named by the flags or config: the sandbox, or GitHub for a repository, keeping
    /// its listing validators in `http_cache`.
    pub(crate) fn client(
        &self,
        config: &Config,
        http_cache: &std::path::Path,
    ) -> Result<Option<Arc<dyn Forge>>> {
        if let Some(dir) = &self.sandbox {
            let releases = load_releases(dir)?;
            let forge = runtime()?.block_on(SandboxForge::start(
                releases,
                SandboxOptions {
                    // Other kfleet commands can read this sandbox with the token they are given.
                    token: crate::environment::var(crate::environment::KFLEET_SANDBOX_TOKEN),
                    assets_dir: Some(dir.join("assets")),
                    simulation: Simulation {
                        local: self.runner.local()?,
                        ..Simulation::default()
                    },
                    ..SandboxOptions::default()
                },
                RetryPolicy::default(),
            ))?;
            tracing::info!("{}", Forge::label(&forge));
            return Ok(Some(Arc::new(forge)));
        }
        let Some(repo) = self.repo.clone().or_else(|| config.repo.clone()) else {
            return Ok(None);
        };
        let client = match (self.github_app_id, &self.github_app_key) {
            (Some(app_id), Some(key_file)) => {
                github_app_client(&repo, self.api_url.as_deref(), config, app_id, key_file)?
            }
            _ => github_client(&repo, self.api_url.as_deref(), config)?,
        };
        Ok(Some(Arc::new(
            client.with_disk_cache(http_cache.to_path_buf()),
        )))
    }
}

impl RunnerArgs {
    /// The local runner, when asked for: jobs run in a work directory of this process, by default
    /// a new one with a random name and mode 0700 under the system's temp directory (kept
    /// afterwards for their logs), never one another user could have made first.
    pub(crate) fn local(&self) -> Result<Option<crate::localrun::RunnerConfig>> {
        if self.runner != RunnerKind::Local {
            return Ok(None);
        }
        let work = match &self.runner_dir {
            Some(dir) => dir.clone(),
            None => tempfile::Builder::new()
                .prefix("kfleet-runner-")
                .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
                .tempdir()
                .context("cannot create the local runner's work directory")?
                .keep(),
        };
        let runner = crate::localrun::RunnerConfig::for_sandbox(&self.checkout, &work)?;
        let mode = match &runner.host_only {
            Some((d, v)) => format!("on this host, {d} {v} kernels only (no docker or podman)"),
            None => "in containers".to_string(),
        };
        tracing::info!(
            "local runner: builds from {} run {mode}; work and logs in {}",
            runner.checkout.display(),
            work.display()
        );
        Ok(Some(runner))
    }
}

impl ForgeRepoArgs {
    /// The GitHub client for the repository of the flags, the config, or the job
    /// (`GITHUB_REPOSITORY`, `GITHUB_API_URL`).
    pub(crate) fn client(&self, config: &Config) -> Result<GithubClient> {
        use crate::environment::{GITHUB_API_URL, GITHUB_REPOSITORY, var as job};
        let repo = self
            .repo
            .clone()
            .or_else(|| config.repo.clone())
            .or_else(|| job(GITHUB_REPOSITORY))
            .context("no repository: pass --repo OWNER/NAME (a job has GITHUB_REPOSITORY)")?;
        let api = self.api_url.clone().or_else(|| job(GITHUB_API_URL));
        github_client(&repo, api.as_deref(), config)
    }
}

/// A GitHub client for `repo` at `api` (or the config's, or GitHub's) that authenticates as the
/// GitHub App `app_id` with the private key in `key_file`.
fn github_app_client(
    repo: &str,
    api: Option<&str>,
    config: &Config,
    app_id: u64,
    key_file: &std::path::Path,
) -> Result<GithubClient> {
    let repo: RepoRef = repo.parse()?;
    let api = api
        .map(str::to_string)
        .or_else(|| config.api_url.clone())
        .unwrap_or_else(|| GITHUB_API.to_string());
    let key = std::fs::read(key_file)
        .with_context(|| format!("cannot read --github-app-key {}", key_file.display()))?;
    let notify = Box::new(|msg: &str| tracing::info!("waiting: {msg}"));
    Ok(runtime()?.block_on(GithubClient::new_app(
        &api,
        repo,
        app_id,
        &key,
        RetryPolicy::default(),
        Some(notify),
    ))?)
}

/// A GitHub client for `repo` at `api` (or the config's, or GitHub's), with the token of the
/// environment.
fn github_client(repo: &str, api: Option<&str>, config: &Config) -> Result<GithubClient> {
    let repo: RepoRef = repo.parse()?;
    let api = api
        .map(str::to_string)
        .or_else(|| config.api_url.clone())
        .unwrap_or_else(|| GITHUB_API.to_string());
    let token = token_from_environment().ok_or(crate::forge::ForgeError::NoToken)?;
    let notify = Box::new(|msg: &str| tracing::info!("waiting: {msg}"));
    Ok(GithubClient::new(
        &api,
        repo,
        token,
        RetryPolicy::default(),
        Some(notify),
    )?)
}

impl StoreArgs {
    /// The OCI store the flags or config name, if any, opened with the registry login of the
    /// environment.
    pub(crate) fn open(
        &self,
        config: &Config,
        template: &AssetTemplate,
    ) -> Result<Option<Arc<OciStore>>> {
        let Some(url) = self.store.clone().or_else(|| config.store.clone()) else {
            return Ok(None);
        };
        let store = OciStore::open(&url, template.clone(), Credentials::from_environment())?;
        tracing::info!("artifacts in {}", store.label());
        Ok(Some(Arc::new(store)))
    }

    /// `forge` with its releases replaced by the OCI store, when one is named.
    pub(crate) fn wrap(
        &self,
        forge: Arc<dyn Forge>,
        config: &Config,
        template: &AssetTemplate,
    ) -> Result<Arc<dyn Forge>> {
        Ok(match self.open(config, template)? {
            Some(store) => Arc::new(StoreForge::new(forge, store)),
            None => forge,
        })
    }
}
