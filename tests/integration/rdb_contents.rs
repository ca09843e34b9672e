//! The RDB contents reader (`rdbvault::rdb::contents`) against files written by real Redis
//! servers: every value type each writes, with and without compression, a cluster shard, module
//! values, RDB 10 (Redis 7.0) and RDB 9 (Redis 6.2). The server's own `INFO keyspace` is the
//! reference for the key counts.

use crate::support::have_tool;
use crate::support::redis::{RedisServer, redisearch_module};
use rdbvault::rdb::{self, contents::Contents};
use std::collections::BTreeMap;

/// Reads a dump as the transfer would: in pieces of odd sizes.
fn read(bytes: &[u8], piece: usize) -> Contents {
    let mut r = rdb::contents::Reader::new();
    for chunk in bytes.chunks(piece) {
        r.update(chunk);
    }
    r.finish().unwrap()
}

/// Keys of every type and encoding the server can write, in databases 0, 1 and 5, some with
/// an expiry. `functions`: also a function library (Redis 7+).
fn fill(r: &RedisServer, functions: bool) {
    let ok = |out: String| assert!(!out.contains("ERR"), "{out}");
    ok(r.cli(&["SET", "plain", "v"]));
    ok(r.cli(&["SET", "number", "123456"]));
    ok(r.cli(&["SET", "compressible", &"a".repeat(2000)]));
    ok(r.cli(&["SETRANGE", "long", "70000", "x"]));
    ok(r.cli(&["SET", "expiring", "v", "EX", "100000"]));
    ok(r.cli(&["SET", "expiring-ms", "v", "PX", "100000000"]));
    let many = |prefix: &str, n: usize| -> Vec<String> {
        (0..n)
            .map(|i| format!("{prefix}{i:04}-{}", "m".repeat(i % 40)))
            .collect()
    };
    let args = |cmd: &[&str], items: &[String]| -> Vec<String> {
        cmd.iter()
            .map(|s| s.to_string())
            .chain(items.iter().cloned())
            .collect()
    };
    let run = |v: Vec<String>| ok(r.cli(&v.iter().map(String::as_str).collect::<Vec<_>>()));
    run(args(&["RPUSH", "list-small"], &many("e", 3)));
    run(args(&["RPUSH", "list-big"], &many("e", 600)));
    ok(r.cli(&["SADD", "set-ints", "1", "2", "3", "70000"]));
    run(args(&["SADD", "set-small"], &many("s", 5)));
    run(args(&["SADD", "set-big"], &many("s", 600)));
    ok(r.cli(&["ZADD", "zset-small", "1.5", "a", "2", "b", "inf", "c"]));
    let scored: Vec<String> = many("z", 300)
        .into_iter()
        .enumerate()
        .flat_map(|(i, m)| [format!("{}.25", i), m])
        .collect();
    run(args(&["ZADD", "zset-big"], &scored));
    ok(r.cli(&["HSET", "hash-small", "f", "v", "g", "w"]));
    let fields: Vec<String> = many("f", 600)
        .into_iter()
        .flat_map(|f| [f.clone(), f])
        .collect();
    run(args(&["HSET", "hash-big"], &fields));
    ok(r.cli(&["EXPIRE", "hash-big", "100000"]));
    for i in 0..5 {
        ok(r.cli(&["XADD", "stream", "*", "n", &i.to_string()]));
    }
    ok(r.cli(&["XGROUP", "CREATE", "stream", "readers", "0"]));
    ok(r.cli(&["XGROUP", "CREATE", "stream", "idle", "$"]));
    ok(r.cli(&[
        "XREADGROUP",
        "GROUP",
        "readers",
        "alice",
        "COUNT",
        "2",
        "STREAMS",
        "stream",
        ">",
    ]));
    ok(r.cli(&[
        "XREADGROUP",
        "GROUP",
        "readers",
        "bob",
        "COUNT",
        "1",
        "STREAMS",
        "stream",
        ">",
    ]));
    // A stream whose only entry was deleted: its listpack nodes are gone, its ids remain.
    let id = r.cli(&["XADD", "stream-emptied", "*", "a", "b"]);
    assert_eq!(r.cli(&["XDEL", "stream-emptied", id.trim()]).trim(), "1");
    for db in [1, 5] {
        ok(r.cli_db(db, &["SET", "other-db", "v"]));
        ok(r.cli_db(db, &["HSET", "other-hash", "f", "v"]));
    }
    ok(r.cli_db(1, &["SET", "other-expiring", "v", "EX", "100000"]));
    if functions {
        ok(r.cli(&[
            "FUNCTION",
            "LOAD",
            "#!lua name=rdbvault_test\nredis.register_function('answer', function() return 42 end)",
        ]));
    }
}

