//! Live Kubernetes inventories: `-i kube:` (the kubeconfig's current context, or the pod's
//! service account in a cluster) and `-i kube:CONTEXT` (repeatable; clusters merged, each node
//! keeping its context). Nodes are listed page by page (`limit` and `continue`) for reports, and
//! watched for the dashboard through kube-runtime's watcher (resourceVersion, bookmarks, a relist
//! on 410 Gone, reconnects with backoff). Every Node becomes an identity through
//! [`super::json::node_info_row`], the mapping the NodeList file reader uses.

use super::json::{NodeRow, installed_of, node_info_row};
use super::{BadRow, FleetGroups, InventoryError, RawGroup};
use crate::text::Cause;
use futures_util::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use kube::runtime::{WatchStreamExt, watcher::Event};
use kube::{Client, Config};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio::sync::mpsc;

/// What marks an inventory argument as a cluster instead of a file (`./kube:x` is a file).
pub const PREFIX: &str = "kube:";
/// Nodes asked for per page.
pub const PAGE_SIZE: u32 = 500;
/// Pages read before a listing is given up as endless (5 million nodes at [`PAGE_SIZE`]).
const MAX_PAGES: usize = 10_000;
/// Times a listing starts again when its continue token expires (410 Gone).
const MAX_RELISTS: usize = 3;
/// Times one page is asked for again when the API server is busy or unavailable (429, 5xx),
/// waiting 0.5 s, 1 s, 2 s.
const PAGE_RETRIES: u32 = 3;
/// How long the dashboard gathers watch events before it shows the fleet again: a reboot wave
/// of 50 nodes is one update, not fifty.
pub const SETTLE: Duration = Duration::from_millis(300);
/// Largest answer to a list request (a page of 500 nodes is about 10 MiB).
pub const MAX_LIST_BODY: usize = 64 << 20;
/// Largest watch event (one line of the stream; a Node is tens of KiB).
pub const MAX_WATCH_EVENT: usize = 4 << 20;
/// The watch asks the API server to end each watch after this long (kube's default), and a
/// connection that sends nothing (not even a bookmark) for longer than [`WATCH_READ_TIMEOUT`]
/// is taken as dead and reconnected.
const WATCH_SERVER_TIMEOUT: u32 = 290;
const WATCH_READ_TIMEOUT: Duration = Duration::from_secs(330);

/// Whether a kubeconfig's `insecure-skip-tls-verify` is honoured (`--kube-insecure-skip-tls-verify`);
/// otherwise such a context is refused.
static INSECURE_TLS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Honours `insecure-skip-tls-verify` in kubeconfigs for this process, with a warning each time a
/// context uses it. Set once by the command line.
pub fn allow_insecure_tls(allow: bool) {
    INSECURE_TLS.store(allow, std::sync::atomic::Ordering::Relaxed);
}

/// One cluster to read: a kubeconfig context, or the current one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeSource {
    pub context: Option<String>,
    /// A kubeconfig file to read instead of `KUBECONFIG` or `~/.kube/config`.
    pub kubeconfig: Option<std::path::PathBuf>,
}

impl KubeSource {
    /// `kube:` or `kube:CONTEXT`; `None` for anything else (a file).
    pub fn parse(spec: &str) -> Option<Self> {
        spec.strip_prefix(PREFIX).map(|c| KubeSource {
            context: (!c.is_empty()).then(|| c.to_string()),
            kubeconfig: None,
        })
    }

    /// How the source was named on the command line.
    pub fn spec(&self) -> String {
        format!("{PREFIX}{}", self.context.as_deref().unwrap_or(""))
    }

