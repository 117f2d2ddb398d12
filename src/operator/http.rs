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

/// What the endpoints report, shared with the controller.
#[derive(Default)]
pub struct Health {
    pub metrics: Metrics,
    leading: AtomicBool,
    first_reconcile_done: AtomicBool,
}

impl Health {
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

pub async fn serve(address: SocketAddr, health: Arc<Health>) -> std::io::Result<()> {
    let router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(health);
    let listener = tokio::net::TcpListener::bind(address).await?;
    tracing::info!(%address, "serving /healthz, /readyz and /metrics");
    axum::serve(listener, router).await
}

async fn readyz(State(health): State<Arc<Health>>) -> impl IntoResponse {
    if health.ready() {
        (StatusCode::OK, "ok")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "first reconcile not done yet",
        )
    }
}

async fn metrics(State(health): State<Arc<Health>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        health.metrics.encode(),
    )
}
