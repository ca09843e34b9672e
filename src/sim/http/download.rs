//! The simulated download host (`/_download/{file}?...&Signature=token`), with its fault
//! injection. One request goes through three steps, each a function so the decisions can be
//! tested without a server:
//! 1. admit it under the world lock: count it, check its token, and pick the faults (`admit`:
//!    one that answers instead of the file, `answer_fault`, else those that shape the body,
//!    `body_faults`); a refusal is a `Refusal` value, made a response only at the end;
//! 2. parse its Range against the file (`parse_range`) and plan the body from the range and
//!    the faults (`plan_body`);
//! 3. build the response: headers (`head`), then a body streamed from the payload
//!    (`body_stream`) that applies the plan as it goes.

use super::super::Shared;
use super::super::auth;
use super::super::state::{Fault, Payload, TruncateMode, World};
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;

/// Bytes per body chunk unless a trickle fault makes them smaller.
const CHUNK: usize = 256 * 1024;

/// An error answer in the object store's XML shape.
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

pub(super) async fn download(
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
    let admitted = admit(&mut s.world(), &token, now, &uri.to_string());
    let (payload, backup_id, faults) = match admitted {
        Ok(a) => a,
        Err(refused) => return refused.into_response(),
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
    let plan = plan_body(range, size, &faults);
    let builder = head(&plan, range.is_some(), size, &backup_id);
    if method == axum::http::Method::HEAD {
        // cannot fail: every header above is a number or the simulator's own hex backup id.
        return builder.body(Body::empty()).expect("valid response");
    }
    builder
        .body(body_stream(plan, payload, s.clone()))
        // cannot fail: every header above is a number or the simulator's own hex backup id.
        .expect("valid response")
}

/// The faults that shape one response's body, as taken from the world.
#[derive(Debug, Default, PartialEq)]
struct BodyFaults {
    truncate: Option<Fault>,
    corrupt: Option<Fault>,
    /// A throttle or a trickle: whichever was switched on first.
    throttle: Option<Fault>,
}

/// Why the download host answers something other than the file, before looking at the body.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refusal {
    /// No such token: the URL was never handed out (or was pruned long after it expired).
    UnknownToken,
    /// The URL's token expired, or a `download_expired` fault says so.
    Expired,
    /// A `download_redirect` fault: `302 Found` to this location.
    Redirect(String),
    /// A `download_error` fault with this status.
    Injected(u16),
    /// The backup was deleted after its URL was handed out.
    NoSuchKey,
}

impl Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::UnknownToken => oss_error(
                StatusCode::FORBIDDEN,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
            ),
            Refusal::Expired => oss_error(
                StatusCode::FORBIDDEN,
                "AccessDenied",
                "Request has expired.",
            ),
            Refusal::Redirect(location) => match HeaderValue::from_str(&location) {
                Ok(location) => (StatusCode::FOUND, [(header::LOCATION, location)]).into_response(),
                Err(_) => oss_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InjectedError",
                    "the redirect target is not a valid header value",
                ),
            },
            Refusal::Injected(status) => {
                let status =
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                oss_error(status, "InjectedError", "injected by the simulator")
            }
            Refusal::NoSuchKey => oss_error(
                StatusCode::NOT_FOUND,
                "NoSuchKey",
                "The specified key does not exist.",
            ),
        }
    }
}

/// Under the world lock: counts the download, checks the URL's token, then refuses with the
/// first fault that replaces the file, or finds the backup and takes the faults that shape its
/// body.
fn admit(
    w: &mut World,
    token: &str,
    now: DateTime<Utc>,
    request_uri: &str,
) -> Result<(Payload, String, BodyFaults), Refusal> {
    w.downloads += 1;
    w.prune_tokens(now);
    let Some(t) = w.tokens.get(token).cloned() else {
        return Err(Refusal::UnknownToken);
    };
    if now > t.expires_at {
        return Err(Refusal::Expired);
    }
    if let Some(refusal) = answer_fault(w, request_uri) {
        return Err(refusal);
    }
    let Some(b) = w.backups.iter().find(|b| b.backup_id == t.backup_id) else {
        return Err(Refusal::NoSuchKey);
    };
    let payload = b.payload.clone();
    Ok((payload, t.backup_id, body_faults(w)))
}

