//! A node's driver readiness in Kubernetes: after `ensure`, the node is labelled
//! `kfleet.io/driver-ready=VERSION` (or a word saying why not), its annotation
//! `kfleet.io/driver-status` says what happened, and the `kfleet.io/driver-missing` taint it may
//! have been created with is removed once the driver is loaded, so workloads that need the driver
//! schedule only where it is. The calls go to the API server with the pod's service account
//! (a merge patch for the label, a JSON patch guarded by the node's resourceVersion for the
//! taint), through plain HTTP: the node-side binary carries no Kubernetes client.

use crate::text::Cause;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const LABEL: &str = "kfleet.io/driver-ready";
pub const ANNOTATION: &str = "kfleet.io/driver-status";
pub const TAINT: &str = "kfleet.io/driver-missing";
/// The kernels a node has installed (the one it runs among them), separated by spaces:
/// inventories count those it does not run as next-boot demand.
pub const INSTALLED_ANNOTATION: &str = "kfleet.io/installed-kernels";

/// Where the pod's service account puts its token and the cluster's CA.
const SERVICE_ACCOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Largest node object read.
const MAX_NODE: usize = 4 << 20;
/// Tries of the taint patch when the node changed in between (kubelet heartbeats do).
const CONFLICT_TRIES: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum ReadinessError {
    #[error("no node name: set NODE_NAME from the downward API (fieldRef: spec.nodeName)")]
    NoNodeName,
    #[error("no API server: not in a pod (KUBERNETES_SERVICE_HOST is unset)")]
    NoApiServer,
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{url}: {source}")]
    Api { url: String, source: Cause },
}

/// Where the API server is and how to authenticate.
#[derive(Clone, Debug)]
pub struct KubeTarget {
    pub api: String,
    pub token_file: PathBuf,
    pub ca_file: Option<PathBuf>,
    pub node: String,
}

impl KubeTarget {
    /// The in-cluster settings of a pod, each replaced where given.
    pub fn in_cluster(
        api: Option<String>,
        token_file: Option<PathBuf>,
        ca_file: Option<PathBuf>,
        node: Option<String>,
    ) -> Result<Self, ReadinessError> {
        use crate::environment::{
            KUBERNETES_SERVICE_HOST, KUBERNETES_SERVICE_PORT, NODE_NAME, var as env,
        };
        let node = node
            .or_else(|| env(NODE_NAME))
            .ok_or(ReadinessError::NoNodeName)?;
        let api = match api {
            Some(api) => api,
            None => {
                let host = env(KUBERNETES_SERVICE_HOST).ok_or(ReadinessError::NoApiServer)?;
                let port = env(KUBERNETES_SERVICE_PORT).unwrap_or_else(|| "443".into());
                let host = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host
                };
                format!("https://{host}:{port}")
            }
        };
        let ca_file = ca_file.or_else(|| {
            let default = Path::new(SERVICE_ACCOUNT).join("ca.crt");
            default.exists().then_some(default)
        });
        Ok(Self {
            api: api.trim_end_matches('/').to_string(),
            token_file: token_file.unwrap_or_else(|| Path::new(SERVICE_ACCOUNT).join("token")),
            ca_file,
            node,
        })
    }
}

/// What the node is marked with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mark {
    /// The label's value: the driver version, or a word saying why not (`timed-out`, ...).
    pub label: String,
    /// The annotation's text.
    pub status: String,
    /// Remove the driver-missing taint.
    pub ready: bool,
    /// The kernels the node has installed ([`INSTALLED_ANNOTATION`]; none removes it).
    pub installed: Vec<String>,
}

