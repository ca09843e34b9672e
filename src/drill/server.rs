//! The throwaway `redis-server` a drill loads a copy into, and the few commands it sends it.
//!
//! The server runs from a private directory (0700) holding the copy and a config file (0600):
//! loopback only, a free port, a random password (so another local user cannot read the
//! restored data while it is up), no persistence of its own. It is killed when the drill ends,
//! whatever happened (and when its handle is dropped, should the drill panic).
//!
//! The client speaks just enough RESP for `AUTH`, `PING` and `INFO`: one command at a time, each
//! reply bounded in size and time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

/// A `redis-server` program and the version it reports.
#[derive(Debug, Clone)]
pub struct RedisBinary {
    pub path: PathBuf,
    pub version: String,
}

/// The largest reply read (INFO sections are a few KiB).
const MAX_REPLY: usize = 1 << 20;
/// How long one command may take once the server is up.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

impl RedisBinary {
    /// `configured` (`drill.redis_server`), else `redis-server` on PATH; `Err` says what is
    /// missing and how to provide it.
    pub async fn find(configured: Option<&Path>) -> Result<RedisBinary, String> {
        let path = match configured {
            Some(p) => p.to_path_buf(),
            None => which("redis-server").ok_or_else(|| {
                "no redis-server on PATH; install one (Debian: apt install redis-server) or set drill.redis_server".to_string()
            })?,
        };
        let out = tokio::process::Command::new(&path)
            .arg("--version")
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|e| {
                format!(
                    "cannot run {} --version: {e} (drill.redis_server)",
                    path.display()
                )
            })?;
        let text = String::from_utf8_lossy(&out.stdout);
        // "Redis server v=7.0.15 sha=..."
        let version = text
            .split_whitespace()
            .find_map(|w| w.strip_prefix("v="))
            .map(str::to_string)
            .ok_or_else(|| {
                format!(
                    "{} --version did not answer like a redis-server ({}); set drill.redis_server to one",
                    path.display(),
                    text.trim()
                )
            })?;
        Ok(RedisBinary { path, version })
    }
}

