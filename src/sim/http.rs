//! The simulator's HTTP face: the signed API under `/redis` and `/redis/`, download URLs under
//! `/_download/`, and the control endpoints under `/_sim/`.

use super::Shared;
use super::auth::{self, Rejection};
use super::state::{Fault, InstanceSpec, LoggedRequest, TaskIdStyle, TruncateMode};
use crate::cds::sign::Method;
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const COMMON_PARAMS: [&str; 7] = [
    "Action",
    "AccessKeyId",
    "SignatureMethod",
    "SignatureVersion",
    "SignatureNonce",
    "Timestamp",
    "Version",
];

pub fn router(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new()
        .route("/redis", get(api).post(api))
        .route("/redis/", get(api).post(api))
        .route("/_download/{file}", get(download).head(download))
        .route(
            "/_sim/faults",
            get(list_faults).post(add_fault).delete(clear_faults),
        )
        .route("/_sim/requests", get(requests))
        .route("/_sim/stats", get(stats))
        .route("/_sim/backups", get(backups))
        .route("/_sim/instances", get(instances).post(add_instance))
        .route("/_sim/auto-backup", post(auto_backup))
        .route("/_sim/settings", get(get_settings).put(put_settings))
        .route("/_sim/health", get(|| async { "ok" }))
        .with_state(shared)
}

/// Counts an API call in flight for as long as it lives (also when the client goes away and
/// the handler is dropped).
struct InFlight(Arc<Shared>);

impl InFlight {
    fn enter(s: &Arc<Shared>) -> InFlight {
        let mut w = s.world();
        w.api_in_flight += 1;
        w.api_in_flight_max = w.api_in_flight_max.max(w.api_in_flight);
        InFlight(s.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut w = self.0.world();
        w.api_in_flight = w.api_in_flight.saturating_sub(1);
    }
}

/// The message text each action's sample uses; clients must not depend on it.
fn success_message(action: &str) -> &'static str {
    match action {
        "CreateBackup" => "succes",
        "DescribeAvailableDBConfig" | "DescribeBackups" | "DownloadBackup" | "DeleteBackup" => {
            "success"
        }
        _ => "Success.",
    }
}

fn error_response(r: &Rejection) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        Json(serde_json::json!({
            "Code": r.code,
            "Message": r.message,
            "Data": {},
            "TaskId": "",
        })),
    )
        .into_response()
}

async fn api(
    State(s): State<Arc<Shared>>,
    method: axum::http::Method,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let query = query.unwrap_or_default();
    let action = auth::decode_query(&query)
        .get("Action")
        .cloned()
        .unwrap_or_default();
    let sign_method = if method == axum::http::Method::POST {
        Method::Post
    } else {
        Method::Get
    };
    let _in_flight = InFlight::enter(&s);
    let (status, code, response) = answer(&s, sign_method, &action, &query, &body).await;
    tracing::info!(
        action,
        method = sign_method.as_str(),
        status,
        code,
        "sim: API call"
    );
    let mut world = s.world();
    world.record(LoggedRequest {
        at: s.clock.now(),
        action,
        method: sign_method.as_str(),
        status,
        code,
    });
    response
}

