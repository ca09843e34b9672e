//! The daemon's HTTP endpoint: `/metrics`, `/healthz`, `/readyz` and the `/v1/*` API. Binds
//! 127.0.0.1 by default so nothing is exposed by accident.
//!
//! Hardening, for when `http.listen` is reachable from other hosts:
//! - `/v1/*` needs `Authorization: Bearer <token>` whenever `http.token_file` is set (and the
//!   config refuses a non-loopback `listen` without one). The token is read once at start and
//!   at each reload ([`load_token`]) and compared in constant time. `/metrics`, `/healthz` and
//!   `/readyz` stay open so Prometheus and probes need no secret.
//! - Every request gets at most [`REQUEST_TIMEOUT`]; past it the answer is a 503.
//! - List sizes are bounded: `limit` defaults to [`JOBS_LIMIT_DEFAULT`], is capped at
//!   [`JOBS_LIMIT_MAX`], and a `limit` that is not a positive whole number is a 400.

use crate::config::{Config, credentials};
use crate::metrics::Metrics;
use crate::secret::Secret;
use crate::store::Store;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The longest any request may take before the server gives up with a 503.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Jobs returned by `/v1/jobs` without `limit`.
pub const JOBS_LIMIT_DEFAULT: u32 = 50;
/// The most jobs `/v1/jobs` returns, whatever `limit` asks for.
pub const JOBS_LIMIT_MAX: u32 = 500;

#[derive(Clone)]
pub struct HttpState {
    pub metrics: Metrics,
    pub store: Store,
    /// For `/v1/backups` and `/v1/policies`; replaced when the config is reloaded.
    pub ctx: Arc<RwLock<crate::services::Context>>,
    /// The bearer token `/v1/*` requires, if any; replaced when the config is reloaded.
    pub token: Arc<RwLock<Option<Secret>>>,
}

/// Why the `/v1` token cannot be used; names the file and the key, never the token.
#[derive(Debug, thiserror::Error)]
#[error("http.token_file in {config}: {source}")]
pub struct TokenError {
    config: std::path::PathBuf,
    source: credentials::Error,
}

/// Reads the `/v1` bearer token named by `http.token_file`, if set: the same rules as the
/// credential files (refused if every user can read it, trimmed, must not be empty), so a
/// token can come from systemd's `LoadCredential=`, a Kubernetes Secret or a compose secret.
///
/// # Errors
/// The file is missing, unreadable, world-readable or empty.
pub fn load_token(config: &Config) -> Result<Option<Secret>, TokenError> {
    let Some(path) = &config.http.token_file else {
        return Ok(None);
    };
    credentials::read_secret_file(path)
        .map(|t| Some(Secret::new(t)))
        .map_err(|source| TokenError {
            config: config.source.clone(),
            source,
        })
}

pub fn router(state: HttpState) -> axum::Router {
    let state = Arc::new(state);
    let v1 = axum::Router::new()
        .route("/v1/jobs", get(v1_jobs))
        .route("/v1/backups", get(v1_backups))
        .route("/v1/policies", get(v1_policies))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ));
    let app = axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .merge(v1)
        .with_state(state);
    with_timeout(app, REQUEST_TIMEOUT)
}

/// Wraps every route of `app` in a deadline: a request still running after `limit` (a slow
/// S3 listing behind `/v1/backups`, a locked state DB) is dropped and answered 503, so stuck
/// clients cannot pile up tasks in the daemon.
pub fn with_timeout(app: axum::Router, limit: Duration) -> axum::Router {
    app.layer(axum::middleware::from_fn(
        move |req: Request, next: Next| async move {
            match tokio::time::timeout(limit, next.run(req)).await {
                Ok(response) => response,
                Err(_) => json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "the request took longer than {}s and was abandoned; try again later or narrow it (e.g. ?policy=)",
                        limit.as_secs_f64()
                    ),
                ),
            }
        },
    ))
}

/// Lets a `/v1` request through only with the configured bearer token (when one is set).
async fn require_token(State(s): State<Arc<HttpState>>, req: Request, next: Next) -> Response {
    let expected = s
        .token
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let Some(expected) = expected else {
        return next.run(req).await;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    match given {
        Some(token) if token_matches(token, expected.expose()) => next.run(req).await,
        _ => {
            let mut response = json_error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token: send `Authorization: Bearer <token>` with the token in the file named by http.token_file".into(),
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"rdbvault\""),
            );
            response
        }
    }
}

/// Compares two tokens in constant time. Both are hashed first, so neither the position of the
/// first difference nor the token's length shows in the timing.
fn token_matches(given: &str, expected: &str) -> bool {
    use sha2::Digest as _;
    use subtle::ConstantTimeEq as _;
    let a = sha2::Sha256::digest(given.as_bytes());
    let b = sha2::Sha256::digest(expected.as_bytes());
    a[..].ct_eq(&b[..]).into()
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
    if let Some(age) = s.metrics.scheduler_staleness(crate::clock::wall_now()) {
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
    let details = format!(
        "last CDS API success: {last_api}\nstate DB: {}\n{}",
        s.store.describe(),
        lease_lines(&s).await
    );
    if problems.is_empty() {
        (StatusCode::OK, format!("ready\n{details}"))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n{details}", problems.join("; ")),
        )
    }
}