/// The reader's counts are the server's own, and the aux fields say who wrote the file.
fn check_against_server(r: &RedisServer, dump: &[u8], rdb_version: u16) -> Contents {
    assert_eq!(rdb::verify_bytes(dump).unwrap().version, rdb_version);
    let contents = read(dump, dump.len());
    for piece in [1, 7, 4093] {
        assert_eq!(read(dump, piece), contents, "pieces of {piece}");
    }
    let expected: BTreeMap<u64, u64> = r.keyspace().iter().map(|(db, (k, _))| (*db, *k)).collect();
    let expiring: BTreeMap<u64, u64> = r
        .keyspace()
        .iter()
        .filter(|(_, (_, e))| *e > 0)
        .map(|(db, (_, e))| (*db, *e))
        .collect();
    assert_eq!(contents.keys_per_db, expected);
    assert_eq!(contents.expires_per_db, expiring);
    assert_eq!(
        contents.redis_version.as_deref(),
        Some(r.info_server("redis_version").as_str())
    );
    let now = chrono::Utc::now().timestamp();
    assert!(
        contents.ctime.is_some_and(|t| (t - now).abs() < 120),
        "{contents:?}"
    );
    assert!(
        contents.used_mem.is_some_and(|m| m > 100_000),
        "{contents:?}"
    );
    contents
}

#[test]
fn redis_7_files_are_read_with_the_servers_own_counts_compressed_or_not() {
    if !have_tool("redis-server") {
        return;
    }
    for compression in ["yes", "no"] {
        let r = RedisServer::start("redis-server", &["--rdbcompression", compression]);
        fill(&r, true);
        let c = check_against_server(&r, &r.dump(), 10);
        assert_eq!(c.keys_per_db.len(), 3, "{c:?}");
        assert!(c.summary().starts_with("redis 7."), "{}", c.summary());
    }
}

#[test]
fn a_cluster_shards_file_is_read() {
    if !have_tool("redis-server") {
        return;
    }
    let r = RedisServer::start(
        "redis-server",
        &[
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
        ],
    );
    assert!(
        r.cli(&["CLUSTER", "ADDSLOTSRANGE", "0", "16383"])
            .contains("OK")
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !r.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok") {
        assert!(
            std::time::Instant::now() < deadline,
            "the one-node cluster never came up"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    for i in 0..200 {
        let key = format!("user:{i}");
        assert_eq!(r.cli(&["SET", &key, "v"]).trim(), "OK");
    }
    assert_eq!(
        r.cli(&["HSET", "{user:1}:profile", "name", "x"]).trim(),
        "1"
    );
    let c = check_against_server(&r, &r.dump(), 10);
    assert_eq!(c.keys_per_db, BTreeMap::from([(0, 201)]));
}

#[test]
fn module_values_are_read_without_the_module() {
    if !have_tool("redis-server") {
        return;
    }
    let Some(module) = redisearch_module() else {
        return;
    };
    let r = RedisServer::start(
        "redis-server",
        &["--loadmodule", &module.display().to_string()],
    );
    assert_eq!(
        r.cli(&["FT.SUGADD", "suggestions", "hello world", "1"])
            .trim(),
        "1"
    );
    assert!(
        r.cli(&["FT.CREATE", "idx", "SCHEMA", "title", "TEXT"])
            .contains("OK")
    );
    for i in 0..20 {
        let doc = format!("doc{i}");
        let title = format!("title number {i}");
        assert!(
            r.cli(&["FT.ADD", "idx", &doc, "1.0", "FIELDS", "title", &title])
                .contains("OK")
        );
    }
    assert_eq!(r.cli(&["TYPE", "suggestions"]).trim(), "trietype0");
    assert!(!r.cli(&["SET", "plain", "v"]).contains("ERR"));
    let dump = r.dump();
    // The file holds module-typed values (type 7): the reader walks them by their own markers.
    let c = check_against_server(&r, &dump, 10);
    assert!(c.keys() > 20, "{c:?}");
}

#[test]
fn redis_6_2_files_are_read() {
    if !have_tool("redis-server-6.2") {
        return;
    }
    for compression in ["yes", "no"] {
        let r = RedisServer::start("redis-server-6.2", &["--rdbcompression", compression]);
        fill(&r, false);
        check_against_server(&r, &r.dump(), 9);
    }
}
