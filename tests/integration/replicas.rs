//! Replicas sharing one state DB: retention under a lease deletes nothing once the lease is
//! gone (a replica paused past it, another took over), and does its work while held.

use super::pipeline::{Env, SMALL};
use rdbvault::prune::{Mode, prune_policy};
use rdbvault::store::ms;
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_retention_lease_was_taken_over_deletes_nothing() {
    let Some(env) = Env::new("fence", "dir", &format!("uuid: {SMALL}"), "@yearly").await else {
        return;
    };
    env.edit_config(
        "retention: { destination: { keep_last: 3 } }",
        "retention: { destination: { keep_last: 1 } }",
    );
    for _ in 0..3 {
        assert_eq!(env.run(&["backup-now", "--policy", "p"]).await.code, 0);
    }
    let cfg = Arc::new(rdbvault::config::load(&env.config).unwrap());
    let metrics = rdbvault::metrics::Metrics::register(prometheus::Registry::new()).unwrap();
    let ctx = rdbvault::services::open(cfg.clone(), "replica-a".into(), metrics)
        .await
        .unwrap();
    let policy = &cfg.policies[0];
    let now = ms(chrono::Utc::now());

    // Replica A took the lease, then was paused past it; replica B holds it now.
    let a = ctx
        .store
        .acquire_lease("retention", "replica-a", now - 120_000, now - 60_000)
        .await
        .unwrap()
        .unwrap();
    let b = ctx
        .store
        .acquire_lease("retention", "replica-b", now, now + 60_000)
        .await
        .unwrap()
        .unwrap();
    assert!(b.epoch > a.epoch);
    let paused = rdbvault::services::Context {
        deletion_fence: Some(a),
        ..ctx.clone()
    };
    let report = prune_policy(&paused, policy, None, Mode::Delete)
        .await
        .unwrap();
    let planned: Vec<_> = report.rows.iter().filter(|r| !r.keep).collect();
    assert_eq!(planned.len(), 2, "keep_last 1 of 3 would delete two sets");
    for r in &planned {
        let why = r.deleted.clone().unwrap().unwrap_err();
        assert!(
            why.contains("no longer holds the `retention` lease"),
            "{why}"
        );
    }
    let live = |store: &rdbvault::store::Store| {
        let store = store.clone();
        async move { store.destination_copies().await.unwrap().len() }
    };
    assert_eq!(
        live(&ctx.store).await,
        3,
        "the paused replica deleted nothing"
    );

    // Under the lease it holds, B does the same work.
    let holder = rdbvault::services::Context {
        deletion_fence: Some(b),
        ..ctx.clone()
    };
    let report = prune_policy(&holder, policy, None, Mode::Delete)
        .await
        .unwrap();
    assert_eq!(
        report
            .rows
            .iter()
            .filter(|r| matches!(r.deleted, Some(Ok(()))))
            .count(),
        2
    );
    assert_eq!(live(&ctx.store).await, 1);
    env.sim.stop().await;
}

/// The pid in a daemon's owner id (`daemon:<host>:<pid>:<uuid>`).
fn owner_pid(owner: &str) -> Option<u32> {
    owner.split(':').nth(2)?.parse().ok()
}

