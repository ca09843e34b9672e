//! Malformed API answers become typed errors, never panics: non-JSON, HTML error pages, wrong
//! types, missing fields, a `Code` of `Success` with a `Data` of the wrong shape, a 100 MiB body.

use crate::support::{AK, SECRET, fast_retry};
use rdbvault::cds::{self, ErrorKind};
use std::time::Duration;

/// Serves one canned answer to every request.
async fn canned(status: u16, content_type: &'static str, body: Vec<u8>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let body = bytes::Bytes::from(body);
    let app = axum::Router::new().fallback(move || {
        let body = body.clone();
        async move {
            axum::http::Response::builder()
                .status(status)
                .header("content-type", content_type)
                .body(axum::body::Body::from(body))
                .unwrap()
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn client(endpoint: &str) -> cds::Client {
    cds::Client::new(
        cds::ClientConfig {
            endpoint: endpoint.parse().unwrap(),
            access_key_id: AK.into(),
            access_key_secret: rdbvault::secret::Secret::new(SECRET),
            timeout: Duration::from_secs(30),
            retry: fast_retry(2),
        },
        rdbvault::metrics::ApiMetrics::register(&prometheus::Registry::new()).unwrap(),
        rdbvault::clock::system(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_answers_are_typed_errors() {
    let html = b"<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1><hr>nginx</body></html>".to_vec();
    type Case = (&'static str, u16, &'static str, Vec<u8>, ErrorKind, bool);
    let cases: Vec<Case> = vec![
        (
            "not JSON",
            200,
            "text/plain",
            b"hello, I am not JSON".to_vec(),
            ErrorKind::Decode,
            false,
        ),
        (
            "HTML error page",
            502,
            "text/html",
            html.clone(),
            ErrorKind::Api,
            true,
        ),
        (
            "HTML with 200",
            200,
            "text/html",
            html,
            ErrorKind::Decode,
            false,
        ),
        (
            "Code missing",
            200,
            "application/json",
            br#"{"Message":"ok","Data":[]}"#.to_vec(),
            ErrorKind::Api,
            false,
        ),
        (
            "Code not a string",
            200,
            "application/json",
            br#"{"Code":{"x":1},"Data":[]}"#.to_vec(),
            ErrorKind::Api,
            false,
        ),
        (
            "Data of the wrong shape",
            200,
            "application/json",
            br#"{"Code":"Success","Data":"surprise"}"#.to_vec(),
            ErrorKind::Decode,
            false,
        ),
        (
            "wrong field types",
            200,
            "application/json",
            br#"{"Code":"Success","Data":[{"BackupSize":"lots","BackupId":7}]}"#.to_vec(),
            ErrorKind::Decode,
            false,
        ),
        (
            "a JSON array",
            200,
            "application/json",
            b"[1,2,3]".to_vec(),
            ErrorKind::Decode,
            false,
        ),
        (
            "empty body",
            200,
            "application/json",
            Vec::new(),
            ErrorKind::Decode,
            false,
        ),
        (
            "100 MiB body",
            200,
            "application/json",
            vec![b' '; 100 << 20],
            ErrorKind::Decode,
            false,
        ),
    ];
    for (what, status, ct, body, kind, retryable) in cases {
        let endpoint = canned(status, ct, body).await;
        let c = client(&endpoint);
        let err = c
            .describe_backups("5d74bb81-0473-464d-b15b-0ae418619248")
            .await
            .unwrap_err();
        assert_eq!(err.kind, kind, "{what}: {err}");
        assert_eq!(err.is_retryable(), retryable, "{what}: {err}");
        let text = err.to_string();
        assert!(text.contains("DescribeBackups"), "{what}: {text}");
        assert!(
            text.len() < 2000,
            "{what}: the message must not carry the whole body"
        );
        assert!(!text.contains(SECRET));
    }
    // Missing fields and nulls are tolerated where the API leaves them out.
    let endpoint = canned(200, "application/json", br#"{"Code":"Success"}"#.to_vec()).await;
    assert!(
        client(&endpoint)
            .describe_backups("x")
            .await
            .unwrap()
            .is_empty()
    );
    let endpoint = canned(
        200,
        "application/json",
        br#"{"Code":"Success","Data":[{"BackupId":"b","Status":null,"BackupSize":null}]}"#.to_vec(),
    )
    .await;
    let list = client(&endpoint).describe_backups("x").await.unwrap();
    assert_eq!((list[0].status.as_str(), list[0].backup_size), ("", None));
}

/// Hostile answers (path-like, long, non-ASCII and duplicate ids, absurd sizes) decode without
/// a panic, and the checks that stand between them and a key say which to refuse. The end to
/// end behaviour (a failed job, a metric, nothing written) is in `hostile.rs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_answers_decode_and_are_refused_before_they_name_a_copy() {
    use rdbvault::transfer::check_provider_id;
    let record = |id: &str, size: serde_json::Value| {
        serde_json::json!({
            "BackupId": id, "InstanceId": "i", "BackupType": "", "BackupMode": "manual",
            "BackupSize": size, "Desc": "rdbvault:j", "StartTime": "2026-11-28 10:00:00",
            "EndTime": "2026-11-28 10:00:05", "Status": "finished"
        })
    };
    let long = "x".repeat(100_000);
    type Case<'a> = (&'a str, Vec<serde_json::Value>, Option<bool>);
    // (name, records, Some(refused?) for the ids, None when decoding itself must fail)
    let cases: Vec<Case> = vec![
        (
            "path-like id",
            vec![record("../../../x", 1.into())],
            Some(true),
        ),
        ("100,000-char id", vec![record(&long, 1.into())], Some(true)),
        (
            "control character",
            vec![record("a\u{7}b", 1.into())],
            Some(true),
        ),
        (
            "non-ASCII id",
            vec![record("备份-一二三", 1.into())],
            Some(false),
        ),
        (
            "plain uuid",
            vec![record("5d74bb81-0473-464d-b15b-0ae418619248", 1.into())],
            Some(false),
        ),
        (
            "1e30 bytes",
            vec![record("b1", serde_json::json!(1e30))],
            Some(false),
        ),
        (
            "negative size",
            vec![record("b1", serde_json::json!(-5))],
            None,
        ),
        (
            "size past u64",
            vec![record("b1", "99999999999999999999999".into())],
            None,
        ),
        (
            "duplicate ids",
            vec![record("b1", 1.into()), record("b1", 1.into())],
            Some(false),
        ),
    ];
    for (name, records, refused) in cases {
        let body = serde_json::json!({"Code": "Success", "Message": "success", "Data": records});
        let url = canned(200, "application/json", body.to_string().into_bytes()).await;
        let result = client(&url).describe_backups("i").await;
        match (refused, result) {
            (None, Err(e)) => assert_eq!(e.kind, ErrorKind::Decode, "{name}: {e}"),
            (None, Ok(r)) => panic!("{name}: decoded {r:?}"),
            (Some(_), Err(e)) => panic!("{name}: {e}"),
            (Some(refused), Ok(list)) => {
                for b in &list {
                    assert_eq!(
                        check_provider_id("backup_id", &b.backup_id).is_err(),
                        refused,
                        "{name}"
                    );
                }
                if name == "1e30 bytes" {
                    // Read as the largest u64: far past any limits.max_backup_size.
                    assert!(list[0].backup_size.unwrap() > rdbvault::config::S3_MAX_OBJECT_SIZE);
                }
                if name == "duplicate ids" {
                    assert_eq!(list.len(), 2, "the runner sees both and refuses the set");
                }
            }
        }
    }
}
