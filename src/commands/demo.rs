//! `demo`: the simulator, a throwaway state DB and directory, and the daemon, with a live log.

use super::format::{human_bytes, local};
use crate::config;
use crate::failure::Failure;
use crate::job::State;
use anyhow::Context as _;
use std::sync::Arc;

/// `demo`: the simulator, a throwaway state DB and directory, a policy every 10 seconds.
pub async fn demo() -> Result<(), Failure> {
    let dir = tempfile::Builder::new()
        .prefix("rdbvault-demo-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let root = dir.path();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot start the simulator")?;
    let mut sim_cfg = crate::sim::SimConfig::from_env();
    sim_cfg.access_key_id = crate::sim::DEMO_ACCESS_KEY_ID.into();
    sim_cfg.access_key_secret = crate::secret::Secret::new(crate::sim::DEMO_ACCESS_KEY_SECRET);
    sim_cfg.settings.backup_delay = std::time::Duration::from_secs(2);
    sim_cfg.settings.default_backup_size = 8 << 20;
    let sim = crate::sim::start(listener, sim_cfg).await?;

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
    let http = if std::net::TcpListener::bind("127.0.0.1:9750").is_ok() {
        "127.0.0.1:9750"
    } else {
        "127.0.0.1:0"
    };
    let yaml = format!(
        r#"cds:
  endpoint: {endpoint}
  access_key_id_file: {root}/cds_access_key_id
  access_key_secret_file: {root}/cds_access_key_secret
  timeout: 10s
state:
  path: {root}/rdbvault.db
http:
  listen: {http}
destinations:
  archive:
    type: file
    path: {root}/archive
policies:
  - name: demo
    schedule:
      cron: "*/10 * * * * *"
      start_window: 30s
      completion_window: 5m
      catch_up: none
    instances:
      - name: "prod-*"
    destination: archive
    retention:
      destination: {{ keep_last: 5 }}
"#,
        endpoint = sim.base_url,
        root = root.display(),
    );
    let config_path = root.join("rdbvault.yaml");
    std::fs::write(&config_path, &yaml).context("cannot write the demo config")?;
    let cfg = Arc::new(config::load(&config_path)?);
    let metrics = crate::metrics::Metrics::register(prometheus::Registry::new())?;
    let mut ctx =
        crate::services::open(cfg.clone(), crate::services::owner_id("demo"), metrics).await?;
    ctx.poll = crate::services::PollSettings {
        initial: std::time::Duration::from_millis(500),
        max: std::time::Duration::from_secs(2),
        ..crate::services::PollSettings::default()
    };
    let listener = tokio::net::TcpListener::bind(cfg.http.listen)
        .await
        .context("cannot bind the metrics endpoint")?;
    let metrics_addr = listener.local_addr().context("metrics address")?;

    println!("rdbvault demo");
    println!(
        "  simulated CDS Redis API  {}/redis/  (instances prod-cache-01, prod-cluster-01 with 2 shards, staging-cache)",
        sim.base_url
    );
    println!(
        "  policy                   demo: every 10 seconds, instances \"prod-*\", keep_last 5"
    );
    println!("  copies land in           {}/archive", root.display());
    println!("  state DB                 {}/rdbvault.db", root.display());
    println!("  config                   {}", config_path.display());
    println!("  metrics                  http://{metrics_addr}/metrics");
    println!(
        "  try, in another terminal: rdbvault -c {} jobs",
        config_path.display()
    );
    println!("Ctrl-C stops the demo (and removes {}).", root.display());
    println!();

    let store = ctx.store.clone();
    let daemon = tokio::spawn(crate::daemon::run(
        ctx,
        listener,
        crate::daemon::shutdown_signal(),
    ));
    let mut seen = std::collections::HashSet::new();
    let archive = root.join("archive");
    loop {
        if daemon.is_finished() {
            break;
        }
        if let Ok(rows) = store.list_jobs(Some("demo"), None, 20).await {
            for j in rows.into_iter().rev() {
                if !State::from_str_lossy(&j.state).is_terminal() || !seen.insert(j.id.clone()) {
                    continue;
                }
                match j.state.as_str() {
                    "stored" => {
                        for s in store.shards(&j.id).await.unwrap_or_default() {
                            println!(
                                "{}  stored   {:<16} {}  {}  sha256 {}…",
                                local(j.finished_at.unwrap_or(j.created_at)),
                                j.instance_name,
                                archive.join(s.object_key.unwrap_or_default()).display(),
                                human_bytes(s.bytes_done),
                                s.sha256
                                    .unwrap_or_default()
                                    .chars()
                                    .take(16)
                                    .collect::<String>()
                            );
                        }
                    }
                    other => println!(
                        "{}  {other:<8} {:<16} {}",
                        local(j.finished_at.unwrap_or(j.created_at)),
                        j.instance_name,
                        j.error.unwrap_or_default()
                    ),
                }
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
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
    println!("demo stopped; removing {}", root.display());
    Ok(())
}

fn write_private(path: &std::path::Path, content: &str) -> Result<(), Failure> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, content).with_context(|| format!("cannot write {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot chmod {}", path.display()))?;
    Ok(())
}
