//! What `GET /metrics` shows: requests by outcome, dispatches, joins, build durations, and the
//! forge client's own counters and rate-limit budget, in Prometheus' text format.

use crate::forge::ClientStats;
use crate::locks::Lock;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub(super) struct Metrics {
    requests: std::sync::Mutex<BTreeMap<&'static str, u64>>,
    dispatches: AtomicU64,
    dedup_hits: AtomicU64,
    build_seconds_sum: std::sync::Mutex<f64>,
    build_seconds_count: AtomicU64,
}

impl Metrics {
    /// One request answered with `outcome`.
    pub(super) fn count(&self, outcome: &'static str) {
        *self.requests.locked().entry(outcome).or_default() += 1;
    }

    /// One workflow dispatched.
    pub(super) fn dispatched(&self) {
        self.dispatches.fetch_add(1, Ordering::Relaxed);
    }

    /// One request joined a build already under way.
    pub(super) fn joined(&self) {
        self.dedup_hits.fetch_add(1, Ordering::Relaxed);
    }

    /// One build seen from dispatch to available in `seconds`.
    pub(super) fn build_finished(&self, seconds: f64) {
        *self.build_seconds_sum.locked() += seconds;
        self.build_seconds_count.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text: these counters, and the forge client's `stats` with its budget
    /// renewing `resets_in` seconds from now.
    pub(super) fn render(&self, stats: &ClientStats, now: chrono::DateTime<chrono::Utc>) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP kfleet_requests_total Requests to the build service by outcome."
        );
        let _ = writeln!(out, "# TYPE kfleet_requests_total counter");
        for (outcome, n) in self.requests.locked().iter() {
            let _ = writeln!(out, "kfleet_requests_total{{outcome=\"{outcome}\"}} {n}");
        }
        for (name, help, value) in [
            (
                "kfleet_dispatches_total",
                "Workflow dispatches made.",
                self.dispatches.load(Ordering::Relaxed),
            ),
            (
                "kfleet_dedup_hits_total",
                "Requests that joined a build already under way.",
                self.dedup_hits.load(Ordering::Relaxed),
            ),
            (
                "kfleet_github_requests_total",
                "Requests made to the forge API.",
                stats.requests.load(Ordering::Relaxed),
            ),
            (
                "kfleet_github_retries_total",
                "Forge requests retried after 5xx, timeouts or dropped connections.",
                stats.retries.load(Ordering::Relaxed),
            ),
            (
                "kfleet_github_rate_limit_waits_total",
                "Waits for a forge rate limit.",
                stats.rate_limit_waits.load(Ordering::Relaxed),
            ),
            (
                "kfleet_github_not_modified_total",
                "Conditional requests answered 304.",
                stats.not_modified.load(Ordering::Relaxed),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        if let Some(budget) = stats.budget() {
            let resets_in = budget.renews_in(now);
            for (name, help, value) in [
                (
                    "kfleet_github_ratelimit_limit",
                    "Requests the forge allows the token per window (x-ratelimit-limit).",
                    budget.limit,
                ),
                (
                    "kfleet_github_ratelimit_remaining",
                    "Requests left in the window, as the forge last said (x-ratelimit-remaining).",
                    budget.remaining,
                ),
                (
                    "kfleet_github_ratelimit_reset_seconds",
                    "Seconds until the window renews (x-ratelimit-reset).",
                    resets_in,
                ),
            ] {
                let _ = writeln!(
                    out,
                    "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP kfleet_build_duration_seconds Dispatch to available, for builds this service saw finish."
        );
        let _ = writeln!(out, "# TYPE kfleet_build_duration_seconds summary");
        let _ = writeln!(
            out,
            "kfleet_build_duration_seconds_sum {}",
            self.build_seconds_sum.locked()
        );
        let _ = writeln!(
            out,
            "kfleet_build_duration_seconds_count {}",
            self.build_seconds_count.load(Ordering::Relaxed)
        );
        out
    }
}
