//! The simulator's HTTP face: the signed API under `/redis` and `/redis/`, download URLs under
//! `/_download/` (in `download`), and the control endpoints under `/_sim/`.
//!
//! An API call goes: injected latency, signature, injected error, action and method
//! (`check_call`), parameters (`action_params`), the action itself (`World::handle`), and the
//! envelope (`envelope`); the steps after the signature are plain functions, tested below.

mod download;

use super::Shared;
use super::auth::{self, Rejection};
use super::state::{Answer, Fault, InstanceSpec, LoggedRequest, TaskIdStyle, World};
use crate::cds::sign::Method;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
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
        .route(
            "/_download/{file}",
            get(download::download).head(download::download),
        )
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
    let params = match check_call(&mut world, method, action)
        .and_then(|()| action_params(method, signed, body))
    {
        Ok(params) => params,
        Err(r) => return fail(r),
    };
    let handle = tokio::runtime::Handle::current();
    let mut make_payload =
        |size: u64, version: u16, seed: u64| super::generated_payload(&handle, size, version, seed);
    match world.handle(action, &params, now, &s.base_url, &mut make_payload) {
        Ok(answer) => {
            let envelope = envelope(&mut world, action, answer);
            (200, "Success".into(), Json(envelope).into_response())
        }
        Err(r) => fail(r),
    }
}

/// Whether a signed call gets to its action: an injected API error comes first (as a provider
/// failing before it looks at the call would), then an unknown action, then the wrong method.
fn check_call(w: &mut World, method: Method, action: &str) -> Result<(), Rejection> {
    if let Some(Fault::ApiError { status, code, .. }) =
        w.take_fault(|f| matches!(f, Fault::ApiError { action: a, .. } if a == "*" || a == action))
    {
        return Err(Rejection {
            status,
            code: code.into(),
            message: "injected by the simulator".into(),
        });
    }
    let documented = match action.parse::<crate::cds::Action>() {
        Ok(a) => a.method(),
        Err(_) => {
            return Err(Rejection {
                status: 400,
                code: "InvalidParameter".into(),
                message: format!("unknown Action {action}"),
            });
        }
    };
    if documented != method {
        return Err(Rejection {
            status: 400,
            code: "UnsupportedOperation".into(),
            message: format!("{action} must be called with {}", documented.as_str()),
        });
    }
    Ok(())
}

/// The action's own parameters: for GET the signed query without the common parameters, for
/// POST the JSON body, whatever the Content-Type (an empty body is `{}`; `null` means absent).
fn action_params(
    method: Method,
    signed: BTreeMap<String, String>,
    body: &[u8],
) -> Result<BTreeMap<String, serde_json::Value>, Rejection> {
    match method {
        Method::Get => Ok(signed
            .into_iter()
            .filter(|(k, _)| !COMMON_PARAMS.contains(&k.as_str()))
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect()),
        Method::Post => {
            let text = std::str::from_utf8(body).unwrap_or("").trim();
            let parsed: Result<serde_json::Map<String, serde_json::Value>, _> = if text.is_empty() {
                Ok(serde_json::Map::new())
            } else {
                serde_json::from_str(text)
            };
            match parsed {
                Ok(map) => Ok(map.into_iter().filter(|(_, v)| !v.is_null()).collect()),
                Err(_) => Err(Rejection {
                    status: 400,
                    code: "InvalidParameter".into(),
                    message: "the request body must be a JSON object".into(),
                }),
            }
        }
    }
}

