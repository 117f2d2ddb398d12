//! The operator's HTTP endpoints: `/healthz` (the process serves), `/readyz` (it can do its
//! job: a standby replica is ready to take over; the leader once its first reconcile ran) and
//! `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::metrics::Metrics;

/// What the endpoints serve, shared with the controller: whether this replica leads and has
/// reconciled once (for `/readyz`), and the metrics (for `/metrics`).
#[derive(Default)]
pub struct EndpointState {
    pub metrics: Metrics,
    leading: AtomicBool,
    first_reconcile_done: AtomicBool,
}

impl EndpointState {
    pub fn set_leading(&self, leading: bool) {
        self.leading.store(leading, Ordering::Relaxed);
    }

    pub fn set_reconciled(&self) {
        self.first_reconcile_done.store(true, Ordering::Relaxed);
    }

    fn ready(&self) -> bool {
        !self.leading.load(Ordering::Relaxed) || self.first_reconcile_done.load(Ordering::Relaxed)
    }
}

pub async fn serve(address: SocketAddr, state: Arc<EndpointState>) -> std::io::Result<()> {
    let router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(address).await?;
    tracing::info!(%address, "serving /healthz, /readyz and /metrics");
    axum::serve(listener, router).await
}

async fn readyz(State(state): State<Arc<EndpointState>>) -> impl IntoResponse {
    if state.ready() {
        (StatusCode::OK, "ok")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "first reconcile not done yet",
        )
    }
}

async fn metrics(State(state): State<Arc<EndpointState>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}
