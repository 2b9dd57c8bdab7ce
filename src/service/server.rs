//! Serving: the router with its request timeout and concurrency limit, and the HTTP/1.1 server
//! with a header read timeout, a connection limit and a bounded graceful shutdown.

use super::handlers::{build, healthz, metrics, readyz, status};
use super::json_error;
use super::{MAX_BODY, ServiceState};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use std::sync::Arc;
use std::time::Duration;

/// One line per request once it is answered: method, path, status and how long it took, as
/// fields of the event (`--log-format json` makes them JSON fields). Never the headers, so no
/// bearer token; the path's control characters are made harmless.
async fn access_log(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let path = crate::text::clean(request.uri().path()).into_owned();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let millis = started.elapsed().as_millis() as u64;
    tracing::info!(
        target: "kfleet::service::access",
        method = %method,
        path = %path,
        status,
        millis,
        "{method} {path} {status} {millis}ms"
    );
    response
}

/// The router: `POST /build`, `GET /status/{id}`, `GET /healthz`, `GET /readyz`, `GET /metrics`,
/// with a request timeout and a limit on requests handled at once. Called within a tokio runtime,
/// it also starts the sweep of claims whose holder stopped ([`ServiceState::sweep`]) and the poll
/// of the open builds' runs ([`ServiceState::poll_runs`]), which run until the state is dropped.
pub fn router(state: Arc<ServiceState>) -> Router {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        let weak = Arc::downgrade(&state);
        let every = state.options.sweep_interval.max(Duration::from_millis(50));
        runtime.spawn(async move {
            loop {
                let Some(state) = weak.upgrade() else { break };
                if let Err(e) = state.sweep().await {
                    tracing::warn!("sweep of open builds: {e}");
                }
                drop(state);
                tokio::time::sleep(every).await;
            }
        });
        let weak = Arc::downgrade(&state);
        runtime.spawn(async move {
            loop {
                let Some(state) = weak.upgrade() else { break };
                if let Err(e) = state.poll_runs().await {
                    tracing::warn!("cannot read the open builds' runs: {e}");
                }
                let every = state.run_poll_interval();
                drop(state);
                tokio::time::sleep(every).await;
            }
        });
    }
    let limit = Arc::new(tokio::sync::Semaphore::new(
        state.options.max_concurrent_requests.max(1),
    ));
    let timeout = state.options.request_timeout;
    Router::new()
        .route("/build", post(build))
        .route("/status/{id}", get(status))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .route(
            "/webhooks/github",
            post(super::webhooks::github)
                .layer(DefaultBodyLimit::max(super::webhooks::MAX_WEBHOOK_BODY)),
        )
        .layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                let limit = limit.clone();
                async move {
                    let run = async {
                        let _slot = limit.acquire().await;
                        next.run(request).await
                    };
                    match tokio::time::timeout(timeout, run).await {
                        Ok(response) => response,
                        Err(_) => json_error(
                            StatusCode::REQUEST_TIMEOUT,
                            "the request took too long; retry",
                        ),
                    }
                }
            },
        ))
        // Outermost: a request the timeout answered is logged too.
        .layer(axum::middleware::from_fn(access_log))
        .with_state(state)
}

/// Serves `router(state)` on `listener` until `shutdown` resolves: HTTP/1.1 with a header read
/// timeout (which also ends idle keep-alive connections), at most `max_connections` at once, and
/// on shutdown at most `shutdown_grace` for the requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ServiceState>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let options = state.options.clone();
    let tls = match &options.tls {
        Some(files) => {
            let (acceptor, resolver) =
                super::tls::acceptor(files).map_err(std::io::Error::other)?;
            // Certificates rotated in place are picked up within a few seconds.
            let weak = Arc::downgrade(&resolver);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(super::tls::RELOAD_CHECK).await;
                    let Some(resolver) = weak.upgrade() else {
                        break;
                    };
                    let _ = tokio::task::spawn_blocking(move || resolver.reload_if_changed()).await;
                }
            });
            Some((acceptor, resolver))
        }
        None => None,
    };
    let app = router(state);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let connections = Arc::new(tokio::sync::Semaphore::new(options.max_connections.max(1)));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        match &tls {
            None => {
                let connection = http.serve_connection(TokioIo::new(stream), service);
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    let _ = connection.await;
                    drop(permit);
                });
            }
            Some((acceptor, _)) => {
                let (acceptor, http, watcher) =
                    (acceptor.clone(), http.clone(), graceful.watcher());
                let handshake_timeout = options.header_read_timeout;
                tokio::spawn(async move {
                    // A client that does not finish its handshake in time is dropped like one
                    // that does not send its headers.
                    if let Ok(Ok(stream)) =
                        tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await
                    {
                        let connection = http.serve_connection(TokioIo::new(stream), service);
                        let _ = watcher.watch(connection).await;
                    }
                    drop(permit);
                });
            }
        }
    }
    drop(listener);
    tracing::info!(
        "shutting down: finishing requests in flight (at most {}s)",
        options.shutdown_grace.as_secs()
    );
    if tokio::time::timeout(options.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after the grace period were cut off");
    }
    Ok(())
}
