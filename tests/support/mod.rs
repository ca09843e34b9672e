//! Shared set-up for the integration tests: the simulator, a client, the binary, SeaweedFS.

#![allow(dead_code)]

pub mod redis;

use rdbvault::cds::{Client, ClientConfig, RetryPolicy};
use rdbvault::metrics::ApiMetrics;
use rdbvault::secret::Secret;
use rdbvault::sim::{self, SimConfig, SimHandle, state::Settings};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

pub const AK: &str = "test-ak";
/// A distinctive secret so output can be grepped for leaks.
pub const SECRET: &str = "t0p-s3cret-do-not-print";

/// The simulator's config used by most tests: fast backups, known credentials.
pub fn sim_config() -> SimConfig {
    SimConfig {
        access_key_id: AK.into(),
        access_key_secret: Secret::new(SECRET),
        settings: Settings {
            backup_delay: Duration::from_millis(200),
            url_ttl: Duration::from_secs(60),
            default_backup_size: 256 * 1024,
        },
        instances: None,
        clock: rdbvault::clock::system(),
    }
}

pub async fn start_sim(config: SimConfig) -> SimHandle {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    sim::start(listener, config).await.unwrap()
}

/// A fast retry policy so retry tests take milliseconds.
pub fn fast_retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
        max_elapsed: Duration::from_secs(10),
    }
}

pub fn client_with(
    sim: &SimHandle,
    secret: &str,
    retry: RetryPolicy,
) -> (Client, prometheus::Registry) {
    let registry = prometheus::Registry::new();
    let metrics = ApiMetrics::register(&registry).unwrap();
    let client = Client::new(
        ClientConfig {
            endpoint: sim.base_url.parse().unwrap(),
            access_key_id: AK.into(),
            access_key_secret: Secret::new(secret),
            timeout: Duration::from_secs(10),
            retry,
        },
        metrics,
        rdbvault::clock::system(),
    )
    .unwrap();
    (client, registry)
}

pub fn client(sim: &SimHandle) -> (Client, prometheus::Registry) {
    client_with(sim, SECRET, fast_retry(4))
}

/// Value of `rdbvault_api_requests_total{action, code}`.
pub fn api_count(registry: &prometheus::Registry, action: &str, code: &str) -> u64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == "rdbvault_api_requests_total")
        .flat_map(|f| f.get_metric())
        .filter(|m| {
            let labels: Vec<_> = m
                .get_label()
                .iter()
                .map(|l| (l.name(), l.value()))
                .collect();
            labels.contains(&("action", action)) && labels.contains(&("code", code))
        })
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

/// A loopback port free a moment ago (for a server a test starts with a fixed address).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `rdbvault` binary with a clean environment (no CDS or AWS variables from the caller).
pub fn rdbvault() -> Command {
    clean_env(Command::new(env!("CARGO_BIN_EXE_rdbvault")))
}

/// The binary started by `sh -c 'umask MASK; exec ...'`, so it really runs under that umask
/// whatever the test process's own is. Arguments added to it go to rdbvault.
pub fn rdbvault_under_umask(mask: &str) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("umask {mask}; exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_rdbvault"));
    clean_env(cmd)
}

/// `cmd` without the caller's CDS, AWS, config and log variables, started in the repository root.
pub fn clean_env(mut cmd: Command) -> Command {
    for var in [
        "CDS_ACCESS_KEY_ID",
        "CDS_ACCESS_KEY_SECRET",
        "RDBVAULT_CONFIG",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_PROFILE",
        "RUST_LOG",
        // libpq's: a PostgreSQL state DB takes only what its config says.
        "PGPASSWORD",
        "PGPASSFILE",
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGDATABASE",
        "PGSSLMODE",
        "PGOPTIONS",
    ] {
        cmd.env_remove(var);
    }
    cmd.current_dir(repo_root());
    cmd
}

