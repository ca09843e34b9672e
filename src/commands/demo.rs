//! `demo`: the simulator, a throwaway state DB and directory, and the daemon, with a live log.
//!
//! The steps: start the simulator ([`start_simulator`]); write the credentials, the archive
//! directory and a config into a temporary directory ([`write_setup`], the config itself from
//! [`demo_yaml`]); run the daemon until Ctrl-C, printing each finished job once
//! ([`print_results_until_stopped`], the lines from [`result_lines`]); stop the simulator; the
//! temporary directory goes when `demo` returns, whichever way it returns.

use super::format::{human_bytes, local};
use crate::config;
use crate::failure::Failure;
use crate::services::Context;
use crate::sim::SimHandle;
use crate::store::{JobRow, ShardRow, Store};
use anyhow::Context as _;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `demo`: the simulator, a throwaway state DB and directory, a policy every 10 seconds.
pub async fn demo() -> Result<(), Failure> {
    // Removed when dropped: at the end, or on any early return.
    let dir = tempfile::Builder::new()
        .prefix("rdbvault-demo-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let root = dir.path();
    let sim = start_simulator().await?;
    let config_path = write_setup(root, &sim.base_url)?;
    let cfg = Arc::new(config::load(&config_path)?);
    let ctx = demo_context(cfg.clone()).await?;
    let listener = tokio::net::TcpListener::bind(cfg.http.listen)
        .await
        .context("cannot bind the metrics endpoint")?;
    let metrics_addr = listener.local_addr().context("metrics address")?;
    print_banner(&sim.base_url, root, &config_path, metrics_addr);

    let store = ctx.store.clone();
    let daemon = tokio::spawn(crate::daemon::run(
        ctx,
        listener,
        crate::daemon::shutdown_signal(),
    ));
    print_results_until_stopped(&store, &root.join("archive"), &daemon).await;
    match daemon.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(Failure::Runtime(e)),
        Err(e) => {
            return Err(Failure::Runtime(anyhow::anyhow!(
                "demo daemon task failed: {e}"
            )));
        }
    }
    sim.stop().await;
    outln!("demo stopped; removing {}", root.display());
    Ok(())
}

/// The simulator on a free local port, with the demo credentials; backups are ready after 2 s
/// and are 8 MiB, so the first copies land within seconds.
async fn start_simulator() -> Result<SimHandle, Failure> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot start the simulator")?;
    let mut sim_cfg = crate::sim::SimConfig::from_env();
    sim_cfg.access_key_id = crate::sim::DEMO_ACCESS_KEY_ID.into();
    sim_cfg.access_key_secret = crate::secret::Secret::new(crate::sim::DEMO_ACCESS_KEY_SECRET);
    sim_cfg.settings.backup_delay = std::time::Duration::from_secs(2);
    sim_cfg.settings.default_backup_size = 8 << 20;
    Ok(crate::sim::start(listener, sim_cfg).await?)
}

/// Writes what the demo's config names into `root` (the credential files, 0600; the archive
/// directory) and the config itself; returns the config's path.
fn write_setup(root: &Path, endpoint: &str) -> Result<PathBuf, Failure> {
    write_private(
        &root.join("cds_access_key_id"),
        crate::sim::DEMO_ACCESS_KEY_ID,
    )?;
    write_private(
        &root.join("cds_access_key_secret"),
        crate::sim::DEMO_ACCESS_KEY_SECRET,
    )?;
    crate::private_fs::create_dir_all(&root.join("archive"))
        .context("cannot create the archive directory")?;
    // The documented metrics port when it is free; any port when another process has it.
    let http = if std::net::TcpListener::bind("127.0.0.1:9750").is_ok() {
        "127.0.0.1:9750"
    } else {
        "127.0.0.1:0"
    };
    let config_path = root.join("rdbvault.yaml");
    std::fs::write(&config_path, demo_yaml(endpoint, root, http))
        .context("cannot write the demo config")?;
    Ok(config_path)
}