/// The fault that replaces the file, taking one of its count: a redirect (to `request_uri`
/// itself when the fault names no target), then an expired URL, then an error.
fn answer_fault(w: &mut World, request_uri: &str) -> Option<Refusal> {
    if let Some(Fault::DownloadRedirect { to, .. }) =
        w.take_fault(|f| matches!(f, Fault::DownloadRedirect { .. }))
    {
        return Some(Refusal::Redirect(
            to.unwrap_or_else(|| request_uri.to_string()),
        ));
    }
    if w.take_fault(|f| matches!(f, Fault::DownloadExpired { .. }))
        .is_some()
    {
        return Some(Refusal::Expired);
    }
    if let Some(Fault::DownloadError { status, .. }) =
        w.take_fault(|f| matches!(f, Fault::DownloadError { .. }))
    {
        return Some(Refusal::Injected(status));
    }
    None
}

/// Takes the faults that shape a body, one of each count.
fn body_faults(w: &mut World) -> BodyFaults {
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
    BodyFaults {
        truncate,
        corrupt,
        throttle,
    }
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

/// What one response's body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BodyPlan {
    /// First and last byte of the file served (the whole file without a range).
    start: u64,
    end: u64,
    /// Bytes actually sent, and the Content-Length announced: fewer sent than announced
    /// breaks the connection.
    send_len: u64,
    declared_len: u64,
    /// File offset of the byte to flip.
    corrupt_at: Option<u64>,
    bytes_per_second: Option<u64>,
    /// (bytes per chunk, pause before each chunk)
    trickle: Option<(u64, Duration)>,
}

/// Plans the body of a file of `size` bytes for `range` under `faults`.
fn plan_body(range: Option<(u64, u64)>, size: u64, faults: &BodyFaults) -> BodyPlan {
    let (start, end) = range.unwrap_or((0, size.saturating_sub(1)));
    let full_len = if size == 0 { 0 } else { end - start + 1 };
    let (send_len, declared_len) = match faults.truncate {
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
    let corrupt_at = match faults.corrupt {
        Some(Fault::DownloadCorrupt { offset, .. }) => Some(offset.unwrap_or(size / 2)),
        _ => None,
    };
    let bytes_per_second = match faults.throttle {
        Some(Fault::DownloadThrottle {
            bytes_per_second, ..
        }) => Some(bytes_per_second.max(1)),
        _ => None,
    };
    let trickle = match faults.throttle {
        Some(Fault::DownloadTrickle {
            chunk_bytes,
            every_millis,
            ..
        }) => Some((chunk_bytes.max(1), Duration::from_millis(every_millis))),
        _ => None,
    };
    BodyPlan {
        start,
        end,
        send_len,
        declared_len,
        corrupt_at,
        bytes_per_second,
        trickle,
    }
}

/// Status and headers: 206 with Content-Range when a range was asked for, else 200.
fn head(
    plan: &BodyPlan,
    ranged: bool,
    size: u64,
    backup_id: &str,
) -> axum::http::response::Builder {
    let builder = Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, format!("\"{backup_id}\""))
        .header(header::CONTENT_LENGTH, plan.declared_len);
    if ranged {
        builder.status(StatusCode::PARTIAL_CONTENT).header(
            header::CONTENT_RANGE,
            format!("bytes {}-{}/{size}", plan.start, plan.end),
        )
    } else {
        builder.status(StatusCode::OK)
    }
}

