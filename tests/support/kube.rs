//! A Kubernetes API server fixture on 127.0.0.1 for the nodes resource: `GET /api/v1/nodes`
//! lists in pages (`limit`, `continue`, an expired token answers 410 with the apiserver's Status)
//! and watches (`watch=1`: the events after `resourceVersion`, then live ADDED / MODIFIED /
//! DELETED and BOOKMARK lines; a too-old resourceVersion gets the ERROR event with code 410).
//! The test changes nodes, drops watch connections and expires history; a generated kubeconfig
//! points kube-rs at it.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // a fixture stops at the first surprise

#[path = "certs.rs"]
mod certs;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, mpsc};

/// The bearer token the generated kubeconfig carries; requests without it get 401.
pub const TOKEN: &str = "fixture-bearer-token";

struct Inner {
    nodes: BTreeMap<String, Value>,
    rv: u64,
    /// (resourceVersion, event) for every change, oldest first.
    history: Vec<(u64, Value)>,
    /// Resource versions at or below this are too old: watches from them get 410, and continue
    /// tokens minted at them are expired.
    compacted: u64,
    /// Most items one page carries, whatever `limit` asks (servers may return fewer).
    max_page: usize,
    /// Every list request's `limit` and whether it carried a continue token.
    lists: Vec<(Option<usize>, bool)>,
    watches: usize,
    expire_next: bool,
    /// Lists answer 503 (an apiserver out of reach behind its load balancer).
    refuse_lists: bool,
    /// The next this many lists answer 503.
    refuse_next: usize,
    /// Bumped to end every open watch connection.
    generation: u64,
    /// Reads of one node after which a heartbeat changes it (before the reader's patch lands).
    heartbeat_after_reads: usize,
    /// Every PATCH: (node, content type).
    patches: Vec<(String, String)>,
}

pub struct KubeFixture {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
    live: broadcast::Sender<Option<(u64, Value)>>,
}

#[derive(Clone)]
struct App {
    inner: Arc<Mutex<Inner>>,
    live: broadcast::Sender<Option<(u64, Value)>>,
}

/// A `kubectl get nodes -o json` NodeList's items, as recorded.
pub fn recorded_nodes(path: &Path) -> Vec<Value> {
    let doc: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    doc["items"].as_array().unwrap().clone()
}

/// A Node as a kubelet reports it (the fields `kubectl get nodes -o json` shows for an EKS node).
pub fn node(name: &str, os_image: &str, kernel: &str, arch: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "uid": format!("0b3c{:08x}-6d1e-4c0a-9a7e-5f2d8c1b9e44", name.len()),
            "creationTimestamp": "2026-10-02T08:14:03Z",
            "labels": {
                "kubernetes.io/arch": arch,
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "node.kubernetes.io/instance-type": "m6i.large",
                "topology.kubernetes.io/zone": "eu-west-1a"
            },
            "annotations": {"node.alpha.kubernetes.io/ttl": "0"}
        },
        "spec": {"providerID": format!("aws:///eu-west-1a/i-0{}", name.len())},
        "status": {
            "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}, {"type": "Hostname", "address": name}],
            "allocatable": {"cpu": "1930m", "memory": "7291416Ki", "pods": "29"},
            "capacity": {"cpu": "2", "memory": "7934488Ki", "pods": "29"},
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "kubelet is posting ready status",
                "lastHeartbeatTime": "2026-11-28T09:00:00Z", "lastTransitionTime": "2026-10-02T08:14:33Z"
            }],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "images": [{"names": ["registry.k8s.io/pause@sha256:7031c1b283388d2c2e09b57badb803c05ebed362dc88d84b480cc47f72a21097", "registry.k8s.io/pause:3.9"], "sizeBytes": 321520}],
            "nodeInfo": {
                "architecture": arch,
                "bootID": format!("b-{name}-1"),
                "containerRuntimeVersion": "containerd://1.7.22",
                "kernelVersion": kernel,
                "kubeProxyVersion": "v1.31.2",
                "kubeletVersion": "v1.31.2-eks-94953ac",
                "machineID": format!("ec2{:029x}", name.len()),
                "operatingSystem": "linux",
                "osImage": os_image,
                "systemUUID": format!("ec2{:05x}-aaaa-bbbb-cccc-000000000000", name.len())
            }
        }
    })
}

