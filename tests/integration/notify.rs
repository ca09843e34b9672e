//! Notifications end to end: a real HTTP receiver in this test process takes a daemon's
//! webhook events (signed, retried after errors, delivered across a restart) and its
//! healthchecks pings (start, success, /fail); a target that accepts connections and never
//! answers slows no backup; `notify test` reaches every target and names the one that fails.

use super::pipeline::{Env, SMALL};
use crate::support::write_private;
use rdbvault::sim::state::Fault;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECRET: &str = "webhook-secret-for-the-test";

#[derive(Debug, Clone)]
struct Request {
    path: String,
    event_id: Option<String>,
    signature: Option<String>,
    body: String,
    /// What the receiver answered.
    status: u16,
}

/// An HTTP server that records every request; answers 500 while `failing` is set.
#[derive(Clone, Default)]
struct Receiver {
    seen: Arc<Mutex<Vec<Request>>>,
    failing: Arc<AtomicBool>,
}

impl Receiver {
    async fn start(&self) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let me = self.clone();
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: String| {
                let me = me.clone();
                async move {
                    let status = if me.failing.load(Ordering::SeqCst) {
                        500
                    } else {
                        200
                    };
                    let header = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string)
                    };
                    me.seen.lock().unwrap().push(Request {
                        path: uri.path().to_string(),
                        event_id: header("x-rdbvault-event-id"),
                        signature: header("x-rdbvault-signature"),
                        body,
                        status,
                    });
                    axum::http::StatusCode::from_u16(status).unwrap()
                }
            },
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        port
    }

    fn requests(&self) -> Vec<Request> {
        self.seen.lock().unwrap().clone()
    }

    /// The webhook events delivered (answered 200), decoded.
    fn delivered_events(&self) -> Vec<serde_json::Value> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == "/hook" && r.status == 200)
            .map(|r| serde_json::from_str(&r.body).unwrap())
            .collect()
    }

    async fn wait_for(&self, what: &str, within: Duration, done: impl Fn(&[Request]) -> bool) {
        let deadline = Instant::now() + within;
        while !done(&self.requests()) {
            assert!(
                Instant::now() < deadline,
                "{what}: not within {within:?}; got {:#?}",
                self.requests()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn hmac_hex(body: &str) -> String {
    use hmac::{KeyInit as _, Mac as _};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// A port that accepts connections and never answers.
async fn black_hole() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_and_pings_arrive_signed_retried_and_across_a_restart() {
    let Some(env) = Env::new("notify", "dir", &format!("uuid: {SMALL}"), "*/5 * * * * *").await
    else {
        return;
    };
    let receiver = Receiver::default();
    let port = receiver.start().await;
    let hole = black_hole().await;
    write_private(&env.dir.path().join("hook_secret"), SECRET);
    env.edit_config(
        "log:\n",
        &format!(
            "notify:
  - type: webhook
    url: http://127.0.0.1:{port}/hook
    secret_file: {d}/hook_secret
    events: [failed, stored]
    timeout: 2s
  - type: healthchecks
    url: http://127.0.0.1:{port}/ping/check-1/
  - type: webhook
    name: black-hole
    url: http://127.0.0.1:{hole}/never
    events: [failed, stored]
    timeout: 1s
log:\n",
            d = env.dir.path().display()
        ),
    );
    assert_eq!(env.run(&["check-config"]).await.code, 0);

    // The receiver fails the first deliveries: they are retried until it takes them.
    receiver.failing.store(true, Ordering::SeqCst);
    let mut daemon = env.cmd(&["run"]).spawn().unwrap();
    receiver
        .wait_for(
            "a stored event answered 500",
            Duration::from_secs(60),
            |r| r.iter().any(|q| q.path == "/hook" && q.status == 500),
        )
        .await;
    receiver.failing.store(false, Ordering::SeqCst);
    receiver
        .wait_for("a stored event delivered", Duration::from_secs(60), |r| {
            r.iter().any(|q| q.path == "/hook" && q.status == 200)
        })
        .await;
    let refused: Vec<String> = receiver
        .requests()
        .iter()
        .filter(|q| q.path == "/hook" && q.status == 500)
        .filter_map(|q| q.event_id.clone())
        .collect();
    receiver
        .wait_for(
            "every refused event delivered later",
            Duration::from_secs(30),
            |r| {
                refused.iter().all(|id| {
                    r.iter()
                        .any(|q| q.status == 200 && q.event_id.as_deref() == Some(id))
                })
            },
        )
        .await;
    // Signed, identified, no secret or signed URL in the body.
    for q in receiver.requests().iter().filter(|q| q.path == "/hook") {
        assert_eq!(
            q.signature.as_deref(),
            Some(format!("sha256={}", hmac_hex(&q.body)).as_str())
        );
        let v: serde_json::Value = serde_json::from_str(&q.body).unwrap();
        assert_eq!(v["event_id"].as_str(), q.event_id.as_deref());
        assert!(
            !q.body.contains(SECRET) && !q.body.contains("X-Amz") && !q.body.contains("Signature="),
            "{}",
            q.body
        );
    }
    let stored = receiver
        .delivered_events()
        .into_iter()
        .find(|e| e["event"] == "stored")
        .unwrap();
    assert_eq!(stored["policy"], "p");
    assert_eq!(stored["instance_uuid"], SMALL);
    assert_eq!(stored["instance_name"], "small-replica");
    assert_eq!(stored["state"], "stored");
    assert!(
        stored["job_id"].as_str().is_some_and(|j| j.len() == 36),
        "{stored}"
    );
    assert!(stored["at"].as_str().unwrap().ends_with('Z'), "{stored}");
    // Healthchecks: the run's start, then its success (the bare URL).
    receiver
        .wait_for("start and success pings", Duration::from_secs(30), |r| {
            r.iter().any(|q| q.path == "/ping/check-1/start")
                && r.iter().any(|q| q.path == "/ping/check-1")
        })
        .await;

    // Backups go on at the schedule's pace (every 5 s) while the black hole holds each of its
    // deliveries for its whole timeout: three runs stored within 40 s.
    let store = env.store().await;
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let stored = store
            .list_jobs(None, Some(rdbvault::job::State::Stored), 100)
            .await
            .unwrap()
            .len();
        if stored >= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {stored} runs stored in 40 s"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    store.close().await;
    assert!(
        receiver.requests().len() > 3,
        "the black hole's target did not hold up the others"
    );

    // Every CreateBackup refused from now on: the next run fails. Its event is queued while
    // the receiver is down (500), the daemon is stopped, and a new daemon delivers it.
    env.sim.add_fault(Fault::ApiError {
        action: "CreateBackup".into(),
        count: None,
        status: 400,
        code: "InvalidParameter".into(),
    });
    receiver.failing.store(true, Ordering::SeqCst);
    receiver
        .wait_for("a failed event refused", Duration::from_secs(60), |r| {
            r.iter()
                .any(|q| q.path == "/hook" && q.status == 500 && q.body.contains("\"failed\""))
        })
        .await;
    crate::support::signal(&daemon, "-TERM");
    tokio::time::timeout(Duration::from_secs(30), daemon.wait())
        .await
        .unwrap()
        .unwrap();
    let undelivered: Vec<String> = receiver
        .requests()
        .iter()
        .filter(|q| q.path == "/hook" && q.status == 500 && q.body.contains("\"failed\""))
        .filter_map(|q| q.event_id.clone())
        .collect();
    receiver.failing.store(false, Ordering::SeqCst);
    daemon = env.cmd(&["run"]).spawn().unwrap();
    receiver
        .wait_for(
            "the failed event delivered by the restarted daemon",
            Duration::from_secs(60),
            |r| {
                undelivered.iter().all(|id| {
                    r.iter()
                        .any(|q| q.status == 200 && q.event_id.as_deref() == Some(id))
                })
            },
        )
        .await;
    let failed = receiver
        .delivered_events()
        .into_iter()
        .find(|e| e["event"] == "failed")
        .unwrap();
    assert_eq!(failed["state"], "failed");
    assert!(
        failed["error"].as_str().unwrap().contains("CreateBackup"),
        "{failed}"
    );
    receiver
        .wait_for(
            "a /fail ping for the failed run",
            Duration::from_secs(30),
            |r| {
                r.iter()
                    .any(|q| q.path == "/ping/check-1/fail" && q.status == 200)
            },
        )
        .await;
    crate::support::signal(&daemon, "-TERM");
    tokio::time::timeout(Duration::from_secs(30), daemon.wait())
        .await
        .unwrap()
        .unwrap();

    // `notify test`: each target says how it answered; the black hole fails the command.
    let r = env.run(&["notify", "test"]).await;
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stdout
            .contains("webhook-1 (http://127.0.0.1): delivered (HTTP 200)"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("healthchecks-2 (http://127.0.0.1): delivered (HTTP 200)"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("black-hole (http://127.0.0.1): NOT DELIVERED: no answer within 1s"),
        "{}",
        r.stdout
    );
    assert!(
        receiver
            .requests()
            .iter()
            .any(|q| q.path == "/ping/check-1/log")
    );
    let test_event = receiver
        .delivered_events()
        .into_iter()
        .find(|e| e["event"] == "test")
        .unwrap();
    assert!(
        test_event["error"]
            .as_str()
            .unwrap()
            .contains("notify test")
    );
    env.assert_no_leaks();
}
