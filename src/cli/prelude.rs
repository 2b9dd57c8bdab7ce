//! What the command line's definitions and every command file use: the library types the command
//! layer works with.

pub(crate) use super::runtime;
pub(crate) use crate::artifacts::{AssetTemplate, DEFAULT_ASSET_TEMPLATE};
pub(crate) use crate::builds::{Decision, Planner, PlannerConfig, merge_decisions, parse_keys};
pub(crate) use crate::config::{Config, DEFAULT_MODULE, default_state_dir};
#[cfg(feature = "fleet")]
pub(crate) use crate::coverage::{self, BuildStates, CoverageOptions, CoverageStatus};
pub(crate) use crate::forge::{
    CancelOutcome, Faults, Forge, GITHUB_API, GithubClient, OciStore, RepoRef, RetryPolicy,
    Sandbox, SandboxForge, SandboxOptions, Simulation, StoreForge, WorkflowRun, load_releases,
    select_release, token_from_environment,
};
#[cfg(feature = "fleet")]
pub(crate) use crate::forge::{index_assets, read_release_file};
pub(crate) use crate::headers::{Chain, Resolver, ResolverOptions, plan};
pub(crate) use crate::identity::{RawIdentity, Verdict, check};
#[cfg(feature = "fleet")]
pub(crate) use crate::inventory::{FleetGroups, read_inventory};
pub(crate) use crate::node::local_identity;
pub(crate) use crate::oci::Credentials;
#[cfg(feature = "fleet")]
pub(crate) use crate::report::Format;
#[cfg(feature = "fleet")]
pub(crate) use crate::report::View;
pub(crate) use crate::report::{self, ListFormat, write_atomic};
#[cfg(feature = "fleet")]
pub(crate) use crate::sample::FleetSpec;
pub(crate) use crate::state::{StateSpec, Store};
pub(crate) use anyhow::{Context, Result, bail};
pub(crate) use clap::{Args, Parser, Subcommand};
pub(crate) use std::path::PathBuf;
pub(crate) use std::process::ExitCode;
pub(crate) use std::sync::Arc;