/// Who does the shared upkeep (replicas sharing the state DB take turns): one line per lease,
/// saying whether this replica holds it.
async fn lease_lines(s: &HttpState) -> String {
    let me = s.ctx.read().expect("context lock").owner.clone();
    let now = crate::store::ms(crate::clock::wall_now());
    let mut out = String::new();
    let who = |holder: &str| {
        if holder == me {
            "this replica"
        } else {
            "another replica"
        }
    };
    for name in ["retention", "reverify"] {
        let done = format!("{name}:done");
        let line = match (
            s.store.lease_holder(name, now).await,
            s.store.lease_holder(&done, now).await,
        ) {
            (Ok(Some((holder, epoch, until))), _) => format!(
                "{name}: running on {} (lease epoch {epoch}, until {})",
                who(&holder),
                crate::store::from_ms(until).to_rfc3339()
            ),
            (Ok(None), Ok(Some((holder, _, next)))) => format!(
                "{name}: last done by {}; due again {}",
                who(&holder),
                crate::store::from_ms(next).to_rfc3339()
            ),
            (Ok(None), Ok(None)) => format!("{name}: due (the next replica to look takes it)"),
            (Err(e), _) | (_, Err(e)) => format!("{name}: unknown ({e})"),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[derive(serde::Deserialize)]
struct JobsQuery {
    policy: Option<String>,
    state: Option<String>,
    /// Kept as text so a bad value gets a JSON 400 that says what is allowed.
    limit: Option<String>,
}

fn json_error(status: StatusCode, message: String) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

/// The number of rows a list endpoint returns: [`JOBS_LIMIT_DEFAULT`] when absent, at most
/// [`JOBS_LIMIT_MAX`]; zero or anything but a whole number is refused.
fn parse_limit(raw: Option<&str>) -> Result<u32, String> {
    let Some(text) = raw else {
        return Ok(JOBS_LIMIT_DEFAULT);
    };
    match text.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(n.min(u64::from(JOBS_LIMIT_MAX)) as u32),
        _ => Err(format!(
            "`limit` must be a whole number from 1 to {JOBS_LIMIT_MAX} (larger values are capped at {JOBS_LIMIT_MAX}); without it, {JOBS_LIMIT_DEFAULT} jobs are returned"
        )),
    }
}

async fn v1_jobs(
    State(s): State<Arc<HttpState>>,
    query: Result<axum::extract::Query<JobsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = match query {
        Ok(axum::extract::Query(q)) => q,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let limit = match parse_limit(q.limit.as_deref()) {
        Ok(n) => n,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, e),
    };
    let state = match q.state.as_deref().map(str::parse::<crate::job::State>) {
        Some(Err(e)) => return json_error(StatusCode::BAD_REQUEST, e),
        Some(Ok(st)) => Some(st),
        None => None,
    };
    let provider_tz = s.ctx.read().expect("context lock").config.cds.time_zone;
    match crate::views::jobs_json(&s.store, q.policy.as_deref(), state, limit, provider_tz).await {
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
    match crate::views::inventory_with_checks(
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
    axum::Json(crate::views::policies_json(
        &config,
        crate::clock::wall_now(),
    ))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_default_cap_and_refuse_nonsense() {
        assert_eq!(parse_limit(None), Ok(JOBS_LIMIT_DEFAULT));
        assert_eq!(parse_limit(Some("7")), Ok(7));
        assert_eq!(parse_limit(Some("100000")), Ok(JOBS_LIMIT_MAX));
        assert_eq!(
            parse_limit(Some("99999999999999999999999")),
            Err(parse_limit(Some("0")).unwrap_err())
        );
        for bad in ["0", "abc", "-1", "1.5", ""] {
            assert!(parse_limit(Some(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tokens_compare_by_value_only() {
        assert!(token_matches("s3cret-token", "s3cret-token"));
        assert!(!token_matches("s3cret-tokeN", "s3cret-token"));
        assert!(!token_matches("s3cret", "s3cret-token"));
        assert!(!token_matches("", "s3cret-token"));
    }

    /// A route slower than the deadline is answered 503 with a JSON error, over real HTTP.
    #[tokio::test]
    async fn a_request_past_the_deadline_gets_a_503() {
        let app = with_timeout(
            axum::Router::new()
                .route(
                    "/slow",
                    get(|| async {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        "late"
                    }),
                )
                .route("/fast", get(|| async { "ok" })),
            Duration::from_millis(200),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let started = std::time::Instant::now();
        let r = reqwest::get(format!("http://{addr}/slow")).await.unwrap();
        assert_eq!(r.status(), 503);
        assert!(started.elapsed() < Duration::from_secs(3));
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(
            body["error"].as_str().unwrap().contains("longer than"),
            "{body}"
        );
        let r = reqwest::get(format!("http://{addr}/fast")).await.unwrap();
        assert_eq!(r.status(), 200);
        server.abort();
    }
}
