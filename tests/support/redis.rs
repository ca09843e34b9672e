//! A real `redis-server` for a test: its own temporary directory, loopback, a free port, no
//! persistence unless asked; killed when dropped. Driven with `redis-cli`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts `server` (a program name or path) with `extra` arguments after the defaults.
    pub fn start(server: &str, extra: &[&str]) -> RedisServer {
        let dir = tempfile::tempdir().unwrap();
        let dir_text = dir.path().display().to_string();
        let log_path = dir.path().join("server.log");
        // A port found free may be taken before the server binds it: a few tries.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let port_text = port.to_string();
            let log = std::fs::File::create(&log_path).unwrap();
            let mut child = Command::new(server)
                .args(["--port", &port_text, "--bind", "127.0.0.1", "--save", ""])
                .args([
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "no",
                    "--dir",
                    &dir_text,
                ])
                .args(extra)
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .stdin(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {server}: {e}"));
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && child.try_wait().unwrap().is_none() {
                if ping(port) {
                    return RedisServer { child, port, dir };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            if !log.contains("Address already in use") {
                panic!("{server} did not start: {log}");
            }
        }
        panic!("{server}: no free port in 5 tries");
    }

    /// `redis-cli -p PORT ARGS...` (database 0): its output.
    pub fn cli(&self, args: &[&str]) -> String {
        self.cli_db(0, args)
    }

    pub fn cli_db(&self, db: u32, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-n",
                &db.to_string(),
            ])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `SAVE`, then the bytes of the dump it wrote.
    pub fn dump(&self) -> Vec<u8> {
        assert_eq!(self.cli(&["SAVE"]).trim(), "OK");
        std::fs::read(self.dump_path()).unwrap()
    }

    pub fn dump_path(&self) -> PathBuf {
        self.dir.path().join("dump.rdb")
    }

    /// `INFO keyspace`: (keys, expires) per database.
    pub fn keyspace(&self) -> BTreeMap<u64, (u64, u64)> {
        keyspace_of(&self.cli(&["INFO", "keyspace"]))
    }

    /// A field of `INFO server`, e.g. `redis_version`.
    pub fn info_server(&self, field: &str) -> String {
        self.cli(&["INFO", "server"])
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .unwrap_or_default()
            .trim()
            .to_string()
    }
}

fn ping(port: u16) -> bool {
    Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "PING"])
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "PONG")
}

/// Parses `db0:keys=5,expires=1,avg_ttl=0` lines.
pub fn keyspace_of(info: &str) -> BTreeMap<u64, (u64, u64)> {
    let mut out = BTreeMap::new();
    for line in info.lines() {
        let Some((db, rest)) = line.trim().split_once(':') else {
            continue;
        };
        let Some(n) = db.strip_prefix("db").and_then(|n| n.parse().ok()) else {
            continue;
        };
        let field = |name: &str| {
            rest.split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        out.insert(n, (field("keys"), field("expires")));
    }
    out
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where Debian's RediSearch module is, if installed.
pub fn redisearch_module() -> Option<&'static Path> {
    let p = Path::new("/usr/lib/redis/modules/redisearch.so");
    if p.exists() {
        return Some(p);
    }
    if std::env::var("RDBVAULT_REQUIRE_TOOLS").as_deref() == Ok("1") {
        panic!("the RediSearch module is required (scripts/test.sh installs redis-redisearch)");
    }
    eprintln!("SKIPPED: no RediSearch module; run ./scripts/test.sh to install it");
    None
}