/// `name` in a directory of PATH, if there.
fn which(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Why a copy did not come up in the server.
#[derive(Debug)]
pub enum LoadError {
    /// The server refused the file or died loading it: the copy does not restore.
    Refused(String),
    /// This server cannot read the file's RDB version: not the copy's fault.
    ServerTooOld(String),
    /// The drill could not set the server up (no free port, cannot write its config, ...).
    Setup(String),
}

/// A running throwaway server with the copy loaded.
pub struct Throwaway {
    child: tokio::process::Child,
    port: u16,
    password: String,
    log: PathBuf,
}

impl Throwaway {
    /// Starts `bin` on `dir/file` (the copy, in the drill's private directory) and waits until
    /// it has loaded it, at most `load_timeout`. `databases`: at least the highest database
    /// number the copy uses, plus one.
    pub async fn start(
        bin: &RedisBinary,
        dir: &Path,
        file: &str,
        databases: u64,
        load_timeout: Duration,
    ) -> Result<Throwaway, LoadError> {
        let password = uuid::Uuid::new_v4().simple().to_string();
        let log = dir.join("redis.log");
        // A port free a moment ago may be taken by the time the server binds it.
        for _ in 0..5 {
            let port = free_port().map_err(|e| LoadError::Setup(format!("no free port: {e}")))?;
            let conf = dir.join("redis.conf");
            let text = format!(
                "port {port}\nbind 127.0.0.1\nprotected-mode yes\nrequirepass {password}\n\
                 dir {}\ndbfilename {file}\nsave \"\"\nappendonly no\ndaemonize no\n\
                 databases {}\nlogfile {}\n",
                quote(dir),
                databases.max(16),
                quote(&log)
            );
            crate::private_fs::write_file(&conf, text.as_bytes(), true)
                .map_err(|e| LoadError::Setup(format!("cannot write {}: {e}", conf.display())))?;
            let child = tokio::process::Command::new(&bin.path)
                .arg(&conf)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| {
                    LoadError::Setup(format!("cannot start {}: {e}", bin.path.display()))
                })?;
            let mut server = Throwaway {
                child,
                port,
                password: password.clone(),
                log: log.clone(),
            };
            match server.wait_loaded(load_timeout).await {
                Ok(()) => return Ok(server),
                Err(e) => {
                    server.stop().await;
                    let tail = server.log_tail();
                    if tail.contains("Address already in use") {
                        let _ = std::fs::remove_file(&log);
                        continue;
                    }
                    return Err(e);
                }
            }
        }
        Err(LoadError::Setup("no free port in 5 tries".into()))
    }

    /// Polls until the server answers PING (it answers -LOADING while it loads), exits, or the
    /// time is up.
    async fn wait_loaded(&mut self, load_timeout: Duration) -> Result<(), LoadError> {
        let deadline = Instant::now() + load_timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let tail = self.log_tail();
                let why = last_lines(&tail, 4);
                if tail.contains("Can't handle RDB format version") {
                    return Err(LoadError::ServerTooOld(why));
                }
                return Err(LoadError::Refused(format!(
                    "redis-server exited ({status}) loading the copy: {why}"
                )));
            }
            if Instant::now() >= deadline {
                return Err(LoadError::Refused(format!(
                    "still loading after {}s (drill.load_timeout); last log lines: {}",
                    load_timeout.as_secs(),
                    last_lines(&self.log_tail(), 3)
                )));
            }
            match self.command(&["PING"]).await {
                Ok(Reply::Status(s)) if s == "PONG" => return Ok(()),
                // LOADING, or not listening yet: look again shortly.
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Keys per database, from `INFO keyspace` (what `DBSIZE` says in each).
    pub async fn keys_per_db(&self) -> Result<BTreeMap<u64, u64>, String> {
        match self.command(&["INFO", "keyspace"]).await? {
            Reply::Bulk(text) => Ok(parse_keyspace(&text)),
            other => Err(format!("INFO keyspace answered {other:?}")),
        }
    }

    /// One command on a fresh authenticated connection.
    async fn command(&self, args: &[&str]) -> Result<Reply, String> {
        let talk = async {
            let stream = TcpStream::connect(("127.0.0.1", self.port))
                .await
                .map_err(|e| format!("cannot connect: {e}"))?;
            let mut conn = BufReader::new(stream);
            send(&mut conn, &["AUTH", &self.password]).await?;
            match read_reply(&mut conn).await? {
                Reply::Status(_) => {}
                Reply::Error(e) => return Ok(Reply::Error(e)),
                other => return Err(format!("AUTH answered {other:?}")),
            }
            send(&mut conn, args).await?;
            read_reply(&mut conn).await
        };
        tokio::time::timeout(COMMAND_TIMEOUT, talk)
            .await
            .map_err(|_| {
                format!(
                    "no answer to {} within {}s",
                    args[0],
                    COMMAND_TIMEOUT.as_secs()
                )
            })?
    }

    /// Kills the server (SIGKILL: nothing of it needs to survive) and reaps it.
    pub async fn stop(&mut self) {
        let _ = self.child.kill().await;
    }

    fn log_tail(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A path in redis.conf, quoted.
fn quote(p: &Path) -> String {
    format!(
        "\"{}\"",
        p.display()
            .to_string()
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
    )
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The last `n` non-empty lines of a log, joined with ` | `.
fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// A RESP reply (the kinds the commands sent here get).
#[derive(Debug, PartialEq)]
enum Reply {
    Status(String),
    Error(String),
    Integer(i64),
    Bulk(String),
    Nil,
}

async fn send(conn: &mut BufReader<TcpStream>, args: &[&str]) -> Result<(), String> {
    let mut out = format!("*{}\r\n", args.len());
    for a in args {
        out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    conn.get_mut()
        .write_all(out.as_bytes())
        .await
        .map_err(|e| format!("cannot send {}: {e}", args[0]))
}

async fn read_reply(conn: &mut BufReader<TcpStream>) -> Result<Reply, String> {
    let mut line = Vec::new();
    (&mut *conn)
        .take(MAX_REPLY as u64)
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| format!("cannot read the reply: {e}"))?;
    let text = String::from_utf8_lossy(&line).trim_end().to_string();
    // By characters, not bytes: a reply that is not RESP may start with any of them.
    let mut chars = text.chars();
    let kind = chars.next();
    let rest = chars.as_str();
    match kind {
        Some('+') => Ok(Reply::Status(rest.to_string())),
        Some('-') => Ok(Reply::Error(rest.to_string())),
        Some(':') => rest
            .parse()
            .map(Reply::Integer)
            .map_err(|_| format!("bad integer reply {rest:?}")),
        Some('$') => {
            let n: i64 = rest
                .parse()
                .map_err(|_| format!("bad bulk length {rest:?}"))?;
            let Ok(n) = usize::try_from(n) else {
                return Ok(Reply::Nil);
            };
            if n > MAX_REPLY {
                return Err(format!("reply of {n} bytes is larger than expected"));
            }
            let mut body = vec![0u8; n + 2];
            conn.read_exact(&mut body)
                .await
                .map_err(|e| format!("cannot read the reply: {e}"))?;
            body.truncate(n);
            Ok(Reply::Bulk(String::from_utf8_lossy(&body).into_owned()))
        }
        None => Err("the server closed the connection".into()),
        Some(_) => Err(format!("unexpected reply {text:?}")),
    }
}

/// `db0:keys=5,expires=1,avg_ttl=0` lines: keys per database.
fn parse_keyspace(info: &str) -> BTreeMap<u64, u64> {
    info.lines()
        .filter_map(|line| {
            let (db, rest) = line.trim().split_once(':')?;
            let n = db.strip_prefix("db")?.parse().ok()?;
            let keys = rest
                .split(',')
                .find_map(|kv| kv.strip_prefix("keys="))?
                .parse()
                .ok()?;
            Some((n, keys))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keyspace_section_gives_keys_per_database() {
        let info =
            "# Keyspace\r\ndb0:keys=120,expires=3,avg_ttl=0\r\ndb5:keys=1,expires=0,avg_ttl=0\r\n";
        assert_eq!(parse_keyspace(info), BTreeMap::from([(0, 120), (5, 1)]));
        assert!(parse_keyspace("# Keyspace\r\n").is_empty());
    }

    #[tokio::test]
    async fn a_reply_that_is_not_resp_is_an_error_not_a_panic() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all("é not resp\r\n+PONG\r\n$3\r\nabc\r\n$-1\r\n".as_bytes())
                .await
                .unwrap();
        });
        let mut conn = BufReader::new(TcpStream::connect(addr).await.unwrap());
        let err = read_reply(&mut conn).await.unwrap_err();
        assert!(err.contains("unexpected reply"), "{err}");
        assert_eq!(
            read_reply(&mut conn).await,
            Ok(Reply::Status("PONG".into()))
        );
        assert_eq!(read_reply(&mut conn).await, Ok(Reply::Bulk("abc".into())));
        assert_eq!(read_reply(&mut conn).await, Ok(Reply::Nil));
        assert_eq!(
            read_reply(&mut conn).await,
            Err("the server closed the connection".into())
        );
    }

    #[test]
    fn only_the_last_log_lines_are_kept() {
        assert_eq!(last_lines("a\n\nb\nc\n", 2), "b | c");
        assert_eq!(last_lines("", 2), "");
    }
}
