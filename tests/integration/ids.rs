//! The ids a person types: the short ids the tables show work in every command that takes an
//! id (one resolver), and table commands whose reader went away (`| head`) end quietly.

use super::pipeline::{CLUSTER, Env};

/// The first column of every row of a table (the header skipped).
fn first_column(table: &str) -> Vec<String> {
    table
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_short_ids_tables_show_work_in_every_command_that_takes_an_id() {
    let Some(env) = Env::new("ids", "dir", r#"name: "*""#, "@yearly").await else {
        return;
    };
    let r = env.run(&["backup-now", "--policy", "p"]).await;
    assert_eq!(r.code, 0, "{}", r.all());

    // Three jobs made in the same second: each shown by 8 characters, all different.
    let r = env.run(&["jobs"]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    let shorts = first_column(&r.stdout);
    assert_eq!(shorts.len(), 3, "{}", r.stdout);
    assert!(shorts.iter().all(|s| s.len() == 8), "{}", r.stdout);
    let store = env.store().await;
    let jobs = store.list_jobs(None, None, 10).await.unwrap();
    let full_of = |short: &str| {
        let matching: Vec<_> = jobs.iter().filter(|j| j.id.starts_with(short)).collect();
        assert_eq!(matching.len(), 1, "{short}");
        matching[0].clone()
    };

    for short in &shorts {
        let job = full_of(short);
        let r = env.run(&["jobs", "show", short]).await;
        assert_eq!(r.code, 0, "{}", r.all());
        assert!(r.stdout.contains(&job.id), "{}", r.stdout);

        let r = env.run(&["verify", short]).await;
        assert_eq!(r.code, 0, "{}", r.all());
        let copies = if job.instance_uuid == CLUSTER { 2 } else { 1 };
        assert!(
            r.stdout.contains(&format!("{copies} cop")),
            "verify {short} checks the job's {copies} copies: {}",
            r.stdout
        );

        let r = env.run(&["backups", "pin", short]).await;
        assert_eq!(r.code, 0, "{}", r.all());
        assert!(
            r.stdout.contains(&format!("pinned job {}", job.id)),
            "{}",
            r.stdout
        );
    }

    // `backups` shows the same short ids in SET, and every set is kept as pinned at the
    // destination (the provider side has no rules here).
    let r = env.run(&["backups"]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    for short in &shorts {
        let rows: Vec<&str> = r
            .stdout
            .lines()
            .filter(|l| l.starts_with("destination") && l.contains(short.as_str()))
            .collect();
        assert_eq!(
            rows.len(),
            1,
            "{short} once at the destination in\n{}",
            r.stdout
        );
        assert!(rows[0].contains("keep: pinned"), "{}", r.stdout);
    }

    // A cluster job has a copy per shard: fetch by the job's id names them; a unique start of one
    // shard's backup id fetches that shard alone.
    let cluster = jobs.iter().find(|j| j.instance_uuid == CLUSTER).unwrap();
    let shards = store.shards(&cluster.id).await.unwrap();
    store.close().await;
    let restore = env.dir.path().join("restore.rdb");
    let out = restore.to_str().unwrap();
    let r = env.run(&["fetch", &cluster.id[..8], "-o", out]).await;
    assert_eq!(r.code, 2, "{}", r.all());
    for s in &shards {
        assert!(r.stderr.contains(&s.backup_id), "{}", r.stderr);
    }
    let start = &shards[0].backup_id[..shards[0].backup_id.len() - 3];
    let r = env.run(&["fetch", start, "-o", out]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(
        std::fs::read(&restore).unwrap(),
        env.provider_bytes(CLUSTER, &shards[0].backup_id).await
    );

    // An id that names nothing is the user's to fix (2), in every command.
    for args in [
        vec!["jobs", "show", "ffffffff"],
        vec!["verify", "ffffffff"],
        vec!["backups", "pin", "ffffffff"],
        vec!["fetch", "ffffffff", "-o", out],
        vec!["jobs", "retry", "ffffffff"],
    ] {
        let r = env.run(&args).await;
        assert_eq!(r.code, 2, "{args:?}: {}", r.all());
        assert!(
            r.stderr.contains("no job matches `ffffffff`"),
            "{}",
            r.stderr
        );
    }
    env.sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_whose_reader_went_away_end_quietly_with_their_usual_exit_code() {
    let Some(env) = Env::new("epipe", "dir", r#"name: "*-2""#, "@yearly").await else {
        return;
    };
    let r = env.run(&["backup-now", "--policy", "p"]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    let job = env.run(&["jobs", "--json"]).await;
    let job: serde_json::Value = serde_json::from_str(&job.stdout).unwrap();
    let id = job[0]["id"].as_str().unwrap().to_string();
    // Every time in the JSON is RFC 3339, the provider's own ones included.
    for field in ["provider_start", "provider_end"] {
        let at = job[0]["shards"][0][field].as_str().unwrap();
        assert!(
            chrono::DateTime::parse_from_rfc3339(at).is_ok(),
            "{field} = {at}"
        );
    }
    for args in [
        vec!["jobs"],
        vec!["jobs", "--json"],
        vec!["jobs", "show", &id],
        vec!["backups"],
        vec!["prune", "--dry-run"],
        vec!["verify", "--all"],
        vec!["status"],
        vec!["check-config"],
        vec!["backup-now", "--policy", "p", "--dry-run"],
    ] {
        let usual = env.run(&args).await;
        assert!(!usual.stdout.is_empty(), "{args:?} prints something");
        // The read end is closed before the command starts: its first write finds no reader.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        // (`output()` would replace the stdout given here by a pipe of its own.)
        let out = env
            .cmd(&args)
            .stdout(writer)
            .spawn()
            .unwrap()
            .wait_with_output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(
            out.status.code(),
            Some(usual.code),
            "{args:?} exits as it does with a reader: {stderr}"
        );
    }
    env.sim.stop().await;
}
