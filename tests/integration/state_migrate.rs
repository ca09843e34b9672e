//! `state migrate --to postgres://...`: a SQLite journal and inventory copied into an empty
//! PostgreSQL database, after which every command answers the same from it.

use super::pipeline::{Env, SMALL};
use crate::support;

/// The config's `state:` block pointed at a SQLite file (whatever the pass), so there is a
/// SQLite journal to move.
fn on_sqlite(env: &Env) {
    let text = std::fs::read_to_string(&env.config).unwrap();
    let d = env.dir.path().display().to_string();
    let sqlite: String = text
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("url: postgres") {
                format!("  path: {d}/state.db\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&env.config, sqlite).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_journal_moves_into_an_empty_postgres_database_and_reads_the_same() {
    // PostgreSQL is the second pass's; the first pass has none to copy into.
    if support::pg_server().is_none() {
        return;
    }
    let Some(env) = Env::new("migrate", "dir", &format!("uuid: {SMALL}"), "@yearly").await else {
        return;
    };
    on_sqlite(&env);
    for _ in 0..2 {
        assert_eq!(env.run(&["backup-now", "--policy", "p"]).await.code, 0);
    }
    let target_dir = tempfile::tempdir().unwrap();
    let url = support::pg_database_for(target_dir.path()).unwrap();

    // A job in progress (held, fresh heartbeat) is refused: it would go on writing to SQLite.
    let store = rdbvault::store::Store::open(&env.dir.path().join("state.db"))
        .await
        .unwrap();
    let now = rdbvault::store::ms(chrono::Utc::now());
    let held = rdbvault::store::NewJob {
        id: "held-by-a-daemon".into(),
        policy: "p".into(),
        instance_uuid: "aaaaaaaa-0000-4000-8000-00000000000f".into(),
        instance_name: String::new(),
        region_id: String::new(),
        destination: "dir".into(),
        trigger: "manual",
        due_at: now,
        start_by: now + 60_000,
        deadline_at: now + 600_000,
        created_at: now,
        owner: Some("daemon:elsewhere:1:x".into()),
        schedule_key: None,
    };
    store.insert_job(&held).await.unwrap();
    let r = env.run(&["state", "migrate", "--to", &url]).await;
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("job held-by-a-daemon is in progress"),
        "{}",
        r.stderr
    );
    store
        .release_job("held-by-a-daemon", "daemon:elsewhere:1:x")
        .await
        .unwrap();
    store.close().await;

    let before = env.run(&["jobs", "--json"]).await;
    assert_eq!(before.code, 0, "{}", before.all());
    let r = env.run(&["state", "migrate", "--to", &url]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("row counts checked: equal on both sides"),
        "{}",
        r.stdout
    );
    let jobs_line = r
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("jobs "))
        .unwrap();
    assert!(jobs_line.contains(" 3 rows"), "{jobs_line}");

    // Switched over: the same answers from PostgreSQL.
    env.edit_config(
        &format!("  path: {}/state.db\n", env.dir.path().display()),
        &format!("  url: {url}\n"),
    );
    let after = env.run(&["jobs", "--json"]).await;
    assert_eq!(after.code, 0, "{}", after.all());
    assert_eq!(
        after.stdout, before.stdout,
        "jobs --json differs after the move"
    );
    // New rows after the copied ones: a new backup works and is listed too.
    assert_eq!(env.run(&["backup-now", "--policy", "p"]).await.code, 0);
    let r = env.run(&["backups", "--json"]).await;
    assert_eq!(r.code, 0, "{}", r.all());

    // A second copy into the now-used database is refused, nothing merged.
    env.edit_config(
        &format!("  url: {url}\n"),
        &format!("  path: {}/state.db\n", env.dir.path().display()),
    );
    let r = env.run(&["state", "migrate", "--to", &url]).await;
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("is not empty"), "{}", r.stderr);
    env.sim.stop().await;
}