/// Sends `sig` (`-TERM`, `-HUP`, ...) to a child process, as an operator's `kill` would.
pub fn signal(child: &tokio::process::Child, sig: &str) {
    let pid = child.id().expect("the child is still running");
    Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill runs");
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

pub fn run(cmd: &mut Command) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("rdbvault binary runs");
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Whether an external tool is on PATH. Under `scripts/test.sh` (RDBVAULT_REQUIRE_TOOLS=1) a
/// missing tool fails the test instead of skipping it.
pub fn have_tool(name: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        if std::env::var("RDBVAULT_REQUIRE_TOOLS").as_deref() == Ok("1") {
            panic!("{name} is required (scripts/test.sh installs it)");
        }
        eprintln!("SKIPPED: {name} is not installed; run ./scripts/test.sh to install it");
    }
    found
}

/// Writes a file readable only by its owner (credentials).
pub fn write_private(path: &Path, content: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, content).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A running SeaweedFS S3 server, shared by the whole test binary.
pub struct SeaweedFs {
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    _dir: tempfile::TempDir,
}

/// Starts `weed mini` once per test binary on free loopback ports, with S3 authentication on,
/// and a watchdog that stops it when this test process ends.
pub fn seaweedfs() -> Option<&'static SeaweedFs> {
    static SERVER: OnceLock<Option<SeaweedFs>> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            if !have_tool("weed") {
                return None;
            }
            Some(start_seaweedfs())
        })
        .as_ref()
}

fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Starts `weed mini` in `dir` on ports `base`..`base + 4` (and each + 10000 for gRPC) with
/// S3 authentication on and `bucket` made, plus a watchdog that stops it when this test process
/// ends; waits until the bucket answers. The one launcher behind [`seaweedfs`] and
/// [`PrivateSeaweedFs`].
fn spawn_weed(dir: &Path, base: u16, bucket: &str, access_key: &str, secret_key: &str) -> String {
    let s3_port = base + 3;
    let script = format!(
        "weed mini -dir={dir} -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.port={b} -volume.port={v} \
         -filer.port={f} -s3.port={s3_port} -admin.ui=false -admin.port={a} -webdav=false \
         -s3.port.iceberg=0 -s3.port.lance=0 -bucket={bucket} >>{dir}/weed.log 2>&1 & w=$!; \
         while kill -0 {parent} 2>/dev/null && kill -0 $w 2>/dev/null; do sleep 0.5; done; kill $w 2>/dev/null; wait",
        dir = dir.display(),
        b = base,
        v = base + 1,
        f = base + 2,
        a = base + 4,
        parent = std::process::id(),
    );
    // Not waited on: the script's watchdog stops weed when this test process ends, and the
    // process outlives every test that shares it.
    #[allow(clippy::zombie_processes)]
    Command::new("bash")
        .args(["-c", &script])
        .env("AWS_ACCESS_KEY_ID", access_key)
        .env("AWS_SECRET_ACCESS_KEY", secret_key)
        .spawn()
        .expect("bash runs");
    let endpoint = format!("http://127.0.0.1:{s3_port}");
    for _ in 0..150 {
        std::thread::sleep(Duration::from_millis(200));
        // Ready when the pre-created bucket answers (403 without credentials is fine).
        if let Ok(out) = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &format!("{endpoint}/{bucket}"),
            ])
            .output()
        {
            let code = String::from_utf8_lossy(&out.stdout).to_string();
            if code == "200" || code == "403" {
                return endpoint;
            }
        }
    }
    let log = std::fs::read_to_string(dir.join("weed.log")).unwrap_or_default();
    panic!("SeaweedFS did not start on {endpoint}:\n{log}");
}

fn start_seaweedfs() -> SeaweedFs {
    let dir = tempfile::tempdir().unwrap();
    let access_key = "rdbvault-test-s3-key".to_string();
    let secret_key = "rdbvault-test-s3-secret-value".to_string();
    for attempt in 0..10 {
        let base = 20000 + (std::process::id() as u16 % 1000) * 10 + attempt * 7;
        if !(0..5).all(|i| port_free(base + i) && port_free(base + i + 10000)) {
            continue;
        }
        let endpoint = spawn_weed(dir.path(), base, "rdbvault-test", &access_key, &secret_key);
        return SeaweedFs {
            endpoint,
            access_key,
            secret_key,
            _dir: dir,
        };
    }
    panic!("no free ports for SeaweedFS");
}