impl KubeFixture {
    /// Serves `nodes` (Node objects) on a free port, over plain HTTP.
    pub async fn start(nodes: Vec<Value>) -> Self {
        Self::serve(nodes, None).await
    }

    /// Serves `nodes` over TLS only, with a certificate for 127.0.0.1 from a CA of its own
    /// (issued in `dir`); returns the CA certificate's path beside the fixture.
    pub async fn start_tls(nodes: Vec<Value>, dir: &Path) -> (Self, PathBuf) {
        use rustls_pki_types::pem::PemObject;
        let ca = certs::issue(dir, "server.key", "server.crt");
        let chain: Vec<_> = rustls_pki_types::CertificateDer::pem_file_iter(dir.join("server.crt"))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let key = rustls_pki_types::PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        (Self::serve(nodes, Some(Arc::new(config))).await, ca)
    }

    async fn serve(nodes: Vec<Value>, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let (live, _) = broadcast::channel(4096);
        let mut inner = Inner {
            nodes: BTreeMap::new(),
            rv: 1000,
            history: Vec::new(),
            compacted: 0,
            max_page: usize::MAX,
            lists: Vec::new(),
            watches: 0,
            expire_next: false,
            refuse_lists: false,
            refuse_next: 0,
            generation: 0,
            heartbeat_after_reads: 0,
            patches: Vec::new(),
        };
        for mut n in nodes {
            inner.rv += 1;
            n["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
            let name = n["metadata"]["name"].as_str().unwrap().to_string();
            inner.nodes.insert(name, n);
        }
        let inner = Arc::new(Mutex::new(inner));
        let app = App {
            inner: inner.clone(),
            live: live.clone(),
        };
        let router = axum::Router::new()
            .route("/api/v1/nodes", axum::routing::get(nodes_route))
            .route(
                "/api/v1/nodes/{name}",
                axum::routing::get(node_route).patch(patch_node_route),
            )
            .with_state(app);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let url = match tls {
            None => {
                tokio::spawn(async move { axum::serve(listener, router).await });
                format!("http://{addr}")
            }
            Some(config) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(config);
                tokio::spawn(async move {
                    while let Ok((tcp, _)) = listener.accept().await {
                        let (acceptor, router) = (acceptor.clone(), router.clone());
                        tokio::spawn(async move {
                            // A client that does not trust the CA, or speaks plain HTTP, ends here.
                            let Ok(stream) = acceptor.accept(tcp).await else {
                                return;
                            };
                            let service = hyper_util::service::TowerToHyperService::new(router);
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                                .await;
                        });
                    }
                });
                format!("https://{addr}")
            }
        };
        KubeFixture { url, inner, live }
    }

    /// Returns at most `n` items per page from now on.
    /// The node as the API server holds it now.
    pub fn node(&self, name: &str) -> Value {
        self.inner.lock().unwrap().nodes[name].clone()
    }

    /// The next `n` reads of one node are each followed by a kubelet heartbeat, so a patch
    /// guarded by the resourceVersion read fails as it does on a busy node.
    pub fn heartbeat_after_reads(&self, n: usize) {
        self.inner.lock().unwrap().heartbeat_after_reads = n;
    }

    /// Every PATCH so far: (node, content type).
    pub fn patches(&self) -> Vec<(String, String)> {
        self.inner.lock().unwrap().patches.clone()
    }

    pub fn max_page(&self, n: usize) {
        self.inner.lock().unwrap().max_page = n;
    }

    /// Adds or replaces a node, as a kubelet's update would (ADDED or MODIFIED to watchers).
    pub fn put(&self, mut node: Value) {
        let mut g = self.inner.lock().unwrap();
        g.rv += 1;
        let rv = g.rv;
        node["metadata"]["resourceVersion"] = json!(rv.to_string());
        let name = node["metadata"]["name"].as_str().unwrap().to_string();
        let kind = if g.nodes.contains_key(&name) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        g.nodes.insert(name, node.clone());
        let event = json!({"type": kind, "object": node});
        g.history.push((rv, event.clone()));
        let _ = self.live.send(Some((rv, event)));
    }