async fn answer(
    s: &Shared,
    method: Method,
    action: &str,
    query: &str,
    body: &[u8],
) -> (u16, String, Response) {
    let fail = |r: Rejection| (r.status, r.code.to_string(), error_response(&r));
    let latency = {
        let mut w = s.world();
        w.take_fault(|f| matches!(f, Fault::Latency { action: a, .. } if a == "*" || a == action))
    };
    if let Some(Fault::Latency { millis, .. }) = latency {
        tokio::time::sleep(Duration::from_millis(millis)).await;
    }
    let now = s.clock.now();
    let verified = {
        let mut nonces = s.nonces();
        auth::verify(
            method,
            query,
            &s.access_key_id,
            s.access_key_secret.expose(),
            now,
            &mut nonces,
        )
    };
    let signed = match verified {
        Ok(p) => p,
        Err(r) => return fail(r),
    };
    let mut world = s.world();
    if let Some(Fault::ApiError { status, code, .. }) = world
        .take_fault(|f| matches!(f, Fault::ApiError { action: a, .. } if a == "*" || a == action))
    {
        return fail(Rejection {
            status,
            code: code.into(),
            message: "injected by the simulator".into(),
        });
    }
    let documented = match action.parse::<crate::cds::Action>() {
        Ok(a) => a.method(),
        Err(_) => {
            return fail(Rejection {
                status: 400,
                code: "InvalidParameter".into(),
                message: format!("unknown Action {action}"),
            });
        }
    };
    if documented != method {
        return fail(Rejection {
            status: 400,
            code: "UnsupportedOperation".into(),
            message: format!("{action} must be called with {}", documented.as_str()),
        });
    }
    let params: BTreeMap<String, serde_json::Value> = match method {
        Method::Get => signed
            .into_iter()
            .filter(|(k, _)| !COMMON_PARAMS.contains(&k.as_str()))
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect(),
        Method::Post => {
            // Whatever the Content-Type; an empty body is `{}`; `null` means absent.
            let text = std::str::from_utf8(body).unwrap_or("").trim();
            let parsed: Result<serde_json::Map<String, serde_json::Value>, _> = if text.is_empty() {
                Ok(serde_json::Map::new())
            } else {
                serde_json::from_str(text)
            };
            match parsed {
                Ok(map) => map.into_iter().filter(|(_, v)| !v.is_null()).collect(),
                Err(_) => {
                    return fail(Rejection {
                        status: 400,
                        code: "InvalidParameter".into(),
                        message: "the request body must be a JSON object".into(),
                    });
                }
            }
        }
    };
    let handle = tokio::runtime::Handle::current();
    let mut make_payload =
        |size: u64, version: u16, seed: u64| super::generated_payload(&handle, size, version, seed);
    match world.handle(action, &params, now, &s.base_url, &mut make_payload) {
        Ok(mut answer) => {
            if let Some(Fault::TamperAnswer { set, duplicate, .. }) = world.take_fault(
                |f| matches!(f, Fault::TamperAnswer { action: a, .. } if a == "*" || a == action),
            ) {
                super::state::tamper(&mut answer.data, &set, duplicate);
            }
            let mut envelope = serde_json::json!({
                "Code": "Success",
                "Message": success_message(action),
                "Data": answer.data,
            });
            match answer.task_id {
                TaskIdStyle::Missing => {}
                TaskIdStyle::Empty => envelope["TaskId"] = "".into(),
                TaskIdStyle::Value(v) => envelope["TaskId"] = v.into(),
            }
            (200, "Success".into(), Json(envelope).into_response())
        }
        Err(r) => fail(r),
    }
}

fn oss_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/xml")],
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>\n"
        ),
    )
        .into_response()
}

/// Parses a single `bytes=` range against a size: `a-b`, `a-`, `-n`. `Ok(None)` for no header
/// (or one we ignore, like several ranges); `Err` when unsatisfiable.
fn parse_range(value: Option<&HeaderValue>, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(text) = value.and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let Some(spec) = text.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().map_err(|_| ())?;
            if n == 0 {
                return Err(());
            }
            (size.saturating_sub(n), size.saturating_sub(1))
        }
        (a, "") => (a.parse().map_err(|_| ())?, size.saturating_sub(1)),
        (a, b) => {
            let start: u64 = a.parse().map_err(|_| ())?;
            let end: u64 = b.parse().map_err(|_| ())?;
            (start, end.min(size.saturating_sub(1)))
        }
    };
    if size == 0 || start >= size || start > end {
        return Err(());
    }
    Ok(Some((start, end)))
}

const CHUNK: usize = 256 * 1024;

