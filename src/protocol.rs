//! The build service's wire format: what a node sends (`POST /build`) and what the service
//! answers (`POST /build`, `GET /status/{id}`). The service (`service`) and the node's client
//! (`node::ensure`) both speak it; neither owns it.

use serde::{Deserialize, Serialize};

/// What a node sends.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BuildRequest {
    pub kernel_version: String,
    pub architecture: String,
    pub distribution: String,
    pub distro_version: String,
    pub driver_version: String,
}

/// Where a build stands, on the wire (`status` in every answer, `error` for a refused request).
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ServiceStatus {
    #[default]
    Queued,
    InProgress,
    Available,
    Failed,
    TimedOut,
    Error,
    /// A status a newer service sends that this client does not know.
    #[serde(other)]
    Unknown,
}

impl ServiceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::InProgress => "in_progress",
            Self::Available => "available",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
            Self::Error => "error",
            Self::Unknown => "unknown",
        }
    }
}

/// What the service answers to `POST /build` and `GET /status/{id}`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct BuildStatus {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub status: ServiceStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub download_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The release's `.sha256` file for the artifact: a node checks it as well as `sha256`
    /// (GitHub's own digest of the stored asset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256_url: Option<String>,
    /// The release's Sigstore bundle for the artifact (`NAME.sigstore.json`): a node that
    /// requires provenance verifies it before it keeps anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