/// The demo's config: the simulator's API, everything else under `root`, one policy every 10
/// seconds for the `prod-*` instances keeping the last 5 copies.
fn demo_yaml(endpoint: &str, root: &Path, http: &str) -> String {
    format!(
        r#"cds:
  endpoint: {endpoint}
  access_key_id_file: {root}/cds_access_key_id
  access_key_secret_file: {root}/cds_access_key_secret
  timeout: 10s
state:
  path: {root}/rdbvault.db
http:
  listen: {http}
drill:
  interval: 30s
destinations:
  archive:
    type: file
    path: {root}/archive
policies:
  - name: demo
    schedule:
      cron: "*/10 * * * * *"
      start_window: 10s
      completion_window: 5m
      catch_up: none
    instances:
      - name: "prod-*"
    destination: archive
    retention:
      destination: {{ keep_last: 5 }}
"#,
        root = root.display(),
    )
}

/// The daemon's bundle, polling the simulator faster than a real API would allow, so a backup
/// is followed within a second of being ready.
async fn demo_context(cfg: Arc<config::Config>) -> Result<Context, Failure> {
    let metrics = crate::metrics::Metrics::register(prometheus::Registry::new())?;
    let mut ctx = crate::services::open(cfg, crate::services::owner_id("demo"), metrics).await?;
    ctx.poll = crate::services::PollSettings {
        initial: std::time::Duration::from_millis(500),
        max: std::time::Duration::from_secs(2),
        ..crate::services::PollSettings::default()
    };
    Ok(ctx)
}

/// What the demo runs and where to look.
fn print_banner(
    endpoint: &str,
    root: &Path,
    config_path: &Path,
    metrics_addr: std::net::SocketAddr,
) {
    outln!("rdbvault demo");
    outln!(
        "  simulated CDS Redis API  {endpoint}/redis/  (instances prod-cache-01, prod-cluster-01 with 2 shards, staging-cache)"
    );
    outln!("  policy                   demo: every 10 seconds, instances \"prod-*\", keep_last 5");
    outln!("  copies land in           {}/archive", root.display());
    outln!("  state DB                 {}/rdbvault.db", root.display());
    outln!("  config                   {}", config_path.display());
    outln!("  metrics                  http://{metrics_addr}/metrics");
    outln!(
        "  restore drills           every 30 s, into a throwaway redis-server (when one is installed)"
    );
    outln!(
        "  try, in another terminal: rdbvault -c {} jobs   (or backups, status, drill)",
        config_path.display()
    );
    outln!("Ctrl-C stops the demo (and removes {}).", root.display());
    outln!();
}

