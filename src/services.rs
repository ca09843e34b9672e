//! The service bundle every part of a process shares: the config, the state DB, the CDS client,
//! the downloader, one handle per destination, metrics, the clock and this process's owner id.
//!
//! [`open`] builds it from a config (creating the state directory, opening the DB); [`reload`]
//! rebuilds it around the same DB, metrics and owner for a changed config, so running jobs stay
//! this process's. Clients are built here once per config: nothing below rebuilds an S3 or CDS
//! client per call.

pub mod cancel_watch;

use crate::cds;
use crate::clock::SharedClock;
use crate::config::{self, Config, credentials};
use crate::destination::Handles;
use crate::metrics::{ApiMetrics, Metrics};
use crate::store::jobs::Claim;
use crate::store::{JobRow, Store, ms};
use anyhow::Context as _;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Why the bundle could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Credentials (CDS or S3) are missing or unusable: a configuration problem (exit 2).
    #[error("{0:#}")]
    Credentials(anyhow::Error),
    /// Anything else (the state DB, the state directory): a runtime failure.
    #[error(transparent)]
    Setup(#[from] anyhow::Error),
}

impl From<crate::store::Error> for Error {
    fn from(e: crate::store::Error) -> Self {
        Error::Setup(e.into())
    }
}

/// How often `DescribeBackups` is polled while the provider works.
#[derive(Debug, Clone, Copy)]
pub struct PollSettings {
    pub initial: Duration,
    pub max: Duration,
    /// How long to look for a backup by token after an unknown `CreateBackup` outcome.
    pub not_found_grace: Duration,
}

impl Default for PollSettings {
    fn default() -> Self {
        PollSettings {
            initial: Duration::from_secs(2),
            max: Duration::from_secs(30),
            not_found_grace: Duration::from_secs(15 * 60),
        }
    }
}

/// Progress of one shard: (job id, backup id, bytes so far, expected size).
pub type ProgressFn = Arc<dyn Fn(&str, &str, u64, Option<u64>) + Send + Sync>;

/// Everything a job, a prune or a check needs; shared by all of a process's tasks.
#[derive(Clone)]
pub struct Context {
    pub config: Arc<Config>,
    pub store: Store,
    pub cds: cds::Client,
    pub downloader: crate::transfer::source::Downloader,
    /// One handle per configured destination, built once.
    pub destinations: Handles,
    pub metrics: Metrics,
    pub transfers: Arc<Semaphore>,
    /// Who runs the jobs: `daemon:<host>:<pid>:<uuid>` or `backup-now:<host>:<pid>:<uuid>`.
    pub owner: String,
    pub clock: SharedClock,
    pub poll: PollSettings,
    pub progress: Option<ProgressFn>,
    /// One prune at a time per process.
    pub prune_lock: Arc<tokio::sync::RwLock<()>>,
    /// Operators' cancel requests for the jobs this process runs, polled once for all.
    pub cancel_watch: Arc<cancel_watch::CancelWatch>,
    /// The lease a run of shared upkeep holds (the daemon's retention and reconcile; see
    /// `daemon::maintenance`): every deletion first checks it is still held, so a replica
    /// paused past its lease deletes nothing after it wakes. `None`: a command run by hand.
    pub deletion_fence: Option<crate::store::leases::Lease>,
}

/// How much of a lease must be left for a deletion to start under it: 5 s, or a quarter of
/// the lease when that is shorter (a lease is renewed every third of it, so a holder that is
/// not paused always has more left).
pub fn deletion_lease_margin(lease: Duration) -> Duration {
    Duration::from_secs(5).min(lease / 4)
}

impl Context {
    /// Now, by the injected clock (decisions use this, never the wall clock).
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Whether a deletion may start now: always for a command run by hand; under a lease only
    /// while it is still held with [`deletion_lease_margin`] to spare.
    ///
    /// # Errors
    /// The lease was lost, or the state DB cannot tell: the deletion must not happen.
    pub async fn may_delete(&self) -> Result<(), String> {
        let Some(lease) = &self.deletion_fence else {
            return Ok(());
        };
        let margin = deletion_lease_margin(self.config.state.job_lease);
        let margin = i64::try_from(margin.as_millis()).unwrap_or(i64::MAX);
        match self
            .store
            .lease_still_held(lease, ms(self.now()), margin)
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!(
                "not deleted: this replica no longer holds the `{}` lease (epoch {}); another replica carries on",
                lease.name, lease.epoch
            )),
            Err(e) => Err(format!(
                "not deleted: cannot check the `{}` lease: {e}",
                lease.name
            )),
        }
    }

    /// This process's claim on a job: every write of the job carries it.
    pub fn claim(&self, job: &JobRow) -> Claim {
        Claim::new(&job.id, &self.owner)
    }

    /// Journals one event of a job and logs it. Called inside the job's span (the runner's),
    /// whose fields name the job on the line; they are not repeated here.
    pub async fn event(&self, job: &JobRow, kind: &str, message: &str) {
        tracing::info!(kind, "{message}");
        if let Err(e) = self
            .store
            .add_event(&job.id, ms(self.now()), kind, message)
            .await
        {
            tracing::error!(error = %e, "cannot journal a job event");
        }
    }
}

