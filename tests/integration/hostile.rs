//! A hostile or broken provider (the simulator's `tamper_answer` fault and odd instances) and a
//! second process that takes a job over: every case ends in a clear job error or a clean stop,
//! never a write outside the destination, a hang, a panic or a deletion nobody earned.

use crate::integration::pipeline::{Env, SMALL};
use rdbvault::runner::Outcome;
use rdbvault::services::Context;
use rdbvault::sim::state::{Fault, InstanceSpec};
use rdbvault::store::ms;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The library's own job context for an env's config, with fast polling.
async fn context(env: &Env, owner: &str) -> (Context, prometheus::Registry) {
    let cfg = rdbvault::config::load(&env.config).unwrap();
    let registry = prometheus::Registry::new();
    let metrics = rdbvault::metrics::Metrics::register(registry.clone()).unwrap();
    let mut ctx = rdbvault::services::open(Arc::new(cfg), owner.to_string(), metrics)
        .await
        .unwrap();
    ctx.poll = rdbvault::services::PollSettings {
        initial: Duration::from_millis(100),
        max: Duration::from_millis(300),
        ..Default::default()
    };
    (ctx, registry)
}

/// Creates a job of policy `p` for one instance, owned by `ctx`, and returns its id.
async fn new_job(ctx: &Context, uuid: &str) -> String {
    let all = ctx
        .cds
        .describe_db_instances(&rdbvault::cds::Params::new())
        .await
        .unwrap();
    let inst = all.iter().find(|i| i.instance_uuid == uuid).unwrap();
    let now = chrono::Utc::now();
    let mut job = rdbvault::scheduler::new_job(&ctx.config.policies[0], inst, now, "manual", now);
    job.owner = Some(ctx.owner.clone());
    ctx.store.insert_job(&job).await.unwrap();
    job.id
}

/// A fault that gives `field` the value `value` in every answer of `action` (`*`: all).
fn tamper(action: &str, field: &str, value: serde_json::Value) -> Fault {
    Fault::TamperAnswer {
        action: action.into(),
        count: None,
        set: [(field.to_string(), value)].into_iter().collect(),
        duplicate: false,
    }
}

async fn run(ctx: &Context, id: &str) -> Outcome {
    let cancel = tokio_util::sync::CancellationToken::new();
    tokio::time::timeout(
        Duration::from_secs(60),
        rdbvault::runner::run_job(ctx, id, &cancel),
    )
    .await
    .expect("the job ends within 60 s (no hang)")
}

