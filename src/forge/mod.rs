//! Where releases and builds live: the `Forge` trait with its two implementations (GitHub, and
//! the in-process sandbox reached over HTTP through the same GitHub client), release listing
//! files, and matching assets to identities.

mod github;
mod runs;
mod sandbox;
mod store;

pub use github::{
    Budget, CancelOutcome, ClientStats, ForgeError, GITHUB_API, GithubClient, Listing,
    MAX_RUN_PAGES, MAX_UPLOAD, RepoRef, RetryPolicy, next_link, token_from_environment,
};
// Release listings are artifacts' data; the forge fetches them.
pub use crate::artifacts::{
    AssetIndex, MatchedAsset, Release, ReleaseAsset, ReleaseError, UnrecognisedAsset, index_assets,
    parse_release_listing, read_release_file, select_release,
};
pub use runs::{
    Conclusion, Job, JobList, JobStep, RunList, RunStatus, RunTitle, WorkflowRun, parse_run_title,
    run_title,
};
pub use sandbox::{Faults, Sandbox, SandboxError, SandboxOptions, Simulation, load_releases};
pub use store::{Attached, OciStore, Pushed, StoreError, StoreForge};

use crate::text::Cause;
use std::future::Future;
use std::pin::Pin;

/// How far back views of past runs (the dashboard, `runs`, a report's build states) look.
pub const RUN_HISTORY: chrono::Duration = chrono::Duration::days(7);

/// The oldest creation time a view of past runs asks for.
pub fn run_history_start() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now() - RUN_HISTORY
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
pub type Inputs = serde_json::Map<String, serde_json::Value>;

/// What a dispatch's guard answers before each send that may happen (the right to dispatch is
/// held, and was just renewed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    /// The right was taken over from a holder that may have sent the dispatch already: look
    /// for a run carrying the request id before sending.
    pub taken_over: bool,
}

/// Asked before every send of a dispatch (the first and each resend after a rate limit or an
/// error): whether the caller still holds the right to dispatch, renewed. A send happens only
/// after a yes, and a dispatch that lost the right stops with [`ForgeError::ClaimLost`].
pub trait DispatchGuard: Send + Sync {
    fn hold(&self) -> BoxFuture<'_, Result<Held, String>>;
}

/// A dispatch nobody else could send (a single process, a test).
pub struct Unguarded;

impl DispatchGuard for Unguarded {
    fn hold(&self) -> BoxFuture<'_, Result<Held, String>> {
        Box::pin(async { Ok(Held { taken_over: false }) })
    }
}

/// The longest one send of a dispatch takes, answer included: a claim is taken over only this
/// long after its lease ended, so a send made at the end of a lease has finished by then.
pub const DISPATCH_SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Releases and builds of one repository.
pub trait Forge: Send + Sync {
    /// What this forge is, for status lines: `github acme/kdriver`, `SANDBOX http://127.0.0.1:PORT`.
    fn label(&self) -> String;
    /// An in-process sandbox, whose runs last as long as the process.
    fn is_sandbox(&self) -> bool {
        false
    }
    /// Request counters of the client behind the forge.
    fn stats(&self) -> &ClientStats;
    fn list_releases(&self) -> BoxFuture<'_, Result<Listing, ForgeError>>;
    /// The OCI store its release listings come from, when artifacts are kept in one.
    fn artifact_store(&self) -> Option<&OciStore> {
        None
    }
    /// Runs of `workflow`, newest first, optionally by status and created at or after `since`;
    /// every page.
    fn list_runs<'a>(
        &'a self,
        workflow: &'a str,
        status: Option<&'a str>,
        since: Option<chrono::DateTime<chrono::Utc>>,
    ) -> BoxFuture<'a, Result<Vec<WorkflowRun>, ForgeError>>;
    fn get_run(&self, run_id: u64) -> BoxFuture<'_, Result<WorkflowRun, ForgeError>>;
    fn cancel_run(&self, run_id: u64) -> BoxFuture<'_, Result<CancelOutcome, ForgeError>>;
    /// The jobs of a run with their steps (every page).
    fn list_jobs(&self, run_id: u64) -> BoxFuture<'_, Result<Vec<Job>, ForgeError>>;
    /// The last `lines` lines of a job's log (GitHub answers with a redirect to the log).
    fn job_log_tail(&self, job_id: u64, lines: usize) -> BoxFuture<'_, Result<String, ForgeError>>;
    fn dispatch<'a>(
        &'a self,
        workflow: &'a str,
        git_ref: &'a str,
        inputs: &'a Inputs,
        request_id: &'a str,
        guard: &'a dyn DispatchGuard,
    ) -> BoxFuture<'a, Result<WorkflowRun, ForgeError>>;
}

