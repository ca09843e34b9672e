//! The daemon's HTTP endpoint: `/metrics`, `/healthz`, `/readyz`. Binds 127.0.0.1 by default so
//! metrics are not exposed by accident.

use crate::metrics::Metrics;
use crate::store::Store;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use std::sync::Arc;

/// A scheduler heartbeat older than this makes `/readyz` fail.
pub const HEARTBEAT_STALE_SECS: f64 = 30.0;

#[derive(Clone)]
pub struct HttpState {
    pub metrics: Metrics,
    pub store: Store,
}

pub fn router(state: HttpState) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(Arc::new(state))
}

async fn metrics(State(s): State<Arc<HttpState>>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        s.metrics.render(),
    )
}

async fn readyz(State(s): State<Arc<HttpState>>) -> impl IntoResponse {
    let mut problems = Vec::new();
    if let Err(e) = s.store.check_writable().await {
        problems.push(format!("state DB is not writable: {e}"));
    }
    let heartbeat = s.metrics.scheduler_heartbeat.get();
    let age = chrono::Utc::now().timestamp_millis() as f64 / 1000.0 - heartbeat;
    if heartbeat == 0.0 || age > HEARTBEAT_STALE_SECS {
        problems.push(format!("scheduler heartbeat is stale ({age:.0}s old)"));
    }
    if problems.is_empty() {
        (StatusCode::OK, "ready\n".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", problems.join("; ")),
        )
    }
}