    /// A client for this cluster, the context's name (the column reports show) and the API
    /// server's URL (for messages). The
    /// kubeconfig comes from `KUBECONFIG` or `~/.kube/config`, exec plugins included; without
    /// one, `kube:` uses the pod's in-cluster service account.
    async fn connect(
        &self,
        read_timeout: Option<Duration>,
    ) -> Result<(Client, String, String), String> {
        let (mut config, name) = match (&self.kubeconfig, &self.context) {
            (Some(path), context) => {
                let file = Kubeconfig::read_from(path)
                    .map_err(|e| format!("cannot read kubeconfig {}: {e}", path.display()))?;
                let name = context
                    .clone()
                    .or_else(|| file.current_context.clone())
                    .unwrap_or_default();
                let options = KubeConfigOptions {
                    context: context.clone(),
                    ..KubeConfigOptions::default()
                };
                let config = Config::from_custom_kubeconfig(file, &options)
                    .await
                    .map_err(|e| {
                        format!(
                            "cannot use kube context '{name}' of {}: {e}",
                            path.display()
                        )
                    })?;
                (config, name)
            }
            (None, Some(context)) => {
                let options = KubeConfigOptions {
                    context: Some(context.clone()),
                    ..KubeConfigOptions::default()
                };
                let config = Config::from_kubeconfig(&options).await.map_err(|e| {
                    format!("cannot use kube context '{context}': {e} (check KUBECONFIG and `kubectl config get-contexts`)")
                })?;
                (config, context.clone())
            }
            (None, None) => {
                let name = Kubeconfig::read()
                    .ok()
                    .and_then(|k| k.current_context)
                    .unwrap_or_else(|| "in-cluster".to_string());
                let config = Config::infer().await.map_err(|e| {
                    format!("no usable kubeconfig nor in-cluster service account: {e} (set KUBECONFIG or name a context: kube:CONTEXT)")
                })?;
                (config, name)
            }
        };
        if config.accept_invalid_certs {
            if !INSECURE_TLS.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(format!(
                    "kube context '{name}' sets insecure-skip-tls-verify: its API server's certificate would not be checked, so anyone on the way could read and change the node list; give the cluster's certificate-authority, or pass --kube-insecure-skip-tls-verify to accept it"
                ));
            }
            tracing::warn!(
                "kube context '{name}': not verifying the API server's certificate (insecure-skip-tls-verify, allowed by --kube-insecure-skip-tls-verify)"
            );
        }
        config.connect_timeout = Some(Duration::from_secs(10));
        config.read_timeout = read_timeout;
        // kube's own retry waits up to 15 times (minutes in all) on a 503: a report would seem
        // to hang and the dashboard would not say why. Listing retries briefly itself; the
        // watch reconnects with its backoff and reports each failure.
        config.default_retry = false;
        let url = crate::text::clean(&config.cluster_url.to_string()).into_owned();
        let client = kube::client::ClientBuilder::try_from(config)
            .map_err(|e| format!("cannot build a client for kube context '{name}': {e}"))?
            .with_layer(&capped::CapLayer)
            .build();
        Ok((client, name, url))
    }
}

fn nodes_api(client: Client) -> Api<DynamicObject> {
    let resource =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("", "v1", "Node"), "nodes");
    Api::all_with(client, &resource)
}

/// A node as seen in one cluster: its identity fields, or why it has none.
type Seen = Result<NodeRow, String>;

fn seen(obj: &DynamicObject) -> (String, Seen) {
    let name = obj.metadata.name.clone().unwrap_or_default();
    let row = node_info_row(&name, obj.data.pointer("/status/nodeInfo"))
        .map(|mut row| {
            let annotations = obj
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| serde_json::to_value(a).ok());
            row.installed = installed_of(annotations.as_ref(), &row.kernel_version);
            row
        })
        .map_err(|missing| missing.to_string());
    (name, row)
}

/// The nodes of one cluster, listed page by page.
pub struct Listed {
    pub context: String,
    nodes: BTreeMap<String, Seen>,
    labels: BTreeMap<String, BTreeMap<String, String>>,
}