impl Forge for GithubClient {
    fn label(&self) -> String {
        format!("github {}", self.repo())
    }
    fn stats(&self) -> &ClientStats {
        GithubClient::stats(self)
    }
    fn list_releases(&self) -> BoxFuture<'_, Result<Listing, ForgeError>> {
        Box::pin(GithubClient::list_releases(self))
    }
    fn list_runs<'a>(
        &'a self,
        workflow: &'a str,
        status: Option<&'a str>,
        since: Option<chrono::DateTime<chrono::Utc>>,
    ) -> BoxFuture<'a, Result<Vec<WorkflowRun>, ForgeError>> {
        Box::pin(GithubClient::list_runs(self, workflow, status, since))
    }
    fn get_run(&self, run_id: u64) -> BoxFuture<'_, Result<WorkflowRun, ForgeError>> {
        Box::pin(GithubClient::get_run(self, run_id))
    }
    fn cancel_run(&self, run_id: u64) -> BoxFuture<'_, Result<CancelOutcome, ForgeError>> {
        Box::pin(GithubClient::cancel_run(self, run_id))
    }
    fn list_jobs(&self, run_id: u64) -> BoxFuture<'_, Result<Vec<Job>, ForgeError>> {
        Box::pin(GithubClient::list_jobs(self, run_id))
    }
    fn job_log_tail(&self, job_id: u64, lines: usize) -> BoxFuture<'_, Result<String, ForgeError>> {
        Box::pin(GithubClient::job_log_tail(self, job_id, lines))
    }
    fn dispatch<'a>(
        &'a self,
        workflow: &'a str,
        git_ref: &'a str,
        inputs: &'a Inputs,
        request_id: &'a str,
        guard: &'a dyn DispatchGuard,
    ) -> BoxFuture<'a, Result<WorkflowRun, ForgeError>> {
        Box::pin(GithubClient::dispatch(
            self, workflow, git_ref, inputs, request_id, guard,
        ))
    }
}

/// The sandbox forge: an in-process sandbox server, reached over HTTP on loopback through the
/// GitHub client, so the demo exercises the real path.
pub struct SandboxForge {
    sandbox: Sandbox,
    client: GithubClient,
}

impl SandboxForge {
    /// Starts a sandbox on a free loopback port serving `releases` and a client for it, with the
    /// options' token, or a random one.
    pub async fn start(
        releases: Vec<Release>,
        mut options: SandboxOptions,
        policy: RetryPolicy,
    ) -> Result<Self, SandboxError> {
        let token = match options.token.clone() {
            Some(token) => token,
            None => format!("sandbox-{}", crate::fsio::random_hex(16)?),
        };
        options.token = Some(token.clone());
        if options.repo.is_empty() {
            options.repo = "example/kdriver".into();
        }
        let repo: RepoRef = options
            .repo
            .parse()
            .map_err(|e: ForgeError| SandboxError::Data(Cause::of(e)))?;
        let sandbox = Sandbox::start(([127, 0, 0, 1], 0).into(), releases, options).await?;
        let client = GithubClient::new(&sandbox.base_url(), repo, token, policy, None)
            .map_err(|e| SandboxError::Data(Cause::of(e)))?;
        Ok(Self { sandbox, client })
    }

    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }
}

impl Forge for SandboxForge {
    fn label(&self) -> String {
        format!("SANDBOX {}", self.sandbox.base_url())
    }
    fn is_sandbox(&self) -> bool {
        true
    }
    fn stats(&self) -> &ClientStats {
        self.client.stats()
    }
    fn list_releases(&self) -> BoxFuture<'_, Result<Listing, ForgeError>> {
        Forge::list_releases(&self.client)
    }
    fn list_runs<'a>(
        &'a self,
        workflow: &'a str,
        status: Option<&'a str>,
        since: Option<chrono::DateTime<chrono::Utc>>,
    ) -> BoxFuture<'a, Result<Vec<WorkflowRun>, ForgeError>> {
        Forge::list_runs(&self.client, workflow, status, since)
    }
    fn get_run(&self, run_id: u64) -> BoxFuture<'_, Result<WorkflowRun, ForgeError>> {
        Forge::get_run(&self.client, run_id)
    }
    fn cancel_run(&self, run_id: u64) -> BoxFuture<'_, Result<CancelOutcome, ForgeError>> {
        Forge::cancel_run(&self.client, run_id)
    }
    fn list_jobs(&self, run_id: u64) -> BoxFuture<'_, Result<Vec<Job>, ForgeError>> {
        Forge::list_jobs(&self.client, run_id)
    }
    fn job_log_tail(&self, job_id: u64, lines: usize) -> BoxFuture<'_, Result<String, ForgeError>> {
        Forge::job_log_tail(&self.client, job_id, lines)
    }
    fn dispatch<'a>(
        &'a self,
        workflow: &'a str,
        git_ref: &'a str,
        inputs: &'a Inputs,
        request_id: &'a str,
        guard: &'a dyn DispatchGuard,
    ) -> BoxFuture<'a, Result<WorkflowRun, ForgeError>> {
        Forge::dispatch(&self.client, workflow, git_ref, inputs, request_id, guard)
    }
}
