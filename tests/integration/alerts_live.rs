//! The shipped alert rules, proven in a real Prometheus (Debian's package): it loads
//! deploy/prometheus/rdbvault-alerts.yml and the scrape job of deploy/prometheus/
//! scrape-rdbvault.yml as a user would, scrapes a running daemon every second,
//! and its own API must show the alerts firing: `RdbvaultBackupFailed` once the provider refuses
//! every CreateBackup, `RdbvaultRestoreDrillFailed` and `RdbvaultRestoreDrillMissing` once a
//! stored set that restored is damaged and its drills fail.

use super::pipeline::{Env, SMALL};
use crate::support::free_port;
use crate::support::{have_tool, repo_root};
use rdbvault::sim::state::Fault;
use std::time::{Duration, Instant};

/// A Prometheus scraping `target` every second with the shipped rules; killed when dropped.
struct Prometheus {
    child: std::process::Child,
    api: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let rules = repo_root().join("deploy/prometheus/rdbvault-alerts.yml");
        let config = dir.path().join("prometheus.yml");
        // The shipped scrape job as the README says to use it, pointed at this daemon.
        let scrape =
            std::fs::read_to_string(repo_root().join("deploy/prometheus/scrape-rdbvault.yml"))
                .unwrap()
                .replace("127.0.0.1:9750", target);
        let scrape: String = scrape.lines().map(|l| format!("  {l}\n")).collect();
        std::fs::write(
            &config,
            format!(
                "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\n\
                 rule_files: [\"{}\"]\n\
                 scrape_configs:\n{scrape}",
                rules.display()
            ),
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = std::process::Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Prometheus {
            child,
            api: format!("http://127.0.0.1:{port}/api/v1"),
            _dir: dir,
        }
    }

    /// The alerts Prometheus holds now (pending and firing).
    async fn alerts(&self) -> Vec<serde_json::Value> {
        let Ok(r) = reqwest::get(format!("{}/alerts", self.api)).await else {
            return Vec::new();
        };
        let v: serde_json::Value = r.json().await.unwrap_or_default();
        v["data"]["alerts"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until `name` fires for labels including `labels`; returns the alert.
    async fn wait_firing(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        within: Duration,
    ) -> serde_json::Value {
        let deadline = Instant::now() + within;
        loop {
            let alerts = self.alerts().await;
            if let Some(a) = alerts.iter().find(|a| {
                a["labels"]["alertname"] == name
                    && a["state"] == "firing"
                    && labels.iter().all(|(k, v)| a["labels"][*k] == *v)
            }) {
                return a.clone();
            }
            assert!(
                Instant::now() < deadline,
                "{name} {labels:?} did not fire within {within:?}; alerts now: {alerts:#?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_alerts_fire_in_a_real_prometheus() {
    if !have_tool("prometheus") || !have_tool("redis-server") {
        return;
    }
    let Some(env) = Env::new(
        "alerts-live",
        "dir",
        &format!("uuid: {SMALL}"),
        "*/5 * * * * *",
    )
    .await
    else {
        return;
    };
    // A stored set first, by hand, for the drills to work on.
    let r = env.run(&["backup-now", "--policy", "p"]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    // From now on the provider refuses every CreateBackup: each scheduled run fails.
    env.sim.add_fault(Fault::ApiError {
        action: "CreateBackup".into(),
        count: None,
        status: 400,
        code: "InvalidParameter".into(),
    });
    let port = free_port();
    env.edit_config("listen: 127.0.0.1:0", &format!("listen: 127.0.0.1:{port}"));
    env.edit_config("log:\n", "drill:\n  interval: 3s\nlog:\n");
    let mut daemon = env.cmd(&["run"]).spawn().unwrap();
    let prometheus = Prometheus::start(&format!("127.0.0.1:{port}"));

    let failed = prometheus
        .wait_firing(
            "RdbvaultBackupFailed",
            &[("policy", "p"), ("instance", SMALL), ("result", "failure")],
            Duration::from_secs(90),
        )
        .await;
    assert_eq!(failed["labels"]["severity"], "warning");
    assert!(
        failed["annotations"]["runbook"]
            .as_str()
            .unwrap()
            .contains("rdbvault jobs --policy p --state failed"),
        "{failed}"
    );

    // The daemon drills the stored set every 3 s: it restores, so neither drill alert fires.
    let store = env.store().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while store
        .drill_times()
        .await
        .unwrap()
        .iter()
        .all(|t| t.last_restored_at.is_none())
    {
        assert!(Instant::now() < deadline, "no drill restored within 60 s");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let firing_now = |alerts: &[serde_json::Value], name: &str| {
        alerts
            .iter()
            .any(|a| a["labels"]["alertname"] == name && a["state"] == "firing")
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let alerts = prometheus.alerts().await;
    assert!(
        !firing_now(&alerts, "RdbvaultRestoreDrillFailed"),
        "{alerts:#?}"
    );
    assert!(
        !firing_now(&alerts, "RdbvaultRestoreDrillMissing"),
        "{alerts:#?}"
    );

    // The stored copy damaged at the destination: its drills fail from now on.
    let job = store
        .list_jobs(None, Some(rdbvault::job::State::Stored), 1)
        .await
        .unwrap()
        .remove(0);
    let key = store.shards(&job.id).await.unwrap()[0]
        .object_key
        .clone()
        .unwrap();
    store.close().await;
    let object = env.dir.path().join("archive").join(&key);
    let mut bytes = std::fs::read(&object).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xFF;
    std::fs::write(&object, &bytes).unwrap();
    let drill_failed = prometheus
        .wait_firing(
            "RdbvaultRestoreDrillFailed",
            &[("policy", "p"), ("instance", SMALL)],
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(drill_failed["labels"]["severity"], "critical");
    // No drill has restored for twice the interval (6 s) now.
    prometheus
        .wait_firing(
            "RdbvaultRestoreDrillMissing",
            &[("policy", "p")],
            Duration::from_secs(60),
        )
        .await;
    // The daemon answered every scrape meanwhile.
    let alerts = prometheus.alerts().await;
    assert!(!firing_now(&alerts, "RdbvaultDown"), "{alerts:#?}");
    crate::support::signal(&daemon, "-TERM");
    let status = tokio::time::timeout(Duration::from_secs(30), daemon.wait())
        .await
        .expect("the daemon stops on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
}
