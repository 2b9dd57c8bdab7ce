//! The endpoints: `POST /build`, `GET /status/{id}`, `GET /metrics`.

use super::listing::{Listing, Lookup};
use super::tracker::{RunState, Settled, Tracked};
use super::{MAX_BODY, ServiceState, json_error};
use crate::builds::new_request_id;
use crate::identity::{KernelIdentity, Rejection};
use crate::protocol::{BuildRequest, BuildStatus, ServiceStatus};
use crate::state::{Claim, Phase, StoreError};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// Reads at most [`MAX_BODY`] bytes of a request body (413 past it).
async fn read_body(headers: &HeaderMap, body: axum::body::Body) -> Result<bytes::Bytes, Response> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a build request is at most {MAX_BODY} bytes"),
        )
    };
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| too_large())
}

pub(super) async fn build(
    State(state): State<Arc<ServiceState>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    // The token is checked before a byte of the body is read.
    let client = match state.authenticate(&headers) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
    if !is_json {
        state.metrics.count("unsupported_media_type");
        return json_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the request as Content-Type: application/json",
        );
    }
    let body = match read_body(&headers, body).await {
        Ok(b) => b,
        Err(r) => {
            state.metrics.count("too_large");
            return r;
        }
    };
    let request: BuildRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            state.metrics.count("bad_request");
            return json_error(StatusCode::BAD_REQUEST, format!("not a build request: {e}"));
        }
    };
    let id = match KernelIdentity::parse(
        &request.distribution,
        &request.distro_version,
        &request.architecture,
        &request.kernel_version,
    ) {
        Ok(id) => id,
        Err(Rejection::Invalid(reason) | Rejection::Unsupported(reason)) => {
            state.metrics.count("invalid");
            return json_error(StatusCode::BAD_REQUEST, reason);
        }
    };
    let dv = request.driver_version;
    if let Err(reason) = crate::identity::check_driver_version(&dv) {
        state.metrics.count("invalid");
        return json_error(StatusCode::BAD_REQUEST, reason);
    }
    let key = id.key();
    let listing = match state.current_listing().await {
        Ok(l) => l,
        Err(e) => {
            state.metrics.count("forge_error");
            tracing::warn!("cannot read the release listing: {e}");
            return json_error(
                StatusCode::BAD_GATEWAY,
                "the build service cannot read the release listing right now; retry later",
            );
        }
    };
    match state.find(&listing, &key, &dv) {
        Lookup::Found(asset) => {
            state.metrics.count("available");
            return (
                StatusCode::OK,
                axum::Json(ServiceState::available_status(key, asset)),
            )
                .into_response();
        }
        Lookup::NoRelease => {
            // A release published a moment ago is not in the listing yet: the listing is read
            // again (at most every few seconds, however many nodes ask) and the node asks again.
            state.metrics.count("unknown_release");
            state.refresh_if_older(&listing, UNLISTED_REFRESH.min(state.options.listing_ttl));
            let mut r = json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "driver_version {dv}: the repository has no such release in the service's listing yet; the listing is being read again, retry in {}s",
                    UNLISTED_RETRY_AFTER
                ),
            );
            r.headers_mut().insert(
                header::RETRY_AFTER,
                header::HeaderValue::from(UNLISTED_RETRY_AFTER),
            );
            return r;
        }
        Lookup::Immutable(tag) => {
            state.metrics.count("immutable_release");
            return json_error(
                StatusCode::CONFLICT,
                crate::artifacts::immutable_reason(&tag),
            );
        }
        Lookup::NotBuilt => {}
    }
    // One id per kernel and driver version, whichever replica is asked: the open build's, or a
    // new claim in the state store, made before the answer (a crash after it loses no id: the
    // claim expires and a sweep dispatches it). The (paced) dispatch happens in the background.
    if let Some(rid) = state.cached_join(&key, &dv) {
        return joined(&state, rid, key);
    }
    let store = state.store();
    match store.open_build(&key, &dv).await {
        Ok(Some(open)) => {
            state.remember_join(&key, &dv, &open.request_id);
            return joined(&state, open.request_id, key);
        }
        Ok(None) => {}
        Err(e) => return store_down(&state, &e),
    }
    // A kernel whose build just failed is not built again until the backoff passes: a fleet of
    // nodes asking for it costs neither a dispatch nor a GitHub call.
    match state.recent_failure(&key, &dv).await {
        Ok(Some(failure)) => {
            state.metrics.count("recently_failed");
            let retry_in = (failure.retry_at - state.clock().now())
                .num_seconds()
                .max(1);
            let mut r = (
                StatusCode::OK,
                axum::Json(BuildStatus {
                    status: ServiceStatus::Failed,
                    identity: Some(key.clone()),
                    run_url: failure.run_url,
                    reason: Some(format!(
                        "{}; kfleet builds it again after {} ({retry_in}s from now)",
                        failure.reason,
                        failure.retry_at.format("%Y-%m-%dT%H:%M:%SZ")
                    )),
                    ..BuildStatus::default()
                }),
            )
                .into_response();
            if let Ok(v) = header::HeaderValue::from_str(&retry_in.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return r;
        }
        Ok(None) => {}
        Err(e) => return store_down(&state, &e),
    }
    // Only what can cost GitHub calls is rate-limited.
    if let Err(r) = state.charge(&client) {
        return *r;
    }
    let rid = new_request_id();
    match state.planner.claim(&rid, &key, &dv).await {
        Ok(Claim::Won(record)) => {
            state.remember_join(&key, &dv, &rid);
            let mut builds = state.tracker.builds.lock().await;
            state.prune_cache(&mut builds);
            builds.insert(
                rid.clone(),
                Tracked {
                    record,
                    status: None,
                },
            );
        }
        Ok(Claim::Held(other)) => {
            state.remember_join(&key, &dv, &other.request_id);
            return joined(&state, other.request_id, key);
        }
        Err(e) => return store_down(&state, &e),
    }
    state.metrics.count("accepted");
    let worker = state.clone();
    let job_rid = rid.clone();
    tokio::spawn(async move { worker.dispatch(id, dv, job_rid).await });
    accepted(rid, key)
}

