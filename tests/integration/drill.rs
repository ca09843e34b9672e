//! `rdbvault drill` end to end: a dump written by a real redis-server, served by the simulator,
//! backed up by `backup-now`, then loaded into a real throwaway redis-server and its keys
//! counted; a damaged copy, a copy that needs a module the server lacks, and no redis-server at
//! all, each with its exit code and its trace in `backups` and `status`.

use super::pipeline::Env;
use crate::support::have_tool;
use crate::support::redis::{RedisServer, redisearch_module};
use rdbvault::sim::state::InstanceSpec;

const REAL: &str = "dddddddd-0000-4000-8000-000000000001";

/// Adds an instance to the simulator whose backups are `dump`, and returns the env's config
/// rewritten to select it alone.
fn serve_dump(env: &Env, dump: &[u8], uuid: &str, name: &str) {
    let path = env.dir.path().join(format!("{name}.rdb"));
    std::fs::write(&path, dump).unwrap();
    rdbvault::sim::add_instance(
        &env.sim.shared,
        InstanceSpec {
            uuid: Some(uuid.into()),
            name: name.into(),
            version: Some("7.0".into()),
            payload_file: Some(path),
            ..Default::default()
        },
    )
    .unwrap();
}

/// A dump with keys in databases 0, 2 and 9, two of them expiring far in the future.
fn real_dump() -> Vec<u8> {
    let r = RedisServer::start("redis-server", &[]);
    for i in 0..300 {
        assert_eq!(
            r.cli(&["SET", &format!("key:{i}"), &"v".repeat(i % 50)])
                .trim(),
            "OK"
        );
    }
    assert_eq!(r.cli(&["RPUSH", "list", "a", "b", "c"]).trim(), "3");
    assert_eq!(r.cli(&["XADD", "events", "*", "k", "v"]).lines().count(), 1);
    assert_eq!(r.cli(&["SET", "session", "x", "EX", "86400"]).trim(), "OK");
    assert_eq!(r.cli_db(2, &["HSET", "h", "f", "v"]).trim(), "1");
    assert_eq!(
        r.cli_db(9, &["SET", "far", "x", "EX", "86400"]).trim(),
        "OK"
    );
    r.dump()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_dump_restores_in_a_drill_and_a_damaged_copy_does_not() {
    if !have_tool("redis-server") {
        return;
    }
    let Some(env) = Env::new("drill", "dir", &format!("uuid: {REAL}"), "@yearly").await else {
        return;
    };
    serve_dump(&env, &real_dump(), REAL, "drill-real");
    let r = env.run(&["backup-now", "--policy", "p"]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    let store = env.store().await;
    let job = store.list_jobs(None, None, 1).await.unwrap().remove(0);
    let shard = store.shards(&job.id).await.unwrap().remove(0);
    store.close().await;
    let contents = shard.contents().expect("contents recorded at backup time");
    assert_eq!(contents.keys_text(), "db0=303 db2=1 db9=1");
    let shown = env.run(&["jobs", "show", &job.id]).await;
    assert!(
        shown.stdout.contains("contents redis 7."),
        "{}",
        shown.stdout
    );
    assert!(
        shown
            .stdout
            .contains("keys db0=303 db2=1 db9=1 (2 with an expiry)"),
        "{}",
        shown.stdout
    );

    // The newest set restores: every database holds the keys it recorded.
    let r = env.run(&["drill"]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("db0=303 db2=1 db9=1, as recorded"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(&format!("RESTORES: set {}", job.id)),
        "{}",
        r.stdout
    );
    let backups = env.run(&["backups"]).await;
    assert!(backups.stdout.contains("DRILL"), "{}", backups.stdout);
    assert!(backups.stdout.contains("restored 20"), "{}", backups.stdout);
    let status = env.run(&["status"]).await;
    assert!(
        status.stdout.contains("last drill    restored at"),
        "{}",
        status.stdout
    );
    let json = env.run(&["drill", &job.id[..8], "--json"]).await;
    assert_eq!(json.code, 0, "{}", json.all());
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["restored"], true);
    assert_eq!(v["report"]["shards"][0]["loaded"]["9"], 1);
    // Nothing of the drills is left behind: no temporary directory, no redis-server.
    let leftovers: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("rdbvault-drill-")
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // The stored copy damaged at the destination: it cannot be read back, so it does not
    // restore (exit 3, naming the set and why), and `backups` and `status` say so.
    let object = env
        .dir
        .path()
        .join("archive")
        .join(shard.object_key.as_ref().unwrap());
    let mut bytes = std::fs::read(&object).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xFF;
    std::fs::write(&object, &bytes).unwrap();
    let r = env.run(&["drill", &job.id]).await;
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(
        r.stderr
            .contains(&format!("set {} of drill-real does not restore", job.id)),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("cannot be read back"), "{}", r.stderr);
    assert!(env.run(&["backups"]).await.stdout.contains("FAILED 20"));
    let status = env.run(&["status"]).await;
    assert_eq!(status.code, 3, "{}", status.all());
    assert!(
        status.stdout.contains("the last restore drill at"),
        "{}",
        status.stdout
    );

    // No redis-server to load into: exit 2, saying what to set, before anything is fetched.
    env.edit_config(
        "log:\n",
        "drill:\n  redis_server: /nonexistent/redis-server\nlog:\n",
    );
    let r = env.run(&["drill"]).await;
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("/nonexistent/redis-server") && r.stderr.contains("drill.redis_server"),
        "{}",
        r.stderr
    );
    env.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_needing_a_module_the_server_lacks_does_not_restore() {
    if !have_tool("redis-server") {
        return;
    }
    let Some(module) = redisearch_module() else {
        return;
    };
    let Some(env) = Env::new("drill-module", "dir", &format!("uuid: {REAL}"), "@yearly").await
    else {
        return;
    };
    let r = RedisServer::start(
        "redis-server",
        &["--loadmodule", &module.display().to_string()],
    );
    assert_eq!(
        r.cli(&["FT.SUGADD", "suggestions", "hello", "1"]).trim(),
        "1"
    );
    serve_dump(&env, &r.dump(), REAL, "drill-module");
    drop(r);
    assert_eq!(env.run(&["backup-now", "--policy", "p"]).await.code, 0);
    // The plain redis-server on PATH has no RediSearch: the copy is refused at load, which is
    // what a restore onto such a server would meet.
    let r = env.run(&["drill"]).await;
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(
        r.stderr.contains("DOES NOT RESTORE") && r.stderr.to_lowercase().contains("module"),
        "{}",
        r.stderr
    );
}
