//! What a first week of real use finds (the runner's part): a lost `CreateBackup` is sent again,
//! a flipped byte gets a second download, two policies on one instance queue instead of
//! starving each other, and failed jobs' provider backups can be reclaimed by an explicit rule.

use super::pipeline::{Env, SMALL};
use rdbvault::sim::state::Fault;

fn create_fails(count: Option<u32>) -> Fault {
    Fault::ApiError {
        action: "CreateBackup".into(),
        count,
        status: 500,
        code: "InternalError".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_backup_lost_to_a_500_is_sent_again_after_a_bounded_search() {
    let Some(env) = Env::new("resend", "dir", &format!("uuid: {SMALL}"), "@yearly").await else {
        return;
    };
    env.sim.add_fault(create_fails(Some(1)));
    let started = std::time::Instant::now();
    let r = env.run(&["backup-now", "--policy", "p"]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(45),
        "stored within the start window, not after it: {:?}",
        started.elapsed()
    );
    assert_eq!(
        env.sim.calls("CreateBackup"),
        2,
        "one lost send, one resend"
    );
    let store = env.store().await;
    let job = store.list_jobs(None, None, 1).await.unwrap().remove(0);
    assert_eq!(job.attempts, 2, "the journal counts each send");
    let events = store.events(&job.id).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == "resend" && e.message.contains("InternalError")),
        "{events:?}"
    );
    env.sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_backup_that_never_takes_effect_fails_with_its_cause_when_the_window_closes() {
    let Some(env) = Env::new("resend-fail", "dir", &format!("uuid: {SMALL}"), "@yearly").await
    else {
        return;
    };
    env.edit_config("start_window: 1m", "start_window: 24s");
    env.sim.add_fault(create_fails(None));
    let started = std::time::Instant::now();
    let r = env.run(&["backup-now", "--policy", "p"]).await;
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "fails when the start window closes, not at the completion deadline: {:?}",
        started.elapsed()
    );
    let store = env.store().await;
    let job = store.list_jobs(None, None, 1).await.unwrap().remove(0);
    let error = job.error.clone().unwrap_or_default();
    assert!(
        error.contains("start window closed") && error.contains("InternalError"),
        "the real cause, not `deadline exceeded`: {error}"
    );
    assert!(!error.contains("deadline exceeded"), "{error}");
    assert!(
        env.sim.calls("CreateBackup") >= 3,
        "sent again while the window was open"
    );
    env.sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_flipped_byte_in_transit_gets_a_fresh_download_instead_of_failing_the_night() {
    for destination in ["dir", "s3"] {
        let Some(env) = Env::new("reflip", destination, &format!("uuid: {SMALL}"), "@yearly").await
        else {
            return;
        };
        env.sim.add_fault(Fault::DownloadCorrupt {
            count: Some(1),
            offset: Some(1000),
        });
        let r = env.run(&["backup-now", "--policy", "p"]).await;
        assert_eq!(r.code, 0, "{destination}: {}", r.all());
        assert_eq!(env.sim.shared.world.lock().unwrap().corruptions_served, 1);
        let store = env.store().await;
        let job = store.list_jobs(None, None, 1).await.unwrap().remove(0);
        let events = store.events(&job.id).await.unwrap();
        assert!(
            events.iter().any(|e| e.kind == "retry"
                && e.message.contains("failed verification")
                && e.message.contains("checksum mismatch")),
            "the mismatch is journaled: {events:?}"
        );
        let shard = &store.shards(&job.id).await.unwrap()[0];
        let stored = match destination {
            "dir" => std::fs::read(
                env.dir
                    .path()
                    .join("archive")
                    .join(shard.object_key.as_ref().unwrap()),
            )
            .unwrap(),
            _ => env.get(shard.object_key.as_ref().unwrap()).await,
        };
        assert!(stored == env.provider_bytes(SMALL, &shard.backup_id).await);

        // A backup that is bad every time fails after a bounded number of downloads.
        env.sim.add_fault(Fault::DownloadCorrupt {
            count: None,
            offset: Some(1000),
        });
        let served_before = env.sim.shared.world.lock().unwrap().corruptions_served;
        let r = env.run(&["backup-now", "--policy", "p"]).await;
        assert_eq!(r.code, 3, "{}", r.all());
        let served = env.sim.shared.world.lock().unwrap().corruptions_served - served_before;
        assert_eq!(served, 3, "three downloads, then the job fails");
        let job = store.list_jobs(None, None, 1).await.unwrap().remove(0);
        assert!(
            job.error.as_deref().unwrap_or("").contains("3 download(s)"),
            "{:?}",
            job.error
        );
        env.sim.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_policies_on_one_instance_queue_instead_of_skipping_each_other() {
    let Some(env) = Env::new("queue", "dir", &format!("uuid: {SMALL}"), "*/2 * * * * *").await
    else {
        return;
    };
    // A second policy for the same instance, to S3; its jittered run is pending, due in 10 s.
    let mut text = std::fs::read_to_string(&env.config).unwrap();
    text.push_str(&format!(
        "  - name: daily\n    schedule: {{ cron: \"@yearly\", start_window: 1m, completion_window: 5m, catch_up: none }}\n    instances:\n      - uuid: {SMALL}\n    destination: s3\n    retention: {{ destination: {{ keep_last: 3 }} }}\n"
    ));
    std::fs::write(&env.config, text).unwrap();
    let store = env.store().await;
    let now = chrono::Utc::now();
    let due = now + chrono::Duration::seconds(10);
    let daily = rdbvault::store::jobs::NewJob {
        id: uuid::Uuid::now_v7().to_string(),
        policy: "daily".into(),
        instance_uuid: SMALL.into(),
        instance_name: "small-replica".into(),
        region_id: String::new(),
        destination: "s3".into(),
        trigger: "schedule",
        due_at: rdbvault::store::ms(due),
        start_by: rdbvault::store::ms(due + chrono::Duration::minutes(1)),
        deadline_at: rdbvault::store::ms(due + chrono::Duration::minutes(5)),
        created_at: rdbvault::store::ms(now),
        owner: None,
        schedule_key: None,
    };
    assert_eq!(
        store.insert_job(&daily).await.unwrap(),
        rdbvault::store::jobs::Inserted::Created
    );
    let mut daemon = env.cmd(&["run"]).spawn().unwrap();
    let mut waited = 0;
    loop {
        let jobs = store.list_jobs(None, None, 100).await.unwrap();
        let frequent = jobs
            .iter()
            .filter(|j| j.policy == "p" && j.state == "stored")
            .count();
        let daily_done = jobs.iter().any(|j| j.id == daily.id && j.state == "stored");
        if frequent >= 2 && daily_done {
            break;
        }
        waited += 1;
        assert!(
            waited < 600,
            "both policies must get their backups: {} of p stored, daily {:?}",
            frequent,
            jobs.iter().find(|j| j.id == daily.id).map(|j| j.state)
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    crate::support::signal(&daemon, "-TERM");
    let _ = tokio::time::timeout(std::time::Duration::from_secs(30), daemon.wait()).await;
    // The frequent policy was not skipped while the other's job waited for its due time.
    let first_frequent = store
        .list_jobs(Some("p"), None, 100)
        .await
        .unwrap()
        .iter()
        .map(|j| j.created_at)
        .min()
        .unwrap();
    assert!(
        first_frequent < daily.due_at,
        "policy p got no job while daily's job was pending"
    );
    // Never two backups of the instance at once: the provider makes one at a time.
    let mut spans: Vec<(i64, i64, String)> = store
        .list_jobs(None, None, 100)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|j| Some((j.create_sent_at?, j.finished_at?, j.policy)))
        .collect();
    spans.sort();
    for w in spans.windows(2) {
        assert!(
            w[0].1 <= w[1].0,
            "jobs of one instance overlapped: {:?} and {:?}",
            w[0],
            w[1]
        );
    }
    env.sim.stop().await;
}

/// Backup ids at the provider for SMALL that carry `token`.
async fn provider_ids_with(env: &Env, token: &str) -> Vec<String> {
    let (c, _) = crate::support::client(&env.sim);
    c.describe_backups(SMALL)
        .await
        .unwrap()
        .into_iter()
        .filter(|b| b.desc == token)
        .map(|b| b.backup_id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reclaim_uncopied_after_deletes_old_failed_backups_but_never_the_newest() {
    let Some(env) = Env::new("reclaim", "dir", &format!("uuid: {SMALL}"), "@yearly").await else {
        return;
    };
    env.edit_config("retention: { destination: { keep_last: 3 } }",
        "retention: { destination: { keep_last: 3 }, provider: { keep_last: 5, reclaim_uncopied_after: 1s } }",
    );
    let corrupt = || Fault::DownloadCorrupt {
        count: None,
        offset: Some(1000),
    };
    let store = env.store().await;
    let newest_token = |store: rdbvault::store::Store| async move {
        store
            .list_jobs(None, None, 1)
            .await
            .unwrap()
            .remove(0)
            .token()
    };
    // A failed job (its backup never verified), then a good one.
    env.sim.add_fault(corrupt());
    assert_eq!(env.run(&["backup-now", "--policy", "p"]).await.code, 3);
    let failed = newest_token(store.clone()).await;
    env.sim.shared.world.lock().unwrap().faults.clear();
    assert_eq!(env.run(&["backup-now", "--policy", "p"]).await.code, 0);
    let good = newest_token(store.clone()).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;

    let r = env.run(&["prune", "--dry-run"]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.lines().any(|l| l.contains("would delete")
            && l.contains("reclaim_uncopied_after 1s")
            && l.contains(&failed.trim_start_matches("rdbvault:")[..8])),
        "{}",
        r.stdout
    );
    assert_eq!(provider_ids_with(&env, &failed).await.len(), 1, "a dry run");

    let r = env.run(&["prune"]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        provider_ids_with(&env, &failed).await.is_empty(),
        "{}",
        r.stdout
    );
    assert_eq!(provider_ids_with(&env, &good).await.len(), 1);

    // A failed job whose backup is the instance's newest is never reclaimed.
    env.sim.add_fault(corrupt());
    assert_eq!(env.run(&["backup-now", "--policy", "p"]).await.code, 3);
    let newest_failed = newest_token(store.clone()).await;
    env.sim.shared.world.lock().unwrap().faults.clear();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let r = env.run(&["prune"]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(
        provider_ids_with(&env, &newest_failed).await.len(),
        1,
        "{}",
        r.stdout
    );
    env.sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_backup_unknown_to_this_state_db_is_listed_once_and_never_planned() {
    let Some(env) = Env::new("unknown", "dir", &format!("uuid: {SMALL}"), "@yearly").await else {
        return;
    };
    let mut text = std::fs::read_to_string(&env.config).unwrap();
    text.push_str(&format!(
        "  - name: q\n    schedule: {{ cron: \"@yearly\", start_window: 1m, completion_window: 5m, catch_up: none }}\n    instances:\n      - uuid: {SMALL}\n    destination: dir\n    retention: {{ destination: {{ keep_last: 3 }}, provider: {{ keep_last: 1 }} }}\n"
    ));
    std::fs::write(&env.config, text).unwrap();
    env.edit_config(
        "retention: { destination: { keep_last: 3 } }",
        "retention: { destination: { keep_last: 3 }, provider: { keep_last: 1 } }",
    );
    for policy in ["p", "q"] {
        let r = env.run(&["backup-now", "--policy", policy]).await;
        assert_eq!(r.code, 0, "{}", r.all());
    }
    // Another rdbvault (or a replaced state DB) made this one.
    let (c, _) = crate::support::client(&env.sim);
    c.create_backup(SMALL, "rdbvault:0190aaaa-not-in-this-db")
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;

    let r = env.run(&["backups", "--json"]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let unknown = v["unknown_to_state_db"].as_array().unwrap();
    assert_eq!(
        unknown.len(),
        1,
        "listed once, not once per policy: {unknown:?}"
    );
    assert_eq!(unknown[0]["job_id"], "0190aaaa-not-in-this-db");
    assert!(
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .all(|row| row["set"] != "0190aaaa-not-in-this-db"),
        "not planned under any policy"
    );
    let r = env.run(&["backups"]).await;
    assert_eq!(
        r.stdout.matches("unknown to this state DB").count(),
        1,
        "{}",
        r.stdout
    );
    // Prune never touches it.
    let r = env.run(&["prune"]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    let still: Vec<_> = c
        .describe_backups(SMALL)
        .await
        .unwrap()
        .into_iter()
        .filter(|b| b.desc == "rdbvault:0190aaaa-not-in-this-db")
        .collect();
    assert_eq!(still.len(), 1);
    env.sim.stop().await;
}
