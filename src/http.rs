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
    /// For `/v1/backups` and `/v1/policies`; replaced when the config is reloaded.
    pub ctx: Arc<std::sync::RwLock<crate::job::Context>>,
}

pub fn router(state: HttpState) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/v1/jobs", get(v1_jobs))
        .route("/v1/backups", get(v1_backups))
        .route("/v1/policies", get(v1_policies))
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
    let last_api = s
        .metrics
        .api
        .last_success_ms
        .load(std::sync::atomic::Ordering::Relaxed);
    let last_api = if last_api == 0 {
        "never".to_string()
    } else {
        crate::store::from_ms(last_api).to_rfc3339()
    };
    if problems.is_empty() {
        (
            StatusCode::OK,
            format!("ready\nlast CDS API success: {last_api}\n"),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: {}\nlast CDS API success: {last_api}\n",
                problems.join("; ")
            ),
        )
    }
}

#[derive(serde::Deserialize)]
struct JobsQuery {
    policy: Option<String>,
    state: Option<String>,
    limit: Option<u32>,
}

fn json_error(status: StatusCode, message: String) -> axum::response::Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

async fn v1_jobs(
    State(s): State<Arc<HttpState>>,
    axum::extract::Query(q): axum::extract::Query<JobsQuery>,
) -> axum::response::Response {
    let state = match q.state.as_deref().map(str::parse::<crate::job::State>) {
        Some(Err(e)) => return json_error(StatusCode::BAD_REQUEST, e),
        Some(Ok(st)) => Some(st),
        None => None,
    };
    match crate::commands::jobs_json(&s.store, q.policy.as_deref(), state, q.limit.unwrap_or(50))
        .await
    {
        Ok(jobs) => axum::Json(jobs).into_response(),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(serde::Deserialize)]
struct BackupsQuery {
    policy: Option<String>,
    instance: Option<String>,
}

async fn v1_backups(
    State(s): State<Arc<HttpState>>,
    axum::extract::Query(q): axum::extract::Query<BackupsQuery>,
) -> axum::response::Response {
    let ctx = s.ctx.read().expect("context lock").clone();
    match crate::commands::inventory(
        &ctx,
        q.policy.as_deref(),
        q.instance.as_deref(),
        crate::prune::ProviderView::Inventory,
    )
    .await
    {
        Ok(r) => axum::Json(r).into_response(),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
    }
}

async fn v1_policies(State(s): State<Arc<HttpState>>) -> axum::response::Response {
    let config = s.ctx.read().expect("context lock").config.clone();
    axum::Json(crate::commands::policies_json(&config, chrono::Utc::now())).into_response()
}
