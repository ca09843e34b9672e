//! The long-running process (`run`, and `demo` on top of it): wiring the tasks, reload on
//! SIGHUP, and a drain on shutdown.
//!
//! - [`dispatch`](mod@dispatch): claims due jobs and runs them.
//! - [`maintenance`]: daily reconcile and prune, re-verification, gauges from the state DB.
//! - [`signals`]: job heartbeat, systemd watchdog, SIGTERM/SIGINT.
//!
//! Jobs are claimed through the state DB (owner + heartbeat), so a daemon and a `backup-now`
//! never run the same job, and a job whose owner stopped renewing its heartbeat for
//! `state.job_lease` is resumed by the next process from its recorded phase. Liveness is the
//! heartbeat alone: the shipped unit hides other users' processes (`ProtectProc=invisible`),
//! so "no such pid in /proc" proves nothing.

mod dispatch;
mod maintenance;
mod signals;

pub use dispatch::dispatch;
pub use maintenance::{
    VERIFIED_GAUGE_EVERY, prune_daily, prune_policy_logged, rebuild_gauges,
    refresh_verified_gauge_loop, reverify,
};
pub use signals::{heartbeat, heartbeat_every, shutdown_signal, watchdog};

use crate::config::Config;
use crate::services::Context;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long running jobs get to reach a safe point after SIGTERM. Shorter than the systemd
/// unit's TimeoutStopSec.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(25);

/// Runs the daemon until `shutdown` resolves, then drains.
///
/// # Errors
/// Set-up failures (state DB, credentials, the `/v1` token file, listener).
pub async fn run(
    ctx: Context,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let token = crate::http::load_token(&ctx.config)?;
    run_with_reload(ctx, listener, shutdown, None, token).await
}

/// The tasks that follow the config: replaced as a whole on reload.
fn spawn_generation(
    ctx: &Context,
    tracker: &TaskTracker,
    jobs: &TaskTracker,
    wake: &Arc<Notify>,
    generation: &CancellationToken,
    jobs_cancel: &CancellationToken,
    running: &Arc<Mutex<std::collections::HashSet<String>>>,
) {
    tracker.spawn(prune_daily(ctx.clone(), generation.child_token()));
    tracker.spawn(reverify(ctx.clone(), generation.child_token()));
    tracker.spawn(refresh_verified_gauge_loop(
        ctx.clone(),
        generation.child_token(),
    ));
    tracker.spawn(crate::scheduler::run(
        ctx.clone(),
        ctx.config.clone(),
        wake.clone(),
        generation.child_token(),
    ));
    tracker.spawn(dispatch(
        ctx.clone(),
        wake.clone(),
        generation.child_token(),
        jobs_cancel.clone(),
        jobs.clone(),
        running.clone(),
    ));
}

/// Runs the daemon until `shutdown` resolves, then drains. With `reload_from`, SIGHUP reloads
/// the config from that file: it is validated first; if invalid, the old config stays and the
/// log says why. Schedule state lives in the DB, so it survives a reload.
///
/// `token` is the `/v1` bearer token read from `http.token_file` at start (by the caller, so a
/// bad file stops `run` with exit 2 before anything starts); a reload reads the file again.
///
/// # Errors
/// Set-up failures (state DB, credentials, listener).
pub async fn run_with_reload(
    ctx: Context,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
    reload_from: Option<std::path::PathBuf>,
    token: Option<crate::secret::Secret>,
) -> anyhow::Result<()> {
    rebuild_gauges(&ctx).await?;
    let root = CancellationToken::new();
    let wake = Arc::new(Notify::new());
    let tracker = TaskTracker::new();
    let jobs = TaskTracker::new();
    let running: Arc<Mutex<std::collections::HashSet<String>>> = Arc::default();
    let jobs_cancel = root.child_token();

    let http_ctx = Arc::new(std::sync::RwLock::new(ctx.clone()));
    let http_token = Arc::new(std::sync::RwLock::new(token));
    let app = crate::http::router(crate::http::HttpState {
        metrics: ctx.metrics.clone(),
        store: ctx.store.clone(),
        ctx: http_ctx.clone(),
        token: http_token.clone(),
    });
    let http_cancel = root.clone();
    tracker.spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(async move { http_cancel.cancelled().await })
            .await
        {
            tracing::error!(error = %e, "HTTP endpoint failed");
        }
    });
    tracker.spawn(heartbeat(ctx.clone(), root.child_token()));
    tracker.spawn(watchdog(ctx.clone(), root.child_token()));
    let mut generation = root.child_token();
    spawn_generation(
        &ctx,
        &tracker,
        &jobs,
        &wake,
        &generation,
        &jobs_cancel,
        &running,
    );
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);

    let mut current = ctx.clone();
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    tokio::pin!(shutdown);
    loop {
        #[cfg(unix)]
        let reload = hup.recv();
        #[cfg(not(unix))]
        let reload = std::future::pending::<Option<()>>();
        tokio::select! {
            _ = &mut shutdown => break,
            _ = reload => {
                let Some(path) = &reload_from else {
                    tracing::warn!("SIGHUP ignored: no config file to reload from");
                    continue;
                };
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
                match crate::config::load(path) {
                    Err(errors) => tracing::error!(
                        config = %path.display(),
                        errors = %errors,
                        "config reload failed; keeping the old config"
                    ),
                    Ok(cfg) => match reload_parts(&current, cfg).await {
                        Err(e) => tracing::error!(error = %format!("{e:#}"), "config reload failed; keeping the old config"),
                        Ok((new_ctx, new_token)) => {
                            *http_token.write().unwrap_or_else(std::sync::PoisonError::into_inner) = new_token;
                            generation.cancel();
                            generation = root.child_token();
                            spawn_generation(&new_ctx, &tracker, &jobs, &wake, &generation, &jobs_cancel, &running);
                            // cannot fail: writers only assign (readers cannot poison a RwLock).
                            *http_ctx.write().expect("context lock") = new_ctx.clone();
                            tracing::info!(config = %path.display(), policies = new_ctx.config.policies.len(), "config reloaded");
                            current = new_ctx;
                        }
                    },
                }
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
            }
        }
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    tracing::info!("shutting down: no new jobs; running steps finish at a safe point");
    root.cancel();
    jobs.close();
    if tokio::time::timeout(DRAIN_DEADLINE, jobs.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            deadline_secs = DRAIN_DEADLINE.as_secs(),
            "drain deadline passed; leaving the rest to the next start"
        );
    }
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
    // Hand every job we still own back, so the next process resumes it at once.
    if let Ok(open) = ctx.store.list_jobs(None, None, 10_000).await {
        for j in open
            .iter()
            .filter(|j| j.owner.as_deref() == Some(ctx.owner.as_str()))
        {
            let _ = ctx.store.release_job(&j.id, &ctx.owner).await;
        }
    }
    ctx.store.close().await;
    Ok(())
}

/// What a reload replaces: the context and the `/v1` token, both or neither.
async fn reload_parts(
    current: &Context,
    cfg: Config,
) -> anyhow::Result<(Context, Option<crate::secret::Secret>)> {
    let token = crate::http::load_token(&cfg)?;
    let ctx = crate::services::reload(current, Arc::new(cfg)).await?;
    Ok((ctx, token))
}
