//! The sandbox's GitHub API: the gatekeeper (token, faults, rate limits), release listings,
//! workflow dispatch with input checks, run listings, one run, cancel, and asset downloads.

use super::*;

/// The routes GitHub has for runs, dispatches, release listings and downloads (the release-asset
/// API is `assets`'; the parent puts both behind the gatekeeper).
pub(super) fn routes() -> Router<Arc<SandboxState>> {
    Router::new()
        .route("/repos/{owner}/{repo}/releases", get(list_releases))
        .route(
            "/repos/{owner}/{repo}/actions/workflows",
            get(list_workflows),
        )
        .route(
            "/repos/{owner}/{repo}/actions/workflows/{workflow}",
            get(get_workflow),
        )
        .route("/repos/{owner}/{repo}/actions/runs", get(list_repo_runs))
        .route("/rate_limit", get(rate_limit))
        .route("/repos/{owner}/{repo}", get(get_repository))
        .route(
            "/repos/{owner}/{repo}/actions/workflows/{workflow}/dispatches",
            post(dispatch),
        )
        .route(
            "/repos/{owner}/{repo}/actions/workflows/{workflow}/runs",
            get(list_runs),
        )
        .route("/repos/{owner}/{repo}/actions/runs/{id}", get(get_run))
        .route(
            "/repos/{owner}/{repo}/actions/runs/{id}/cancel",
            post(cancel_run),
        )
        .route(
            "/{owner}/{repo}/releases/download/{tag}/{name}",
            get(download),
        )
}

pub(super) fn github_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        serde_json::json!({
            "message": message,
            "documentation_url": "https://docs.github.com/rest",
            "status": status.as_u16().to_string(),
        })
        .to_string(),
    )
        .into_response()
}

fn authorised(state: &SandboxState, headers: &HeaderMap) -> bool {
    let Some(token) = &state.token else {
        return true;
    };
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let presented = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("token "))
        .unwrap_or("");
    // Constant-time comparison: the sandbox stands in for a server that must not leak tokens.
    presented.len() == token.len()
        && presented
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Whether a request's `Host` names this machine's loopback: a page on another site that
/// resolves its own name to 127.0.0.1 (DNS rebinding) sends its own host name and is turned away.
fn loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Counts, authenticates and applies faults before any handler runs.
pub(super) async fn gatekeeper(
    State(state): State<Arc<SandboxState>>,
    request: Request,
    next: Next,
) -> Response {
    if !loopback_host(request.headers()) {
        return github_error(
            StatusCode::MISDIRECTED_REQUEST,
            "The sandbox answers loopback host names only (localhost, 127.0.0.1, [::1])",
        );
    }
    let n = state.requests.fetch_add(1, Ordering::SeqCst) + 1;
    let (latency, fault) = {
        let mut faults = state.faults.locked();
        let latency = faults.latency;
        let fault = if faults.server_errors > 0 {
            faults.server_errors -= 1;
            Some(github_error(StatusCode::BAD_GATEWAY, "Server Error"))
        } else if faults.rate_limit_after.is_some_and(|after| n > after) {
            faults.rate_limit_after = None;
            let mut r = github_error(
                StatusCode::TOO_MANY_REQUESTS,
                "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
            );
            let headers = r.headers_mut();
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(faults.retry_after_secs),
            );
            headers.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
            Some(r)
        } else if faults.error_rate > 0.0 && state.rng.locked().f64() < faults.error_rate {
            Some(github_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Service Unavailable",
            ))
        } else {
            None
        };
        (latency, fault)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(response) = fault {
        return response;
    }
    // Release downloads are public on GitHub; everything else needs the token.
    let public = request.uri().path().contains("/releases/download/")
        || request.uri().path().starts_with(super::jobs::LOG_PATH);
    if !public && !authorised(&state, request.headers()) {
        return github_error(StatusCode::UNAUTHORIZED, "Bad credentials");
    }
    let free = request.uri().path() == "/rate_limit";
    let response = next.run(request).await;
    let (malformed, dropped) = {
        let mut faults = state.faults.locked();
        let ok = response.status().is_success();
        let malformed = ok && faults.malformed > 0;
        if malformed {
            faults.malformed -= 1;
        }
        let dropped = ok && !malformed && faults.drop_connections > 0;
        if dropped {
            faults.drop_connections -= 1;
        }
        (malformed, dropped)
    };
    if dropped {
        // Headers and half a body, then the stream fails: hyper aborts the connection.
        let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = vec![
            Ok(bytes::Bytes::from_static(b"[{\"tag_name\": ")),
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "sandbox drops the connection",
            )),
        ];
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            axum::body::Body::from_stream(futures_util::stream::iter(chunks)),
        )
            .into_response();
    }
    if malformed {
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            "[{\"tag_name\": \"v1\", \"assets\": [",
        )
            .into_response();
    }
    let mut response = response;
    budget_headers(&state, free, &mut response);
    response
}

