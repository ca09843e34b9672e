//! The daemon as an operator meets it: every contract metric after a backup, gauges that
//! survive a restart, the expected interval of a seconds cron, health endpoints, `/v1/*`, and
//! SIGHUP reloads that refuse an invalid config.

use super::pipeline::{Env, SMALL};
use crate::support::free_port;
use std::time::Duration;

pub(crate) const CONTRACT: [&str; 16] = [
    "rdbvault_backup_runs_total",
    "rdbvault_backup_last_success_timestamp_seconds",
    "rdbvault_backup_last_attempt_timestamp_seconds",
    "rdbvault_backup_last_size_bytes",
    "rdbvault_backup_phase_duration_seconds",
    "rdbvault_transfer_bytes_total",
    "rdbvault_schedule_next_run_timestamp_seconds",
    "rdbvault_schedule_expected_interval_seconds",
    "rdbvault_jobs",
    "rdbvault_verified_backups",
    "rdbvault_retention_deleted_total",
    "rdbvault_retention_blocked_total",
    "rdbvault_api_requests_total",
    "rdbvault_api_request_duration_seconds",
    "rdbvault_scheduler_heartbeat_timestamp_seconds",
    "rdbvault_build_info",
];

async fn get(url: &str) -> (u16, String) {
    for _ in 0..100 {
        if let Ok(r) = reqwest::get(url).await {
            return (r.status().as_u16(), r.text().await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} never answered");
}

/// The value of a metric line that starts with `prefix`.
fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn sighup(child: &tokio::process::Child) {
    crate::support::signal(child, "-HUP");
}

fn sigterm(child: &tokio::process::Child) {
    crate::support::signal(child, "-TERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_v1_and_reload_as_an_operator_sees_them() {
    let Some(env) = Env::new("ops", "dir", &format!("uuid: {SMALL}"), "*/4 * * * * *").await else {
        return;
    };
    let port = free_port();
    let text = std::fs::read_to_string(&env.config)
        .unwrap()
        .replace("listen: 127.0.0.1:0", &format!("listen: 127.0.0.1:{port}"));
    std::fs::write(&env.config, &text).unwrap();
    let base = format!("http://127.0.0.1:{port}");

    let mut daemon = env.cmd(&["run"]).spawn().unwrap();
    let store = env.store().await;
    for _ in 0..300 {
        if !store
            .list_jobs(None, Some(rdbvault::job::State::Stored), 1)
            .await
            .unwrap()
            .is_empty()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The gauges follow the job's stored state within moments (the daemon recounts right
    // after the job's task ends), so give them a few seconds.
    let mut scrape = get(&format!("{base}/metrics")).await;
    for _ in 0..50 {
        if CONTRACT
            .iter()
            .all(|name| scrape.1.lines().any(|l| l.starts_with(name)))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        scrape = get(&format!("{base}/metrics")).await;
    }
    let (status, body) = scrape;
    assert_eq!(status, 200);
    for name in CONTRACT {
        assert!(
            body.lines().any(|l| l.starts_with(name)),
            "{name} missing after a backup:\n{body}"
        );
    }
    assert_eq!(
        metric(
            &body,
            r#"rdbvault_schedule_expected_interval_seconds{policy="p"}"#
        ),
        Some(4.0),
        "{body}"
    );
    let success_label = format!(
        r#"rdbvault_backup_last_success_timestamp_seconds{{instance="{SMALL}",policy="p"}}"#
    );
    let before = metric(&body, &success_label).expect("last success");

    assert_eq!(get(&format!("{base}/healthz")).await.0, 200);
    let (status, ready) = get(&format!("{base}/readyz")).await;
    assert_eq!(status, 200, "{ready}");
    assert!(ready.contains("last CDS API success: 20"), "{ready}");
    // Which state DB, and who does the shared upkeep.
    assert!(ready.contains("state DB: "), "{ready}");
    assert!(
        ready.contains("\nretention: ") && ready.contains("\nreverify: "),
        "{ready}"
    );
    let (status, jobs) = get(&format!("{base}/v1/jobs")).await;
    assert_eq!(status, 200);
    let jobs: serde_json::Value = serde_json::from_str(&jobs).unwrap();
    assert!(
        jobs.as_array()
            .unwrap()
            .iter()
            .any(|j| j["state"] == "stored")
    );
    let (_, policies) = get(&format!("{base}/v1/policies")).await;
    let policies: serde_json::Value = serde_json::from_str(&policies).unwrap();
    assert_eq!(policies[0]["expected_interval_seconds"], 4);
    assert_eq!(policies[0]["next_runs"].as_array().unwrap().len(), 3);
    let (status, backups) = get(&format!("{base}/v1/backups")).await;
    assert_eq!(status, 200, "{backups}");
    assert!(
        serde_json::from_str::<serde_json::Value>(&backups).unwrap()["rows"]
            .as_array()
            .is_some()
    );

    // No secret or download-URL query string in /metrics, /v1/*, the state DB or the manifests.
    let (_, metrics_now) = get(&format!("{base}/metrics")).await;
    let (_, jobs_now) = get(&format!("{base}/v1/jobs")).await;
    let (_, backups_now) = get(&format!("{base}/v1/backups")).await;
    let mut haystack = format!("{metrics_now}{jobs_now}{backups_now}");
    for entry in std::fs::read_dir(env.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("state.db")
        {
            haystack.push_str(&String::from_utf8_lossy(&std::fs::read(&path).unwrap()));
        }
    }
    let mut stack = vec![env.dir.path().join("archive")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.to_string_lossy().ends_with(".manifest.json") {
                haystack.push_str(&std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    for needle in [
        crate::support::SECRET,
        "Signature=",
        "Expires=",
        "OSSAccessKeyId",
    ] {
        assert!(
            !haystack.contains(needle),
            "{needle:?} found in metrics, /v1, the DB or a manifest"
        );
    }

    // An invalid config on SIGHUP is refused; the daemon keeps running on the old one.
    std::fs::write(
        &env.config,
        text.replace("cron: \"*/4 * * * * *\"", "cron: \"*/4 * *\""),
    )
    .unwrap();
    sighup(&daemon);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(get(&format!("{base}/healthz")).await.0, 200);
    // A valid one is taken: @yearly stops the every-4-seconds runs.
    std::fs::write(
        &env.config,
        text.replace("cron: \"*/4 * * * * *\"", "cron: \"@yearly\""),
    )
    .unwrap();
    sighup(&daemon);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, policies) = get(&format!("{base}/v1/policies")).await;
    assert!(
        policies.contains("@yearly"),
        "/v1/policies follows the reload: {policies}"
    );
    let count = store.list_jobs(None, None, 1000).await.unwrap().len();
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        store.list_jobs(None, None, 1000).await.unwrap().len(),
        count,
        "no runs after reloading @yearly"
    );

    sigterm(&daemon);
    assert!(
        tokio::time::timeout(Duration::from_secs(30), daemon.wait())
            .await
            .unwrap()
            .unwrap()
            .success()
    );
    let out = daemon.wait_with_output().await.unwrap();
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(log.contains("keeping the old config"), "{log}");
    assert!(log.contains("config reloaded"), "{log}");
    assert!(log.contains("job_id="), "job lines carry the job id: {log}");

    // After a restart the gauges come back from the journal, not from a default.
    let daemon = env.cmd(&["run"]).spawn().unwrap();
    let (_, body) = get(&format!("{base}/metrics")).await;
    let after = metric(&body, &success_label).expect("last success after restart");
    assert_eq!(after, before, "last-success gauge changed across a restart");
    sigterm(&daemon);
    let _ = tokio::time::timeout(Duration::from_secs(30), daemon.wait_with_output()).await;
    env.sim.stop().await;
}

/// An instance whose backups never verify has no copy at all, and that is exactly when
/// `RdbvaultTooFewVerifiedCopies` must fire: its series are exported at 0, not left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_never_had_a_verified_copy_is_exported_at_zero() {
    let Some(env) = Env::new("never", "dir", &format!("uuid: {SMALL}"), "*/3 * * * * *").await
    else {
        return;
    };
    let port = free_port();
    let text = std::fs::read_to_string(&env.config)
        .unwrap()
        .replace("listen: 127.0.0.1:0", &format!("listen: 127.0.0.1:{port}"));
    std::fs::write(&env.config, &text).unwrap();
    // Every download has a flipped byte: every job fails verification, nothing is ever stored.
    env.sim
        .add_fault(rdbvault::sim::state::Fault::DownloadCorrupt {
            count: None,
            offset: None,
        });
    let daemon = env.cmd(&["run"]).spawn().unwrap();
    let store = env.store().await;
    for _ in 0..300 {
        if !store
            .list_jobs(None, Some(rdbvault::job::State::Failed), 1)
            .await
            .unwrap()
            .is_empty()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let failed = store
        .list_jobs(None, Some(rdbvault::job::State::Failed), 1)
        .await
        .unwrap();
    assert!(!failed.is_empty(), "a job should have failed verification");
    let series = |location: &str| {
        format!(
            r#"rdbvault_verified_backups{{instance="{SMALL}",location="{location}",policy="p"}} "#
        )
    };
    let mut body = String::new();
    for _ in 0..50 {
        body = get(&format!("http://127.0.0.1:{port}/metrics")).await.1;
        if metric(&body, &series("destination")).is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(metric(&body, &series("destination")), Some(0.0), "{body}");
    assert_eq!(metric(&body, &series("provider")), Some(0.0), "{body}");
    assert!(
        store
            .list_jobs(None, Some(rdbvault::job::State::Stored), 1)
            .await
            .unwrap()
            .is_empty(),
        "nothing may have been stored"
    );
    sigterm(&daemon);
    let _ = tokio::time::timeout(Duration::from_secs(30), daemon.wait_with_output()).await;
    env.sim.stop().await;
}