/// How often a request for a release the listing lacks may have the listing read again.
const UNLISTED_REFRESH: std::time::Duration = std::time::Duration::from_secs(5);
/// The `Retry-After` of that answer, in seconds.
const UNLISTED_RETRY_AFTER: u64 = 5;

fn joined(state: &ServiceState, rid: String, key: String) -> Response {
    state.metrics.joined();
    state.metrics.count("joined");
    accepted(rid, key)
}

/// The answer while the state store cannot be reached: nothing is dispatched without a claim.
pub(super) fn store_down(state: &ServiceState, e: &StoreError) -> Response {
    state.metrics.count("store_error");
    tracing::error!("{e}");
    let mut r = json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the build service cannot reach its state store right now; retry in a few seconds",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
    r
}

fn accepted(id: String, key: String) -> Response {
    (
        StatusCode::ACCEPTED,
        axum::Json(BuildStatus {
            id: Some(id),
            status: ServiceStatus::Queued,
            identity: Some(key),
            ..BuildStatus::default()
        }),
    )
        .into_response()
}

pub(super) async fn status(
    State(state): State<Arc<ServiceState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = state.authenticate(&headers) {
        return *r;
    }
    // The store is the truth (another replica may have dispatched or settled the build); the
    // run poll keeps each open build's run state, so a status never costs a GitHub request.
    state.polled_once().await;
    let record = match state.store().by_request_id(&id).await {
        Ok(records) => records.into_iter().next(),
        Err(e) => return store_down(&state, &e),
    };
    let Some(record) = record else {
        state.metrics.count("unknown_id");
        return json_error(StatusCode::NOT_FOUND, "no build with this id");
    };
    if !record.phase.is_open() {
        state.forget_join((&record).into());
    }
    let tracked = {
        let mut builds = state.tracker.builds.lock().await;
        let status = builds
            .get(&id)
            .filter(|t| t.record.run_id == record.run_id)
            .and_then(|t| t.status);
        let tracked = Tracked { record, status };
        builds.insert(id.clone(), tracked.clone());
        tracked
    };
    let answer = |status: ServiceStatus| BuildStatus {
        id: Some(id.clone()),
        status,
        identity: Some(tracked.record.key.clone()),
        run_url: tracked.record.url.clone(),
        ..BuildStatus::default()
    };
    let failed = |reason: String| {
        let mut failed = answer(ServiceStatus::Failed);
        failed.reason = Some(reason);
        (StatusCode::OK, axum::Json(failed)).into_response()
    };
    let run_status = match (&tracked.settled(), &tracked.status) {
        (Some(Settled::Available), _) => RunState::Succeeded,
        (Some(Settled::TimedOut), _) => {
            let answer = answer(ServiceStatus::TimedOut);
            return (StatusCode::OK, axum::Json(answer)).into_response();
        }
        (Some(Settled::Failed(reason)), _) => return failed(reason.clone()),
        (None, Some((s, _))) => *s,
        // Dispatched moments ago: the next run poll reads it.
        (None, None) => RunState::Queued,
    };
    state.metrics.count("status");
    let response = match run_status {
        RunState::Succeeded => {
            let first_seen = tracked.status.is_none_or(|(s, _)| s != RunState::Succeeded);
            if first_seen {
                let took = state
                    .clock()
                    .now()
                    .signed_duration_since(tracked.record.started_at())
                    .num_milliseconds()
                    .max(0) as f64
                    / 1000.0;
                state.metrics.build_finished(took);
            }
            let find =
                |l: &Listing| state.find(l, &tracked.record.key, &tracked.record.driver_version);
            let mut listing = state.current_listing().await.ok();
            // The asset appears in the listing once the run uploads it: while it is not there,
            // refresh (single flight, at most once per status TTL).
            if let Some(l) = &listing
                && !matches!(find(l), Lookup::Found(_))
                && state.elapsed_since(l.fetched) >= state.options.status_ttl
            {
                listing = state.refresh_listing(Some(l.fetched)).await.ok();
            }
            match listing.as_deref().map(find) {
                Some(Lookup::Found(asset)) => {
                    let mut found =
                        ServiceState::available_status(tracked.record.key.clone(), asset);
                    found.id = Some(id.clone());
                    found.run_url = tracked.record.url.clone();
                    found
                }
                _ if state.overdue(&tracked.record) => answer(ServiceStatus::TimedOut),
                _ => answer(ServiceStatus::InProgress),
            }
        }
        RunState::Failed => answer(ServiceStatus::Failed),
        _ if state.overdue(&tracked.record) => {
            // Past the deadline: settled, so the next request starts a new build.
            state
                .settle((&tracked.record).into(), Phase::TimedOut, None)
                .await;
            answer(ServiceStatus::TimedOut)
        }
        RunState::InProgress => answer(ServiceStatus::InProgress),
        RunState::Queued => answer(ServiceStatus::Queued),
    };
    (StatusCode::OK, axum::Json(response)).into_response()
}

