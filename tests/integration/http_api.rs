//! `/v1` hardening as the real `rdbvault run` shows it on a non-loopback address: no start
//! without a token file, bearer auth on `/v1/*` only (metrics and probes stay open), token
//! rotation on SIGHUP, and `limit` bounded and validated.

use super::pipeline::Env;
use crate::support::{signal, write_private};
use std::time::Duration;

const TOKEN: &str = "v1-bearer-token-do-not-echo-4f9a";
const ROTATED: &str = "v1-rotated-token-7c21";

fn free_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Status, `WWW-Authenticate` and body of a GET, waiting for the daemon to listen.
async fn get(url: &str, token: Option<&str>) -> (u16, Option<String>, String) {
    let client = reqwest::Client::new();
    for _ in 0..150 {
        let mut req = client.get(url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Ok(r) = req.send().await {
            let status = r.status().as_u16();
            let auth = r
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_string());
            return (status, auth, r.text().await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} never answered");
}

fn set_http(env: &Env, http: &str) {
    let text = std::fs::read_to_string(&env.config).unwrap();
    let start = text.find("http:\n").unwrap();
    let end = text[start..].find("log:\n").unwrap() + start;
    std::fs::write(
        &env.config,
        format!("{}{http}{}", &text[..start], &text[end..]),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_loopback_listen_needs_a_token_file_and_v1_needs_the_token() {
    let Some(env) = Env::new("auth", "dir", r#"name: "nothing-*""#, "@yearly").await else {
        return;
    };
    let port = free_port();
    let d = env.dir.path();
    let token_file = d.join("v1_token");

    // No token file on 0.0.0.0: check-config and run both refuse, exit 2, naming the key.
    set_http(&env, &format!("http:\n  listen: 0.0.0.0:{port}\n"));
    let r = env.run(&["check-config"]).await;
    assert_eq!(r.code, 2, "{}", r.all());
    let listen_line = std::fs::read_to_string(&env.config)
        .unwrap()
        .lines()
        .position(|l| l.trim_start().starts_with("listen:"))
        .unwrap()
        + 1;
    assert!(
        r.all()
            .contains(&format!("rdbvault.yaml:{listen_line}:11: http.listen")),
        "file:line:col expected: {}",
        r.all()
    );
    assert!(r.all().contains("http.listen"), "{}", r.all());
    assert!(r.all().contains("http.token_file"), "{}", r.all());
    let r = env.run(&["run"]).await;
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.all().contains("http.token_file"), "{}", r.all());

    // A token file every user can read is refused too, without printing the token.
    set_http(
        &env,
        &format!(
            "http:\n  listen: 0.0.0.0:{port}\n  token_file: {}\n",
            token_file.display()
        ),
    );
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let r = env.run(&["run"]).await;
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.all().contains("http.token_file"), "{}", r.all());
    assert!(r.all().contains("chmod 600"), "{}", r.all());
    assert!(!r.all().contains(TOKEN));

    // More jobs than the cap, so a missing cap would show (finished, so nothing runs them).
    {
        let store = env.store().await;
        for i in 0..rdbvault::http::JOBS_LIMIT_MAX + 20 {
            let id = format!("job-{i:04}");
            let job = rdbvault::store::NewJob {
                id: id.clone(),
                policy: "p".into(),
                instance_uuid: format!("instance-{i}"),
                instance_name: format!("instance-{i}"),
                region_id: String::new(),
                destination: "dir".into(),
                trigger: "manual",
                due_at: 0,
                start_by: 1,
                deadline_at: 2,
                created_at: i64::from(i),
                owner: Some("test".into()),
                schedule_key: None,
            };
            store.insert_job(&job).await.unwrap();
            store
                .fail_job(
                    &rdbvault::store::jobs::Claim::new(&id, "test"),
                    3,
                    "seeded by the test",
                )
                .await
                .unwrap();
        }
        store.close().await;
    }

    write_private(&token_file, &format!("  {TOKEN}\n"));
    let mut daemon = env.cmd(&["run"]).spawn().unwrap();
    let base = format!("http://127.0.0.1:{port}");

    // Open endpoints need no token.
    let (status, _, body) = get(&format!("{base}/metrics"), None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("rdbvault_build_info"));
    assert_eq!(get(&format!("{base}/healthz"), None).await.0, 200);

    // /v1 without, with a wrong and with the right token (the file's spaces are trimmed).
    for path in ["/v1/jobs", "/v1/policies", "/v1/backups"] {
        let (status, auth, body) = get(&format!("{base}{path}"), None).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert!(
            auth.as_deref().unwrap_or("").starts_with("Bearer"),
            "{auth:?}"
        );
        let err: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(err["error"].as_str().unwrap().contains("bearer token"));
        let wrong = format!("{TOKEN}x");
        let (status, _, body) = get(&format!("{base}{path}"), Some(&wrong)).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert!(!body.contains(TOKEN), "the 401 echoes the token: {body}");
    }
    let (status, _, body) = get(&format!("{base}/v1/jobs"), Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    let jobs: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(jobs.len(), rdbvault::http::JOBS_LIMIT_DEFAULT as usize);
    let (status, _, body) = get(&format!("{base}/v1/policies"), Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");

    // limit: capped, and nonsense is a JSON 400.
    let (status, _, body) = get(&format!("{base}/v1/jobs?limit=100000"), Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    let jobs: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(jobs.len(), rdbvault::http::JOBS_LIMIT_MAX as usize);
    let (status, _, body) = get(&format!("{base}/v1/jobs?limit=7"), Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Vec<serde_json::Value>>(&body)
            .unwrap()
            .len(),
        7
    );
    for bad in ["abc", "0", "-3"] {
        let (status, _, body) = get(&format!("{base}/v1/jobs?limit={bad}"), Some(TOKEN)).await;
        assert_eq!(status, 400, "limit={bad}: {body}");
        let err: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(err["error"].as_str().unwrap().contains("limit"), "{body}");
    }

    // SIGHUP re-reads the token file: the old token stops working, the new one works.
    write_private(&token_file, ROTATED);
    signal(&daemon, "-HUP");
    let mut rotated = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if get(&format!("{base}/v1/jobs?limit=1"), Some(ROTATED))
            .await
            .0
            == 200
        {
            rotated = true;
            break;
        }
    }
    assert!(rotated, "the rotated token was not taken on SIGHUP");
    assert_eq!(get(&format!("{base}/v1/jobs"), Some(TOKEN)).await.0, 401);

    signal(&daemon, "-TERM");
    let status = tokio::time::timeout(Duration::from_secs(30), daemon.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    let out = daemon.wait_with_output().await.unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!log.contains(TOKEN) && !log.contains(ROTATED), "{log}");
    env.sim.stop().await;
}