async fn download(
    State(s): State<Arc<Shared>>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    Path(_file): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let now = s.clock.now();
    let params = auth::decode_query(&query.unwrap_or_default());
    let token = params.get("Signature").cloned().unwrap_or_default();
    let (payload, backup_id, faults) = {
        let mut w = s.world();
        w.downloads += 1;
        w.prune_tokens(now);
        let Some(t) = w.tokens.get(&token).cloned() else {
            return oss_error(
                StatusCode::FORBIDDEN,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
            );
        };
        if now > t.expires_at {
            return oss_error(
                StatusCode::FORBIDDEN,
                "AccessDenied",
                "Request has expired.",
            );
        }
        if let Some(Fault::DownloadRedirect { to, .. }) =
            w.take_fault(|f| matches!(f, Fault::DownloadRedirect { .. }))
        {
            let location = to.unwrap_or_else(|| uri.to_string());
            return match HeaderValue::from_str(&location) {
                Ok(location) => (StatusCode::FOUND, [(header::LOCATION, location)]).into_response(),
                Err(_) => oss_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InjectedError",
                    "the redirect target is not a valid header value",
                ),
            };
        }
        if w.take_fault(|f| matches!(f, Fault::DownloadExpired { .. }))
            .is_some()
        {
            return oss_error(
                StatusCode::FORBIDDEN,
                "AccessDenied",
                "Request has expired.",
            );
        }
        if let Some(Fault::DownloadError { status, .. }) =
            w.take_fault(|f| matches!(f, Fault::DownloadError { .. }))
        {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return oss_error(status, "InjectedError", "injected by the simulator");
        }
        let Some(b) = w.backups.iter().find(|b| b.backup_id == t.backup_id) else {
            return oss_error(
                StatusCode::NOT_FOUND,
                "NoSuchKey",
                "The specified key does not exist.",
            );
        };
        let payload = b.payload.clone();
        let truncate = w.take_fault(|f| matches!(f, Fault::DownloadTruncate { .. }));
        // One download fault per response: a dropped connection can make the client lose bytes
        // already sent, so a corrupted byte in a truncated response might never be seen.
        let corrupt = if truncate.is_none() {
            w.take_fault(|f| matches!(f, Fault::DownloadCorrupt { .. }))
        } else {
            None
        };
        let throttle = w.take_fault(|f| {
            matches!(
                f,
                Fault::DownloadThrottle { .. } | Fault::DownloadTrickle { .. }
            )
        });
        (payload, t.backup_id, (truncate, corrupt, throttle))
    };
    if !payload.is_ready() {
        return oss_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "SlowDown",
            "The file is not ready yet.",
        );
    }
    let size = payload.size();
    let range = match parse_range(headers.get(header::RANGE), size) {
        Ok(r) => r,
        Err(()) => {
            return (
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{size}"))],
            )
                .into_response();
        }
    };
    let (start, end) = range.unwrap_or((0, size.saturating_sub(1)));
    let full_len = if size == 0 { 0 } else { end - start + 1 };
    let (truncate, corrupt, throttle) = faults;
    let (send_len, declared_len) = match truncate {
        Some(Fault::DownloadTruncate {
            after_bytes,
            mode: TruncateMode::Abort,
            ..
        }) => (after_bytes.min(full_len), full_len),
        Some(Fault::DownloadTruncate {
            after_bytes,
            mode: TruncateMode::Short,
            ..
        }) => (after_bytes.min(full_len), after_bytes.min(full_len)),
        _ => (full_len, full_len),
    };
    let corrupt_at = match corrupt {
        Some(Fault::DownloadCorrupt { offset, .. }) => Some(offset.unwrap_or(size / 2)),
        _ => None,
    };
    let bytes_per_second = match throttle {
        Some(Fault::DownloadThrottle {
            bytes_per_second, ..
        }) => Some(bytes_per_second.max(1)),
        _ => None,
    };
    // (bytes per chunk, pause before each chunk)
    let trickle = match throttle {
        Some(Fault::DownloadTrickle {
            chunk_bytes,
            every_millis,
            ..
        }) => Some((chunk_bytes.max(1), Duration::from_millis(every_millis))),
        _ => None,
    };

    let mut builder = Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, format!("\"{backup_id}\""))
        .header(header::CONTENT_LENGTH, declared_len);
    builder = if range.is_some() {
        builder
            .status(StatusCode::PARTIAL_CONTENT)
            .header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{size}"))
    } else {
        builder.status(StatusCode::OK)
    };
    if method == axum::http::Method::HEAD {
        // cannot fail: every header above is a number or the simulator's own hex backup id.
        return builder.body(Body::empty()).expect("valid response");
    }
    let aborts = send_len < declared_len;
    let shared = s.clone();
    let stream = futures::stream::unfold((0u64, false), move |(sent, done)| {
        let payload = payload.clone();
        let shared = shared.clone();
        async move {
            if done {
                return None;
            }
            if sent >= send_len {
                // Ending the body with an error before the declared length makes hyper drop
                // the connection, as a broken download would.
                return aborts.then(|| {
                    (
                        Err(std::io::Error::other("connection dropped by the simulator")),
                        (sent, true),
                    )
                });
            }
            let chunk = trickle.map_or(CHUNK, |(bytes, _)| bytes.min(CHUNK as u64) as usize);
            let n = ((send_len - sent) as usize).min(chunk);
            if let Some((_, every)) = trickle {
                tokio::time::sleep(every).await;
            }
            let offset = start + sent;
            let mut buf = vec![0u8; n];
            payload.fill(offset, &mut buf);
            if let Some(at) = corrupt_at
                && (offset..offset + n as u64).contains(&at)
            {
                buf[(at - offset) as usize] ^= 0x5A;
                shared.world().corruptions_served += 1;
            }
            if let Some(bps) = bytes_per_second {
                tokio::time::sleep(Duration::from_secs_f64(n as f64 / bps as f64)).await;
            }
            shared.world().download_bytes += n as u64;
            Some((
                Ok::<_, std::io::Error>(Bytes::from(buf)),
                (sent + n as u64, false),
            ))
        }
    });
    builder
        .body(Body::from_stream(stream))
        // cannot fail: every header above is a number or the simulator's own hex backup id.
        .expect("valid response")
}