fn rejected(registry: &prometheus::Registry, field: &str) -> u64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == "rdbvault_provider_values_rejected_total")
        .flat_map(|f| f.get_metric())
        .filter(|m| {
            m.get_label()
                .iter()
                .any(|l| l.name() == "field" && l.value() == field)
        })
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_like_instance_uuid_is_refused_and_non_ascii_ids_still_work() {
    for destination in ["dir", "s3"] {
        // Unique, so the place an escape would land (next to the test's temp dir) is ours.
        let escape = format!("x-{}", uuid::Uuid::new_v4().simple());
        let Some(env) = Env::new("hostile-uuid", destination, "name: \"h-*\"", "@yearly").await
        else {
            return;
        };
        for spec in [
            InstanceSpec {
                uuid: Some(format!("../../../{escape}")),
                name: "h-escape".into(),
                backup_size: Some(100_000),
                ..Default::default()
            },
            InstanceSpec {
                uuid: Some("实例-一".into()),
                name: "h-cjk".into(),
                backup_size: Some(100_000),
                backup_id_prefix: Some("备份-".into()),
                ..Default::default()
            },
            InstanceSpec {
                uuid: Some("aaaaaaaa-0000-4000-8000-00000000000f".into()),
                name: "h-plain".into(),
                backup_size: Some(100_000),
                ..Default::default()
            },
        ] {
            rdbvault::sim::add_instance(&env.sim.shared, spec).unwrap();
        }
        let r = env.run(&["backup-now", "--policy", "p"]).await;
        assert_eq!(r.code, 3, "one of three failed:\n{}", r.all());
        assert!(
            r.all().contains("instance_uuid") && r.all().contains("path separator"),
            "the refusal names the field and why:\n{}",
            r.all()
        );
        // Nothing outside the destination: the temp dir holds only what the test made, the
        // state DB and the archive.
        let root = env.dir.path();
        for f in files_under(root) {
            let rel = f.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            assert!(
                rel.starts_with("archive/")
                    || rel.starts_with("state.db")
                    || [
                        "cds_id",
                        "cds_secret",
                        "s3_id",
                        "s3_secret",
                        "rdbvault.yaml"
                    ]
                    .contains(&rel.as_str()),
                "{rel} was written outside the destination"
            );
        }
        assert!(!root.parent().unwrap().join(&escape).exists());
        let store = env.store().await;
        let jobs = store.list_jobs(None, None, 10).await.unwrap();
        let by_name = |n: &str| jobs.iter().find(|j| j.instance_name == n).unwrap().clone();
        assert_eq!(by_name("h-escape").state, "failed");
        assert_eq!(by_name("h-plain").state, "stored");
        assert_eq!(by_name("h-cjk").state, "stored", "{:?}", by_name("h-cjk"));
        let cjk = &store.shards(&by_name("h-cjk").id).await.unwrap()[0];
        let key = cjk.object_key.clone().unwrap();
        assert!(
            key.contains("/实例-一/") && key.contains("备份-"),
            "non-ASCII ids are kept readable in the key: {key}"
        );
        match destination {
            "dir" => assert!(root.join("archive").join(&key).is_file()),
            _ => {
                let objects = env.objects().await;
                assert!(objects.contains(&key), "{objects:?}");
                assert!(objects.iter().all(|k| k.starts_with(&env.prefix)));
            }
        }
        env.assert_no_leaks();
        env.sim.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_backup_records_fail_the_job_with_a_clear_error_and_a_metric() {
    let Some(env) = Env::new(
        "hostile-records",
        "dir",
        &format!("uuid: {SMALL}"),
        "@yearly",
    )
    .await
    else {
        return;
    };
    let (ctx, registry) = context(&env, "test:hostile").await;
    let long = "a".repeat(10_000);
    let cases: Vec<(&str, Fault, &str, &str)> = vec![
        (
            "path-like backup id",
            tamper("DescribeBackups", "BackupId", "../../evil".into()),
            "backup_id",
            "path separator",
        ),
        (
            "10,000-byte backup id",
            tamper("DescribeBackups", "BackupId", long.into()),
            "backup_id",
            "longer than 128 bytes",
        ),
        (
            "duplicate records",
            Fault::TamperAnswer {
                action: "DescribeBackups".into(),
                count: None,
                set: Default::default(),
                duplicate: true,
            },
            "backup_id",
            "more than once",
        ),
        (
            "BackupSize 1e30",
            tamper("*", "BackupSize", serde_json::json!(1e30)),
            "backup_size",
            "implausible",
        ),
        (
            "path-like shard id",
            tamper("DownloadBackup", "ShardId", "../../shard".into()),
            "shard_id",
            "path separator",
        ),
    ];
    for (name, fault, field, words) in cases {
        env.sim.shared.world.lock().unwrap().faults.clear();
        env.sim.add_fault(fault);
        let before = rejected(&registry, field);
        let started = std::time::Instant::now();
        let id = new_job(&ctx, SMALL).await;
        let outcome = run(&ctx, &id).await;
        let Outcome::Failed(error) = &outcome else {
            panic!("{name}: expected a failed job, got {outcome:?}");
        };
        assert!(error.contains(words), "{name}: {error}");
        assert!(error.len() < 1000, "{name}: the error is bounded: {error}");
        assert_eq!(rejected(&registry, field), before + 1, "{name}");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{name} took {:?}",
            started.elapsed()
        );
        let root = env.dir.path();
        assert!(!root.parent().unwrap().join("evil").exists());
        let stored = files_under(&root.join("archive"));
        assert!(
            stored.is_empty(),
            "{name}: nothing may be stored: {stored:?}"
        );
    }
    env.sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_without_a_size_is_cut_off_at_max_backup_size() {
    let Some(env) = Env::new(
        "hostile-nosize",
        "dir",
        &format!("uuid: {SMALL}"),
        "@yearly",
    )
    .await
    else {
        return;
    };
    // SMALL's backups are 300,001 bytes; the limit is the smallest allowed, 1 MiB: make the
    // instance's backups 2 MiB first.
    env.sim
        .shared
        .world
        .lock()
        .unwrap()
        .instances
        .get_mut(SMALL)
        .unwrap()
        .backup_size = 2 << 20;
    let text = std::fs::read_to_string(&env.config)
        .unwrap()
        .replace("limits:\n", "limits:\n  max_backup_size: 1MiB\n");
    std::fs::write(&env.config, text).unwrap();
    env.sim
        .add_fault(tamper("*", "BackupSize", serde_json::Value::Null));
    let (ctx, _registry) = context(&env, "test:nosize").await;
    let id = new_job(&ctx, SMALL).await;
    let outcome = run(&ctx, &id).await;
    let Outcome::Failed(error) = &outcome else {
        panic!("expected a failed job, got {outcome:?}");
    };
    assert!(
        error.contains("announced no BackupSize") && error.contains("max_backup_size"),
        "{error}"
    );
    assert!(files_under(&env.dir.path().join("archive")).is_empty());
    env.sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_whose_job_was_taken_over_stops_without_touching_it() {
    let Some(env) = Env::new("hostile-claim", "s3", &format!("uuid: {SMALL}"), "@yearly").await
    else {
        return;
    };
    env.sim.add_fault(Fault::DownloadThrottle {
        count: None,
        bytes_per_second: 40_000,
    });
    let (ctx, _registry) = context(&env, "test:first-owner").await;
    let id = new_job(&ctx, SMALL).await;
    let cancel = tokio_util::sync::CancellationToken::new();
    let runner = {
        let (ctx, id, cancel) = (ctx.clone(), id.clone(), cancel.clone());
        tokio::spawn(async move { rdbvault::runner::run_job(&ctx, &id, &cancel).await })
    };
    let store = env.store().await;
    let mut waited = 0;
    while store.job(&id).await.unwrap().state != "transferring" {
        waited += 1;
        assert!(waited < 300, "the job never reached transferring");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Another process takes the job over (as if the first one's lease had lapsed).
    // (A lease that lapsed before now: `stale_before` in the future.)
    let now = ms(chrono::Utc::now());
    assert!(
        store
            .claim_job(&id, "test:second-owner", now, i64::MAX)
            .await
            .unwrap()
    );
    let shard_before = store.shards(&id).await.unwrap().remove(0);
    env.sim.shared.world.lock().unwrap().faults.clear();
    let outcome = tokio::time::timeout(Duration::from_secs(60), runner)
        .await
        .expect("the first owner stops")
        .unwrap();
    assert!(
        matches!(outcome, Outcome::LostClaim(_)),
        "the first owner must stop, not finish or fail the job: {outcome:?}"
    );
    let job = store.job(&id).await.unwrap();
    assert_eq!(
        job.state, "transferring",
        "the job is left to its new owner"
    );
    assert_eq!(job.owner.as_deref(), Some("test:second-owner"));
    assert!(job.error.is_none());
    let shard_after = store.shards(&id).await.unwrap().remove(0);
    assert_eq!(shard_after.state, shard_before.state);
    assert!(store.copies(None, None).await.unwrap().is_empty());
    let events: Vec<String> = store
        .events(&id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert!(events.contains(&"lost-claim".to_string()), "{events:?}");
    env.sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_leaves_a_job_whose_owner_heartbeats_even_if_its_process_is_invisible() {
    let Some(env) = Env::new("hostile-owner", "dir", &format!("uuid: {SMALL}"), "@yearly").await
    else {
        return;
    };
    // A job held by a backup-now whose process this daemon cannot see (another user under
    // ProtectProc=invisible looks exactly like a pid that does not exist).
    let (ctx, _registry) = context(&env, "backup-now:localhost:999999:feed").await;
    let id = new_job(&ctx, SMALL).await;
    let store = env.store().await;
    let beating = tokio_util::sync::CancellationToken::new();
    let heart = {
        let (store, beating) = (store.clone(), beating.clone());
        tokio::spawn(async move {
            while !beating.is_cancelled() {
                store
                    .heartbeat("backup-now:localhost:999999:feed", ms(chrono::Utc::now()))
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };
    let mut daemon = env.cmd(&["run"]).spawn().unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        env.sim.calls("CreateBackup"),
        0,
        "the daemon must not run a job whose owner is alive"
    );
    let job = store.job(&id).await.unwrap();
    assert_eq!(
        job.owner.as_deref(),
        Some("backup-now:localhost:999999:feed")
    );
    // The owner stops renewing: after the lease (3 s in this config) the daemon takes over.
    beating.cancel();
    heart.await.unwrap();
    let mut waited = 0;
    while store.job(&id).await.unwrap().state != "stored" {
        waited += 1;
        assert!(waited < 600, "the daemon never took the abandoned job over");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(env.sim.calls("CreateBackup"), 1);
    crate::support::signal(&daemon, "-TERM");
    let _ = tokio::time::timeout(Duration::from_secs(30), daemon.wait()).await;
    env.sim.stop().await;
}

/// Backup ids at the provider for SMALL, by `Desc`.
async fn provider_records(env: &Env) -> Vec<(String, String)> {
    let (c, _) = crate::support::client(&env.sim);
    c.describe_backups(SMALL)
        .await
        .unwrap()
        .into_iter()
        .map(|b| (b.backup_id, b.desc))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_prune_never_deletes_a_backup_that_only_carries_a_copied_desc() {
    let Some(env) = Env::new("hostile-desc", "dir", &format!("uuid: {SMALL}"), "@yearly").await
    else {
        return;
    };
    env.edit_config(
        "retention: { destination: { keep_last: 3 } }",
        "retention: { destination: { keep_last: 3 }, provider: { keep_last: 1 } }",
    );
    for _ in 0..2 {
        let r = env.run(&["backup-now", "--policy", "p"]).await;
        assert_eq!(r.code, 0, "{}", r.all());
    }
    let store = env.store().await;
    let jobs = store.list_jobs(None, None, 10).await.unwrap();
    let oldest = jobs.last().unwrap().clone();
    let own = store.shards(&oldest.id).await.unwrap()[0].backup_id.clone();
    // Someone makes an extra backup with the oldest job's Desc (copied by hand, say).
    let (c, _) = crate::support::client(&env.sim);
    c.create_backup(SMALL, &oldest.token()).await.unwrap();
    let mut extra = None;
    for _ in 0..100 {
        extra = provider_records(&env)
            .await
            .into_iter()
            .find(|(id, desc)| *desc == oldest.token() && *id != own)
            .map(|(id, _)| id);
        if extra.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let extra = extra.expect("the extra backup exists");
    tokio::time::sleep(Duration::from_millis(500)).await;

    let r = env.run(&["prune", "--policy", "p"]).await;
    let ids: Vec<String> = provider_records(&env)
        .await
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert!(
        !ids.contains(&own),
        "the copied backup is pruned: {}",
        r.stdout
    );
    assert!(
        ids.contains(&extra),
        "a backup with no verified copy of its own must survive:\n{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("no verified copy of this backup id"),
        "{}",
        r.stdout
    );
    env.sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_through_the_destination_each_copy_was_recorded_in() {
    let Some(env) = Env::new("hostile-dest", "dir", &format!("uuid: {SMALL}"), "@yearly").await
    else {
        return;
    };
    for _ in 0..3 {
        let r = env.run(&["backup-now", "--policy", "p"]).await;
        assert_eq!(r.code, 0, "{}", r.all());
    }
    let root = env.dir.path();
    let store = env.store().await;
    let mut jobs = store.list_jobs(None, None, 10).await.unwrap();
    jobs.reverse(); // oldest first
    let key_of = |i: usize| {
        let (store, id) = (store.clone(), jobs[i].id.clone());
        async move {
            store.shards(&id).await.unwrap()[0]
                .object_key
                .clone()
                .unwrap()
        }
    };
    let (k0, k1) = (key_of(0).await, key_of(1).await);
    // The policy moves to a new directory; a different file with the oldest copy's key lives there.
    std::fs::create_dir_all(root.join("archive2")).unwrap();
    env.edit_config(
        "  dir:\n    type: file\n",
        &format!(
            "  dir2:\n    type: file\n    path: {}/archive2\n  dir:\n    type: file\n",
            root.display()
        ),
    );
    env.edit_config("destination: dir", "destination: dir2");
    env.edit_config("keep_last: 3", "keep_last: 2");
    let decoy = root.join("archive2").join(&k0);
    std::fs::create_dir_all(decoy.parent().unwrap()).unwrap();
    std::fs::write(&decoy, b"not rdbvault's copy").unwrap();

    let r = env.run(&["prune", "--policy", "p"]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        !root.join("archive").join(&k0).exists(),
        "the old copy is deleted where it was recorded:\n{}",
        r.stdout
    );
    assert!(
        decoy.exists(),
        "a same-named file of the new destination is untouched"
    );

    // The old destination leaves the config: its copies are kept, and prune says why.
    env.edit_config(
        "  dir:\n    type: file\n",
        "  gone_dir_was_here:\n    type: file\n",
    );
    env.edit_config("keep_last: 2", "keep_last: 1");
    let r = env.run(&["prune", "--policy", "p"]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(root.join("archive").join(&k1).exists(), "{}", r.stdout);
    assert!(
        r.stdout.contains("is no longer in the config"),
        "{}",
        r.stdout
    );
    env.sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_backups_is_served_from_the_state_db_without_provider_calls() {
    let Some(env) = Env::new("hostile-v1", "dir", &format!("uuid: {SMALL}"), "@yearly").await
    else {
        return;
    };
    let r = env.run(&["backup-now", "--policy", "p"]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    env.edit_config("listen: 127.0.0.1:0", &format!("listen: 127.0.0.1:{port}"));
    let mut daemon = env.cmd(&["run"]).spawn().unwrap();
    let url = format!("http://127.0.0.1:{port}/v1/backups");
    // The daemon's own start-up prune lists the provider once; wait until that is done.
    let mut last = u64::MAX;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = env.sim.calls("DescribeBackups");
        if now > 0 && now == last {
            break;
        }
        last = now;
    }
    let before = env.sim.calls("DescribeBackups");
    let client = reqwest::Client::new();
    let mut gets = Vec::new();
    for _ in 0..20 {
        let (client, url) = (client.clone(), url.clone());
        gets.push(tokio::spawn(async move {
            for _ in 0..50 {
                if let Ok(r) = client.get(&url).send().await {
                    return (r.status().as_u16(), r.text().await.unwrap());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("no answer from {url}");
        }));
    }
    for g in gets {
        let (status, body) = g.await.unwrap();
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(
            v["rows"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["location"] == "destination"),
            "{body}"
        );
    }
    assert_eq!(
        env.sim.calls("DescribeBackups"),
        before,
        "GET /v1/backups made provider calls"
    );
    crate::support::signal(&daemon, "-TERM");
    let _ = tokio::time::timeout(Duration::from_secs(30), daemon.wait()).await;
    env.sim.stop().await;
}
