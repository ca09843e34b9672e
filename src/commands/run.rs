//! `run`: the daemon in the foreground (systemd's `ExecStart`).

use crate::config::Config;
use crate::failure::Failure;
use anyhow::Context as _;

/// `run`: checks the `/v1` token file, opens the services, listens on `http.listen` and runs
/// the daemon until SIGTERM/SIGINT; SIGHUP reloads the config.
pub async fn run(cfg: Config) -> Result<(), Failure> {
    // A token file that cannot be used is a configuration problem: exit 2 before anything runs.
    let token = crate::http::load_token(&cfg).map_err(|e| Failure::Usage(e.to_string()))?;
    // Drills asked for explicitly must be able to run: say so now, not in a log line later.
    if cfg.drill.enabled == Some(true)
        && let Err(why) = crate::drill::RedisBinary::find(cfg.drill.redis_server.as_deref()).await
    {
        return Err(Failure::Usage(format!(
            "drill.enabled is true, yet no restore drill can run: {why}"
        )));
    }
    let cfg = std::sync::Arc::new(cfg);
    let metrics = crate::metrics::Metrics::register(prometheus::Registry::new())?;
    let ctx =
        crate::services::open(cfg.clone(), crate::services::owner_id("daemon"), metrics).await?;
    let listener = tokio::net::TcpListener::bind(cfg.http.listen)
        .await
        .with_context(|| format!("cannot listen on {} (http.listen)", cfg.http.listen))?;
    let bound = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(listen = %bound, policies = cfg.policies.len(), state = %cfg.state.describe(), "rdbvault daemon started");
    crate::daemon::run_with_reload(
        ctx,
        listener,
        crate::daemon::shutdown_signal(),
        Some(cfg.source.clone()),
        token,
    )
    .await?;
    tracing::info!("rdbvault daemon stopped");
    Ok(())
}