/// Every half second until the daemon stops (Ctrl-C), prints the jobs that finished since.
async fn print_results_until_stopped(
    store: &Store,
    archive: &Path,
    daemon: &tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let mut seen = HashSet::new();
    while !daemon.is_finished() {
        print_new_results(store, archive, &mut seen).await;
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// Prints each finished job of the last 20 once, oldest first. A DB read that fails is tried
/// again on the next round: the log is a view, the daemon is what matters.
async fn print_new_results(store: &Store, archive: &Path, seen: &mut HashSet<String>) {
    let Ok(jobs) = store.list_jobs(Some("demo"), None, 20).await else {
        return;
    };
    for job in jobs.into_iter().rev() {
        if !job.state.is_terminal() || !seen.insert(job.id.clone()) {
            continue;
        }
        let shards = if job.state == crate::job::State::Stored {
            store.shards(&job.id).await.unwrap_or_default()
        } else {
            Vec::new()
        };
        for line in result_lines(&job, &shards, archive) {
            outln!("{line}");
        }
    }
}

/// The log lines of a finished job: a stored one, one per shard with where its copy landed, its
/// size and the start of its SHA-256; any other, its state and error.
fn result_lines(job: &JobRow, shards: &[ShardRow], archive: &Path) -> Vec<String> {
    let at = local(job.finished_at.unwrap_or(job.created_at));
    match job.state {
        crate::job::State::Stored => shards
            .iter()
            .map(|s| {
                format!(
                    "{at}  stored   {:<16} {}  {}  sha256 {}…",
                    job.instance_name,
                    archive
                        .join(s.object_key.as_deref().unwrap_or_default())
                        .display(),
                    human_bytes(s.bytes_done),
                    s.sha256
                        .as_deref()
                        .unwrap_or_default()
                        .chars()
                        .take(16)
                        .collect::<String>()
                )
            })
            .collect(),
        other => vec![format!(
            "{at}  {other:<8} {:<16} {}",
            job.instance_name,
            job.error.as_deref().unwrap_or_default()
        )],
    }
}

fn write_private(path: &Path, content: &str) -> Result<(), Failure> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, content).with_context(|| format!("cannot write {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot chmod {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_config_backs_up_the_prod_instances_every_ten_seconds_into_the_archive() {
        let root = Path::new("/tmp/rdbvault-demo-test");
        let yaml = demo_yaml("http://127.0.0.1:9751", root, "127.0.0.1:0");
        let cfg = config::parse(&yaml, &root.join("rdbvault.yaml")).unwrap();
        assert_eq!(cfg.state.path, root.join("rdbvault.db"));
        assert_eq!(cfg.policies.len(), 1);
        let policy = &cfg.policies[0];
        assert_eq!(policy.name, "demo");
        assert_eq!(policy.schedule.cron.as_str(), "*/10 * * * * *");
        assert_eq!(policy.destination, "archive");
        assert!(cfg.destinations.contains_key("archive"));
    }

    fn job(state: &str, error: Option<&str>) -> JobRow {
        JobRow {
            id: "j1".into(),
            policy: "demo".into(),
            instance_uuid: "u1".into(),
            instance_name: "prod-cache-01".into(),
            destination: "archive".into(),
            trigger: "schedule".into(),
            state: state.parse().unwrap(),
            due_at: 1_700_000_000_000,
            created_at: 1_700_000_000_000,
            finished_at: Some(1_700_000_012_000),
            attempts: 1,
            error: error.map(String::from),
            ..JobRow::blank()
        }
    }

    fn shard(backup_id: &str) -> ShardRow {
        ShardRow {
            job_id: "j1".into(),
            backup_id: backup_id.into(),
            shard_id: String::new(),
            size: Some(8 << 20),
            provider_start: String::new(),
            provider_end: String::new(),
            state: crate::job::ShardState::Stored,
            object_key: Some(format!("demo/prod-cache-01/{backup_id}.rdb")),
            manifest_key: None,
            upload_id: None,
            temp_path: None,
            bytes_done: 8 << 20,
            sha256: Some("0123456789abcdef0123456789abcdef".into()),
            rdb_version: Some(11),
            checksum: None,
            rdb_contents: None,
        }
    }

    #[test]
    fn a_stored_job_prints_one_line_per_shard_with_where_it_landed() {
        let lines = result_lines(
            &job("stored", None),
            &[shard("b1"), shard("b2")],
            Path::new("/a"),
        );
        let at = local(1_700_000_012_000);
        assert_eq!(
            lines,
            [
                format!(
                    "{at}  stored   prod-cache-01    /a/demo/prod-cache-01/b1.rdb  8.0 MiB  sha256 0123456789abcdef…"
                ),
                format!(
                    "{at}  stored   prod-cache-01    /a/demo/prod-cache-01/b2.rdb  8.0 MiB  sha256 0123456789abcdef…"
                ),
            ]
        );
    }

    #[test]
    fn any_other_finished_job_prints_its_state_and_error() {
        let lines = result_lines(
            &job("failed", Some("CreateBackup refused")),
            &[],
            Path::new("/a"),
        );
        let at = local(1_700_000_012_000);
        assert_eq!(
            lines,
            [format!(
                "{at}  failed   prod-cache-01    CreateBackup refused"
            )]
        );
    }
}
