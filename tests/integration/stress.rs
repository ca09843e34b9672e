//! Fault matrix and load, against the simulator and SeaweedFS.
//!
//! `RDBVAULT_STRESS_SCALE` multiplies the sizes (1 in CI; the figures in RELIABILITY.md use 5:
//! 150 fault-matrix jobs and 1,000 instances).

use crate::support::{self, AK, SECRET, start_sim, write_private};
use rdbvault::sim::state::{Fault, InstanceSpec, TruncateMode};
use std::collections::BTreeMap;
use std::time::Duration;

fn scale() -> usize {
    std::env::var("RDBVAULT_STRESS_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

struct Setup {
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
}

fn setup(
    sim: &rdbvault::sim::SimHandle,
    destination: &str,
    extra_cds: &str,
    limits: (usize, usize),
) -> Setup {
    let s3 = support::seaweedfs();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_private(&d.join("cds_id"), AK);
    write_private(&d.join("cds_secret"), SECRET);
    std::fs::create_dir_all(d.join("archive")).unwrap();
    let s3_block = match s3 {
        Some(s3) => {
            write_private(&d.join("s3_id"), &s3.access_key);
            write_private(&d.join("s3_secret"), &s3.secret_key);
            format!(
                "  s3:\n    type: s3\n    bucket: rdbvault-test\n    prefix: stress-{}/\n    endpoint: {}\n    path_style: true\n    part_size: 5MiB\n    access_key_id_file: {d}/s3_id\n    secret_access_key_file: {d}/s3_secret\n",
                uuid::Uuid::new_v4().simple(),
                s3.endpoint,
                d = d.display()
            )
        }
        None => String::new(),
    };
    let text = format!(
        "cds:\n  endpoint: {endpoint}\n  access_key_id_file: {d}/cds_id\n  access_key_secret_file: {d}/cds_secret\n  poll_interval: 200ms\n  poll_max_interval: 1s\n{extra_cds}{state}http:\n  listen: 127.0.0.1:0\nlimits:\n  max_concurrent_jobs: {jobs}\n  max_concurrent_transfers: {transfers}\ndestinations:\n{s3_block}  dir:\n    type: file\n    path: {d}/archive\npolicies:\n  - name: p\n    schedule: {{ cron: \"@yearly\", start_window: 2m, completion_window: 10m }}\n    instances: [ {{ name: \"*\" }} ]\n    destination: {destination}\n    retention: {{ destination: {{ keep_last: 1000 }} }}\n",
        endpoint = sim.base_url,
        d = d.display(),
        jobs = limits.0,
        transfers = limits.1,
        state = support::state_yaml(d),
    );
    let config = d.join("rdbvault.yaml");
    std::fs::write(&config, text).unwrap();
    Setup { dir, config }
}

/// A simulator with `n` instances of 8 KiB backups that take 300 ms.
fn many_small_instances(n: usize) -> rdbvault::sim::SimConfig {
    let mut cfg = support::sim_config();
    cfg.settings.backup_delay = Duration::from_millis(300);
    cfg.instances = Some(
        (0..n)
            .map(|i| InstanceSpec {
                name: format!("load-{i:04}"),
                backup_size: Some(8192),
                ..Default::default()
            })
            .collect(),
    );
    cfg
}

async fn run(setup: &Setup, args: &[&str]) -> support::Run {
    let mut c = support::rdbvault();
    c.arg("-c").arg(&setup.config).args(args);
    let out = tokio::process::Command::from(c).output().await.unwrap();
    support::Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_matrix_detects_every_corruption_and_never_lies() {
    if support::seaweedfs().is_none() {
        return;
    }
    let instances = 10;
    let rounds = 3 * scale();
    let mut cfg = support::sim_config();
    cfg.settings.backup_delay = Duration::from_millis(200);
    cfg.instances = Some(
        (0..instances)
            .map(|i| InstanceSpec {
                name: format!("fm-{i:02}"),
                backup_size: Some(if i % 3 == 0 {
                    7 << 20
                } else {
                    600_000 + i as u64
                }),
                ..Default::default()
            })
            .collect(),
    );
    let sim = start_sim(cfg).await;
    // A 2 s API timeout, so injected latency of 3 s is "beyond the timeout".
    let setup = setup(
        &sim,
        "s3",
        "  timeout: 2s\n  retry: { max_attempts: 3, base_delay: 50ms, max_delay: 200ms }\n",
        (4, 2),
    );
    let mut rng = fastrand::Rng::with_seed(2026);
    let mut injected: BTreeMap<&str, u32> = BTreeMap::new();
    let mut all_output = String::new();
    for _ in 0..rounds {
        // About 20 % of the round's ~10 jobs meet each fault. (A 5xx on CreateBackup leaves its
        // outcome unknown; the job then looks for its backup by token for its start window:
        // covered by the crash harness and the client tests, kept out of here for speed.)
        let mut add = |name: &'static str, f: Fault| {
            *injected.entry(name).or_default() += 2;
            sim.add_fault(f);
        };
        add(
            "5xx",
            Fault::ApiError {
                action: ["DescribeBackups", "DownloadBackup", "DescribeDBInstances"]
                    [rng.usize(0..3)]
                .into(),
                count: Some(2),
                status: 500,
                code: "InternalError".into(),
            },
        );
        add(
            "409",
            Fault::ApiError {
                action: "CreateBackup".into(),
                count: Some(2),
                status: 409,
                code: "ResourceInUse".into(),
            },
        );
        add(
            "latency beyond timeout",
            Fault::Latency {
                action: ["DescribeBackups", "DownloadBackup"][rng.usize(0..2)].into(),
                count: Some(2),
                millis: 3000,
            },
        );
        add(
            "truncated download",
            Fault::DownloadTruncate {
                count: Some(2),
                after_bytes: 200_000,
                mode: if rng.bool() {
                    TruncateMode::Abort
                } else {
                    TruncateMode::Short
                },
            },
        );
        add(
            "corrupted download",
            Fault::DownloadCorrupt {
                count: Some(2),
                offset: Some(100),
            },
        );
        add("expired URL", Fault::DownloadExpired { count: Some(2) });
        let r = run(&setup, &["backup-now", "--policy", "p"]).await;
        assert!(r.code == 0 || r.code == 3, "{}", r.all());
        all_output.push_str(&r.all());
        sim.shared.world.lock().unwrap().faults.clear();
    }
    let store = support::open_store(setup.dir.path()).await;
    let jobs = store.list_jobs(None, None, 10_000).await.unwrap();
    assert_eq!(jobs.len(), instances * rounds);
    let mut outcome: BTreeMap<String, usize> = BTreeMap::new();
    let mut mismatches = 0;
    for j in &jobs {
        let key = match j.state.as_str() {
            "stored" => "stored".to_string(),
            "failed" => {
                let e = j.error.clone().unwrap_or_default();
                assert!(!e.is_empty());
                if e.contains("checksum mismatch") {
                    mismatches += 1;
                    "failed: corruption detected".into()
                } else {
                    format!("failed: {}", e.chars().take(60).collect::<String>())
                }
            }
            other => panic!("job ended {other}: {j:?}"),
        };
        *outcome.entry(key).or_default() += 1;
        assert!(
            j.finished_at.unwrap() <= j.deadline_at,
            "finished within its window"
        );
    }
    let served = sim.shared.world.lock().unwrap().corruptions_served;
    // A corrupted download either fails verification, or is thrown away whole when a later
    // failure of the same transfer (download host, destination) makes the shard transfer
    // again from the first byte. Never is it stored: `verify --all` below proves that.
    // A mismatch caught in transit and downloaded again is journaled as a retry; it counts as a
    // detected corruption like one that failed its job.
    let mut restarts = 0u64;
    for j in &jobs {
        for e in store.events(&j.id).await.unwrap() {
            if e.kind != "retry" {
                continue;
            }
            if e.message.starts_with("transfer attempt") {
                restarts += 1;
            } else if e.message.contains("failed verification")
                && e.message.contains("checksum mismatch")
            {
                mismatches += 1;
            }
        }
    }
    assert!(
        mismatches as u64 <= served,
        "a checksum failure without a corrupted download"
    );
    assert!(
        mismatches as u64 + restarts >= served,
        "{served} corrupted downloads, {mismatches} detected, {restarts} transfers restarted"
    );
    // Zero false "stored": every stored copy verifies.
    let r = run(&setup, &["verify", "--all"]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    all_output.push_str(&r.all());
    for needle in [SECRET, "Signature=", "Expires="] {
        assert!(!all_output.contains(needle), "output leaks {needle}");
    }
    println!(
        "\nfault matrix: {} jobs, {rounds} rounds; injected: {injected:?}; corrupted downloads served {served}: {mismatches} failed verification, the rest discarded by {restarts} transfer restart(s); none stored",
        jobs.len()
    );
    for (k, n) in &outcome {
        println!("  {k:<70} {n:>4}");
    }
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_instances_complete_within_limits() {
    let n = 200 * scale();
    let sim = start_sim(many_small_instances(n)).await;
    let (jobs_limit, transfers) = (32, 8);
    let setup = setup(&sim, "dir", "", (jobs_limit, transfers));
    let started = std::time::Instant::now();
    let r = run(&setup, &["backup-now", "--policy", "p"]).await;
    let took = started.elapsed();
    assert_eq!(
        r.code,
        0,
        "{}",
        r.all().chars().take(3000).collect::<String>()
    );
    assert!(
        !r.all().contains("database is locked"),
        "SQLite contention surfaced"
    );
    let store = support::open_store(setup.dir.path()).await;
    let stored = store
        .list_jobs(None, Some(rdbvault::job::State::Stored), 100_000)
        .await
        .unwrap()
        .len();
    assert_eq!(stored, n, "every job completes");
    let (max_in_flight, calls) = {
        let w = sim.shared.world.lock().unwrap();
        (w.api_in_flight_max, w.calls.clone())
    };
    // Each job makes at most one API call at a time; one more for instance resolution.
    assert!(
        max_in_flight as usize <= jobs_limit + 1,
        "API concurrency {max_in_flight} above the job limit {jobs_limit}"
    );
    let describe = calls.get("DescribeBackups").copied().unwrap_or(0);
    println!(
        "\nload: {n} instances stored in {:.1}s; max API calls in flight {max_in_flight} (limit {jobs_limit}); calls per job: {}",
        took.as_secs_f64(),
        calls
            .iter()
            .map(|(a, c)| format!("{a} {:.2}", *c as f64 / n as f64))
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert!(
        describe as usize <= n * 6,
        "DescribeBackups polls stay bounded: {describe}"
    );
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_outage_mid_upload_is_retried_or_fails_with_its_reason() {
    let Some(s3) = support::PrivateSeaweedFs::start() else {
        return;
    };
    let mut cfg = support::sim_config();
    cfg.settings.backup_delay = Duration::from_millis(200);
    cfg.instances = Some(vec![InstanceSpec {
        name: "outage".into(),
        backup_size: Some(12 << 20),
        ..Default::default()
    }]);
    let sim = start_sim(cfg).await;
    sim.add_fault(Fault::DownloadThrottle {
        count: None,
        bytes_per_second: 2 << 20,
    });
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_private(&d.join("cds_id"), AK);
    write_private(&d.join("cds_secret"), SECRET);
    write_private(&d.join("s3_id"), &s3.access_key);
    write_private(&d.join("s3_secret"), &s3.secret_key);
    let text = format!(
        "cds:\n  endpoint: {e}\n  access_key_id_file: {d}/cds_id\n  access_key_secret_file: {d}/cds_secret\n  poll_interval: 200ms\n{state}destinations:\n  s3:\n    type: s3\n    bucket: outage\n    endpoint: {s3e}\n    path_style: true\n    part_size: 5MiB\n    access_key_id_file: {d}/s3_id\n    secret_access_key_file: {d}/s3_secret\npolicies:\n  - name: p\n    schedule: {{ cron: \"@yearly\", completion_window: 5m }}\n    instances: [ {{ name: outage }} ]\n    destination: s3\n    retention: {{ destination: {{ keep_last: 5 }} }}\n",
        e = sim.base_url,
        d = d.display(),
        s3e = s3.endpoint,
        state = support::state_yaml(d),
    );
    let config = d.join("rdbvault.yaml");
    std::fs::write(&config, text).unwrap();
    let mut c = support::rdbvault();
    c.arg("-c")
        .arg(&config)
        .args(["backup-now", "--policy", "p"]);
    let child = tokio::process::Command::from(c)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The upload is under way; the S3 server dies for a few seconds.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    s3.stop();
    tokio::time::sleep(Duration::from_secs(4)).await;
    s3.restart();
    sim.shared.world.lock().unwrap().faults.clear();
    let out = tokio::time::timeout(Duration::from_secs(240), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let store = support::open_store(d).await;
    let job = store.list_jobs(None, None, 1).await.unwrap().remove(0);
    let events: Vec<_> = store
        .events(&job.id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| format!("{} {}", e.kind, e.message))
        .collect();
    match job.state.as_str() {
        "stored" => {
            assert_eq!(out.status.code(), Some(0), "{all}");
            assert!(
                events.iter().any(|e| e.starts_with("retry")),
                "the transfer was retried: {events:#?}"
            );
        }
        "failed" => assert!(
            job.error.as_deref().is_some_and(|e| !e.is_empty()),
            "{job:?}"
        ),
        other => panic!("job ended {other}: {all}"),
    }
    // Whatever happened, nothing half-done is visible or left behind.
    let cfg = rdbvault::config::load(&config).unwrap();
    let rdbvault::config::DestinationKind::S3(s3cfg) = &cfg.destinations["s3"].kind else {
        unreachable!()
    };
    let client = rdbvault::destination::s3_client(s3cfg).await.unwrap();
    let uploads = rdbvault::destination::s3::list_uploads(&client, "outage", "")
        .await
        .unwrap();
    assert!(
        uploads.is_empty(),
        "multipart uploads left: {uploads:?}\n{events:#?}"
    );
    let listed = client
        .list_objects_v2()
        .bucket("outage")
        .send()
        .await
        .unwrap();
    let keys: Vec<_> = listed.contents().iter().filter_map(|o| o.key()).collect();
    let stored: Vec<String> = store
        .shards(&job.id)
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.state == "stored")
        .filter_map(|s| s.object_key)
        .collect();
    for k in &keys {
        let base = k.trim_end_matches(".manifest.json");
        assert!(
            stored.iter().any(|s| s == base),
            "visible object {k} is not a stored copy"
        );
    }
    println!("\ns3 outage: job {}, events: {events:#?}", job.state);
    sim.stop().await;
}

/// The daemon with many instances due at once: retention after each job lists only that job's
/// instance (it once listed every instance of the policy after every job: O(instances²) calls),
/// and no instance is listed twice within `cds.poll_interval`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_lists_each_instance_at_most_once_per_poll_interval() {
    let n = 40;
    let sim = start_sim(many_small_instances(n)).await;
    let setup = setup(&sim, "dir", "", (n, 8));
    let text = std::fs::read_to_string(&setup.config)
        .unwrap()
        .replace(
            "cron: \"@yearly\"",
            "cron: \"*/5 * * * * *\", catch_up: none",
        )
        // The start window must fit between two runs 5 s apart.
        .replace("start_window: 2m", "start_window: 5s");
    std::fs::write(&setup.config, text).unwrap();
    let mut c = support::rdbvault();
    c.arg("-c").arg(&setup.config).arg("run");
    let mut daemon = tokio::process::Command::from(c)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let store = support::open_store(setup.dir.path()).await;
    let mut stored = 0;
    for _ in 0..300 {
        stored = store
            .list_jobs(None, Some(rdbvault::job::State::Stored), 10_000)
            .await
            .unwrap()
            .len();
        if stored >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let the retention runs after the last jobs finish too.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _ = daemon.start_kill();
    let _ = daemon.wait().await;
    assert!(stored >= n, "only {stored} of {n} jobs stored");
    let (describe, gap) = {
        let w = sim.shared.world.lock().unwrap();
        (
            w.calls.get("DescribeBackups").copied().unwrap_or(0),
            w.describe_backups_min_gap,
        )
    };
    // Per instance: one listing at start (reconcile), a few polls per job, one for retention.
    assert!(
        describe as usize <= stored * 6 + n,
        "{describe} DescribeBackups for {stored} jobs of {n} instances"
    );
    let gap = gap.expect("instances were listed more than once");
    assert!(
        gap >= chrono::Duration::milliseconds(200),
        "an instance was listed twice {gap} apart (cds.poll_interval is 200ms)"
    );
}