/// Whether `err` (anywhere in its chain) is a credential problem: someone refusing rdbvault's
/// credentials (the CDS API: a wrong access key or signature; a destination: S3
/// `InvalidAccessKeyId`, 403; the PostgreSQL state DB) or credentials that are missing or
/// cannot be read (no S3 keys found, an unreadable or world-readable key file). Every command
/// exits 2 for it; the runner fails the job at once rather than retrying what only the
/// operator can fix.
pub fn credential_problem(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause.is::<crate::config::credentials::Error>()
            || cause.is::<crate::destination::CredentialsMissing>()
            || cause
                .downcast_ref::<crate::cds::Error>()
                .is_some_and(crate::cds::Error::is_credentials)
            || cause.is::<crate::destination::CredentialsRejected>()
            || matches!(
                cause.downcast_ref::<crate::transfer::Error>(),
                Some(crate::transfer::Error::CredentialsRejected(_))
            )
            || cause
                .downcast_ref::<crate::store::Error>()
                .is_some_and(crate::store::Error::is_credentials)
    })
}

/// Whether `err` (anywhere in its chain) is the state DB being unreachable
/// ([`crate::store::Error::is_unreachable`]).
pub fn state_db_unreachable(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<crate::store::Error>()
            .is_some_and(crate::store::Error::is_unreachable)
    })
}

/// `daemon:<host>:<pid>:<uuid>` and the like: who owns a job.
pub fn owner_id(kind: &str) -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!(
        "{kind}:{host}:{}:{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    )
}

/// `DescribeBackups` pacing shared by every process on the state DB ([`cds::ListingSlots`]).
#[derive(Debug)]
pub struct SharedListingSlots {
    store: Store,
    clock: crate::clock::SharedClock,
}

impl SharedListingSlots {
    /// Slots kept in `store` (a writable one: a reservation is a write).
    pub fn new(store: Store) -> Self {
        SharedListingSlots {
            store,
            clock: crate::clock::system(),
        }
    }
}

#[async_trait::async_trait]
impl cds::ListingSlots for SharedListingSlots {
    async fn reserve(&self, instance_uuid: &str, spacing: Duration) -> anyhow::Result<Duration> {
        let now = self.clock.now().timestamp_millis();
        Ok(self
            .store
            .reserve_listing_slot(instance_uuid, spacing, now)
            .await?)
    }
}

/// Builds the API client from the `cds` section and the credentials.
///
/// # Errors
/// Missing or unreadable credentials ([`Error::Credentials`]).
pub fn cds_client(cds_cfg: &config::CdsConfig, metrics: ApiMetrics) -> Result<cds::Client, Error> {
    let creds = credentials::load(
        cds_cfg.access_key_id_file.as_deref(),
        cds_cfg.access_key_secret_file.as_deref(),
    )
    .map_err(|e| Error::Credentials(e.into()))?;
    cds::Client::new(
        cds::ClientConfig {
            endpoint: cds_cfg.endpoint.clone(),
            access_key_id: creds.access_key_id,
            access_key_secret: creds.access_key_secret,
            timeout: cds_cfg.timeout,
            retry: cds_cfg.retry,
        },
        metrics,
        crate::clock::system(),
    )
    .map(|client| client.with_describe_spacing(cds_cfg.poll_interval))
    .map_err(Error::Setup)
}

/// Opens the state DB a config names (creating its directory, 0700) and builds the bundle.
///
/// # Errors
/// Credentials, the state DB or an S3 destination cannot be set up.
pub async fn open(config: Arc<Config>, owner: String, metrics: Metrics) -> Result<Context, Error> {
    if config.state.url.is_none()
        && let Some(dir) = config.state.path.parent()
        && !dir.as_os_str().is_empty()
    {
        // 0700: the state DB next to it names every instance, bucket and copy.
        crate::private_fs::create_dir_all(dir).with_context(|| {
            format!(
                "cannot create the state directory {} (state.path)",
                dir.display()
            )
        })?;
    }
    let store = Store::connect(&config.state).await?;
    around(config, store, metrics, owner, Arc::default()).await
}

/// The clients, limits and poll settings a config asks for, around a state DB and metrics
/// (also a read-only one, for the commands that only list).
///
/// # Errors
/// Credentials or an S3 destination cannot be set up.
pub async fn around(
    config: Arc<Config>,
    store: Store,
    metrics: Metrics,
    owner: String,
    prune_lock: Arc<tokio::sync::RwLock<()>>,
) -> Result<Context, Error> {
    let mut cds = cds_client(&config.cds, metrics.api.clone())?;
    if !store.is_read_only() {
        cds = cds.with_shared_pacing(Arc::new(SharedListingSlots::new(store.clone())));
    }
    let downloader = crate::transfer::source::Downloader::new(
        cds.clone(),
        crate::transfer::source::RateGuard {
            min_bytes_per_second: config.cds.download_min_rate,
            window: config.cds.download_rate_window,
        },
    )?;
    let destinations = Handles::open(&config).await.map_err(Error::Credentials)?;
    Ok(Context {
        transfers: Arc::new(Semaphore::new(config.limits.max_concurrent_transfers)),
        poll: PollSettings {
            initial: config.cds.poll_interval,
            max: config.cds.poll_max_interval,
            ..PollSettings::default()
        },
        config,
        store,
        cds,
        downloader,
        destinations,
        metrics,
        owner,
        clock: crate::clock::system(),
        progress: None,
        deletion_fence: None,
        prune_lock,
        cancel_watch: Arc::default(),
    })
}

/// A rebuilt bundle for a reloaded config: the same state DB, metrics, owner, clock and
/// progress reporter (so running jobs stay ours), new clients and limits.
///
/// # Errors
/// Credentials or an S3 destination of the new config cannot be set up.
pub async fn reload(old: &Context, config: Arc<Config>) -> Result<Context, Error> {
    let mut ctx = around(
        config,
        old.store.clone(),
        old.metrics.clone(),
        old.owner.clone(),
        old.prune_lock.clone(),
    )
    .await?;
    ctx.clock = old.clock.clone();
    ctx.progress = old.progress.clone();
    ctx.cancel_watch = old.cancel_watch.clone();
    Ok(ctx)
}
