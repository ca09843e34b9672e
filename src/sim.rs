//! A faithful stand-in for the CDS Redis API on loopback (`rdbvault sim`), used by the tests, by
//! `demo`, and by anyone trying rdbvault without a cloud account.
//!
//! - [`auth`]: signature verification per `docs/cds-api.md` §1.4.
//! - [`state`]: instances, backups, download tokens, faults; the nine actions' logic.
//! - [`http`]: the API, download and `/_sim/` control endpoints.
//! - [`catalog`]: regions and the product catalogue from the reference's examples.
//!
//! Where the provider's behaviour is undocumented the simulator makes explicit choices, listed in
//! the README: backups are `running` then `finished` (or `failed`), download URLs live
//! `url_ttl`, a cluster backup yields one record per shard, auth failures use the codes in
//! [`auth`].

pub mod auth;
pub mod catalog;
pub mod http;
pub mod state;

use crate::clock::SharedClock;
use crate::rdb::Generator;
use crate::secret::Secret;
use state::{InstanceSpec, Payload, Settings, World};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Credentials the simulator accepts when `CDS_ACCESS_KEY_ID` / `CDS_ACCESS_KEY_SECRET` are not
/// set. Printed at start; they protect nothing.
pub const DEMO_ACCESS_KEY_ID: &str = "rdbvault-demo-ak";
pub const DEMO_ACCESS_KEY_SECRET: &str = "rdbvault-demo-secret";

/// State shared by all request handlers.
#[derive(Debug)]
pub struct Shared {
    pub world: Mutex<World>,
    pub nonces: Mutex<auth::NonceCache>,
    pub access_key_id: String,
    pub access_key_secret: Secret,
    pub clock: SharedClock,
    /// `http://127.0.0.1:PORT`, used to build download URLs.
    pub base_url: String,
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub access_key_id: String,
    pub access_key_secret: Secret,
    pub settings: Settings,
    /// Instances to start with; `None` means [`state::default_instances`].
    pub instances: Option<Vec<InstanceSpec>>,
    pub clock: SharedClock,
}