    /// Removes a node (DELETED to watchers).
    pub fn delete(&self, name: &str) {
        let mut g = self.inner.lock().unwrap();
        let Some(mut node) = g.nodes.remove(name) else {
            return;
        };
        g.rv += 1;
        let rv = g.rv;
        node["metadata"]["resourceVersion"] = json!(rv.to_string());
        let event = json!({"type": "DELETED", "object": node});
        g.history.push((rv, event.clone()));
        let _ = self.live.send(Some((rv, event)));
    }

    /// Changes a node's kernel and boot id, as a reboot into another kernel does.
    pub fn reboot(&self, name: &str, kernel: &str) {
        let node = {
            let g = self.inner.lock().unwrap();
            let mut node = g.nodes[name].clone();
            node["status"]["nodeInfo"]["kernelVersion"] = json!(kernel);
            node["status"]["nodeInfo"]["bootID"] = json!(format!("b-{name}-{}", g.rv));
            node
        };
        self.put(node);
    }

    /// A kubelet's status heartbeat: only the Ready condition's time changes (MODIFIED).
    pub fn heartbeat(&self, name: &str) {
        let node = {
            let g = self.inner.lock().unwrap();
            let mut node = g.nodes[name].clone();
            node["status"]["conditions"][0]["lastHeartbeatTime"] =
                json!(format!("2026-11-28T10:{:02}:00Z", g.rv % 60));
            node
        };
        self.put(node);
    }

    /// Changes a node without telling any watcher, then forgets the history: what a watcher
    /// misses while etcd compacts. Every open watch gets the ERROR event with code 410.
    pub fn change_unseen_and_expire(&self, node: Value) {
        let mut g = self.inner.lock().unwrap();
        g.rv += 1;
        let rv = g.rv;
        let mut node = node;
        node["metadata"]["resourceVersion"] = json!(rv.to_string());
        let name = node["metadata"]["name"].as_str().unwrap().to_string();
        g.nodes.insert(name, node);
        g.compacted = rv;
        g.history.clear();
        let _ = self.live.send(Some((
            rv,
            json!({"type": "ERROR", "object": gone(&format!("too old resource version: {} ({rv})", rv - 1))}),
        )));
    }

    /// From now on, list requests get 503 (or are served again).
    pub fn refuse_lists(&self, refuse: bool) {
        self.inner.lock().unwrap().refuse_lists = refuse;
    }

    /// The next `n` list requests get 503.
    pub fn refuse_next_lists(&self, n: usize) {
        self.inner.lock().unwrap().refuse_next = n;
    }

    /// The next page request that carries a continue token gets 410 Expired.
    pub fn expire_next_continue_token(&self) {
        self.inner.lock().unwrap().expire_next = true;
    }

    /// Ends every open watch connection, as a load balancer or an apiserver restart does.
    pub fn drop_watches(&self) {
        self.inner.lock().unwrap().generation += 1;
        let _ = self.live.send(None);
    }

    pub fn watches(&self) -> usize {
        self.inner.lock().unwrap().watches
    }

    pub fn lists(&self) -> Vec<(Option<usize>, bool)> {
        self.inner.lock().unwrap().lists.clone()
    }

    pub fn node_names(&self) -> Vec<String> {
        self.inner.lock().unwrap().nodes.keys().cloned().collect()
    }
}

