//! The operator's command line, with the real binary: `status` (healthy with a daemon, a failed
//! job named, the daemon down), `jobs cancel` (mid-transfer in a running daemon, in a
//! `backup-now`, and a pending job no process owns) and `jobs retry`.

use super::pipeline::{BIG, Env, SMALL};
use crate::support::free_port;
use rdbvault::job::State;
use rdbvault::sim::state::Fault;
use std::time::{Duration, Instant};

/// Gives the daemon a fixed port so `status` can find it; returns the port.
fn fixed_port(env: &Env) -> u16 {
    let port = free_port();
    env.edit_config("listen: 127.0.0.1:0", &format!("listen: 127.0.0.1:{port}"));
    port
}

/// A pending job of the config's policy for one instance, owned by nobody: what the scheduler
/// makes, so the daemon's dispatcher (or `jobs cancel`) claims it.
async fn pending_job(env: &Env, uuid: &str, name: &str) -> String {
    let cfg = rdbvault::config::load(&env.config).unwrap();
    let instance = rdbvault::cds::model::Instance {
        instance_uuid: uuid.into(),
        instance_name: name.into(),
        ..Default::default()
    };
    let now = chrono::Utc::now();
    let job = rdbvault::scheduler::new_job(&cfg.policies[0], &instance, now, "schedule", now);
    env.store().await.insert_job(&job).await.unwrap();
    job.id
}

/// Polls `check` every 100 ms for up to `secs`.
async fn wait_until<F: std::future::Future<Output = bool>>(
    what: &str,
    secs: u64,
    mut check: impl FnMut() -> F,
) {
    for _ in 0..secs * 10 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out after {secs}s waiting for {what}");
}

