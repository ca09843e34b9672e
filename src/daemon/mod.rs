//! The long-running process (`run`, and `demo` on top of it): wiring the tasks, reload on
//! SIGHUP, and a drain on shutdown.
//!
//! - `dispatch`: claims due jobs and runs them.
//! - `maintenance`: daily reconcile and prune, re-verification, gauges from the state DB.
//! - `signals`: job heartbeat, systemd watchdog, SIGTERM/SIGINT.
//!
//! Jobs are claimed through the state DB (owner + heartbeat), so a daemon and a `backup-now`
//! never run the same job, and a job whose owner stopped renewing its heartbeat for
//! `state.job_lease` is resumed by the next process from its recorded phase. Liveness is the
//! heartbeat alone: the shipped unit hides other users' processes (`ProtectProc=invisible`),
//! so "no such pid in /proc" proves nothing.

mod dispatch;
pub mod maintenance;
mod signals;

pub use dispatch::dispatch;
pub use maintenance::{
    VERIFIED_GAUGE_EVERY, drills, prune_daily, prune_policy_logged, rebuild_gauges,
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
    maintenance::rebuild_gauges(&ctx).await?;
    let root = CancellationToken::new();
    let tasks = Tasks {
        wake: Arc::new(Notify::new()),
        tracker: TaskTracker::new(),
        jobs: TaskTracker::new(),
        running: Arc::default(),
        jobs_cancel: root.child_token(),
    };
    let http = serve_http(&ctx, listener, token, &tasks.tracker, root.clone());
    tasks
        .tracker
        .spawn(heartbeat(ctx.clone(), root.child_token()));
    tasks
        .tracker
        .spawn(watchdog(ctx.clone(), root.child_token()));
    let mut generation = root.child_token();
    tasks.spawn_generation(&ctx, &generation);
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
                if let Some(new_ctx) = reload_config(&current, path, &http).await {
                    generation.cancel();
                    generation = root.child_token();
                    tasks.spawn_generation(&new_ctx, &generation);
                    current = new_ctx;
                }
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
            }
        }
    }
    drain(&ctx, root, tasks).await;
    Ok(())
}

/// The tasks of a running daemon, shared across reloads.
struct Tasks {
    wake: Arc<Notify>,
    tracker: TaskTracker,
    /// Running jobs: drained separately, with [`DRAIN_DEADLINE`].
    jobs: TaskTracker,
    /// Jobs this process runs now, shared across reloads so a new dispatcher never starts a
    /// job the old one is still running.
    running: Arc<Mutex<std::collections::HashSet<String>>>,
    jobs_cancel: CancellationToken,
}

impl Tasks {
    /// The tasks that follow the config: replaced as a whole on reload.
    fn spawn_generation(&self, ctx: &Context, generation: &CancellationToken) {
        self.tracker
            .spawn(prune_daily(ctx.clone(), generation.child_token()));
        self.tracker
            .spawn(reverify(ctx.clone(), generation.child_token()));
        self.tracker
            .spawn(drills(ctx.clone(), generation.child_token()));
        self.tracker.spawn(crate::notify::deliver(
            ctx.clone(),
            generation.child_token(),
        ));
        self.tracker.spawn(refresh_verified_gauge_loop(
            ctx.clone(),
            generation.child_token(),
        ));
        self.tracker.spawn(crate::scheduler::run(
            ctx.clone(),
            ctx.config.clone(),
            self.wake.clone(),
            generation.child_token(),
        ));
        self.tracker.spawn(dispatch(
            ctx.clone(),
            self.wake.clone(),
            generation.child_token(),
            self.jobs_cancel.clone(),
            self.jobs.clone(),
            self.running.clone(),
        ));
    }
}

/// What the HTTP endpoint reads that a reload replaces.
struct HttpShared {
    ctx: Arc<std::sync::RwLock<Context>>,
    token: Arc<std::sync::RwLock<Option<crate::secret::Secret>>>,
}

/// Serves `/metrics`, `/healthz`, `/readyz` and `/v1/*` until `cancel`.
fn serve_http(
    ctx: &Context,
    listener: tokio::net::TcpListener,
    token: Option<crate::secret::Secret>,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> HttpShared {
    let shared = HttpShared {
        ctx: Arc::new(std::sync::RwLock::new(ctx.clone())),
        token: Arc::new(std::sync::RwLock::new(token)),
    };
    let app = crate::http::router(crate::http::HttpState {
        metrics: ctx.metrics.clone(),
        store: ctx.store.clone(),
        ctx: shared.ctx.clone(),
        token: shared.token.clone(),
    });
    tracker.spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await
        {
            tracing::error!(error = %e, "HTTP endpoint failed");
        }
    });
    shared
}

/// Loads and validates the config at `path` and builds its services; on success the HTTP
/// endpoint serves the new ones. `None` (and the old config stays) on any problem, logged.
async fn reload_config(
    current: &Context,
    path: &std::path::Path,
    http: &HttpShared,
) -> Option<Context> {
    let cfg = match crate::config::load(path) {
        Ok(cfg) => cfg,
        Err(errors) => {
            tracing::error!(config = %path.display(), errors = %errors, "config reload failed; keeping the old config");
            return None;
        }
    };
    let (new_ctx, new_token) = match reload_parts(current, cfg).await {
        Ok(parts) => parts,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "config reload failed; keeping the old config");
            return None;
        }
    };
    *http
        .token
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = new_token;
    // cannot fail: writers only assign (readers cannot poison a RwLock).
    *http.ctx.write().expect("context lock") = new_ctx.clone();
    tracing::info!(config = %path.display(), policies = new_ctx.config.policies.len(), "config reloaded");
    Some(new_ctx)
}

/// Stops taking jobs, gives running ones [`DRAIN_DEADLINE`] to reach a safe point, then hands
/// every job this process still owns back so the next process resumes it at once.
async fn drain(ctx: &Context, root: CancellationToken, tasks: Tasks) {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    tracing::info!("shutting down: no new jobs; running steps finish at a safe point");
    root.cancel();
    tasks.jobs.close();
    if tokio::time::timeout(DRAIN_DEADLINE, tasks.jobs.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            deadline_secs = DRAIN_DEADLINE.as_secs(),
            "drain deadline passed; leaving the rest to the next start"
        );
    }
    tasks.tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), tasks.tracker.wait()).await;
    if let Ok(open) = ctx.store.list_jobs(None, None, 10_000).await {
        for j in open
            .iter()
            .filter(|j| j.owner.as_deref() == Some(ctx.owner.as_str()))
        {
            let _ = ctx.store.release_job(&j.id, &ctx.owner).await;
        }
    }
    ctx.store.close().await;
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