/// The budget a personal token has on GitHub (requests an hour).
pub(super) const HOURLY_BUDGET: u64 = 5000;

/// Requests charged in the current hour (a new hour renews the budget, as GitHub's window
/// does), and when the hour ends (seconds since the epoch).
fn budget_used(state: &SandboxState) -> (u64, i64) {
    let now = chrono::Utc::now().timestamp().max(1) as u64;
    let start = state.window_start.load(Ordering::SeqCst);
    // As GitHub's: the hour starts with the first request after the last hour ended (not at
    // the top of the clock's hour, where a test near it would see the budget renew at once).
    if (start == 0 || now >= start + 3600)
        && state
            .window_start
            .compare_exchange(start, now, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    {
        state.charged.store(0, Ordering::SeqCst);
    }
    let start = state.window_start.load(Ordering::SeqCst);
    (state.charged.load(Ordering::SeqCst), (start + 3600) as i64)
}

/// `x-ratelimit-*` as GitHub sends them: a 304 is not charged, nor is `/rate_limit`.
fn budget_headers(state: &SandboxState, free: bool, response: &mut Response) {
    let (mut used, reset) = budget_used(state);
    if !free && response.status() != StatusCode::NOT_MODIFIED {
        state.charged_total.fetch_add(1, Ordering::SeqCst);
        used = state.charged.fetch_add(1, Ordering::SeqCst) + 1;
    }
    let headers = response.headers_mut();
    headers.insert("x-ratelimit-limit", HeaderValue::from(HOURLY_BUDGET));
    headers.insert(
        "x-ratelimit-remaining",
        HeaderValue::from(HOURLY_BUDGET.saturating_sub(used)),
    );
    headers.insert("x-ratelimit-used", HeaderValue::from(used));
    headers.insert("x-ratelimit-reset", HeaderValue::from(reset));
}

pub(super) async fn not_found() -> Response {
    github_error(StatusCode::NOT_FOUND, "Not Found")
}

#[derive(Deserialize)]
pub(super) struct PageQuery {
    pub(super) per_page: Option<usize>,
    pub(super) page: Option<usize>,
}

pub(super) fn same_repo(state: &SandboxState, owner: &str, repo: &str) -> bool {
    state.repo.is_empty() || state.repo == format!("{owner}/{repo}")
}

/// The repository a request names, for the shapes of what it answers.
pub(super) fn repo_of<'a>(
    state: &'a SandboxState,
    owner: &'a str,
    repo: &'a str,
) -> shapes::Repo<'a> {
    shapes::Repo {
        base: &state.base_url,
        owner,
        name: repo,
    }
}

/// A JSON value as a response body.
pub(super) fn json_body(value: &impl serde::Serialize) -> serde_json::Result<String> {
    serde_json::to_string(value)
}

fn etag_of(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    format!("\"{}\"", crate::fsio::hex(&digest[..16]))
}

/// A JSON body with an ETag, or 304 when the client already holds it; 500 when the body could
/// not be encoded.
pub(super) fn conditional_json(
    request_headers: &HeaderMap,
    body: serde_json::Result<String>,
    link: Option<String>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot encode: {e}"),
            )
                .into_response();
        }
    };
    let etag = etag_of(body.as_bytes());
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    if let Some(link) = link
        && let Ok(value) = HeaderValue::from_str(&link)
    {
        headers.insert(header::LINK, value);
    }
    let matches = request_headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().trim_start_matches("W/") == etag)
        });
    if matches {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    (StatusCode::OK, headers, body).into_response()
}