async fn list_faults(State(s): State<Arc<Shared>>) -> Json<serde_json::Value> {
    let w = s.world();
    Json(serde_json::json!(
        w.faults
            .iter()
            .map(|(id, f)| serde_json::json!({"id": id, "fault": f}))
            .collect::<Vec<_>>()
    ))
}

async fn add_fault(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    match serde_json::from_slice::<Fault>(&body) {
        Ok(fault) => {
            let id = s.world().add_fault(fault);
            Json(serde_json::json!({ "id": id })).into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("invalid fault: {e}\n")).into_response(),
    }
}

async fn clear_faults(State(s): State<Arc<Shared>>) -> StatusCode {
    s.world().faults.clear();
    StatusCode::NO_CONTENT
}

async fn requests(State(s): State<Arc<Shared>>) -> Json<serde_json::Value> {
    let w = s.world();
    // cannot fail: the log holds strings, numbers and times only (no non-string map keys).
    Json(serde_json::to_value(&w.log).expect("serialisable"))
}

async fn stats(State(s): State<Arc<Shared>>) -> Json<serde_json::Value> {
    let w = s.world();
    Json(serde_json::json!({
        "calls": w.calls,
        "downloads": w.downloads,
        "download_bytes": w.download_bytes,
        "instances": w.instances.len(),
        "backups": w.backups.len(),
        "api_in_flight_max": w.api_in_flight_max,
        "describe_backups_min_gap_ms": w.describe_backups_min_gap.map(|g| g.num_milliseconds()),
    }))
}

