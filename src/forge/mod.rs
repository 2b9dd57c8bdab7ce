//! Where releases live: GitHub release listings from files or over HTTP (GitHub, GitHub
//! Enterprise, or the loopback sandbox forge), and matching their assets to identities.

mod github;
mod releases;
mod runs;
mod sandbox;

pub use github::{
    CancelOutcome, ClientStats, ForgeError, GITHUB_API, GithubClient, Listing, RepoRef,
    RetryPolicy, next_link, token_from_environment,
};
pub use releases::{
    AssetIndex, MatchedAsset, Release, ReleaseAsset, ReleaseError, UnrecognisedAsset, index_assets,
    parse_release_listing, read_release_file, select_release,
};
pub use runs::{RunList, WorkflowRun, parse_run_title, run_title};
pub use sandbox::{Faults, Sandbox, SandboxError, SandboxOptions, Simulation, load_releases};
