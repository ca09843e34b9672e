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
