//! Retention, inventory, verify and fetch end to end, against the simulator and SeaweedFS, with
//! failed backups in the history.

use super::pipeline::{Env, SMALL};
use rdbvault::sim::state::Fault;
use std::time::Duration;

/// Backups of SMALL at the provider, by kind: (rdbvault's, foreign).
async fn provider_counts(env: &Env) -> (usize, usize) {
    let (c, _) = crate::support::client(&env.sim);
    let records = c.describe_backups(SMALL).await.unwrap();
    let ours = records
        .iter()
        .filter(|b| b.desc.starts_with("rdbvault:"))
        .count();
    (ours, records.len() - ours)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_keeps_what_the_policy_says_and_never_less_than_the_floor() {
    let Some(env) = Env::new("prune", "s3", &format!("uuid: {SMALL}"), "@yearly").await else {
        return;
    };
    let text = std::fs::read_to_string(&env.config)
        .unwrap()
        .replace(
            "retention: { destination: { keep_last: 3 } }",
            "retention: { destination: { keep_last: 1, min_verified: 2 }, provider: { keep_last: 1 }, max_deletions_per_run: 10 }",
        );
    std::fs::write(&env.config, text).unwrap();

    // Three good runs, then two that fail verification: the newest runs are all failures.
    for _ in 0..3 {
        assert_eq!(env.run(&["backup-now", "--policy", "p"]).await.code, 0);
    }
    env.sim.add_fault(Fault::DownloadCorrupt {
        count: None,
        offset: None,
    });
    for _ in 0..2 {
        assert_eq!(env.run(&["backup-now", "--policy", "p"]).await.code, 3);
    }
    env.sim.shared.world.lock().unwrap().faults.clear();
    assert_eq!(
        env.objects().await.len(),
        6,
        "three verified copies and their manifests"
    );
    assert_eq!(
        provider_counts(&env).await,
        (5, 1),
        "five of ours, one automatic"
    );

    // --dry-run changes nothing.
    let r = env.run(&["prune", "--dry-run"]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("would delete"), "{}", r.stdout);
    assert!(r.stdout.contains("nothing was changed"), "{}", r.stdout);
    assert_eq!(env.objects().await.len(), 6);
    assert_eq!(provider_counts(&env).await, (5, 1));

    let r = env.run(&["prune"]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    // Destination: keep_last 1 alone would keep one; the floor keeps two verified copies.
    assert_eq!(env.objects().await.len(), 4, "{}", r.stdout);
    assert!(r.stdout.contains("min_verified floor (2)"), "{}", r.stdout);
    // Provider: keep_last 1 of the verified ones; the two whose destination copy never verified
    // stay, and so does the automatic backup.
    assert_eq!(provider_counts(&env).await, (3, 1), "{}", r.stdout);
    assert!(
        r.stdout.contains("its destination copy is not verified"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("not created by rdbvault"), "{}", r.stdout);

    // Running it again deletes nothing more.
    let r = env.run(&["prune"]).await;
    assert!(r.stdout.contains("deleted 0 set(s)"), "{}", r.stdout);
    assert_eq!(env.objects().await.len(), 4);

    // The inventory says where each copy is, whether it is verified, and why it is kept.
    let r = env.run(&["backups", "--json"]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    let inv: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let rows = inv["rows"].as_array().unwrap();
    assert_eq!(
        rows.iter()
            .filter(|r| r["location"] == "destination")
            .count(),
        2
    );
    assert!(rows.iter().all(|r| r["keep"] == true));
    env.sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_catches_one_changed_byte_and_fetch_returns_the_exact_bytes() {
    let Some(env) = Env::new("verify", "s3", &format!("uuid: {SMALL}"), "@yearly").await else {
        return;
    };
    assert_eq!(env.run(&["backup-now", "--policy", "p"]).await.code, 0);
    assert_eq!(env.run(&["backup-now", "--policy", "p"]).await.code, 0);
    let r = env.run(&["verify", "--all"]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("2 copies checked, 0 bad"), "{}", r.stdout);
    // The same as one JSON document.
    let r = env.run(&["verify", "--all", "--json"]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        (doc["checked"].as_u64(), doc["bad"].as_u64()),
        (Some(2), Some(0))
    );
    assert!(
        doc["copies"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["ok"] == true && c["sha256"].is_string())
    );
    // And prune's plan too; a dry run changes nothing.
    let r = env.run(&["prune", "--dry-run", "--json"]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(doc["dry_run"], true);
    assert!(
        doc["report"]["rows"]
            .as_array()
            .is_some_and(|rows| !rows.is_empty()),
        "{doc}"
    );

    let store = env.store().await;
    let jobs = store.list_jobs(None, None, 10).await.unwrap();
    let (good, bad) = (&jobs[0], &jobs[1]);
    let good_shard = store.shards(&good.id).await.unwrap().remove(0);
    let bad_key = store
        .shards(&bad.id)
        .await
        .unwrap()
        .remove(0)
        .object_key
        .unwrap();

    // fetch returns exactly the stored bytes, which are the provider's.
    let out = env.dir.path().join("restore.rdb");
    let r = env
        .run(&["fetch", &good.id, "-o", out.to_str().unwrap()])
        .await;
    assert_eq!(r.code, 0, "{}", r.all());
    let fetched = std::fs::read(&out).unwrap();
    assert!(fetched == env.get(good_shard.object_key.as_ref().unwrap()).await);
    assert!(fetched == env.provider_bytes(SMALL, &good_shard.backup_id).await);
    // It refuses to overwrite without --force, and by provider backup id it works too.
    let r = env
        .run(&["fetch", &good_shard.backup_id, "-o", out.to_str().unwrap()])
        .await;
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("--force"));
    let r = env
        .run(&[
            "fetch",
            &good_shard.backup_id,
            "-o",
            out.to_str().unwrap(),
            "--force",
        ])
        .await;
    assert_eq!(r.code, 0, "{}", r.all());

    // Change one byte of a stored object.
    let mut bytes = env.get(&bad_key).await;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    let (client, cfg) = env.s3_client().await;
    client
        .put_object()
        .bucket(&cfg.bucket)
        .key(&bad_key)
        .body(aws_sdk_s3::primitives::ByteStream::from(bytes))
        .send()
        .await
        .unwrap();
    let r = env.run(&["verify", "--all"]).await;
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with("BAD") && l.contains(&bad_key)),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("2 copies checked, 1 bad"), "{}", r.stdout);

    // A truncated object says both sizes and the next step.
    let full = env.get(&bad_key).await;
    client
        .put_object()
        .bucket(&cfg.bucket)
        .key(&bad_key)
        .body(aws_sdk_s3::primitives::ByteStream::from(
            full[..full.len() / 2].to_vec(),
        ))
        .send()
        .await
        .unwrap();
    let r = env.run(&["verify", &bad.id, "--json"]).await;
    assert_eq!(r.code, 3, "{}", r.all());
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(doc["copies"][0]["problem"], "corrupt", "{doc}");
    let r = env.run(&["verify", &bad.id]).await;
    assert_eq!(r.code, 3, "{}", r.all());
    let said = format!(
        "stored copy is {} bytes, expected {} (truncated)",
        full.len() / 2,
        full.len()
    );
    assert!(r.stdout.contains(&said), "{}", r.stdout);
    assert!(
        r.stdout.contains(&format!(
            "`rdbvault -c {} backup-now --policy p --instance",
            env.config.display()
        )),
        "{}",
        r.stdout
    );

    // fetch of the damaged copy fails and leaves no file behind.
    let out2 = env.dir.path().join("damaged.rdb");
    let r = env
        .run(&["fetch", &bad.id, "-o", out2.to_str().unwrap()])
        .await;
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(!out2.exists());
    let leftovers = std::fs::read_dir(env.dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("rdbvault-fetch")
        })
        .count();
    assert_eq!(leftovers, 0, "no temporary file left behind");

    // The damaged copy is now unverified: retention keeps it for inspection and counts it
    // toward nothing, and its provider backup is no longer deletable.
    let r = env.run(&["backups"]).await;
    assert!(
        r.stdout.contains("failed verification or missing"),
        "{}",
        r.stdout
    );
    env.assert_no_leaks();
    env.sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_backups_survive_prune() {
    let Some(env) = Env::new("pin", "dir", &format!("uuid: {SMALL}"), "@yearly").await else {
        return;
    };
    let text = std::fs::read_to_string(&env.config).unwrap().replace(
        "retention: { destination: { keep_last: 3 } }",
        "retention: { destination: { keep_last: 1 } }",
    );
    std::fs::write(&env.config, text).unwrap();
    for _ in 0..3 {
        assert_eq!(env.run(&["backup-now", "--policy", "p"]).await.code, 0);
    }
    let store = env.store().await;
    let oldest = store
        .list_jobs(None, None, 10)
        .await
        .unwrap()
        .pop()
        .unwrap();
    let r = env.run(&["backups", "pin", &oldest.id]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    let r = env.run(&["prune"]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout
            .lines()
            .any(|l| l.contains(&oldest.id[..8]) && l.contains("pinned")),
        "{}",
        r.stdout
    );
    let left = store.copies(Some("p"), None).await.unwrap();
    let dest: Vec<_> = left
        .iter()
        .filter(|c| c.location == "destination")
        .collect();
    assert_eq!(dest.len(), 2, "the newest and the pinned one");
    assert!(
        dest.iter()
            .any(|c| c.job_id.as_deref() == Some(oldest.id.as_str()))
    );
    let r = env.run(&["backups", "unpin", "no-such-id"]).await;
    assert_eq!(r.code, 2);
    env.sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_reports_unknown_objects_and_marks_vanished_copies_missing() {
    let Some(env) = Env::new("reconcile", "dir", &format!("uuid: {SMALL}"), "@yearly").await else {
        return;
    };
    assert_eq!(env.run(&["backup-now", "--policy", "p"]).await.code, 0);
    assert_eq!(env.run(&["backup-now", "--policy", "p"]).await.code, 0);
    let store = env.store().await;
    let jobs = store.list_jobs(None, None, 10).await.unwrap();
    let gone_key = store
        .shards(&jobs[0].id)
        .await
        .unwrap()
        .remove(0)
        .object_key
        .unwrap();
    let archive = env.dir.path().join("archive");
    std::fs::remove_file(archive.join(&gone_key)).unwrap();
    let stranger = archive.join("p").join("left-by-someone.rdb");
    std::fs::write(&stranger, b"not ours").unwrap();

    // Reconcile runs shortly after the daemon starts.
    let mut daemon = env.cmd(&["run"]).spawn().unwrap();
    let mut marked = false;
    for _ in 0..200 {
        let copies = store.copies(Some("p"), None).await.unwrap();
        if copies
            .iter()
            .any(|c| c.object_key.as_deref() == Some(gone_key.as_str()) && c.missing == 1)
        {
            marked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    crate::support::signal(&daemon, "-TERM");
    let _ = tokio::time::timeout(Duration::from_secs(30), daemon.wait()).await;
    let out = daemon.wait_with_output().await.unwrap();
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(marked, "the vanished copy was not marked missing:\n{log}");
    assert!(log.contains("has vanished"), "{log}");
    assert!(
        log.contains("unknown to the state DB") && log.contains("left-by-someone.rdb"),
        "{log}"
    );
    assert!(
        stranger.exists(),
        "an unknown object is reported, never deleted"
    );
    // The missing copy is kept and counted by no rule; `backups` says so.
    let r = env.run(&["backups"]).await;
    assert!(
        r.stdout.contains("failed verification or missing"),
        "{}",
        r.stdout
    );
    env.sim.stop().await;
}

/// A copy that fails re-verification leaves its job `stored`, but every view of the job and of
/// the inventory names the bad copy and when the check found it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_that_failed_reverification_shows_in_jobs_and_backups() {
    let Some(env) = Env::new("reverify", "dir", &format!("uuid: {SMALL}"), "@yearly").await else {
        return;
    };
    let r = env.run(&["backup-now", "--policy", "p"]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    let store = env.store().await;
    let job = store.list_jobs(None, None, 1).await.unwrap().remove(0);
    let copy = store.destination_copies().await.unwrap().remove(0);
    assert_eq!(copy.job_id.as_deref(), Some(job.id.as_str()));

    // A first verify passes and says so.
    assert_eq!(env.run(&["verify", "--all"]).await.code, 0);
    let show = env.run(&["jobs", "show", &job.id]).await;
    assert!(
        show.stdout.contains("re-verified OK at "),
        "{}",
        show.stdout
    );

    // One byte flipped in the stored file.
    let path = env
        .dir
        .path()
        .join("archive")
        .join(copy.object_key.as_deref().unwrap());
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let r = env.run(&["verify", "--all"]).await;
    assert_eq!(r.code, 3, "{}", r.all());

    let bad = store.destination_copies().await.unwrap().remove(0);
    let at_ms = bad.last_check_at.expect("the check's time is recorded");
    let reason = bad
        .last_check_error
        .clone()
        .expect("the reason is recorded");
    assert_eq!(bad.verified, 0);
    let local = rdbvault::store::from_ms(at_ms)
        .with_timezone(&chrono::Local)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    let utc = rdbvault::store::from_ms(at_ms)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    let rfc3339 =
        rdbvault::store::from_ms(at_ms).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert_eq!(
        store.job(&job.id).await.unwrap().state,
        "stored",
        "the job did store a verified copy; only the copy went bad"
    );

    // `jobs`: the state says it, and the row names the copy and the time.
    let jobs = env.run(&["jobs"]).await;
    assert_eq!(jobs.code, 0, "{}", jobs.all());
    let line = jobs
        .stdout
        .lines()
        .find(|l| l.starts_with(&job.id[..8]))
        .unwrap_or_else(|| panic!("{}", jobs.stdout))
        .to_string();
    assert!(line.contains("stored (copy failed re-verify)"), "{line}");
    assert!(line.contains(&bad.backup_id), "{line}");
    assert!(line.contains(&local), "{line}");

    // `jobs show`: the shard's line.
    let show = env.run(&["jobs", "show", &job.id]).await;
    assert!(
        show.stdout
            .contains(&format!("re-verified FAILED at {local}: {reason}")),
        "{}",
        show.stdout
    );
    assert!(
        show.stdout.contains("stored (copy failed re-verify)"),
        "{}",
        show.stdout
    );

    // `backups`: VERIF says FAILED and when (UTC, like the table's other times).
    let backups = env.run(&["backups"]).await;
    assert_eq!(backups.code, 0, "{}", backups.all());
    let row = backups
        .stdout
        .lines()
        .find(|l| l.starts_with("destination") && l.contains(&job.id[..8]))
        .unwrap_or_else(|| panic!("{}", backups.stdout))
        .to_string();
    assert!(row.contains(&format!("FAILED {utc}")), "{row}");

    // The JSON of all three: additive fields naming the copy, the time and the reason, with
    // the existing fields unchanged.
    let check = |v: &serde_json::Value| {
        assert_eq!(v["reverify_failed"], true, "{v}");
        let c = &v["reverify"][0];
        assert_eq!(c["backup_id"], bad.backup_id.as_str(), "{v}");
        assert_eq!(c["ok"], false, "{v}");
        assert_eq!(c["at"], rfc3339.as_str(), "{v}");
        assert_eq!(c["error"], reason.as_str(), "{v}");
        assert_eq!(c["object_key"], bad.object_key.as_deref().unwrap(), "{v}");
    };
    let json = |r: crate::support::Run| -> serde_json::Value {
        assert_eq!(r.code, 0, "{}", r.all());
        serde_json::from_str(&r.stdout).unwrap()
    };
    let listed = json(env.run(&["jobs", "--json"]).await);
    let listed = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == job.id.as_str())
        .unwrap()
        .clone();
    assert_eq!(listed["state"], "stored");
    check(&listed);
    let shown = json(env.run(&["jobs", "show", &job.id, "--json"]).await);
    assert_eq!(shown["state"], "stored");
    assert!(shown["events"].as_array().is_some());
    check(&shown);
    let inventory = json(env.run(&["backups", "--json"]).await);
    let set = inventory["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["location"] == "destination" && r["set"] == job.id.as_str())
        .unwrap()
        .clone();
    assert_eq!(set["verified"], false);
    check(&set);
    env.sim.stop().await;
}