async fn stop(env: &Env, daemon: tokio::process::Child) {
    crate::support::signal(&daemon, "-TERM");
    let out = tokio::time::timeout(Duration::from_secs(40), daemon.wait_with_output())
        .await
        .expect("the daemon stops after SIGTERM")
        .unwrap();
    env.record(&String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the daemon exits 0 on SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_is_healthy_after_a_stored_backup_with_the_daemon_running() {
    let Some(env) = Env::new("status-ok", "dir", &format!("uuid: {SMALL}"), "@yearly").await else {
        return;
    };
    let port = fixed_port(&env);
    let r = env.run(&["backup-now", "--policy", "p"]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    let daemon = env.cmd(&["run"]).spawn().unwrap();
    // Ready once its scheduler has beaten.
    let mut last = None;
    for _ in 0..150 {
        let r = env.run(&["status"]).await;
        if r.code == 0 {
            last = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = last.expect("status became healthy once the daemon was up");
    let out = &r.stdout;
    assert!(
        out.contains(&format!("daemon: up at 127.0.0.1:{port}")),
        "{out}"
    );
    assert!(out.contains(&format!("small-replica ({SMALL})")), "{out}");
    assert!(out.contains("last success  20"), "{out}");
    assert!(out.contains("1 at the destination (`dir`)"), "{out}");
    assert!(out.contains("open job      none"), "{out}");
    assert!(out.contains("last drill    none yet"), "{out}");
    assert!(out.contains("healthy: nothing needs attention"), "{out}");

    let r = env.run(&["status", "--json"]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["healthy"], true);
    assert_eq!(v["daemon"]["state"], "ready");
    assert_eq!(v["attention"].as_array().unwrap().len(), 0);
    let policy = &v["policies"][0];
    assert_eq!(policy["name"], "p");
    assert_eq!(policy["timezone"], "UTC");
    assert!(
        policy["next_run"].as_str().unwrap().ends_with('Z'),
        "{policy}"
    );
    let instance = &policy["instances"][0];
    assert_eq!(instance["uuid"], SMALL);
    assert_eq!(instance["verified_copies"]["destination"], 1);
    assert_eq!(instance["verified_copies"]["provider"], 1);
    assert!(instance["open_job"].is_null());
    assert!(instance["last_drill"].is_null(), "no drills yet: null");
    let at = instance["last_success"]["at"].as_str().unwrap();
    chrono::DateTime::parse_from_rfc3339(at).expect("RFC 3339 with its zone");
    assert!(instance["last_success"]["age_seconds"].as_i64().unwrap() >= 0);
    stop(&env, daemon).await;
    env.assert_no_leaks();
    env.sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_after_a_failed_job_exits_3_and_names_it() {
    let Some(env) = Env::new("status-failed", "dir", &format!("uuid: {SMALL}"), "@yearly").await
    else {
        return;
    };
    env.sim.add_fault(Fault::BackupFails { count: Some(1) });
    let r = env.run(&["backup-now", "--policy", "p"]).await;
    assert_eq!(r.code, 3, "{}", r.all());
    let failed = env
        .store()
        .await
        .list_jobs(None, None, 1)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(failed.state, State::Failed);

    let r = env.run(&["status"]).await;
    assert_eq!(r.code, 3, "{}", r.all());
    let named = r
        .stdout
        .lines()
        .find(|l| l.contains("last run failed at") && l.contains(&failed.id))
        .unwrap_or_else(|| panic!("no line names the failed job:\n{}", r.stdout));
    assert!(
        named.contains(&format!("policy `p`, instance small-replica ({SMALL})")),
        "{named}"
    );
    assert!(
        r.stdout
            .contains("0 verified copies at the destination, fewer than min_verified 1"),
        "{}",
        r.stdout
    );
    assert!(r.stderr.contains("need attention"), "{}", r.stderr);
    let v: serde_json::Value =
        serde_json::from_str(&env.run(&["status", "--json"]).await.stdout).unwrap();
    assert_eq!(v["healthy"], false);
    let last_run = &v["policies"][0]["instances"][0]["last_run"];
    assert_eq!(last_run["state"], "failed");
    assert_eq!(last_run["job_id"], failed.id.as_str());
    assert!(v["policies"][0]["instances"][0]["last_success"].is_null());
    env.sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_with_the_daemon_down_exits_3_and_says_where_it_looked() {
    let Some(env) = Env::new("status-down", "dir", &format!("uuid: {SMALL}"), "@yearly").await
    else {
        return;
    };
    let port = fixed_port(&env);
    let r = env.run(&["backup-now", "--policy", "p"]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    let started = Instant::now();
    let r = env.run(&["status"]).await;
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "bounded by the probe timeout"
    );
    let attention: Vec<&str> = r
        .stdout
        .lines()
        .skip_while(|l| *l != "needs attention:")
        .skip(1)
        .collect();
    assert_eq!(attention.len(), 1, "only the daemon: {}", r.stdout);
    assert!(
        attention[0].starts_with(&format!("  - daemon: not reachable at 127.0.0.1:{port}")),
        "{}",
        r.stdout
    );
    let v: serde_json::Value =
        serde_json::from_str(&env.run(&["status", "--json"]).await.stdout).unwrap();
    assert_eq!(v["daemon"]["state"], "unreachable");
    assert_eq!(v["daemon"]["address"], format!("127.0.0.1:{port}"));
    env.sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_job_mid_transfer_in_a_running_daemon_fails_it_and_leaves_no_upload() {
    let Some(env) = Env::new("cancel-daemon", "s3", &format!("uuid: {BIG}"), "@yearly").await
    else {
        return;
    };
    // About 1.3 MB/s: the 12 MiB backup takes ~10 s, its first 5 MiB part ~4 s.
    env.sim.add_fault(Fault::DownloadTrickle {
        count: None,
        chunk_bytes: 64 * 1024,
        every_millis: 50,
    });
    let id = pending_job(&env, BIG, "big-replica").await;
    let daemon = env.cmd(&["run"]).spawn().unwrap();
    let store = env.store().await;
    let mut seen = false;
    for _ in 0..600 {
        let shards = store.shards(&id).await.unwrap();
        if shards.iter().any(|s| s.upload_id.is_some()) && !env.uploads().await.is_empty() {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        seen,
        "no multipart upload of the job within 60 s: {:?}\n{:?}\n{:?}\n{:?}",
        store.job(&id).await.unwrap(),
        store.shards(&id).await.unwrap(),
        store.events(&id).await.unwrap(),
        env.uploads().await
    );

    let started = Instant::now();
    let r = env.run(&["jobs", "cancel", &id[..13]]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the daemon stopped the transfer promptly: {:?}",
        started.elapsed()
    );
    assert!(r.stderr.contains("waiting for daemon:"), "{}", r.all());
    assert!(
        r.stdout.contains(&format!(
            "job {id} cancelled: failed, cancelled by operator"
        )),
        "{}",
        r.all()
    );
    let job = store.job(&id).await.unwrap();
    assert_eq!(job.state, State::Failed);
    assert_eq!(job.error.as_deref(), Some("cancelled by operator"));
    assert!(env.uploads().await.is_empty(), "no multipart upload left");
    assert!(env.objects().await.is_empty(), "nothing visible");
    let kinds: Vec<String> = store
        .events(&id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert!(
        kinds.contains(&"cancel-requested".to_string()) && kinds.contains(&"cancelled".to_string()),
        "{kinds:?}"
    );
    assert_eq!(env.sim.calls("CreateBackup"), 1);

    // A cancelled job cannot be cancelled again; the same daemon keeps running jobs: a retry
    // of the cancelled one is picked up and stored.
    let r = env.run(&["jobs", "cancel", &id]).await;
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("already ended failed"), "{}", r.stderr);
    env.sim.shared.world().faults.clear();
    let r = env.run(&["jobs", "retry", &id]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    let retry = store.list_jobs(None, None, 1).await.unwrap().remove(0);
    assert_eq!(
        (retry.trigger.as_str(), retry.instance_uuid.as_str()),
        ("retry", BIG)
    );
    wait_until("the retry stored by the daemon", 90, || async {
        store.job(&retry.id).await.unwrap().state == State::Stored
    })
    .await;
    stop(&env, daemon).await;
    assert!(env.uploads().await.is_empty(), "no multipart upload left");
    env.assert_no_leaks();
    env.sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_backup_now_job_stops_it_from_another_process() {
    let Some(env) = Env::new("cancel-now", "dir", &format!("uuid: {BIG}"), "@yearly").await else {
        return;
    };
    env.sim.add_fault(Fault::DownloadTrickle {
        count: None,
        chunk_bytes: 64 * 1024,
        every_millis: 50,
    });
    let backup_now = env.cmd(&["backup-now", "--policy", "p"]).spawn().unwrap();
    let store = env.store().await;
    let mut id = None;
    for _ in 0..600 {
        let jobs = store.list_jobs(None, None, 1).await.unwrap();
        if let Some(j) = jobs.first().filter(|j| j.state == State::Transferring) {
            id = Some(j.id.clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let id = id.expect("the backup-now job reaches transferring");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = env.run(&["jobs", "cancel", &id]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    let out = tokio::time::timeout(Duration::from_secs(30), backup_now.wait_with_output())
        .await
        .expect("backup-now ends once its job is cancelled")
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("cancelled by operator"), "{text}");
    let partials = walk(&env.dir.path().join("archive"))
        .into_iter()
        .filter(|p| p.ends_with(".partial"))
        .count();
    assert_eq!(partials, 0, "the .partial file is removed");
    env.sim.stop().await;
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p.to_string_lossy().into_owned());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_pending_job_with_no_daemon_fails_it_at_once() {
    let Some(env) = Env::new("cancel-pending", "s3", &format!("uuid: {SMALL}"), "@yearly").await
    else {
        return;
    };
    let id = pending_job(&env, SMALL, "small-replica").await;
    let started = Instant::now();
    let r = env.run(&["jobs", "cancel", &id]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(r.stderr.contains("no live process owns job"), "{}", r.all());
    let job = env.store().await.job(&id).await.unwrap();
    assert_eq!(job.state, State::Failed);
    assert_eq!(job.error.as_deref(), Some("cancelled by operator"));
    assert_eq!(job.owner, None);
    assert_eq!(
        env.sim.calls("CreateBackup"),
        0,
        "nothing was asked of the provider"
    );
    let r = env.run(&["jobs", "cancel", "0000ffff-no-such-job"]).await;
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("no job matches"), "{}", r.stderr);
    env.sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrying_a_failed_job_makes_one_pending_job_and_refuses_a_second_while_it_is_open() {
    let Some(env) = Env::new("retry", "dir", &format!("uuid: {SMALL}"), "@yearly").await else {
        return;
    };
    env.sim.add_fault(Fault::BackupFails { count: Some(1) });
    let r = env.run(&["backup-now", "--policy", "p"]).await;
    assert_eq!(r.code, 3, "{}", r.all());
    let store = env.store().await;
    let failed = store.list_jobs(None, None, 1).await.unwrap().remove(0);
    assert_eq!(failed.state, State::Failed);

    let r = env.run(&["jobs", "retry", &failed.id]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    let new = store.list_jobs(None, None, 1).await.unwrap().remove(0);
    assert_ne!(new.id, failed.id);
    assert!(
        r.stdout
            .contains(&format!("job {} created: a retry of {}", new.id, failed.id)),
        "{}",
        r.stdout
    );
    // No daemon answers: it says how to run one in the foreground instead.
    assert!(r.stdout.contains("no daemon answers"), "{}", r.stdout);
    assert!(
        r.stdout.contains(&format!(
            "rdbvault -c {} backup-now --policy p --instance {SMALL}",
            env.config.display()
        )),
        "{}",
        r.stdout
    );
    assert_eq!(new.state, State::Pending);
    assert_eq!(new.trigger, "retry");
    assert_eq!(new.owner, None);
    assert_eq!(
        (
            new.policy.as_str(),
            new.instance_uuid.as_str(),
            new.destination.as_str()
        ),
        ("p", SMALL, "dir")
    );
    assert!(new.start_by > new.due_at && new.deadline_at > new.start_by);

    // While it is open: a second retry is refused (exit 4: nothing wrong with the request, the
    // instance is busy), naming it; the open one cannot be retried (exit 2).
    let r = env.run(&["jobs", "retry", &failed.id]).await;
    assert_eq!(r.code, 4, "{}", r.all());
    assert!(
        r.stderr
            .contains(&format!("already has an open job {} (pending", new.id)),
        "{}",
        r.stderr
    );
    let r = env.run(&["jobs", "retry", &new.id]).await;
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("is still pending"), "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "`rdbvault -c {} jobs cancel {}`",
            env.config.display(),
            new.id
        )),
        "hints name the config given with -c: {}",
        r.stderr
    );
    assert_eq!(
        store.list_jobs(None, None, 10).await.unwrap().len(),
        2,
        "one retry only"
    );
    env.sim.stop().await;
}
