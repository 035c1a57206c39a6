//! The worker's HTTP endpoint (`worker.http.listen`): `/healthz` (the process is alive),
//! `/readyz` (the database and the executor answer) and `/metrics` (Prometheus).

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::executor::Executor;
use crate::queue::PgQueue;
use crate::worker::WorkerProbe;

/// What the endpoint answers from.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The running worker.
    pub probe: WorkerProbe,
    /// Windmill's database, pinged by `/readyz`.
    pub queue: PgQueue,
    /// The executor, asked by `/readyz`.
    pub executor: Executor,
}

/// Serves the endpoint on `listener` until `stop`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    endpoint: Endpoint,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(endpoint);
    axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
}

async fn readyz(State(endpoint): State<Endpoint>) -> impl IntoResponse {
    let database = endpoint.queue.ping(Duration::from_secs(2)).await;
    let problems: Vec<String> = [database, endpoint.executor.ready().await]
        .into_iter()
        .filter_map(Result::err)
        .collect();
    if problems.is_empty() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", problems.join("; ")),
        )
    }
}

async fn metrics(State(endpoint): State<Endpoint>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        endpoint.probe.metrics(),
    )
}