/// The body, generated chunk by chunk from `payload` per `plan`; counts the bytes served and
/// the corruptions that hit in `shared`.
fn body_stream(plan: BodyPlan, payload: Payload, shared: Arc<Shared>) -> Body {
    let aborts = plan.send_len < plan.declared_len;
    let stream = futures::stream::unfold((0u64, false), move |(sent, done)| {
        let payload = payload.clone();
        let shared = shared.clone();
        async move {
            if done {
                return None;
            }
            if sent >= plan.send_len {
                // Ending the body with an error before the declared length makes hyper drop
                // the connection, as a broken download would.
                return aborts.then(|| {
                    (
                        Err(std::io::Error::other("connection dropped by the simulator")),
                        (sent, true),
                    )
                });
            }
            let chunk = plan
                .trickle
                .map_or(CHUNK, |(bytes, _)| bytes.min(CHUNK as u64) as usize);
            let n = ((plan.send_len - sent) as usize).min(chunk);
            if let Some((_, every)) = plan.trickle {
                tokio::time::sleep(every).await;
            }
            let offset = plan.start + sent;
            let mut buf = vec![0u8; n];
            payload.fill(offset, &mut buf);
            if let Some(at) = plan.corrupt_at
                && (offset..offset + n as u64).contains(&at)
            {
                buf[(at - offset) as usize] ^= 0x5A;
                shared.world().corruptions_served += 1;
            }
            if let Some(bps) = plan.bytes_per_second {
                tokio::time::sleep(Duration::from_secs_f64(n as f64 / bps as f64)).await;
            }
            shared.world().download_bytes += n as u64;
            Some((
                Ok::<_, std::io::Error>(Bytes::from(buf)),
                (sent + n as u64, false),
            ))
        }
    });
    Body::from_stream(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::state::{DownloadToken, Route, Settings, SimBackup};

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    /// A world with one finished 100-byte backup `b1` and a token `tok` for it.
    fn world() -> World {
        let mut w = World::new(Settings::default());
        w.backups.push(SimBackup {
            backup_id: "b1".into(),
            instance_uuid: "i".into(),
            shard_id: String::new(),
            desc: String::new(),
            mode: "manual",
            started: t0(),
            finish_at: t0(),
            fails: false,
            payload: Payload::File(Arc::new(vec![7; 100])),
        });
        w.tokens.insert(
            "tok".into(),
            DownloadToken {
                backup_id: "b1".into(),
                expires_at: t0() + chrono::Duration::hours(1),
                route: Route::Public,
            },
        );
        w
    }

    fn refusal(r: Result<(Payload, String, BodyFaults), Refusal>) -> Refusal {
        r.expect_err("refused")
    }

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

    #[test]
    fn odd_ranges_are_ignored_or_unsatisfiable() {
        let h = |s: &str| HeaderValue::from_str(s).unwrap();
        // Not a byte range: served whole, as a real host does.
        assert_eq!(parse_range(Some(&h("items=0-9")), 100), Ok(None));
        assert_eq!(parse_range(Some(&h(" bytes=1-2 ")), 100), Ok(Some((1, 2))));
        assert_eq!(parse_range(Some(&h("bytes= 1 - 2")), 100), Ok(Some((1, 2))));
        assert_eq!(parse_range(Some(&h("bytes=-500")), 100), Ok(Some((0, 99))));
        for bad in [
            "bytes=-0",
            "bytes=5",
            "bytes=a-",
            "bytes=-x",
            "bytes=1-b",
            "bytes=-",
        ] {
            assert_eq!(parse_range(Some(&h(bad)), 100), Err(()), "{bad}");
        }
        assert_eq!(parse_range(Some(&h("bytes=0-")), 0), Err(()), "empty file");
    }

    #[test]
    fn tokens_are_checked_before_any_fault_is_used() {
        let mut w = world();
        w.add_fault(Fault::DownloadError {
            count: Some(1),
            status: 503,
        });
        assert_eq!(
            refusal(admit(&mut w, "nope", t0(), "/x")),
            Refusal::UnknownToken
        );
        let late = t0() + chrono::Duration::minutes(90);
        assert_eq!(refusal(admit(&mut w, "tok", late, "/x")), Refusal::Expired);
        assert_eq!(w.faults.len(), 1, "the fault is still there");
        assert_eq!(w.downloads, 2, "refused downloads count too");
        assert_eq!(
            refusal(admit(&mut w, "tok", t0(), "/x")),
            Refusal::Injected(503)
        );
        assert!(w.faults.is_empty());
        let (payload, id, faults) = admit(&mut w, "tok", t0(), "/x").unwrap();
        assert_eq!((payload.size(), id.as_str()), (100, "b1"));
        assert_eq!(faults, BodyFaults::default());
    }

    #[test]
    fn a_deleted_backup_is_no_such_key_after_the_faults_are_used() {
        let mut w = world();
        w.backups.clear();
        w.add_fault(Fault::DownloadTruncate {
            count: Some(1),
            after_bytes: 1,
            mode: TruncateMode::Abort,
        });
        assert_eq!(
            refusal(admit(&mut w, "tok", t0(), "/x")),
            Refusal::NoSuchKey
        );
        assert_eq!(w.faults.len(), 1, "a body fault waits for a body");
    }

    #[test]
    fn a_redirect_comes_first_and_points_back_at_the_request_by_default() {
        let mut w = world();
        w.add_fault(Fault::DownloadError {
            count: Some(1),
            status: 1000,
        });
        w.add_fault(Fault::DownloadExpired { count: Some(1) });
        w.add_fault(Fault::DownloadRedirect {
            count: Some(2),
            to: None,
        });
        w.add_fault(Fault::DownloadRedirect {
            count: None,
            to: Some("ftp://x/b".into()),
        });
        let uri = "/_download/b1.rdb?Signature=tok";
        assert_eq!(
            answer_fault(&mut w, uri),
            Some(Refusal::Redirect(uri.into()))
        );
        assert_eq!(
            answer_fault(&mut w, "/u"),
            Some(Refusal::Redirect("/u".into()))
        );
        assert_eq!(
            answer_fault(&mut w, "/u"),
            Some(Refusal::Redirect("ftp://x/b".into())),
            "the next redirect fault"
        );
        w.faults
            .retain(|(_, f)| !matches!(f, Fault::DownloadRedirect { .. }));
        assert_eq!(answer_fault(&mut w, "/u"), Some(Refusal::Expired));
        assert_eq!(answer_fault(&mut w, "/u"), Some(Refusal::Injected(1000)));
        assert_eq!(answer_fault(&mut w, "/u"), None, "used up");
    }

    #[test]
    fn refusals_answer_like_the_object_store() {
        let status = |r: Refusal| r.into_response().status();
        assert_eq!(status(Refusal::UnknownToken), StatusCode::FORBIDDEN);
        assert_eq!(status(Refusal::Expired), StatusCode::FORBIDDEN);
        assert_eq!(status(Refusal::NoSuchKey), StatusCode::NOT_FOUND);
        assert_eq!(
            status(Refusal::Injected(503)),
            StatusCode::SERVICE_UNAVAILABLE
        );
        // A status that is not one is a 500.
        assert_eq!(
            status(Refusal::Injected(1000)),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        let r = Refusal::Redirect("/_download/b1.rdb?Signature=tok".into()).into_response();
        assert_eq!(r.status(), StatusCode::FOUND);
        assert_eq!(
            r.headers()[header::LOCATION],
            "/_download/b1.rdb?Signature=tok"
        );
        // A target no header can carry is a server error, not a panic.
        assert_eq!(
            status(Refusal::Redirect("bad\nvalue".into())),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        let r = Refusal::Expired.into_response();
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/xml");
    }

    #[test]
    fn a_truncated_response_carries_no_corruption_and_keeps_it_for_the_next() {
        let mut w = world();
        let truncate = Fault::DownloadTruncate {
            count: Some(1),
            after_bytes: 10,
            mode: TruncateMode::Abort,
        };
        let corrupt = Fault::DownloadCorrupt {
            count: Some(1),
            offset: None,
        };
        let trickle = Fault::DownloadTrickle {
            count: Some(1),
            chunk_bytes: 1,
            every_millis: 5,
        };
        let throttle = Fault::DownloadThrottle {
            count: Some(1),
            bytes_per_second: 10,
        };
        for f in [&truncate, &corrupt, &trickle, &throttle] {
            w.add_fault(f.clone());
        }
        assert_eq!(
            body_faults(&mut w),
            BodyFaults {
                truncate: Some(truncate),
                corrupt: None,
                throttle: Some(trickle),
            }
        );
        assert_eq!(
            body_faults(&mut w),
            BodyFaults {
                truncate: None,
                corrupt: Some(corrupt),
                throttle: Some(throttle),
            }
        );
        assert_eq!(body_faults(&mut w), BodyFaults::default());
    }

    #[test]
    fn the_plan_follows_the_range_and_the_faults() {
        let none = BodyFaults::default();
        let whole = plan_body(None, 100, &none);
        assert_eq!(
            whole,
            BodyPlan {
                start: 0,
                end: 99,
                send_len: 100,
                declared_len: 100,
                corrupt_at: None,
                bytes_per_second: None,
                trickle: None,
            }
        );
        let part = plan_body(Some((90, 99)), 100, &none);
        assert_eq!((part.start, part.send_len, part.declared_len), (90, 10, 10));
        assert_eq!(plan_body(None, 0, &none).declared_len, 0, "an empty file");

        let truncated = |mode| BodyFaults {
            truncate: Some(Fault::DownloadTruncate {
                count: None,
                after_bytes: 30,
                mode,
            }),
            ..BodyFaults::default()
        };
        let abort = plan_body(None, 100, &truncated(TruncateMode::Abort));
        assert_eq!(
            (abort.send_len, abort.declared_len),
            (30, 100),
            "breaks off"
        );
        let short = plan_body(None, 100, &truncated(TruncateMode::Short));
        assert_eq!(
            (short.send_len, short.declared_len),
            (30, 30),
            "says it is short"
        );
        let small = plan_body(Some((90, 99)), 100, &truncated(TruncateMode::Abort));
        assert_eq!(
            (small.send_len, small.declared_len),
            (10, 10),
            "past the range"
        );

        let corrupt = |offset| BodyFaults {
            corrupt: Some(Fault::DownloadCorrupt {
                count: None,
                offset,
            }),
            ..BodyFaults::default()
        };
        assert_eq!(plan_body(None, 100, &corrupt(None)).corrupt_at, Some(50));
        assert_eq!(plan_body(None, 100, &corrupt(Some(7))).corrupt_at, Some(7));

        let paced = |f| BodyFaults {
            throttle: Some(f),
            ..BodyFaults::default()
        };
        let throttled = plan_body(
            None,
            100,
            &paced(Fault::DownloadThrottle {
                count: None,
                bytes_per_second: 0,
            }),
        );
        assert_eq!(
            (throttled.bytes_per_second, throttled.trickle),
            (Some(1), None)
        );
        let trickled = plan_body(
            None,
            100,
            &paced(Fault::DownloadTrickle {
                count: None,
                chunk_bytes: 0,
                every_millis: 200,
            }),
        );
        assert_eq!(
            (trickled.bytes_per_second, trickled.trickle),
            (None, Some((1, Duration::from_millis(200))))
        );
    }

    #[test]
    fn a_ranged_answer_is_206_with_content_range() {
        let plan = plan_body(Some((90, 99)), 100, &BodyFaults::default());
        let r = head(&plan, true, 100, "b1").body(Body::empty()).unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(r.headers()[header::CONTENT_RANGE], "bytes 90-99/100");
        assert_eq!(r.headers()[header::CONTENT_LENGTH], "10");
        assert_eq!(r.headers()[header::ETAG], "\"b1\"");
        let plan = plan_body(None, 100, &BodyFaults::default());
        let r = head(&plan, false, 100, "b1").body(Body::empty()).unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers().get(header::CONTENT_RANGE).is_none());
    }
}
