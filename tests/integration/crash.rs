//! Crash points: the daemon is SIGKILLed at random moments across every job phase and
//! restarted; afterwards every job is `stored` or `failed` with a reason (or `missed`), each made
//! at most one `CreateBackup`, no multipart upload is left, every stored object verifies and
//! nothing is visible that is not stored.
//!
//! Kills land at random 0.5–6 s after a start, or (every third) shortly after a job reaches
//! snapshotting or transferring. `RDBVAULT_CRASH_KILLS` sets the number of kills (default 12, the CI "short mode"; the figures
//! in RELIABILITY.md come from 60). The table of kill phase against outcome is printed.

use super::pipeline::Env;
use rdbvault::sim::state::Fault;
use std::collections::BTreeMap;
use std::time::Duration;

fn kills() -> usize {
    std::env::var("RDBVAULT_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_loses_nothing_and_duplicates_nothing() {
    // Every instance, every 3 seconds, to S3 with multipart uploads (BIG is 12 MiB).
    let Some(env) = Env::new("crash", "s3", r#"name: "*""#, "*/3 * * * * *").await else {
        return;
    };
    // Slow enough that kills land in every phase: a slow CreateBackup, a provider that takes
    // its time, and a throttled download.
    env.sim.add_fault(Fault::Latency {
        action: "CreateBackup".into(),
        count: None,
        millis: 400,
    });
    env.sim.shared.world.lock().unwrap().settings.backup_delay = Duration::from_millis(1500);
    env.sim.add_fault(Fault::DownloadThrottle {
        count: None,
        bytes_per_second: 6 << 20,
    });
    let store = env.store().await;
    let mut rng = fastrand::Rng::with_seed(0x5eed_u64 ^ kills() as u64);
    let mut phase_at_kill: BTreeMap<String, Vec<String>> = BTreeMap::new();

    for k in 0..kills() {
        let mut daemon = env.cmd(&["run"]).spawn().unwrap();
        // Every third kill waits for a job in a given phase (snapshotting, then transferring),
        // so each phase is hit however slow the machine is; the others land at random.
        let target = match k % 3 {
            1 => Some("snapshotting"),
            2 => Some("transferring"),
            _ => None,
        };
        match target {
            Some(phase) => {
                for _ in 0..300 {
                    let jobs = store.list_jobs(None, None, 1000).await.unwrap();
                    if jobs.iter().any(|j| j.state == phase) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                tokio::time::sleep(Duration::from_millis(rng.u64(0..800))).await;
            }
            None => tokio::time::sleep(Duration::from_millis(rng.u64(500..6000))).await,
        }
        // What each open job was doing when the axe fell.
        for j in store.list_jobs(None, None, 1000).await.unwrap() {
            if !j.state.is_terminal() {
                phase_at_kill
                    .entry(j.id.clone())
                    .or_default()
                    .push(j.state.to_string());
            }
        }
        daemon.start_kill().unwrap();
        let out = daemon.wait_with_output().await.unwrap();
        env.record(&String::from_utf8_lossy(&out.stderr));
    }

    // Let a final daemon finish everything that is open, with no new runs and no faults.
    env.sim.shared.world.lock().unwrap().faults.clear();
    let text = std::fs::read_to_string(&env.config)
        .unwrap()
        .replace(r#"cron: "*/3 * * * * *""#, r#"cron: "@yearly""#);
    std::fs::write(&env.config, text).unwrap();
    let mut daemon = env.cmd(&["run"]).spawn().unwrap();
    let mut open = usize::MAX;
    for _ in 0..1800 {
        open = store
            .list_jobs(None, None, 10_000)
            .await
            .unwrap()
            .iter()
            .filter(|j| !j.state.is_terminal())
            .count();
        if open == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    crate::support::signal(&daemon, "-TERM");
    let _ = tokio::time::timeout(Duration::from_secs(30), daemon.wait()).await;
    let out = daemon.wait_with_output().await.unwrap();
    env.record(&String::from_utf8_lossy(&out.stderr));
    if open != 0 {
        for j in store.list_jobs(None, None, 10_000).await.unwrap() {
            if !j.state.is_terminal() {
                let events = store.events(&j.id).await.unwrap();
                eprintln!(
                    "OPEN {} {} owner={:?} events={events:#?}",
                    j.id, j.state, j.owner
                );
            }
        }
    }
    assert_eq!(open, 0, "every job ends");

    let jobs = store.list_jobs(None, None, 10_000).await.unwrap();
    let creates = env.sim.shared.world.lock().unwrap().creates_by_desc.clone();
    let mut table: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut stored_keys = std::collections::BTreeSet::new();
    for j in &jobs {
        let made = creates.get(&j.token()).copied().unwrap_or(0);
        assert!(made <= 1, "job {} made {made} CreateBackup calls", j.id);
        match j.state.as_str() {
            "stored" => {
                assert_eq!(made, 1, "a stored job made its backup exactly once");
                for s in store.shards(&j.id).await.unwrap() {
                    let key = s.object_key.unwrap();
                    stored_keys.insert(format!("{key}.manifest.json"));
                    stored_keys.insert(key);
                }
            }
            "failed" => assert!(
                j.error.as_deref().is_some_and(|e| !e.is_empty()),
                "failed without a reason: {j:?}"
            ),
            "missed" => assert_eq!(made, 0, "a missed job asked for no backup"),
            other => panic!("job {} ended {other}", j.id),
        }
        for phase in phase_at_kill.get(&j.id).into_iter().flatten() {
            *table
                .entry((phase.clone(), j.state.to_string()))
                .or_default() += 1;
        }
    }
    assert!(env.uploads().await.is_empty(), "no multipart upload left");
    let visible: std::collections::BTreeSet<String> = env.objects().await.into_iter().collect();
    let stray: Vec<_> = visible.difference(&stored_keys).collect();
    assert!(
        stray.is_empty(),
        "visible objects that are not stored copies: {stray:?}"
    );
    if !stored_keys.is_empty() {
        let r = env.run(&["verify", "--all"]).await;
        assert_eq!(r.code, 0, "every stored object verifies:\n{}", r.all());
    }
    env.assert_no_leaks();

    let kill_points: usize = table.values().sum();
    println!(
        "\ncrash points: {} kills, {kill_points} (job, phase) kill points, {} jobs",
        kills(),
        jobs.len()
    );
    println!("{:<14} {:<8} {:>6}", "KILLED WHILE", "ENDED", "COUNT");
    for ((phase, outcome), n) in &table {
        println!("{phase:<14} {outcome:<8} {n:>6}");
    }
    let phases: std::collections::BTreeSet<_> = table.keys().map(|(p, _)| p.as_str()).collect();
    println!("phases reached: {phases:?}");
    assert!(
        phases.contains("transferring"),
        "kills reached the transfer phase: {phases:?}"
    );
    env.sim.stop().await;
}