async fn list_releases(
    State(state): State<Arc<SandboxState>>,
    Path((owner, repo)): Path<(String, String)>,
    Query(q): Query<PageQuery>,
    headers: HeaderMap,
) -> Response {
    if !same_repo(&state, &owner, &repo) {
        return not_found().await;
    }
    let per_page = q.per_page.unwrap_or(30).clamp(1, 100);
    let page = q.page.unwrap_or(1).max(1);
    state.advance();
    let (body, total) = {
        let releases = state.releases.locked();
        let shapes = repo_of(&state, &owner, &repo);
        let user = shapes.user();
        let slice: Vec<shapes::ReleaseShape<'_>> = releases
            .iter()
            .skip((page - 1) * per_page)
            .take(per_page)
            .map(|r| shapes.release(r, state.started_at, &user))
            .collect();
        (serde_json::to_string(&slice), releases.len())
    };
    let path = format!("{}/repos/{owner}/{repo}/releases", state.base_url);
    conditional_json(&headers, body, page_links(&path, per_page, page, total))
}

/// GitHub's `Link` header for page `page` of `total` items at `path`.
pub(super) fn page_links(path: &str, per_page: usize, page: usize, total: usize) -> Option<String> {
    let last = total.div_ceil(per_page).max(1);
    let url = |p: usize| format!("<{path}?per_page={per_page}&page={p}>");
    let mut links = Vec::new();
    if page < last {
        links.push(format!("{}; rel=\"next\"", url(page + 1)));
        links.push(format!("{}; rel=\"last\"", url(last)));
    }
    if page > 1 {
        links.push(format!("{}; rel=\"first\"", url(1)));
        links.push(format!("{}; rel=\"prev\"", url(page - 1)));
    }
    (!links.is_empty()).then(|| links.join(", "))
}

/// Inputs of the shipped workflows, as their `on.workflow_dispatch.inputs` declare them.
fn workflow_inputs(workflow: &str) -> &'static [&'static str] {
    match workflow {
        "build-batch.yml" => &["identities", "driver_version", "request_id"],
        _ => &[
            "kernel_version",
            "architecture",
            "distribution",
            "distro_version",
            "driver_version",
            "request_id",
        ],
    }
}

pub(super) fn hex_sha256(bytes: &[u8]) -> String {
    crate::fsio::hex(&Sha256::digest(bytes))
}

pub(super) fn unprocessable(message: &str) -> Response {
    github_error(StatusCode::UNPROCESSABLE_ENTITY, message)
}

#[derive(Deserialize)]
struct DispatchBody {
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    #[serde(default)]
    inputs: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    return_run_details: Option<bool>,
}

