//! The build service (`kfleet serve`): nodes ask for their driver; the answer comes from a release
//! listing kept fresh with conditional requests, or one dispatch through the builds planner that
//! every later request for the same kernel joins.

mod auth;
mod handlers;
mod limits;
mod listing;
mod metrics;
mod server;
pub mod tls;
mod tracker;
mod webhooks;

use crate::protocol::{BuildStatus, ServiceStatus};
use auth::Auth;
use limits::Limits;
use listing::Listings;
use metrics::Metrics;
pub use server::{router, serve};
pub use tracker::PollError;
use tracker::Tracker;

use crate::artifacts::AssetTemplate;
use crate::builds::Planner;
use crate::forge::Forge;
use crate::state::Store;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest request body accepted; a build request is a few hundred bytes.
pub const MAX_BODY: usize = 4096;

#[derive(Clone, Debug)]
pub struct ServiceOptions {
    /// Bearer tokens clients may present.
    pub client_tokens: Vec<String>,
    /// How long the release listing is trusted before a conditional refresh.
    pub listing_ttl: Duration,
    /// How often the open builds' runs are read again: one conditional run listing for all of
    /// them (an unchanged one is a 304, which GitHub does not charge), however many builds are
    /// open and however often nodes poll `/status`.
    pub status_ttl: Duration,
    /// A build not done this long after dispatch is `timed_out`.
    pub deadline: Duration,
    /// New build requests (each may cost GitHub calls) per second each client token may make
    /// (burst: ten times that). Answers from the cached listing and status polls are not counted.
    pub rate_per_client: f64,
    /// Serve `/metrics` without a token.
    pub metrics_public: bool,
    /// Longest time one request may take, body included.
    pub request_timeout: Duration,
    /// Requests handled at once; more wait their turn (within the request timeout).
    pub max_concurrent_requests: usize,
    /// Open connections at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// A client must send its request headers within this time (also ends idle keep-alives).
    pub header_read_timeout: Duration,
    /// On SIGTERM, requests in flight get this long to finish.
    pub shutdown_grace: Duration,
    /// How often the service looks for claims whose holder stopped (another replica killed
    /// mid-dispatch, or this one before a restart) and settles them.
    pub sweep_interval: Duration,
    /// Settled builds are deleted from the state store this long after they settled.
    pub retention: Duration,
    /// The shared secret GitHub signs webhook deliveries with; `None`: `/webhooks/github` is off.
    pub webhook_secret: Option<Secret>,
    /// Serve HTTPS with this certificate and key (read again when they change); `None`: HTTP.
    pub tls: Option<tls::TlsFiles>,
    /// A build that failed is not dispatched again for the same kernel and driver version for
    /// this long: nodes asking meanwhile get `failed`, its run, and when a retry is allowed.
    pub retry_failed_after: Duration,
    /// New builds each client token may start in an hour.
    pub builds_per_hour: u32,
}

/// A secret that never shows in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Default for ServiceOptions {
    fn default() -> Self {
        Self {
            client_tokens: Vec::new(),
            listing_ttl: Duration::from_secs(30),
            status_ttl: Duration::from_secs(5),
            deadline: Duration::from_secs(15 * 60),
            rate_per_client: 50.0,
            metrics_public: false,
            request_timeout: Duration::from_secs(30),
            max_concurrent_requests: 512,
            max_connections: 2048,
            header_read_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
            sweep_interval: Duration::from_secs(10),
            retention: Duration::from_secs(30 * 24 * 3600),
            webhook_secret: None,
            tls: None,
            retry_failed_after: Duration::from_secs(3600),
            builds_per_hour: 200,
        }
    }
}

pub struct ServiceState {
    forge: Arc<dyn Forge>,
    planner: Planner,
    template: AssetTemplate,
    options: ServiceOptions,
    /// Who may ask.
    auth: Auth,
    /// How fast each client may start new builds.
    limits: Limits,
    /// The release listing requests are answered from.
    listings: Listings,
    /// Builds under way, the build a request joins, recent failures, the run poll.
    tracker: Tracker,
    metrics: Metrics,
}

impl ServiceState {
    /// The service's time: the planner's clock.
    pub(super) fn clock(&self) -> &crate::clock::SharedClock {
        self.planner.clock()
    }

    /// Time passed since `then`, on the service's clock.
    pub(super) fn elapsed_since(&self, then: Instant) -> Duration {
        self.clock().instant().saturating_duration_since(then)
    }

    /// The service over `forge`, with the planner's state store. Builds a previous run (or
    /// another replica) claimed but never dispatched are settled by [`ServiceState::sweep`],
    /// which [`router`] starts.
    pub fn new(
        forge: Arc<dyn Forge>,
        planner: Planner,
        template: AssetTemplate,
        options: ServiceOptions,
    ) -> Arc<Self> {
        Arc::new(Self {
            auth: Auth::new(&options.client_tokens),
            limits: Limits::new(options.rate_per_client, options.builds_per_hour),
            listings: Listings::new(),
            tracker: Tracker::new(),
            metrics: Metrics::default(),
            forge,
            planner,
            template,
            options,
        })
    }

    pub(super) fn store(&self) -> &Store {
        self.planner.store()
    }
}

fn json_error(status: StatusCode, reason: impl Into<String>) -> Response {
    (
        status,
        axum::Json(BuildStatus {
            status: ServiceStatus::Error,
            reason: Some(reason.into()),
            ..BuildStatus::default()
        }),
    )
        .into_response()
}