/// Polls the state DB until `found` picks a job, for at most `limit`.
async fn wait_for_job(
    store: &rdbvault::store::Store,
    limit: std::time::Duration,
    found: impl Fn(&rdbvault::store::JobRow) -> bool,
) -> rdbvault::store::JobRow {
    let start = std::time::Instant::now();
    loop {
        let jobs = store.list_jobs(None, None, 10_000).await.unwrap();
        if let Some(j) = jobs.into_iter().find(|j| found(j)) {
            return j;
        }
        assert!(start.elapsed() < limit, "no such job within {limit:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_and_sixty_instances_make_one_job_per_run_and_take_over_killed_ones() {
    use crate::support::{AK, SECRET, write_private};
    use rdbvault::sim::state::{Fault, InstanceSpec};
    use std::time::Duration;
    let mut sim_cfg = crate::support::sim_config();
    const INSTANCES: usize = 60;
    sim_cfg.settings.backup_delay = Duration::from_millis(1500);
    sim_cfg.instances = Some(
        (0..INSTANCES)
            .map(|i| InstanceSpec {
                name: format!("fleet-{i:02}"),
                backup_size: Some(512 << 10),
                ..Default::default()
            })
            .collect(),
    );
    let sim = crate::support::start_sim(sim_cfg).await;
    // About a second per download: a transfer is long enough to be killed in.
    sim.add_fault(Fault::DownloadThrottle {
        count: None,
        bytes_per_second: 512 << 10,
    });
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_private(&d.join("cds_id"), AK);
    write_private(&d.join("cds_secret"), SECRET);
    std::fs::create_dir_all(d.join("archive")).unwrap();
    let config = d.join("rdbvault.yaml");
    std::fs::write(
        &config,
        format!(
            "cds:\n  endpoint: {e}\n  access_key_id_file: {d}/cds_id\n  access_key_secret_file: {d}/cds_secret\n  poll_interval: 200ms\n  poll_max_interval: 500ms\n{state}  job_lease: 3s\nhttp:\n  listen: 127.0.0.1:0\nlimits:\n  max_concurrent_jobs: 30\n  max_concurrent_transfers: 30\ndestinations:\n  dir: {{ type: file, path: {d}/archive }}\npolicies:\n  - name: p\n    schedule: {{ cron: \"*/10 * * * * *\", start_window: 9s, completion_window: 2m }}\n    instances: [ {{ name: \"fleet-*\" }} ]\n    destination: dir\n    retention: {{ destination: {{ keep_last: 1000 }} }}\n",
            e = sim.base_url,
            d = d.display(),
            state = crate::support::state_yaml(d),
        ),
    )
    .unwrap();
    let spawn = || {
        let mut c = crate::support::rdbvault();
        c.arg("-c").arg(&config).arg("run");
        let mut c = tokio::process::Command::from(c);
        c.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        c.spawn().unwrap()
    };
    let mut replicas: Vec<_> = (0..3).map(|_| spawn()).collect();
    let store = crate::support::open_store(d).await;
    let pid_of = |c: &tokio::process::Child| c.id().unwrap();
    let alive = |replicas: &Vec<tokio::process::Child>, pid: u32| {
        replicas.iter().any(|c| c.id() == Some(pid))
    };

    // SIGKILL the owner of a job in mid-transfer, then the owner of one mid-snapshot.
    let mut killed = Vec::new();
    for phase in ["transferring", "snapshotting"] {
        let job = wait_for_job(&store, Duration::from_secs(60), |j| {
            j.state == phase
                && j.owner
                    .as_deref()
                    .and_then(owner_pid)
                    .is_some_and(|p| alive(&replicas, p))
        })
        .await;
        let pid = job.owner.as_deref().and_then(owner_pid).unwrap();
        let i = replicas.iter().position(|c| pid_of(c) == pid).unwrap();
        let mut victim = replicas.remove(i);
        victim.start_kill().unwrap();
        let _ = victim.wait().await;
        killed.push((job, std::time::Instant::now()));
    }
    let killed_at = rdbvault::store::ms(chrono::Utc::now());

    // Taken over within the lease (3 s) and one dispatch round (1 s), with 2 s for a loaded
    // machine: the job's owner is then the survivor.
    let survivor_pid = pid_of(&replicas[0]);
    for (job, at) in &killed {
        let taken = wait_for_job(&store, Duration::from_secs(30), |j| {
            j.id == job.id
                && (j.owner.as_deref().and_then(owner_pid) == Some(survivor_pid)
                    || j.state.is_terminal())
        })
        .await;
        let took = at.elapsed();
        eprintln!("job {} ({}) taken over in {took:?}", job.id, job.state);
        assert!(
            took <= Duration::from_secs(6),
            "job {} was taken over {took:?} after its owner died (state {})",
            job.id,
            taken.state
        );
    }

    // The survivor takes both jobs over (after their owners' 3 s lease) and finishes them.
    for (job, _) in &killed {
        let done = wait_for_job(&store, Duration::from_secs(90), |j| {
            j.id == job.id && j.state.is_terminal()
        })
        .await;
        assert_eq!(done.state, "stored", "{}: {:?}", done.id, done.error);
    }
    // Every run due before the kills ended has one stored job per instance, and then the
    // survivor stops.
    let settled = killed_at + 10_000;
    loop {
        let jobs = store.list_jobs(None, None, 10_000).await.unwrap();
        if jobs
            .iter()
            .filter(|j| j.due_at <= settled)
            .all(|j| j.state.is_terminal())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let survivor = replicas.remove(0);
    crate::support::signal(&survivor, "-TERM");
    let _ = tokio::time::timeout(Duration::from_secs(40), survivor.wait_with_output()).await;

    let jobs = store.list_jobs(None, None, 10_000).await.unwrap();
    let mut runs = std::collections::HashMap::new();
    for j in &jobs {
        *runs.entry((j.instance_uuid.clone(), j.due_at)).or_insert(0) += 1;
    }
    assert!(
        runs.values().all(|n| *n == 1),
        "a run made two jobs: {runs:?}"
    );
    let before: Vec<_> = jobs.iter().filter(|j| j.due_at <= settled).collect();
    assert!(
        before.len() >= INSTANCES,
        "at least one run of the {INSTANCES} instances"
    );
    for j in &before {
        assert_eq!(j.state, "stored", "{} {}: {:?}", j.id, j.state, j.error);
    }
    let creates = sim.shared.world.lock().unwrap().creates_by_desc.clone();
    assert!(
        creates.values().all(|n| *n == 1),
        "a job sent CreateBackup twice: {creates:?}"
    );
    let partial = walk(&d.join("archive"))
        .iter()
        .filter(|p| p.to_string_lossy().ends_with(".partial"))
        .count();
    assert_eq!(partial, 0, "no half-written file is left");
    store.close().await;
    sim.stop().await;
}

/// A `run` replica of `env`'s config whose stderr goes to `log`.
fn spawn_replica(env: &Env, log: &std::path::Path) -> tokio::process::Child {
    let mut c = crate::support::rdbvault();
    c.arg("-c").arg(&env.config).arg("run");
    let mut c = tokio::process::Command::from(c);
    c.stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .kill_on_drop(true);
    c.spawn().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prune_leader_stopped_past_its_lease_deletes_nothing_after_it_continues() {
    use rdbvault::sim::state::Fault;
    use std::time::Duration;
    let Some(env) = Env::new("stopped", "dir", &format!("uuid: {SMALL}"), "@yearly").await else {
        return;
    };
    for _ in 0..4 {
        assert_eq!(env.run(&["backup-now", "--policy", "p"]).await.code, 0);
    }
    // Retention to apply on both sides; each DeleteBackup answered after 2 s, so the leader
    // is stopped in the middle of its deletions.
    env.edit_config(
        "retention: { destination: { keep_last: 3 } }",
        "retention: { destination: { keep_last: 1 }, provider: { keep_last: 1 } }",
    );
    env.sim.add_fault(Fault::Latency {
        action: "DeleteBackup".into(),
        count: None,
        millis: 2000,
    });
    let d = env.dir.path();
    let store = crate::support::open_store(d).await;
    let deletes = || env.sim.calls("DeleteBackup");
    let files = || {
        let mut f = walk(&d.join("archive"));
        f.sort();
        f
    };

    // Replica A starts the daily upkeep (5 s after its start) and is stopped once its first
    // DeleteBackup was answered: it holds the lease, more deletions planned.
    let a_log = d.join("replica-a.log");
    let mut a = spawn_replica(&env, &a_log);
    let start = std::time::Instant::now();
    while deletes() == 0 {
        assert!(start.elapsed() < Duration::from_secs(60), "A never deleted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    crate::support::signal(&a, "-STOP");
    // Past its lease (state.job_lease 3 s), then replica B starts and does the upkeep.
    tokio::time::sleep(Duration::from_secs(4)).await;
    env.sim.shared.world().faults.clear();
    let at_stop = deletes();
    let b_log = d.join("replica-b.log");
    let mut b = spawn_replica(&env, &b_log);
    let b_pid = b.id().unwrap();
    let start = std::time::Instant::now();
    loop {
        let now = rdbvault::store::ms(chrono::Utc::now());
        let done = store.lease_holder("retention:done", now).await.unwrap();
        if done.is_some_and(|(holder, ..)| owner_pid(&holder) == Some(b_pid)) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "B never finished the upkeep"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let by_b = deletes();
    let files_after_b = files();
    assert!(by_b > at_stop, "B made the deletions A left");
    assert_eq!(
        files_after_b
            .iter()
            .filter(|p| p.to_string_lossy().ends_with(".rdb"))
            .count(),
        1,
        "keep_last 1 at the destination"
    );

    // A continues: it must not delete anything more, on either side.
    crate::support::signal(&a, "-CONT");
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(deletes(), by_b, "the continued replica sent DeleteBackup");
    assert_eq!(
        files(),
        files_after_b,
        "the continued replica deleted files"
    );
    let a_said = std::fs::read_to_string(&a_log).unwrap();
    assert!(
        a_said.contains("no longer holds the `retention` lease"),
        "A's log says why it stopped deleting:\n{a_said}"
    );
    for r in [&a, &b] {
        crate::support::signal(r, "-TERM");
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), a.wait()).await;
    let _ = tokio::time::timeout(Duration::from_secs(30), b.wait()).await;
    store.close().await;
    env.sim.stop().await;
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_exports_the_fleets_last_success_whoever_ran_the_job() {
    let Some(env) = Env::new("fleet", "dir", &format!("uuid: {SMALL}"), "@yearly").await else {
        return;
    };
    // Stored by another process (a backup-now, or another replica).
    assert_eq!(env.run(&["backup-now", "--policy", "p"]).await.code, 0);
    let cfg = Arc::new(rdbvault::config::load(&env.config).unwrap());
    let registry = prometheus::Registry::new();
    let metrics = rdbvault::metrics::Metrics::register(registry.clone()).unwrap();
    let replica = rdbvault::services::open(cfg, "replica-b".into(), metrics)
        .await
        .unwrap();
    rdbvault::daemon::maintenance::refresh_fleet_gauges(&replica)
        .await
        .unwrap();
    let job = &replica.store.list_jobs(None, None, 1).await.unwrap()[0];
    let gauge = |name: &str| {
        registry
            .gather()
            .into_iter()
            .find(|f| f.name() == name)
            .and_then(|f| {
                f.get_metric()
                    .iter()
                    .find(|m| m.get_label().iter().any(|l| l.value() == SMALL))
                    .map(|m| m.get_gauge().get_value())
            })
    };
    assert_eq!(
        gauge("rdbvault_backup_last_success_timestamp_seconds"),
        Some(job.finished_at.unwrap() as f64 / 1000.0)
    );
    assert_eq!(
        gauge("rdbvault_backup_last_size_bytes"),
        Some(job.bytes as f64)
    );
    env.sim.stop().await;
}

/// A PostgreSQL cluster of this test's own (so it can be restarted without disturbing the
/// others), stopped when dropped.
struct OwnCluster {
    dir: String,
    url: String,
}

impl OwnCluster {
    fn start() -> OwnCluster {
        let script = crate::support::repo_root().join("scripts/pg-test-cluster.sh");
        let out = std::process::Command::new(&script)
            .arg("start")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let value = |key: &str| {
            text.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{key}=")))
                .unwrap()
                .to_string()
        };
        OwnCluster {
            dir: value("PGTEST_DIR"),
            url: value("RDBVAULT_TEST_PG_URL"),
        }
    }

    /// Down for `secs`, every connection dropped, then up again on the same port.
    fn restart(&self, secs: u32) {
        let script = crate::support::repo_root().join("scripts/pg-test-cluster.sh");
        let out = std::process::Command::new(&script)
            .args(["restart", &self.dir, &secs.to_string()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let script = crate::support::repo_root().join("scripts/pg-test-cluster.sh");
        let _ = std::process::Command::new(&script)
            .args(["stop", &self.dir])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_under_load_loses_and_doubles_no_job() {
    use crate::support::{AK, SECRET, write_private};
    use rdbvault::sim::state::{Fault, InstanceSpec};
    use std::time::Duration;
    // The PostgreSQL pass's (its tools are there); the cluster is this test's own.
    if crate::support::pg_server().is_none() {
        return;
    }
    let cluster = OwnCluster::start();
    let mut sim_cfg = crate::support::sim_config();
    sim_cfg.settings.backup_delay = Duration::from_millis(1000);
    sim_cfg.instances = Some(
        (0..6)
            .map(|i| InstanceSpec {
                name: format!("db-{i}"),
                backup_size: Some(2 << 20),
                ..Default::default()
            })
            .collect(),
    );
    let sim = crate::support::start_sim(sim_cfg).await;
    sim.add_fault(Fault::DownloadThrottle {
        count: None,
        bytes_per_second: 2 << 20,
    });
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_private(&d.join("cds_id"), AK);
    write_private(&d.join("cds_secret"), SECRET);
    std::fs::create_dir_all(d.join("archive")).unwrap();
    let config = d.join("rdbvault.yaml");
    std::fs::write(
        &config,
        format!(
            "cds:\n  endpoint: {e}\n  access_key_id_file: {d}/cds_id\n  access_key_secret_file: {d}/cds_secret\n  poll_interval: 200ms\n  poll_max_interval: 500ms\nstate:\n  url: {url}\n  job_lease: 3s\nhttp:\n  listen: 127.0.0.1:0\nlimits:\n  max_concurrent_jobs: 3\n  max_concurrent_transfers: 3\ndestinations:\n  dir: {{ type: file, path: {d}/archive }}\npolicies:\n  - name: p\n    schedule: {{ cron: \"*/10 * * * * *\", start_window: 9s, completion_window: 2m }}\n    instances: [ {{ name: \"db-*\" }} ]\n    destination: dir\n    retention: {{ destination: {{ keep_last: 1000 }} }}\n",
            e = sim.base_url,
            d = d.display(),
            url = cluster.url,
        ),
    )
    .unwrap();
    let spawn = || {
        let mut c = crate::support::rdbvault();
        c.arg("-c").arg(&config).arg("run");
        let mut c = tokio::process::Command::from(c);
        c.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        c.spawn().unwrap()
    };
    let replicas: Vec<_> = (0..2).map(|_| spawn()).collect();
    let state = rdbvault::config::StateConfig {
        path: d.join("unused.db"),
        url: Some(cluster.url.clone()),
        password_file: None,
        job_lease: Duration::from_secs(3),
    };
    let store = rdbvault::store::Store::connect(&state).await.unwrap();
    // Under load: jobs in flight when the database goes away for 3 s.
    wait_for_job(&store, Duration::from_secs(60), |j| {
        j.state == "transferring"
    })
    .await;
    store.close().await;
    cluster.restart(3);
    let restarted_at = rdbvault::store::ms(chrono::Utc::now());
    let store = rdbvault::store::Store::connect(&state).await.unwrap();

    // The replicas reconnect: runs after the restart get their jobs, and every job due before
    // it ends stored.
    let settled = restarted_at + 10_000;
    let start = std::time::Instant::now();
    loop {
        let jobs = store.list_jobs(None, None, 10_000).await.unwrap();
        let after = jobs.iter().filter(|j| j.due_at > settled).count();
        if after >= 6
            && jobs
                .iter()
                .filter(|j| j.due_at <= settled)
                .all(|j| j.state.is_terminal())
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the replicas did not carry on after the restart: {:?}",
            jobs.iter()
                .map(|j| (&j.id, j.state, &j.error))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for r in &replicas {
        crate::support::signal(r, "-TERM");
    }
    for r in replicas {
        let _ = tokio::time::timeout(Duration::from_secs(40), r.wait_with_output()).await;
    }
    let jobs = store.list_jobs(None, None, 10_000).await.unwrap();
    let mut runs = std::collections::HashMap::new();
    for j in &jobs {
        *runs.entry((j.instance_uuid.clone(), j.due_at)).or_insert(0) += 1;
    }
    assert!(
        runs.values().all(|n| *n == 1),
        "a run made two jobs: {runs:?}"
    );
    for j in jobs.iter().filter(|j| j.due_at <= settled) {
        assert_eq!(j.state, "stored", "{} {}: {:?}", j.id, j.state, j.error);
    }
    let creates = sim.shared.world.lock().unwrap().creates_by_desc.clone();
    assert!(
        creates.values().all(|n| *n == 1),
        "a job sent CreateBackup twice: {creates:?}"
    );
    store.close().await;
    sim.stop().await;
}