/// The Status the apiserver sends for an expired resourceVersion or continue token.
fn gone(message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": "Expired", "code": 410
    })
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code.as_u16()
    });
    (
        code,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn token_for(rv: u64, start: &str) -> String {
    // The apiserver's token is base64 JSON; the client treats it as opaque either way.
    let raw =
        json!({"v": "meta.k8s.io/v1", "rv": rv, "start": format!("{start}\u{0}")}).to_string();
    raw.bytes().map(|b| format!("{b:02x}")).collect()
}

fn parse_token(token: &str) -> Option<(u64, String)> {
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|i| {
            token
                .get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    let v: Value = serde_json::from_slice(&bytes?).ok()?;
    let start = v["start"].as_str()?.trim_end_matches('\u{0}').to_string();
    Some((v["rv"].as_u64()?, start))
}

async fn nodes_route(
    State(app): State<App>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let authorized = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {TOKEN}"));
    if !authorized {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    }
    let watching = matches!(q.get("watch").map(String::as_str), Some("1" | "true"));
    if watching {
        return watch(app, &q);
    }
    let mut g = app.inner.lock().unwrap();
    let refuse_this = g.refuse_next > 0;
    g.refuse_next = g.refuse_next.saturating_sub(1);
    if g.refuse_lists || refuse_this {
        return status(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        );
    }
    let limit = q.get("limit").and_then(|l| l.parse::<usize>().ok());
    let token = q.get("continue").filter(|t| !t.is_empty());
    g.lists.push((limit, token.is_some()));
    let (list_rv, start) = match token {
        Some(t) => match parse_token(t) {
            Some((rv, _)) if rv <= g.compacted || std::mem::take(&mut g.expire_next) => {
                return status(
                    StatusCode::GONE,
                    "Expired",
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                );
            }
            Some((rv, start)) => (rv, Some(start)),
            None => {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "continue key is not valid",
                );
            }
        },
        None => (g.rv, None),
    };
    let page = limit.unwrap_or(usize::MAX).min(g.max_page).max(1);
    let rest: Vec<&Value> = g
        .nodes
        .iter()
        .filter(|(name, _)| start.as_deref().is_none_or(|s| name.as_str() > s))
        .map(|(_, n)| n)
        .collect();
    let items: Vec<Value> = rest.iter().take(page).map(|n| (*n).clone()).collect();
    let mut metadata = json!({"resourceVersion": list_rv.to_string()});
    if rest.len() > page {
        let last = items.last().unwrap()["metadata"]["name"].as_str().unwrap();
        metadata["continue"] = json!(token_for(list_rv, last));
        metadata["remainingItemCount"] = json!(rest.len() - page);
    }
    let body =
        json!({"kind": "NodeList", "apiVersion": "v1", "metadata": metadata, "items": items});
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn watch(app: App, q: &HashMap<String, String>) -> Response {
    let mut g = app.inner.lock().unwrap();
    g.watches += 1;
    let from: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(g.rv);
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|v| v == "true");
    let (tx, rx) = mpsc::channel::<Vec<u8>>(1024);
    let line = |v: &Value| {
        let mut l = v.to_string().into_bytes();
        l.push(b'\n');
        l
    };
    let mut first: Vec<Vec<u8>> = Vec::new();
    if from < g.compacted {
        first.push(line(&json!({"type": "ERROR", "object": gone(&format!("too old resource version: {from} ({})", g.compacted))})));
    } else {
        for (rv, event) in &g.history {
            if *rv > from {
                first.push(line(event));
            }
        }
        if bookmarks {
            first.push(line(&json!({"type": "BOOKMARK", "object": {"kind": "Node", "apiVersion": "v1", "metadata": {"resourceVersion": g.rv.to_string()}}})));
        }
    }
    let generation = g.generation;
    let mut live = app.live.subscribe();
    let inner = app.inner.clone();
    let ended = from < g.compacted;
    drop(g);
    tokio::spawn(async move {
        for l in first {
            if tx.send(l).await.is_err() {
                return;
            }
        }
        if ended {
            return;
        }
        while let Ok(event) = live.recv().await {
            if inner.lock().unwrap().generation != generation {
                return;
            }
            let Some((_, event)) = event else { continue };
            let end = event["type"] == "ERROR";
            if tx.send(line(&event)).await.is_err() || end {
                return;
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, std::convert::Infallible>(chunk), rx))
    });
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap()
}

/// A kubeconfig with one context per (name, server URL), the first current.
pub fn kubeconfig(dir: &Path, contexts: &[(&str, &str)]) -> PathBuf {
    kubeconfig_with_ca(dir, contexts, None)
}

/// [`kubeconfig`] whose clusters trust this CA certificate (`certificate-authority`).
pub fn kubeconfig_with_ca(dir: &Path, contexts: &[(&str, &str)], ca: Option<&Path>) -> PathBuf {
    let mut clusters = String::new();
    let mut users = String::new();
    let mut ctxs = String::new();
    let trust = ca
        .map(|p| format!("    certificate-authority: {}\n", p.display()))
        .unwrap_or_default();
    for (name, url) in contexts {
        clusters += &format!("- name: {name}\n  cluster:\n    server: {url}\n{trust}");
        users += &format!("- name: {name}-user\n  user:\n    token: {TOKEN}\n");
        ctxs +=
            &format!("- name: {name}\n  context:\n    cluster: {name}\n    user: {name}-user\n");
    }
    let text = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: {}\nclusters:\n{clusters}users:\n{users}contexts:\n{ctxs}",
        contexts[0].0
    );
    let path = dir.join("kubeconfig");
    std::fs::write(&path, text).unwrap();
    path
}