/// A SeaweedFS of one test's own, which the test may stop and start again (an S3 outage).
pub struct PrivateSeaweedFs {
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    dir: tempfile::TempDir,
    base: u16,
}

impl PrivateSeaweedFs {
    pub fn start() -> Option<PrivateSeaweedFs> {
        if !have_tool("weed") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        for attempt in 0..20u16 {
            let base = 41000 + (std::process::id() as u16 % 500) * 10 + attempt * 13;
            if !(0..5).all(|i| port_free(base + i) && port_free(base + i + 10000)) {
                continue;
            }
            let s = PrivateSeaweedFs {
                endpoint: format!("http://127.0.0.1:{}", base + 3),
                access_key: "rdbvault-outage-key".into(),
                secret_key: "rdbvault-outage-secret-value".into(),
                dir,
                base,
            };
            s.spawn();
            return Some(s);
        }
        panic!("no free ports for a private SeaweedFS");
    }

    fn spawn(&self) {
        spawn_weed(
            self.dir.path(),
            self.base,
            "outage",
            &self.access_key,
            &self.secret_key,
        );
    }

    /// Kills the server (an outage).
    pub fn stop(&self) {
        let pattern = format!("weed mini -dir={}", self.dir.path().display());
        let _ = Command::new("pkill")
            .args(["-KILL", "-f", &pattern])
            .status();
        for _ in 0..50 {
            if port_free(self.base + 3) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts it again on the same data and ports.
    pub fn restart(&self) {
        self.spawn();
    }
}

impl Drop for PrivateSeaweedFs {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The PostgreSQL server of the suite's second pass (`scripts/test.sh` sets
/// `RDBVAULT_TEST_PG_URL`), or `None` on the SQLite pass.
pub fn pg_server() -> Option<String> {
    std::env::var("RDBVAULT_TEST_PG_URL")
        .ok()
        .filter(|s| !s.trim().is_empty())
}

/// The PostgreSQL database of a test directory on the PostgreSQL pass: one per directory,
/// created on first use, so the config written for `d` and [`open_store`]`(d)` meet.
pub fn pg_database_for(d: &Path) -> Option<String> {
    use std::hash::{Hash as _, Hasher as _};
    let server = pg_server()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    d.hash(&mut h);
    let name = format!("rdbvault_it_{:016x}", h.finish());
    let mut url = url::Url::parse(&server).expect("RDBVAULT_TEST_PG_URL is a URL");
    url.set_path(&name);
    // Its own thread and runtime: callers may be sync or inside a runtime.
    std::thread::spawn(move || {
        use sqlx::Connection as _;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut admin = sqlx::PgConnection::connect(&server).await.unwrap();
            let exists: Option<(i32,)> =
                sqlx::query_as("SELECT 1 FROM pg_database WHERE datname = $1")
                    .bind(&name)
                    .fetch_optional(&mut admin)
                    .await
                    .unwrap();
            if exists.is_none() {
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut admin)
                    .await
                    .unwrap();
            }
            admin.close().await.unwrap();
        })
    })
    .join()
    .unwrap();
    Some(url.to_string())
}

/// The `state:` lines of a test config for directory `d`: `path: d/state.db`, or on the
/// PostgreSQL pass `url:` of `d`'s database. Every test whose backend does not matter uses it,
/// so the suite runs on both.
pub fn state_yaml(d: &Path) -> String {
    match pg_database_for(d) {
        Some(url) => format!("state:\n  url: {url}\n"),
        None => format!("state:\n  path: {}/state.db\n", d.display()),
    }
}

/// The state DB a test config written with [`state_yaml`]`(d)` names.
pub async fn open_store(d: &Path) -> rdbvault::store::Store {
    let state = rdbvault::config::StateConfig {
        path: d.join("state.db"),
        url: pg_database_for(d),
        password_file: None,
        job_lease: Duration::from_secs(60),
    };
    rdbvault::store::Store::connect(&state).await.unwrap()
}
