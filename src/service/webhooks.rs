//! GitHub webhooks (`POST /webhooks/github`): `workflow_run` events settle builds the moment
//! their run completes, instead of at the next run poll. Every delivery is verified first
//! (`X-Hub-Signature-256`, HMAC-SHA256 of the raw body with the shared secret, compared in
//! constant time); a delivery id seen before changes nothing; while deliveries arrive the run
//! poll stretches, and it takes over again when they stop.

use super::{ServiceState, json_error};
use crate::forge::WorkflowRun;
use crate::locks::Lock;
use crate::state::Phase;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{KeyInit, Mac};
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest delivery accepted (GitHub caps payloads at 25 MB; a `workflow_run` is tens of KiB).
pub const MAX_WEBHOOK_BODY: usize = 1 << 20;
/// Delivery ids remembered per replica, to ignore redeliveries.
const REMEMBERED: usize = 10_000;
/// Deliveries within this long mean webhooks reach the service: the run poll stretches.
pub(super) const LIVE: Duration = Duration::from_secs(120);

/// The delivery ids seen, oldest first, and when the last verified delivery came.
#[derive(Default)]
pub(super) struct Deliveries {
    seen: HashSet<String>,
    order: VecDeque<String>,
    last: Option<Instant>,
}

impl Deliveries {
    /// Whether `id` was handled before (a redelivery).
    fn seen(&self, id: &str) -> bool {
        self.seen.contains(id)
    }

    /// Records `id` as handled, forgetting the oldest beyond [`REMEMBERED`].
    fn remember(&mut self, id: &str, now: Instant) {
        self.last = Some(now);
        if self.seen.insert(id.to_string()) {
            self.order.push_back(id.to_string());
            if self.order.len() > REMEMBERED
                && let Some(old) = self.order.pop_front()
            {
                self.seen.remove(&old);
            }
        }
    }

    /// When the last verified delivery arrived.
    pub(super) fn last(&self) -> Option<Instant> {
        self.last
    }
}

/// Whether `signature` (`sha256=HEX`) is the HMAC-SHA256 of `body` under `secret`.
fn signed(secret: &[u8], body: &[u8], signature: Option<&str>) -> bool {
    let Some(hex) = signature.and_then(|s| s.strip_prefix("sha256=")) else {
        return false;
    };
    let Some(expected) = unhex(hex) else {
        return false;
    };
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

pub(super) async fn github(
    State(state): State<Arc<ServiceState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(secret) = &state.options.webhook_secret else {
        return json_error(
            StatusCode::NOT_FOUND,
            "webhooks are off: start the service with --webhook-secret FILE",
        );
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if !signed(secret.as_bytes(), &body, header("x-hub-signature-256")) {
        state.metrics.count("webhook_refused");
        return json_error(
            StatusCode::UNAUTHORIZED,
            "the delivery is not signed with this service's webhook secret (X-Hub-Signature-256)",
        );
    }
    let Some(delivery) = header("x-github-delivery").filter(|d| !d.is_empty() && d.len() <= 100)
    else {
        return json_error(StatusCode::BAD_REQUEST, "no X-GitHub-Delivery id");
    };
    if state.tracker.deliveries.locked().seen(delivery) {
        state.metrics.count("webhook_redelivered");
        return (StatusCode::OK, "already seen\n").into_response();
    }
    state.metrics.count("webhook");
    let response = match header("x-github-event") {
        Some("ping") => (StatusCode::OK, "pong\n").into_response(),
        Some("workflow_run") => workflow_run(&state, &body).await,
        // Jobs say a run started; the run's own events say how it ended.
        Some("workflow_job") => (StatusCode::ACCEPTED, "noted\n").into_response(),
        _ => (StatusCode::ACCEPTED, "ignored\n").into_response(),
    };
    // Only a delivery that was handled counts as seen: one that failed (the store was down)
    // is handled when GitHub delivers it again.
    if response.status().is_success() {
        let now = state.clock().instant();
        state.tracker.deliveries.locked().remember(delivery, now);
    }
    response
}

/// A run's state from its event: the build it is for is looked up by the request id in its
/// title and settled when the run completed.
async fn workflow_run(state: &ServiceState, body: &[u8]) -> Response {
    #[derive(serde::Deserialize)]
    struct Event {
        workflow_run: WorkflowRun,
    }
    let run = match serde_json::from_slice::<Event>(body) {
        Ok(e) => e.workflow_run,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                format!("not a workflow_run event: {e}"),
            );
        }
    };
    let Some(request_id) = run.request_id().map(str::to_string) else {
        return (StatusCode::ACCEPTED, "not a kfleet run\n").into_response();
    };
    let records = match state.store().by_request_id(&request_id).await {
        Ok(r) => r,
        Err(e) => return super::handlers::store_down(state, &e),
    };
    let now = state.clock().instant();
    let mut settled = 0;
    for record in records
        .iter()
        .filter(|r| r.phase == Phase::Dispatched && r.run_id == Some(run.id))
    {
        state.record_run(record, &run, now).await;
        settled += usize::from(run.is_finished());
    }
    (StatusCode::ACCEPTED, format!("{settled} builds settled\n")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_checked_over_the_raw_body() {
        let secret = b"It's a Secret to Everybody";
        let body = b"Hello, World!";
        // GitHub's own example (docs: validating webhook deliveries).
        let good = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(signed(secret, body, Some(good)));
        assert!(!signed(secret, b"Hello, World?", Some(good)));
        assert!(!signed(b"another secret", body, Some(good)));
        assert!(!signed(secret, body, None));
        assert!(!signed(secret, body, Some("sha1=757107ea")));
        assert!(!signed(secret, body, Some(&good[..20])));
    }

    #[test]
    fn redeliveries_are_recognised_and_memory_is_bounded() {
        let mut d = Deliveries::default();
        let now = Instant::now();
        assert!(!d.seen("a"));
        d.remember("a", now);
        assert!(d.seen("a"));
        for i in 0..REMEMBERED + 5 {
            d.remember(&i.to_string(), now);
        }
        assert!(d.seen.len() <= REMEMBERED);
        assert!(!d.seen("a"), "forgotten after {REMEMBERED} others");
    }
}