/// A successful answer's envelope, tampered with first if a `tamper_answer` fault says so.
fn envelope(w: &mut World, action: &str, mut answer: Answer) -> serde_json::Value {
    if let Some(Fault::TamperAnswer { set, duplicate, .. }) = w.take_fault(
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
    envelope
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
    use super::super::state::Settings;
    use super::*;

    fn rejected(r: Result<(), Rejection>) -> (u16, String, String) {
        let r = r.unwrap_err();
        (r.status, r.code.to_string(), r.message)
    }

    #[test]
    fn an_injected_api_error_comes_before_the_action_is_looked_at() {
        let mut w = World::new(Settings::default());
        w.add_fault(Fault::ApiError {
            action: "DescribeBackups".into(),
            count: Some(1),
            status: 503,
            code: "ServiceUnavailable".into(),
        });
        assert!(
            check_call(&mut w, Method::Get, "DescribeRegins").is_ok(),
            "other actions"
        );
        assert_eq!(
            rejected(check_call(&mut w, Method::Post, "DescribeBackups")),
            (
                503,
                "ServiceUnavailable".into(),
                "injected by the simulator".into()
            ),
            "even with the wrong method"
        );
        assert!(
            check_call(&mut w, Method::Get, "DescribeBackups").is_ok(),
            "used up"
        );
    }

    #[test]
    fn unknown_actions_and_wrong_methods_are_refused() {
        let mut w = World::new(Settings::default());
        assert_eq!(
            rejected(check_call(&mut w, Method::Get, "DropEverything")),
            (
                400,
                "InvalidParameter".into(),
                "unknown Action DropEverything".into()
            )
        );
        assert_eq!(
            rejected(check_call(&mut w, Method::Post, "DescribeBackups")),
            (
                400,
                "UnsupportedOperation".into(),
                "DescribeBackups must be called with GET".into()
            )
        );
    }

    #[test]
    fn get_parameters_drop_the_common_ones_and_post_bodies_drop_nulls() {
        let signed: BTreeMap<String, String> = [
            ("Action", "DescribeBackups"),
            ("AccessKeyId", "ak"),
            ("Timestamp", "t"),
            ("InstanceUuid", "u1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let params = action_params(Method::Get, signed.clone(), b"ignored").unwrap();
        assert_eq!(
            params,
            BTreeMap::from([("InstanceUuid".to_string(), serde_json::json!("u1"))])
        );
        let params = action_params(
            Method::Post,
            signed.clone(),
            br#" {"Amount": 2, "Desc": null} "#,
        )
        .unwrap();
        assert_eq!(
            params,
            BTreeMap::from([("Amount".to_string(), serde_json::json!(2))]),
            "the body, not the query"
        );
        assert!(
            action_params(Method::Post, signed.clone(), b"")
                .unwrap()
                .is_empty()
        );
        // A body that is not UTF-8 reads as empty (today's behaviour, kept by the split).
        assert!(
            action_params(Method::Post, signed.clone(), b"\xff")
                .unwrap()
                .is_empty()
        );
        for bad in [&b"[1]"[..], b"not json"] {
            let r = action_params(Method::Post, signed.clone(), bad).unwrap_err();
            assert_eq!(r.message, "the request body must be a JSON object");
        }
    }

    #[test]
    fn envelopes_carry_the_actions_task_id_style_and_tampering() {
        let mut w = World::new(Settings::default());
        let answer = |task_id| Answer {
            data: serde_json::json!([{"BackupSize": 1}]),
            task_id,
        };
        let e = envelope(&mut w, "DescribeBackups", answer(TaskIdStyle::Missing));
        assert_eq!(
            e,
            serde_json::json!({"Code": "Success", "Message": "success", "Data": [{"BackupSize": 1}]})
        );
        let e = envelope(
            &mut w,
            "CreateBackup",
            answer(TaskIdStyle::Value("t1".into())),
        );
        assert_eq!(
            (&e["TaskId"], &e["Message"]),
            (&serde_json::json!("t1"), &serde_json::json!("succes"))
        );
        let e = envelope(&mut w, "DownloadBackup", answer(TaskIdStyle::Empty));
        assert_eq!(e["TaskId"], "");
        w.add_fault(Fault::TamperAnswer {
            action: "DescribeBackups".into(),
            count: Some(1),
            set: serde_json::json!({"BackupSize": -1})
                .as_object()
                .unwrap()
                .clone(),
            duplicate: true,
        });
        let e = envelope(&mut w, "DescribeBackups", answer(TaskIdStyle::Missing));
        assert_eq!(
            e["Data"],
            serde_json::json!([{"BackupSize": -1}, {"BackupSize": -1}])
        );
        assert!(w.faults.is_empty());
    }
}
