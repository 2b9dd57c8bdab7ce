//! How fast each client may start new builds: a token bucket of `rate_per_client` a second (ten
//! seconds' worth at most) and a quota of `builds_per_hour`. Joining a build under way or asking
//! for its status costs nothing.

use super::ServiceState;
use super::auth::Client;
use super::json_error;
use crate::locks::Lock;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use std::collections::HashMap;
use std::time::{Duration, Instant};

struct Bucket {
    tokens: f64,
    at: Instant,
    /// New builds started in the current hour, and when that hour began.
    hour_start: Instant,
    hour_builds: u32,
}

/// Why a client may not start a build now.
#[derive(Debug, PartialEq)]
pub(super) enum Refusal {
    /// It started its hour's quota of builds.
    Quota { started: u32, retry_after: u64 },
    /// It asks faster than its rate.
    Rate { retry_after: u64 },
}

/// Every client's bucket and hourly count.
pub(super) struct Limits {
    rate: f64,
    builds_per_hour: u32,
    buckets: std::sync::Mutex<HashMap<[u8; 32], Bucket>>,
}

impl Limits {
    pub(super) fn new(rate: f64, builds_per_hour: u32) -> Self {
        Self {
            rate,
            builds_per_hour,
            buckets: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Takes one new-build token from the client's bucket at `now`.
    pub(super) fn charge(&self, client: &Client, now: Instant) -> Result<(), Refusal> {
        let rate = self.rate;
        let mut buckets = self.buckets.locked();
        let bucket = buckets.entry(client.0).or_insert(Bucket {
            tokens: rate * 10.0,
            at: now,
            hour_start: now,
            hour_builds: 0,
        });
        if now.saturating_duration_since(bucket.hour_start) >= Duration::from_secs(3600) {
            bucket.hour_start = now;
            bucket.hour_builds = 0;
        }
        if bucket.hour_builds >= self.builds_per_hour {
            let retry_after = Duration::from_secs(3600)
                .saturating_sub(now.saturating_duration_since(bucket.hour_start))
                .as_secs()
                .max(1);
            return Err(Refusal::Quota {
                started: bucket.hour_builds,
                retry_after,
            });
        }
        bucket.tokens =
            (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate).min(rate * 10.0);
        bucket.at = now;
        if bucket.tokens < 1.0 {
            return Err(Refusal::Rate {
                retry_after: ((1.0 - bucket.tokens) / rate).ceil().max(1.0) as u64,
            });
        }
        bucket.tokens -= 1.0;
        bucket.hour_builds += 1;
        Ok(())
    }
}

impl ServiceState {
    /// Takes one new-build token from the client's bucket; the error is the response to send.
    pub(super) fn charge(&self, client: &Client) -> Result<(), Box<Response>> {
        let refusal = match self.limits.charge(client, self.clock().instant()) {
            Ok(()) => return Ok(()),
            Err(refusal) => refusal,
        };
        let (outcome, reason, retry_after) = match refusal {
            Refusal::Quota {
                started,
                retry_after,
            } => (
                "quota_exceeded",
                format!(
                    "this client started {started} new builds this hour, its quota; ask again later"
                ),
                retry_after,
            ),
            Refusal::Rate { retry_after } => (
                "rate_limited",
                "too many new build requests from this client".to_string(),
                retry_after,
            ),
        };
        self.metrics.count(outcome);
        let mut r = json_error(StatusCode::TOO_MANY_REQUESTS, reason);
        if let Ok(v) = HeaderValue::from_str(&retry_after.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        Err(Box::new(r))
    }
}