impl Shared {
    /// Locks the world. A handler that panicked while holding the lock leaves it poisoned; the
    /// world's invariants hold between statements, so carry on with it rather than let one bad
    /// request make every later one fail.
    pub fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Locks the nonce cache, recovering from poison as [`Shared::world`] does.
    pub fn nonces(&self) -> std::sync::MutexGuard<'_, auth::NonceCache> {
        self.nonces.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl SimConfig {
    /// Credentials from `CDS_ACCESS_KEY_ID` / `CDS_ACCESS_KEY_SECRET`, else the demo ones.
    pub fn from_env() -> Self {
        let id = std::env::var(crate::config::credentials::ENV_ACCESS_KEY_ID)
            .ok()
            .filter(|s| !s.is_empty());
        let secret = std::env::var(crate::config::credentials::ENV_ACCESS_KEY_SECRET)
            .ok()
            .filter(|s| !s.is_empty());
        let (id, secret) = match (id, secret) {
            (Some(id), Some(secret)) => (id, secret),
            _ => (DEMO_ACCESS_KEY_ID.into(), DEMO_ACCESS_KEY_SECRET.into()),
        };
        SimConfig {
            access_key_id: id,
            access_key_secret: Secret::new(secret),
            settings: Settings::default(),
            instances: None,
            clock: crate::clock::system(),
        }
    }

    /// True when the simulator runs with the built-in demo credentials.
    pub fn uses_demo_credentials(&self) -> bool {
        self.access_key_id == DEMO_ACCESS_KEY_ID
    }
}

/// Reads a `--state` file.
///
/// # Errors
/// Unreadable file or invalid JSON, with the file name.
pub fn load_state_file(path: &Path) -> anyhow::Result<Vec<InstanceSpec>> {
    use anyhow::Context as _;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read simulator state file {}", path.display()))?;
    let file: state::StateFile = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a simulator state file", path.display()))?;
    Ok(file.instances)
}

/// A running simulator.
#[derive(Debug)]
pub struct SimHandle {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`: the value for `cds.endpoint`.
    pub base_url: String,
    pub shared: Arc<Shared>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl SimHandle {
    /// Stops serving and waits for the server task.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }

    /// Adds a fault directly (tests can also POST to `/_sim/faults`).
    pub fn add_fault(&self, fault: state::Fault) -> u64 {
        self.shared.world().add_fault(fault)
    }

    /// Calls made per action so far.
    pub fn calls(&self, action: &str) -> u64 {
        self.shared.world().calls.get(action).copied().unwrap_or(0)
    }
}

/// A generated payload whose CRC is computed on a blocking thread; the backup reports
/// `finished` only once it is known, as a real provider finishes writing before it lists a file.
pub fn generated_payload(
    handle: &tokio::runtime::Handle,
    size: u64,
    version: u16,
    seed: u64,
) -> Payload {
    let generator = Arc::new(
        Generator::new(size, seed, version)
            .or_else(|_| Generator::new(4096, seed, version))
            // cannot fail: 4096 bytes is a valid size for every RDB version the simulator uses.
            .expect("4096 bytes is a valid RDB size"),
    );
    let crc = Arc::new(OnceLock::new());
    let (g, c) = (generator.clone(), crc.clone());
    handle.spawn_blocking(move || {
        let _ = c.set(g.compute_crc());
    });
    Payload::Generated { generator, crc }
}

/// Adds an instance at run time, with its seeded automatic backup if asked for.
///
/// # Errors
/// A size no RDB file can have, or an unreadable or invalid `payload_file`.
pub fn add_instance(shared: &Shared, spec: InstanceSpec) -> Result<String, String> {
    let now = shared.clock.now();
    let mut world = shared.world();
    if let Some(size) = spec.backup_size {
        let version = crate::rdb::rdb_version_for_redis(spec.version.as_deref().unwrap_or("5.0"));
        Generator::new(size, 0, version).map_err(|e| format!("instance {}: {e}", spec.name))?;
    }
    let auto = spec.auto_backup.unwrap_or(false);
    let uuid = world.insert_instance(spec, now)?;
    if auto {
        // cannot fail: insert_instance just inserted it under this key.
        let inst = world.instances[&uuid].clone();
        let handle = tokio::runtime::Handle::current();
        let mut make =
            |size: u64, version: u16, seed: u64| generated_payload(&handle, size, version, seed);
        // Made "yesterday" by the provider's own schedule; already finished.
        let yesterday = now - chrono::Duration::days(1);
        world.start_backup(&inst, String::new(), "auto", yesterday, false, &mut make);
    }
    Ok(uuid)
}

/// Starts the simulator on `listener` and returns at once.
///
/// # Errors
/// An invalid instance definition.
pub async fn start(listener: TcpListener, config: SimConfig) -> anyhow::Result<SimHandle> {
    let addr = listener.local_addr()?;
    let base_url = format!("http://{addr}");
    let shared = Arc::new(Shared {
        world: Mutex::new(World::new(config.settings.clone())),
        nonces: Mutex::new(auth::NonceCache::default()),
        access_key_id: config.access_key_id.clone(),
        access_key_secret: config.access_key_secret.clone(),
        clock: config.clock.clone(),
        base_url: base_url.clone(),
    });
    for spec in config.instances.unwrap_or_else(state::default_instances) {
        let name = spec.name.clone();
        add_instance(&shared, spec)
            .map_err(|e| anyhow::anyhow!("simulator instance {name}: {e}"))?;
    }
    let shutdown = CancellationToken::new();
    let app = http::router(shared.clone());
    let token = shutdown.clone();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { token.cancelled().await })
            .await
    });
    Ok(SimHandle {
        addr,
        base_url,
        shared,
        shutdown,
        task,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_world_lock_is_recovered() {
        let shared = Arc::new(Shared {
            world: Mutex::new(World::new(state::Settings::default())),
            nonces: Mutex::new(auth::NonceCache::default()),
            access_key_id: "ak".into(),
            access_key_secret: Secret::new("s"),
            clock: crate::clock::system(),
            base_url: "http://127.0.0.1:9".into(),
        });
        let s = shared.clone();
        let _ = std::thread::spawn(move || {
            let _guard = s.world.lock();
            panic!("a handler panics while holding the lock");
        })
        .join();
        assert!(shared.world.is_poisoned());
        shared.world().downloads += 1;
        assert_eq!(shared.world().downloads, 1);
    }
}