async fn dispatch(
    State(state): State<Arc<SandboxState>>,
    Path((owner, repo, workflow)): Path<(String, String, String)>,
    body: Result<Json<DispatchBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Some(workflow) = state
        .workflow(&workflow)
        .filter(|_| same_repo(&state, &owner, &repo))
        .map(|(_, file)| file.to_string())
    else {
        return not_found().await;
    };
    let limited = {
        let mut faults = state.faults.locked();
        (faults.dispatch_rate_limits > 0).then(|| {
            faults.dispatch_rate_limits -= 1;
            faults.retry_after_secs
        })
    };
    if let Some(wait) = limited {
        let mut r = github_error(
            StatusCode::TOO_MANY_REQUESTS,
            "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(wait));
        return r;
    }
    let (fail_before, fail_after) = {
        let mut faults = state.faults.locked();
        let before = faults.dispatch_errors > 0;
        if before {
            faults.dispatch_errors -= 1;
        }
        let after = !before && faults.dispatch_errors_after_start > 0;
        if after {
            faults.dispatch_errors_after_start -= 1;
        }
        (before, after)
    };
    if fail_before {
        return github_error(StatusCode::BAD_GATEWAY, "Server Error");
    }
    let Ok(Json(body)) = body else {
        return github_error(StatusCode::BAD_REQUEST, "Problems parsing JSON");
    };
    if body.return_run_details.is_some() && state.simulation.reject_run_details {
        return unprocessable("Invalid request.\n\n\"return_run_details\" is not a permitted key.");
    }
    let Some(git_ref) = body.git_ref else {
        return unprocessable("Invalid request.\n\n\"ref\" wasn't supplied.");
    };
    if !state.simulation.refs.contains(&git_ref) {
        return unprocessable(&format!("No ref found for: {git_ref}"));
    }
    if body.inputs.len() > 25 {
        return unprocessable(
            "you may only define up to 25 `inputs` for a `workflow_dispatch` event",
        );
    }
    let declared = workflow_inputs(&workflow);
    let unexpected: Vec<&String> = body
        .inputs
        .keys()
        .filter(|k| !declared.contains(&k.as_str()))
        .collect();
    if !unexpected.is_empty() {
        return unprocessable(&format!("Unexpected inputs provided: {unexpected:?}"));
    }
    let input = |k: &str| body.inputs.get(k).and_then(|v| v.as_str()).unwrap_or("");
    if let Some(missing) = declared.iter().find(|k| input(k).is_empty()) {
        return unprocessable(&format!("Required input '{missing}' not provided"));
    }
    let parse = |d: &str, v: &str, a: &str, k: &str| KernelIdentity::parse(d, v, a, k).ok();
    let (title, identities, all_valid) = if workflow == "build-batch.yml" {
        let listed: Vec<serde_json::Value> =
            serde_json::from_str(input("identities")).unwrap_or_default();
        if listed.is_empty() || listed.len() > 256 {
            return unprocessable("identities must be a JSON list of 1 to 256 identities");
        }
        let field = |v: &serde_json::Value, k: &str| {
            v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string()
        };
        let identities: Vec<KernelIdentity> = listed
            .iter()
            .filter_map(|v| {
                parse(
                    &field(v, "distribution"),
                    &field(v, "distro_version"),
                    &field(v, "architecture"),
                    &field(v, "kernel_version"),
                )
            })
            .collect();
        let all_valid = identities.len() == listed.len();
        (
            run_title("batch", input("driver_version"), input("request_id")),
            identities,
            all_valid,
        )
    } else {
        let key = format!(
            "{}/{}/{}/{}",
            input("distribution"),
            input("distro_version"),
            input("architecture"),
            input("kernel_version")
        );
        let identity = parse(
            input("distribution"),
            input("distro_version"),
            input("architecture"),
            input("kernel_version"),
        );
        let valid = identity.is_some();
        (
            run_title(&key, input("driver_version"), input("request_id")),
            identity.into_iter().collect(),
            valid,
        )
    };
    let fails = if !all_valid {
        Some("an identity does not validate".to_string())
    } else if identities
        .iter()
        .any(|id| state.simulation.unresolvable.contains(&id.key()))
    {
        Some("kernel headers unresolvable".to_string())
    } else if state.rng.locked().f64() < state.simulation.fail_rate {
        Some("build failed".to_string())
    } else {
        None
    };
    let jobs = local_jobs(&workflow, &body.inputs, &identities);
    let id = {
        let mut runs = state.runs.locked();
        let id = state.run_id_base + runs.len() as u64 + 1;
        let local = state
            .simulation
            .local
            .clone()
            .map(|runner| super::local::start(&state, runner, id, jobs));
        let now = state.clock.now();
        runs.insert(
            id,
            SimRun {
                run: WorkflowRun {
                    id,
                    display_title: title,
                    status: Some("queued".into()),
                    conclusion: None,
                    event: Some("workflow_dispatch".into()),
                    html_url: Some(format!(
                        "{}/{}/actions/runs/{id}",
                        state.base_url, state.repo
                    )),
                    created_at: Some(now),
                    updated_at: Some(now),
                },
                workflow,
                git_ref,
                identities,
                driver_version: input("driver_version").to_string(),
                started: state.clock.instant(),
                fails,
                cancelled: false,
                finished: false,
                local,
            },
        );
        id
    };
    state.dispatches.fetch_add(1, Ordering::SeqCst);
    if fail_after {
        return github_error(StatusCode::BAD_GATEWAY, "Server Error");
    }
    let stall = {
        let mut faults = state.faults.locked();
        (faults.dispatch_stalls > 0).then(|| {
            faults.dispatch_stalls -= 1;
            faults.dispatch_stall
        })
    };
    if let Some(stall) = stall {
        tokio::time::sleep(stall).await;
    }
    if body.return_run_details == Some(true) {
        let api = format!("{}/repos/{}/actions/runs/{id}", state.base_url, state.repo);
        let html = format!("{}/{}/actions/runs/{id}", state.base_url, state.repo);
        return (
            StatusCode::OK,
            Json(serde_json::json!({"workflow_run_id": id, "run_url": api, "html_url": html})),
        )
            .into_response();
    }
    StatusCode::NO_CONTENT.into_response()
}

/// The build-driver jobs a dispatch stands for: itself, or one per identity of a batch (the
/// batch workflow's matrix calls build-driver.yml for each).
fn local_jobs(
    workflow: &str,
    inputs: &serde_json::Map<String, serde_json::Value>,
    identities: &[KernelIdentity],
) -> Vec<std::collections::BTreeMap<String, String>> {
    let input = |k: &str| {
        inputs
            .get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    if workflow != "build-batch.yml" {
        return vec![
            inputs
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect(),
        ];
    }
    identities
        .iter()
        .map(|id| {
            [
                ("distribution", id.distribution.to_string()),
                ("distro_version", id.distro_version.clone()),
                ("architecture", id.architecture.to_string()),
                ("kernel_version", id.kernel_version.clone()),
                ("driver_version", input("driver_version")),
                ("request_id", input("request_id")),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
        })
        .collect()
}

#[derive(Deserialize)]
struct RunQuery {
    status: Option<String>,
    event: Option<String>,
    per_page: Option<usize>,
    page: Option<usize>,
    /// GitHub's date filter; the sandbox knows the `>=TIME` form kfleet sends.
    created: Option<String>,
}

async fn list_runs(
    State(state): State<Arc<SandboxState>>,
    Path((owner, repo, workflow)): Path<(String, String, String)>,
    Query(q): Query<RunQuery>,
    headers: HeaderMap,
) -> Response {
    let Some(workflow) = state.workflow(&workflow).map(|(_, file)| file.to_string()) else {
        return not_found().await;
    };
    let path = format!("/repos/{owner}/{repo}/actions/workflows/{workflow}/runs");
    runs_page(&state, (&owner, &repo), Some(&workflow), &path, q, &headers).await
}

/// `GET /repos/{owner}/{repo}/actions/runs`: every workflow's runs.
async fn list_repo_runs(
    State(state): State<Arc<SandboxState>>,
    Path((owner, repo)): Path<(String, String)>,
    Query(q): Query<RunQuery>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/repos/{owner}/{repo}/actions/runs");
    runs_page(&state, (&owner, &repo), None, &path, q, &headers).await
}

/// A page of runs, newest first, of one workflow or all, filtered as GitHub filters them.
async fn runs_page(
    state: &SandboxState,
    (owner, repo): (&str, &str),
    workflow: Option<&str>,
    path: &str,
    q: RunQuery,
    headers: &HeaderMap,
) -> Response {
    if !same_repo(state, owner, repo) {
        return not_found().await;
    }
    let created_since = match q.created.as_deref() {
        None => None,
        Some(c) => match c
            .strip_prefix(">=")
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        {
            Some(t) => Some(t.with_timezone(&chrono::Utc)),
            None => return unprocessable(&format!("created={c}: the sandbox knows >=TIME only")),
        },
    };
    state.advance();
    let per_page = q.per_page.unwrap_or(30).clamp(1, 100);
    let page = q.page.unwrap_or(1).max(1);
    let shapes = repo_of(state, owner, repo);
    let (total, workflow_runs) = {
        let runs = state.runs.locked();
        let matching: Vec<&SimRun> = runs
            .values()
            .rev()
            .filter(|r| workflow.is_none_or(|w| r.workflow == w))
            .filter(|r| {
                state.clock.instant().saturating_duration_since(r.started)
                    >= state.simulation.listing_delay
            })
            .filter(|r| {
                q.status
                    .as_deref()
                    .is_none_or(|s| r.run.status == Some(s.into()))
            })
            .filter(|r| {
                q.event
                    .as_deref()
                    .is_none_or(|e| r.run.event.as_deref() == Some(e))
            })
            .filter(|r| created_since.is_none_or(|since| r.run.created_at >= Some(since)))
            .collect();
        let page_runs: Vec<serde_json::Value> = matching
            .iter()
            .skip((page - 1) * per_page)
            .take(per_page)
            .map(|sim| state.run_json(&shapes, sim))
            .collect();
        (matching.len(), page_runs)
    };
    let body = json_body(&serde_json::json!({
        "total_count": total,
        "workflow_runs": workflow_runs,
    }));
    let last = total.div_ceil(per_page).max(1);
    let link = (page < last).then(|| {
        let mut next = format!(
            "{}{path}?per_page={per_page}&page={}",
            state.base_url,
            page + 1
        );
        for (name, value) in [
            ("status", &q.status),
            ("event", &q.event),
            ("created", &q.created),
        ] {
            if let Some(v) = value {
                next.push_str(&format!(
                    "&{name}={}",
                    v.replace('>', "%3E").replace('=', "%3D")
                ));
            }
        }
        format!("<{next}>; rel=\"next\"")
    });
    conditional_json(headers, body, link)
}

async fn get_run(
    State(state): State<Arc<SandboxState>>,
    Path((owner, repo, id)): Path<(String, String, u64)>,
) -> Response {
    if !same_repo(&state, &owner, &repo) {
        return not_found().await;
    }
    state.advance();
    let shapes = repo_of(&state, &owner, &repo);
    let run = state
        .runs
        .locked()
        .get(&id)
        .map(|sim| state.run_json(&shapes, sim));
    match run {
        Some(run) => Json(run).into_response(),
        None => not_found().await,
    }
}

/// `GET /repos/{owner}/{repo}/actions/workflows`: the workflow files the sandbox runs.
async fn list_workflows(
    State(state): State<Arc<SandboxState>>,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if !same_repo(&state, &owner, &repo) {
        return not_found().await;
    }
    let shapes = repo_of(&state, &owner, &repo);
    let workflows: Vec<serde_json::Value> = state
        .simulation
        .workflows
        .iter()
        .filter_map(|file| state.workflow(file))
        .map(|(id, file)| shapes.workflow(id, file, state.started_at))
        .collect();
    let body = json_body(&serde_json::json!({
        "total_count": workflows.len(),
        "workflows": workflows,
    }));
    conditional_json(&headers, body, None)
}

/// `GET /repos/{owner}/{repo}/actions/workflows/{id or file name}`.
async fn get_workflow(
    State(state): State<Arc<SandboxState>>,
    Path((owner, repo, workflow)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if !same_repo(&state, &owner, &repo) {
        return not_found().await;
    }
    match state.workflow(&workflow) {
        Some((id, file)) => {
            let value = repo_of(&state, &owner, &repo).workflow(id, file, state.started_at);
            conditional_json(&headers, json_body(&value), None)
        }
        None => not_found().await,
    }
}

/// `GET /repos/{owner}/{repo}`: the repository the sandbox serves.
async fn get_repository(
    State(state): State<Arc<SandboxState>>,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if !same_repo(&state, &owner, &repo) {
        return not_found().await;
    }
    let value = repo_of(&state, &owner, &repo).full_repository(state.started_at);
    conditional_json(&headers, json_body(&value), None)
}

/// `GET /rate_limit`: the token's budget, as the `x-ratelimit-*` headers count it (the call
/// itself is free, as on GitHub).
async fn rate_limit(State(state): State<Arc<SandboxState>>) -> Response {
    let (used, reset) = budget_used(&state);
    Json(shapes::rate_limit(used, reset)).into_response()
}

async fn cancel_run(
    State(state): State<Arc<SandboxState>>,
    Path((owner, repo, id)): Path<(String, String, u64)>,
) -> Response {
    if !same_repo(&state, &owner, &repo) {
        return not_found().await;
    }
    state.advance();
    let outcome = {
        let mut runs = state.runs.locked();
        match runs.get_mut(&id) {
            None => None,
            Some(sim) if sim.finished => Some(false),
            Some(sim) => {
                sim.cancelled = true;
                Some(true)
            }
        }
    };
    state.advance();
    match outcome {
        None => not_found().await,
        Some(false) => github_error(
            StatusCode::CONFLICT,
            "Cannot cancel a workflow run that is completed.",
        ),
        Some(true) => (StatusCode::ACCEPTED, Json(serde_json::json!({}))).into_response(),
    }
}

/// A release asset's bytes. The sandbox's artifacts are their own names, which is what their
/// `sha256:` digests were computed from.
async fn download(
    State(state): State<Arc<SandboxState>>,
    Path((owner, repo, tag, name)): Path<(String, String, String, String)>,
) -> Response {
    if !same_repo(&state, &owner, &repo) {
        return not_found().await;
    }
    state.advance();
    let exists = state
        .releases
        .locked()
        .iter()
        .any(|r| r.tag_name == tag && r.assets.iter().any(|a| a.name == name));
    if !exists {
        return not_found().await;
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/octet-stream")],
        state.asset_bytes(&name),
    )
        .into_response()
}