/// A label value as Kubernetes takes it: at most 63 of `[A-Za-z0-9._-]`, starting and ending
/// with a letter or digit.
pub fn label_value(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect();
    cleaned
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// Labels and annotates the node, and removes the taint when `mark.ready`.
pub async fn mark_node(target: &KubeTarget, mark: &Mark) -> Result<(), ReadinessError> {
    let token = std::fs::read_to_string(&target.token_file)
        .map_err(|source| ReadinessError::Read {
            path: target.token_file.display().to_string(),
            source,
        })?
        .trim()
        .to_string();
    let url = format!("{}/api/v1/nodes/{}", target.api, target.node);
    let api_err = |message: String| ReadinessError::Api {
        url: url.clone(),
        source: Cause::from(message),
    };
    let failed = |e: reqwest::Error| ReadinessError::Api {
        url: url.clone(),
        source: Cause::of(e),
    };
    crate::net::check_transport(&url, false).map_err(|e| api_err(e.to_string()))?;
    let http = crate::net::http_client(
        Duration::from_secs(30),
        crate::net::Redirects::None,
        target.ca_file.as_deref(),
    )
    .map_err(api_err)?;
    let send = |request: reqwest::RequestBuilder| async {
        let response = request.bearer_auth(&token).send().await.map_err(failed)?;
        let status = response.status();
        let body = crate::net::read_capped(response, MAX_NODE)
            .await
            .map_err(|e| ReadinessError::Api {
                url: url.clone(),
                source: Cause::of(e),
            })?;
        Ok::<_, ReadinessError>((status, body))
    };
    let explain = |status: reqwest::StatusCode, body: &[u8]| {
        let message = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("message")?.as_str().map(str::to_string))
            .unwrap_or_default();
        let hint = if matches!(status.as_u16(), 401 | 403) {
            " (the pod's service account needs get and patch on nodes: see the ClusterRole in docs/operations.md)"
        } else {
            ""
        };
        api_err(format!(
            "answered {status}: {}{hint}",
            crate::text::clean(&message)
        ))
    };

    let patch = serde_json::json!({
        "metadata": {
            "labels": {LABEL: label_value(&mark.label)},
            "annotations": {
                ANNOTATION: mark.status,
                INSTALLED_ANNOTATION: (!mark.installed.is_empty()).then(|| mark.installed.join(" ")),
            },
        }
    });
    let (status, body) = send(
        http.patch(&url)
            .header("content-type", "application/merge-patch+json")
            .body(patch.to_string()),
    )
    .await?;
    if !status.is_success() {
        return Err(explain(status, &body));
    }
    if !mark.ready {
        return Ok(());
    }
    for _ in 0..CONFLICT_TRIES {
        let (status, body) = send(http.get(&url)).await?;
        if !status.is_success() {
            return Err(explain(status, &body));
        }
        let node: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| api_err(format!("not a node object: {e}")))?;
        let taints = node["spec"]["taints"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let kept: Vec<serde_json::Value> = taints
            .iter()
            .filter(|t| t["key"] != TAINT)
            .cloned()
            .collect();
        if kept.len() == taints.len() {
            return Ok(());
        }
        let version = node["metadata"]["resourceVersion"].clone();
        let ops = serde_json::json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": version},
            {"op": "replace", "path": "/spec/taints", "value": kept},
        ]);
        let (status, body) = send(
            http.patch(&url)
                .header("content-type", "application/json-patch+json")
                .body(ops.to_string()),
        )
        .await?;
        match status.as_u16() {
            200..=299 => return Ok(()),
            // The node changed since it was read: read it again.
            409 | 422 => continue,
            _ => return Err(explain(status, &body)),
        }
    }
    Err(api_err(format!(
        "the node kept changing; the {TAINT} taint is still there after {CONFLICT_TRIES} tries"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_stay_within_kubernetes_rules() {
        assert_eq!(label_value("v0.5.16"), "v0.5.16");
        assert_eq!(label_value("1.4.2+local"), "1.4.2_local");
        assert_eq!(label_value(&"x".repeat(80)).len(), 63);
        assert_eq!(label_value("-timed out-"), "timed_out");
    }
}