fn authorized(headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {TOKEN}"))
}

/// Stores a changed node under a new resourceVersion and tells watchers (MODIFIED).
fn store_modified(app: &App, g: &mut Inner, name: &str, mut node: Value) -> Value {
    g.rv += 1;
    let rv = g.rv;
    node["metadata"]["resourceVersion"] = json!(rv.to_string());
    g.nodes.insert(name.to_string(), node.clone());
    let event = json!({"type": "MODIFIED", "object": node});
    g.history.push((rv, event.clone()));
    let _ = app.live.send(Some((rv, event)));
    node
}

async fn node_route(
    State(app): State<App>,
    headers: HeaderMap,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Response {
    if !authorized(&headers) {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    }
    let mut g = app.inner.lock().unwrap();
    let Some(node) = g.nodes.get(&name).cloned() else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("nodes \"{name}\" not found"),
        );
    };
    if g.heartbeat_after_reads > 0 {
        g.heartbeat_after_reads -= 1;
        let mut beat = node.clone();
        beat["status"]["conditions"][0]["lastHeartbeatTime"] = json!(format!("beat-{}", g.rv));
        store_modified(&app, &mut g, &name, beat);
    }
    axum::Json(node).into_response()
}

/// RFC 7386: objects merge key by key, null removes, anything else replaces.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Some(fields) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    for (k, v) in fields {
        if v.is_null() {
            target.as_object_mut().unwrap().remove(k);
        } else {
            merge_patch(
                target
                    .as_object_mut()
                    .unwrap()
                    .entry(k.clone())
                    .or_insert(Value::Null),
                v,
            );
        }
    }
}

async fn patch_node_route(
    State(app): State<App>,
    headers: HeaderMap,
    axum::extract::Path(name): axum::extract::Path<String>,
    body: axum::body::Bytes,
) -> Response {
    if !authorized(&headers) {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    }
    let kind = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let Ok(patch) = serde_json::from_slice::<Value>(&body) else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the patch is not JSON",
        );
    };
    let mut g = app.inner.lock().unwrap();
    g.patches.push((name.clone(), kind.clone()));
    let Some(mut node) = g.nodes.get(&name).cloned() else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("nodes \"{name}\" not found"),
        );
    };
    match kind.as_str() {
        "application/merge-patch+json" => merge_patch(&mut node, &patch),
        "application/json-patch+json" => {
            for op in patch.as_array().cloned().unwrap_or_default() {
                let pointer = op["path"].as_str().unwrap_or("");
                match op["op"].as_str() {
                    Some("test") if node.pointer(pointer) != Some(&op["value"]) => {
                        return status(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            "Invalid",
                            &format!(
                                "the server rejected our request due to an error in our request: testing value {pointer} failed"
                            ),
                        );
                    }
                    Some("test") => {}
                    Some("replace") => match node.pointer_mut(pointer) {
                        Some(slot) => *slot = op["value"].clone(),
                        None => {
                            // Kubernetes' replace of a missing taint list fails too.
                            return status(
                                StatusCode::UNPROCESSABLE_ENTITY,
                                "Invalid",
                                "replace: no such path",
                            );
                        }
                    },
                    _ => {
                        return status(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            "Invalid",
                            "unsupported op",
                        );
                    }
                }
            }
        }
        _ => {
            return status(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                &format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml; got {kind}"
                ),
            );
        }
    }
    let stored = store_modified(&app, &mut g, &name, node);
    axum::Json(stored).into_response()
}