async fn backups(State(s): State<Arc<Shared>>) -> Json<serde_json::Value> {
    let now = s.clock.now();
    let w = s.world();
    Json(serde_json::json!(
        w.backups
            .iter()
            .map(|b| serde_json::json!({
                "BackupId": b.backup_id,
                "InstanceUuid": b.instance_uuid,
                "ShardId": b.shard_id,
                "Desc": b.desc,
                "BackupMode": b.mode,
                "Status": b.status(now),
                "BackupSize": b.payload.size(),
            }))
            .collect::<Vec<_>>()
    ))
}

async fn instances(State(s): State<Arc<Shared>>) -> Json<serde_json::Value> {
    let w = s.world();
    Json(serde_json::json!(
        w.instances.values().map(|i| &i.info).collect::<Vec<_>>()
    ))
}

async fn add_instance(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let spec: InstanceSpec = match serde_json::from_slice(&body) {
        Ok(spec) => spec,
        Err(e) => {
            return (StatusCode::BAD_REQUEST, format!("invalid instance: {e}\n")).into_response();
        }
    };
    match super::add_instance(&s, spec) {
        Ok(uuid) => Json(serde_json::json!({ "InstanceUuid": uuid })).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    }
}

#[derive(serde::Deserialize)]
struct AutoBackup {
    instance_uuid: String,
}

/// Makes an automatic backup (Desc "", mode auto), as the provider's own schedule would.
async fn auto_backup(State(s): State<Arc<Shared>>, Json(req): Json<AutoBackup>) -> Response {
    let now = s.clock.now();
    let handle = tokio::runtime::Handle::current();
    let mut w = s.world();
    let Some(inst) = w
        .instances
        .get(&req.instance_uuid.to_ascii_lowercase())
        .cloned()
    else {
        return (StatusCode::NOT_FOUND, "no such instance\n").into_response();
    };
    let mut make =
        |size: u64, version: u16, seed: u64| super::generated_payload(&handle, size, version, seed);
    let ids = w.start_backup(&inst, String::new(), "auto", now, false, &mut make);
    Json(serde_json::json!({ "BackupIds": ids })).into_response()
}

#[derive(serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct SettingsBody {
    #[serde(default)]
    backup_delay_ms: Option<u64>,
    #[serde(default)]
    url_ttl_secs: Option<u64>,
    #[serde(default)]
    default_backup_size: Option<u64>,
}

async fn get_settings(State(s): State<Arc<Shared>>) -> Json<SettingsBody> {
    let w = s.world();
    Json(SettingsBody {
        backup_delay_ms: Some(w.settings.backup_delay.as_millis() as u64),
        url_ttl_secs: Some(w.settings.url_ttl.as_secs()),
        default_backup_size: Some(w.settings.default_backup_size),
    })
}

async fn put_settings(State(s): State<Arc<Shared>>, Json(body): Json<SettingsBody>) -> StatusCode {
    let mut w = s.world();
    if let Some(ms) = body.backup_delay_ms {
        w.settings.backup_delay = Duration::from_millis(ms);
    }
    if let Some(secs) = body.url_ttl_secs {
        w.settings.url_ttl = Duration::from_secs(secs);
    }
    if let Some(size) = body.default_backup_size {
        w.settings.default_backup_size = size;
    }
    StatusCode::NO_CONTENT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let h = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(parse_range(None, 100), Ok(None));
        assert_eq!(parse_range(Some(&h("bytes=0-9")), 100), Ok(Some((0, 9))));
        assert_eq!(parse_range(Some(&h("bytes=90-")), 100), Ok(Some((90, 99))));
        assert_eq!(parse_range(Some(&h("bytes=-10")), 100), Ok(Some((90, 99))));
        assert_eq!(
            parse_range(Some(&h("bytes=50-500")), 100),
            Ok(Some((50, 99)))
        );
        assert_eq!(parse_range(Some(&h("bytes=0-1,5-6")), 100), Ok(None));
        assert!(parse_range(Some(&h("bytes=100-")), 100).is_err());
        assert!(parse_range(Some(&h("bytes=9-3")), 100).is_err());
    }
}