/// A Node's `metadata.labels` as text pairs (the drill-down shows them).
pub(crate) fn labels_of(labels: Option<&serde_json::Value>) -> BTreeMap<String, String> {
    labels
        .and_then(serde_json::Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

impl Listed {
    /// Each node with an identity: its name, its identity fields and its labels.
    pub(crate) fn rows(&self) -> impl Iterator<Item = (&str, &NodeRow, &BTreeMap<String, String>)> {
        static NONE: std::sync::OnceLock<BTreeMap<String, String>> = std::sync::OnceLock::new();
        self.nodes.iter().filter_map(|(name, seen)| {
            let labels = self
                .labels
                .get(name)
                .unwrap_or_else(|| NONE.get_or_init(BTreeMap::new));
            seen.as_ref().ok().map(|row| (name.as_str(), row, labels))
        })
    }

    /// Nodes listed.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

/// Lists every node of `source`, `page` at a time, starting again (at most [`MAX_RELISTS`]
/// times) when the server says the continue token has expired.
pub async fn list(source: &KubeSource, page: u32) -> Result<Listed, InventoryError> {
    let spec = source.spec();
    let err = |message: String| InventoryError::Format {
        file: spec.clone(),
        source: Cause::from(message),
    };
    let (client, context, url) = source
        .connect(Some(Duration::from_secs(60)))
        .await
        .map_err(err)?;
    let api = nodes_api(client);
    let mut nodes = BTreeMap::new();
    let mut labels = BTreeMap::new();
    let mut token: Option<String> = None;
    let (mut pages, mut relists, mut retries) = (0usize, 0usize, 0u32);
    loop {
        let mut params = ListParams::default().limit(page.max(1));
        if let Some(t) = &token {
            params = params.continue_token(t);
        }
        match api.list(&params).await {
            Ok(list) => {
                retries = 0;
                for obj in &list.items {
                    let (name, row) = seen(obj);
                    let node_labels: BTreeMap<String, String> = obj
                        .metadata
                        .labels
                        .clone()
                        .map(|l| l.into_iter().collect())
                        .unwrap_or_default();
                    if !node_labels.is_empty() {
                        labels.insert(name.clone(), node_labels);
                    }
                    nodes.insert(name, row);
                }
                token = list.metadata.continue_.filter(|t| !t.is_empty());
                pages += 1;
                if token.is_none() {
                    break;
                }
                if pages >= MAX_PAGES {
                    return Err(err(format!(
                        "the API server is still paging after {pages} pages of {page} nodes; giving up"
                    )));
                }
            }
            Err(kube::Error::Api(status))
                if (status.code == 429 || status.code >= 500) && retries < PAGE_RETRIES =>
            {
                tokio::time::sleep(Duration::from_millis(500 << retries)).await;
                retries += 1;
            }
            Err(kube::Error::Api(status)) if status.code == 410 && relists < MAX_RELISTS => {
                relists += 1;
                nodes.clear();
                labels.clear();
                token = None;
            }
            Err(e) => {
                return Err(err(format!(
                    "cannot list nodes in kube context '{context}' ({url}): {}",
                    kube_error(&e)
                )));
            }
        }
    }
    Ok(Listed {
        context,
        nodes,
        labels,
    })
}

/// Lists every source's nodes into one fleet (each group keeps its context).
pub async fn read(sources: &[KubeSource]) -> Result<FleetGroups, InventoryError> {
    let mut fleet = FleetGroups::default();
    for source in sources {
        let spec = source.spec();
        let listed = list(source, PAGE_SIZE).await?;
        fleet.files.push(spec.clone());
        add_nodes(&mut fleet, &spec, &listed.context, listed.nodes.values());
    }
    Ok(fleet)
}

/// [`list`] of one source on a thread of its own, so it works inside or outside a runtime.
pub fn list_blocking(source: &KubeSource) -> Result<Listed, InventoryError> {
    on_own_runtime(|| list(source, PAGE_SIZE))
}

/// Runs the future `make` returns from a thread of its own, on the process's runtime when the
/// caller is inside a multi-threaded one (the command line always is), else on a current-thread
/// runtime made for it: so a synchronous reader can list a cluster whether or not it is called from async code,
/// and the command line keeps one runtime.
fn on_own_runtime<T: Send, F: std::future::Future<Output = Result<T, InventoryError>>>(
    make: impl FnOnce() -> F + Send,
) -> Result<T, InventoryError> {
    // A current-thread runtime's only thread is the caller, blocked here: it could not drive
    // the listing's I/O.
    let current = tokio::runtime::Handle::try_current()
        .ok()
        .filter(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    std::thread::scope(|s| {
        s.spawn(|| match current {
            Some(handle) => handle.block_on(make()),
            None => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|source| InventoryError::Io {
                    file: PREFIX.to_string(),
                    source,
                })?
                .block_on(make()),
        })
        .join()
        .unwrap_or_else(|_| {
            Err(InventoryError::Format {
                file: PREFIX.to_string(),
                source: Cause::from("the listing thread failed"),
            })
        })
    })
}

/// [`read`] on a thread of its own, so it works inside or outside a runtime; adds the nodes to
/// `fleet`.
pub fn read_blocking(
    sources: &[KubeSource],
    fleet: &mut FleetGroups,
) -> Result<(), InventoryError> {
    let read = on_own_runtime(|| read(sources))?;
    fleet.extend(read);
    Ok(())
}

/// Adds one cluster's nodes to `fleet`, one group per distinct identity and context.
fn add_nodes<'a>(
    fleet: &mut FleetGroups,
    spec: &str,
    context: &str,
    nodes: impl Iterator<Item = &'a Seen>,
) {
    let mut counts: HashMap<&NodeRow, u64> = HashMap::new();
    for node in nodes {
        match node {
            Ok(row) => *counts.entry(row).or_default() += 1,
            Err(reason) => fleet.add_bad(BadRow {
                file: spec.to_string(),
                line: None,
                reason: reason.clone(),
            }),
        }
    }
    let mut next_boot = super::NextBoot::default();
    let mut groups: Vec<RawGroup> = counts
        .into_iter()
        .map(|(row, nodes)| {
            row.count_next_boot(&mut next_boot, nodes);
            RawGroup {
                distribution: row.distribution.clone(),
                distro_version: row.distro_version.clone().unwrap_or_default(),
                architecture: row.architecture.clone(),
                kernel_version: row.kernel_version.clone(),
                os_image: Some(row.os_image.clone()),
                context: Some(context.to_string()),
                nodes,
                next_boot: 0,
            }
        })
        .collect();
    groups.extend(next_boot.into_groups(Some(context)));
    groups.sort_by(|a, b| {
        (
            &a.distribution,
            &a.distro_version,
            &a.architecture,
            &a.kernel_version,
        )
            .cmp(&(
                &b.distribution,
                &b.distro_version,
                &b.architecture,
                &b.kernel_version,
            ))
    });
    fleet.groups.extend(groups);
}

/// What a fleet watch reports.
#[derive(Debug)]
pub enum WatchUpdate {
    /// The watched clusters' nodes as they are now, and what changed since the last update.
    /// Only clusters listed so far are in it: `listed` names them (spec, context).
    Fleet {
        fleet: FleetGroups,
        change: String,
        listed: Vec<(String, String)>,
    },
    /// Something the operator should know: a dropped watch, a relist, a cluster out of reach.
    Notice(String),
}

/// One cluster's watch as the gatherer sees it.
enum SourceEvent {
    /// Connected: the context's name.
    Connected(String),
    /// A relist began: nodes arrive again from scratch.
    Init,
    InitApply(String, Seen),
    InitDone,
    Apply(String, Seen),
    Delete(String),
    Problem(String),
}

/// Watches every source's nodes; the receiver gets the listed clusters' nodes after each settled
/// change (first as soon as one cluster is listed; a cluster out of reach joins when its listing
/// succeeds). Dropped watches reconnect with backoff and an expired resourceVersion relists; both
/// are reported as notices. Ends when the receiver is dropped.
pub fn watch(sources: Vec<KubeSource>) -> mpsc::Receiver<WatchUpdate> {
    let (out, rx) = mpsc::channel(16);
    let (events, mut incoming) = mpsc::channel::<(usize, SourceEvent)>(1024);
    let mut contexts = Vec::new();
    for (i, source) in sources.iter().enumerate() {
        contexts.push(source.spec());
        let events = events.clone();
        let source = source.clone();
        tokio::spawn(async move { follow(i, source, events).await });
    }
    drop(events);
    tokio::spawn(async move {
        let n = contexts.len();
        let mut names: Vec<String> = vec![String::new(); n];
        let mut nodes: Vec<BTreeMap<String, Seen>> = vec![BTreeMap::new(); n];
        let mut buffer: Vec<Option<BTreeMap<String, Seen>>> = vec![None; n];
        let mut listed = vec![false; n];
        let mut changes = Changes::default();
        let mut relisted = Vec::new();
        let mut shown = false;
        while let Some((i, event)) = incoming.recv().await {
            let mut next = Some((i, event));
            // Gather what arrives within SETTLE of the first event, then show it once.
            let settle = tokio::time::sleep(SETTLE);
            tokio::pin!(settle);
            loop {
                if let Some((i, event)) = next.take() {
                    match event {
                        SourceEvent::Connected(name) => names[i] = name,
                        SourceEvent::Init => buffer[i] = Some(BTreeMap::new()),
                        SourceEvent::InitApply(name, row) => {
                            buffer[i]
                                .get_or_insert_with(BTreeMap::new)
                                .insert(name, row);
                        }
                        SourceEvent::InitDone => {
                            let fresh = buffer[i].take().unwrap_or_default();
                            if listed[i] {
                                changes.diff(&nodes[i], &fresh);
                                relisted.push(format!(
                                    "{}: relisted {} nodes",
                                    contexts[i],
                                    fresh.len()
                                ));
                            }
                            nodes[i] = fresh;
                            listed[i] = true;
                        }
                        SourceEvent::Apply(name, row) => {
                            changes.apply(nodes[i].get(&name), &row);
                            nodes[i].insert(name, row);
                        }
                        SourceEvent::Delete(name) => {
                            if nodes[i].remove(&name).is_some() {
                                changes.left += 1;
                            }
                        }
                        SourceEvent::Problem(message) => {
                            if out.send(WatchUpdate::Notice(message)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                tokio::select! {
                    _ = &mut settle => break,
                    event = incoming.recv() => match event {
                        Some(e) => next = Some(e),
                        None => break,
                    },
                }
            }
            // The first view is shown once a cluster is listed; after that only changes that
            // move an identity (a node's heartbeat changes nothing kfleet shows). A cluster not
            // listed yet (out of reach) is left to what the caller already has.
            let first = !shown && listed.iter().any(|l| *l);
            if !first && (changes.is_empty() && relisted.is_empty()) {
                continue;
            }
            shown = true;
            let mut fleet = FleetGroups::default();
            let mut shown_clusters = Vec::new();
            for (i, spec) in contexts.iter().enumerate().filter(|(i, _)| listed[*i]) {
                fleet.files.push(spec.clone());
                add_nodes(&mut fleet, spec, &names[i], nodes[i].values());
                shown_clusters.push((spec.clone(), names[i].clone()));
            }
            let mut change = std::mem::take(&mut changes).describe();
            relisted.sort();
            for r in relisted.drain(..) {
                change = if change.is_empty() {
                    r
                } else {
                    format!("{change}; {r}")
                };
            }
            let update = WatchUpdate::Fleet {
                fleet,
                change,
                listed: shown_clusters,
            };
            if out.send(update).await.is_err() {
                return;
            }
        }
    });
    rx
}

/// Counts of what happened to nodes between two updates.
#[derive(Default)]
struct Changes {
    joined: u64,
    left: u64,
    moved: u64,
}

impl Changes {
    fn apply(&mut self, before: Option<&Seen>, after: &Seen) {
        match before {
            None => self.joined += 1,
            Some(b) if b != after => self.moved += 1,
            Some(_) => {}
        }
    }

    fn diff(&mut self, before: &BTreeMap<String, Seen>, after: &BTreeMap<String, Seen>) {
        for (name, row) in after {
            self.apply(before.get(name), row);
        }
        self.left += before.keys().filter(|n| !after.contains_key(*n)).count() as u64;
    }

    fn is_empty(&self) -> bool {
        self.joined + self.left + self.moved == 0
    }

    fn describe(self) -> String {
        let mut parts = Vec::new();
        if self.joined > 0 {
            parts.push(format!("{} joined", self.joined));
        }
        if self.left > 0 {
            parts.push(format!("{} left", self.left));
        }
        if self.moved > 0 {
            parts.push(format!("{} changed kernel or OS", self.moved));
        }
        if parts.is_empty() {
            return String::new();
        }
        format!("nodes: {}", parts.join(", "))
    }
}

/// Follows one cluster's nodes for as long as the gatherer listens.
async fn follow(i: usize, source: KubeSource, events: mpsc::Sender<(usize, SourceEvent)>) {
    let spec = source.spec();
    let mut delay = Duration::from_millis(500);
    let client = loop {
        match source.connect(Some(WATCH_READ_TIMEOUT)).await {
            Ok((client, name, _)) => {
                if events
                    .send((i, SourceEvent::Connected(name)))
                    .await
                    .is_err()
                {
                    return;
                }
                break client;
            }
            Err(e) => {
                let message = format!("{spec}: {e}; trying again in {}s", delay.as_secs_f32());
                if events
                    .send((i, SourceEvent::Problem(message)))
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(60));
            }
        }
    };
    let config = watcher::Config::default()
        .page_size(PAGE_SIZE)
        .timeout(WATCH_SERVER_TIMEOUT);
    let mut stream = std::pin::pin!(watcher(nodes_api(client), config).default_backoff());
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(Event::Init) => SourceEvent::Init,
            Ok(Event::InitApply(obj)) => {
                let (name, row) = seen(&obj);
                SourceEvent::InitApply(name, row)
            }
            Ok(Event::InitDone) => SourceEvent::InitDone,
            Ok(Event::Apply(obj)) => {
                let (name, row) = seen(&obj);
                SourceEvent::Apply(name, row)
            }
            Ok(Event::Delete(obj)) => SourceEvent::Delete(obj.metadata.name.unwrap_or_default()),
            Err(e) => SourceEvent::Problem(describe_watch_error(&spec, &e)),
        };
        if events.send((i, event)).await.is_err() {
            return;
        }
    }
}

fn describe_watch_error(spec: &str, e: &watcher::Error) -> String {
    let what = match e {
        watcher::Error::WatchError(status) if status.code == 410 => {
            return format!(
                "{spec}: the watch's resourceVersion expired (410 Gone); listing the nodes again"
            );
        }
        watcher::Error::WatchError(status) => {
            format!("the API server ended the watch: {}", status_text(status))
        }
        watcher::Error::InitialListFailed(e) => format!("listing nodes failed: {}", kube_error(e)),
        watcher::Error::WatchStartFailed(e) => {
            format!("starting the watch failed: {}", kube_error(e))
        }
        watcher::Error::WatchFailed(e) => format!("the watch failed: {}", kube_error(e)),
        other => other.to_string(),
    };
    format!("{spec}: {what}; trying again with backoff")
}

/// An API error as its code, reason and message; a transport error with its causes.
fn kube_error(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => status_text(status),
        other => crate::text::error_chain(other),
    }
}

fn status_text(status: &kube::core::Status) -> String {
    crate::text::clean(&format!(
        "{} {}: {}",
        status.code, status.reason, status.message
    ))
    .into_owned()
}

/// `current` with the watched clusters' part replaced by `watched`: inventory files and clusters
/// the watch has not listed yet keep what `current` had.
pub fn merge_watched(
    current: &FleetGroups,
    watched: FleetGroups,
    listed: &[(String, String)],
) -> FleetGroups {
    let replaced_context = |c: &Option<String>| {
        c.as_ref()
            .is_some_and(|c| listed.iter().any(|(_, n)| n == c))
    };
    let replaced_file = |f: &str| listed.iter().any(|(s, _)| s == f);
    let bad_rows: Vec<_> = current
        .bad_rows
        .iter()
        .filter(|b| !replaced_file(&b.file))
        .cloned()
        .collect();
    // Bad rows past the listed ones are only counted, whichever source they came from.
    let only_counted = current.bad_row_count - current.bad_rows.len() as u64;
    let mut merged = FleetGroups {
        files: current.files.clone(),
        groups: current
            .groups
            .iter()
            .filter(|g| !replaced_context(&g.context))
            .cloned()
            .collect(),
        bad_row_count: bad_rows.len() as u64 + only_counted,
        bad_rows,
    };
    merged.extend(FleetGroups {
        files: Vec::new(),
        ..watched
    });
    merged
}

/// Caps on what an API server can make kfleet hold: a list answer as a whole, and each event of a
/// watch stream (its lines), as kube's client reads both without a limit.
mod capped {
    use super::{MAX_LIST_BODY, MAX_WATCH_EVENT};
    use bytes::Bytes;
    use http::{Request, Response};
    use http_body::{Body, Frame};
    use std::pin::Pin;
    use std::task::{Context, Poll};

    type BoxError = Box<dyn std::error::Error + Send + Sync>;

    #[derive(Clone, Copy)]
    pub(super) struct CapLayer;

    impl<S> tower_layer::Layer<S> for CapLayer {
        type Service = Capped<S>;
        fn layer(&self, inner: S) -> Capped<S> {
            Capped { inner }
        }
    }

    #[derive(Clone)]
    pub(super) struct Capped<S> {
        inner: S,
    }

    impl<S, B> tower_service::Service<Request<kube::client::Body>> for Capped<S>
    where
        S: tower_service::Service<Request<kube::client::Body>, Response = Response<B>>,
        S::Future: Send + 'static,
        B: Body<Data = Bytes> + Unpin + Send + 'static,
        B::Error: Into<BoxError>,
    {
        type Response = Response<CappedBody<B>>;
        type Error = S::Error;
        type Future =
            Pin<Box<dyn std::future::Future<Output = Result<Self::Response, S::Error>> + Send>>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
            self.inner.poll_ready(cx)
        }

        fn call(&mut self, request: Request<kube::client::Body>) -> Self::Future {
            let watch = request
                .uri()
                .query()
                .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
            let answer = self.inner.call(request);
            Box::pin(async move {
                let response = answer.await?;
                Ok(response.map(|body| CappedBody {
                    inner: body,
                    watch,
                    seen: 0,
                }))
            })
        }
    }

    /// A body that fails once a list answer passes [`MAX_LIST_BODY`] bytes, or a watch goes
    /// [`MAX_WATCH_EVENT`] bytes without ending an event.
    pub(super) struct CappedBody<B> {
        inner: B,
        watch: bool,
        /// List: bytes so far; watch: bytes since the last newline.
        seen: usize,
    }

    impl<B> Body for CappedBody<B>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => frame,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            };
            if let Some(data) = frame.data_ref() {
                let over = if self.watch {
                    self.seen = match memchr::memrchr(b'\n', data) {
                        Some(at) => data.len() - at - 1,
                        None => self.seen + data.len(),
                    };
                    (self.seen > MAX_WATCH_EVENT)
                        .then(|| format!("a watch event over {MAX_WATCH_EVENT} bytes"))
                } else {
                    self.seen += data.len();
                    (self.seen > MAX_LIST_BODY)
                        .then(|| format!("an answer over {MAX_LIST_BODY} bytes"))
                };
                if let Some(what) = over {
                    return Poll::Ready(Some(Err(format!(
                        "the API server sent {what}; refusing it"
                    )
                    .into())));
                }
            }
            Poll::Ready(Some(Ok(frame)))
        }

        fn is_end_stream(&self) -> bool {
            self.inner.is_end_stream()
        }

        fn size_hint(&self) -> http_body::SizeHint {
            self.inner.size_hint()
        }
    }
}