pub(super) async fn metrics(
    State(state): State<Arc<ServiceState>>,
    headers: HeaderMap,
) -> Response {
    if !state.options.metrics_public
        && let Err(r) = state.authenticate(&headers)
    {
        return *r;
    }
    let out = state
        .metrics
        .render(state.forge.stats(), state.clock().now());
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

/// Liveness: the process serves. Says whether the state store answers, without failing on it
/// (a restart would not bring the database back).
pub(super) async fn healthz(State(state): State<Arc<ServiceState>>) -> Response {
    let store = state.store();
    let line = match store.ping().await {
        Ok(()) => format!("store: {} ok", store.kind()),
        Err(e) => {
            tracing::warn!("{e}");
            format!(
                "store: {} unreachable (the service log says why)",
                store.kind()
            )
        }
    };
    let github = match state.forge.stats().budget() {
        Some(b) => format!(
            "github: {} of {} requests left, renewed in {}s",
            b.remaining,
            b.limit,
            b.renews_in(state.clock().now())
        ),
        None => "github: no request budget seen yet".to_string(),
    };
    (StatusCode::OK, format!("ok\n{line}\n{github}\n")).into_response()
}

/// Readiness: fails while the state store cannot be reached, so a load balancer sends nodes to
/// a replica that can claim builds.
pub(super) async fn readyz(State(state): State<Arc<ServiceState>>) -> Response {
    match state.store().ping().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => {
            tracing::warn!("not ready: {e}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "not ready: the {} state store cannot be reached (the service log says why)\n",
                    state.store().kind()
                ),
            )
                .into_response()
        }
    }
}
