//! The validated configuration: the types every other module reads.
//!
//! Nothing here parses or checks anything; values of these types come only out of the
//! validation pass (`validate`), so a holder of a [`Config`] can rely on every duration, size,
//! URL, cron expression and cross-reference in it having been checked.

use super::schedule::CronExpr;
use crate::cds::RetryPolicy;
use chrono_tz::Tz;
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was loaded from, for messages.
    pub source: PathBuf,
    pub cds: CdsConfig,
    pub state: StateConfig,
    pub http: HttpConfig,
    pub log: LogConfig,
    pub limits: Limits,
    pub verify: VerifyConfig,
    pub drill: DrillConfig,
    pub notify: Vec<NotifyTarget>,
    pub destinations: BTreeMap<String, Destination>,
    pub policies: Vec<Policy>,
}

#[derive(Debug, Clone)]
pub struct CdsConfig {
    pub endpoint: Url,
    pub access_key_id_file: Option<PathBuf>,
    pub access_key_secret_file: Option<PathBuf>,
    /// Per HTTP exchange with the API.
    pub timeout: Duration,
    /// How to read the API's zone-less times.
    pub time_zone: Tz,
    pub retry: RetryPolicy,
    /// First wait between `DescribeBackups` polls while a backup is made; it doubles.
    pub poll_interval: Duration,
    /// The longest wait between polls.
    pub poll_max_interval: Duration,
    /// A download connection slower than this (bytes per second) over `download_rate_window`
    /// is dropped as stalled and resumed; 0 turns the check off.
    pub download_min_rate: u64,
    pub download_rate_window: Duration,
}

/// `cds.download_min_rate` when the file does not set it: 16KiB/s. Defined here because config
/// sits below the transfer layer and may not ask it; the download rate guard's `Default` in
/// `transfer::source` holds the same values.
pub const DEFAULT_DOWNLOAD_MIN_RATE: u64 = 16 << 10;

/// `cds.download_rate_window` when the file does not set it. See [`DEFAULT_DOWNLOAD_MIN_RATE`].
pub const DEFAULT_DOWNLOAD_RATE_WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct StateConfig {
    /// Absolute (see [`resolve_path`](super::resolve_path)); default `rdbvault.db` beside the
    /// config file.
    pub path: PathBuf,
    /// `postgres://user@host:port/db`: a PostgreSQL state DB shared by replicas instead of the
    /// SQLite file `path`. Never carries a password (refused at validation).
    pub url: Option<String>,
    /// The PostgreSQL password; without it, `PGPASSWORD` or `~/.pgpass`.
    pub password_file: Option<PathBuf>,
    /// How long a job's owner may go without renewing its heartbeat before another process
    /// takes the job over. The only test of liveness: no process table is consulted, so it
    /// works across users, containers and hosts sharing the state DB.
    pub job_lease: Duration,
}

impl StateConfig {
    /// Where the state DB is, for messages: the SQLite file, or the PostgreSQL URL without its
    /// password or query.
    pub fn describe(&self) -> String {
        match &self.url {
            Some(url) => redacted_url(url),
            None => self.path.display().to_string(),
        }
    }

    /// The config key that names the state DB (`state.url` or `state.path`), for messages.
    pub fn key(&self) -> &'static str {
        if self.url.is_some() {
            "state.url"
        } else {
            "state.path"
        }
    }
}

/// A URL without a password or query string, for messages.
pub fn redacted_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_password(None);
            u.set_query(None);
            u.to_string()
        }
        Err(_) => "(an unreadable state.url)".into(),
    }
}

/// The largest S3 object (5 TiB): no backup larger than this can be stored there.
pub const S3_MAX_OBJECT_SIZE: u64 = 5 << 40;

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// A file holding the bearer token that `/v1/*` requires. Mandatory when `listen` is not a
    /// loopback address; enforced on loopback too when set. Read by `http::load_token`.
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_concurrent_jobs: usize,
    pub max_concurrent_transfers: usize,
    /// The largest backup (per shard) rdbvault believes: a larger `BackupSize` is refused as
    /// implausible, and a download without a size is cut off past it.
    pub max_backup_size: u64,
}

/// Scheduled re-verification in the daemon.
#[derive(Debug, Clone, Copy)]
pub struct VerifyConfig {
    /// How often to re-read stored copies; zero turns it off.
    pub interval: Duration,
    /// Copies per policy per round, least recently verified first.
    pub copies: u32,
}

/// Where rdbvault tells people what happened (`notify:`), without a dashboard.
#[derive(Debug, Clone)]
pub struct NotifyTarget {
    /// `name:`, else `<type>-<position>` (`webhook-1`): the outbox's deliveries name it.
    pub name: String,
    pub kind: NotifyKind,
    pub url: Url,
    /// The events it wants (a webhook's `events:`); a healthchecks target takes the runs of its
    /// policies instead.
    pub events: Vec<EventKind>,
    /// Only these policies' events; empty: every policy's.
    pub policies: Vec<String>,
    /// How long one delivery may take.
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyKind {
    /// POSTs each event as JSON; `secret_file` adds `X-Rdbvault-Signature`.
    Webhook { secret_file: Option<PathBuf> },
    /// Pings `url` (success), `url/start` and `url/fail` per scheduled run of a policy, as
    /// healthchecks.io and its clones expect.
    Healthchecks,
}

/// What a notification is about.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Failed,
    Missed,
    RetentionBlocked,
    VerifyFailed,
    DrillFailed,
    Stored,
    /// `rdbvault notify test`.
    Test,
}

impl EventKind {
    /// The events a target can subscribe to, by their config names.
    pub const SUBSCRIBABLE: [EventKind; 6] = [
        EventKind::Failed,
        EventKind::Missed,
        EventKind::RetentionBlocked,
        EventKind::VerifyFailed,
        EventKind::DrillFailed,
        EventKind::Stored,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Failed => "failed",
            EventKind::Missed => "missed",
            EventKind::RetentionBlocked => "retention_blocked",
            EventKind::VerifyFailed => "verify_failed",
            EventKind::DrillFailed => "drill_failed",
            EventKind::Stored => "stored",
            EventKind::Test => "test",
        }
    }
}

/// Restore drills: a stored set loaded into a throwaway `redis-server` and its keys counted
/// (`rdbvault drill`, and the daemon on its own every `interval`).
#[derive(Debug, Clone)]
pub struct DrillConfig {
    /// `Some(false)`: the daemon runs none; `Some(true)`: it must (a missing redis-server is an
    /// error); `None` (the default): it does when a redis-server is found, else warns once.
    pub enabled: Option<bool>,
    /// How often the daemon drills each policy.
    pub interval: Duration,
    /// Sets drilled per policy each time, of the instances drilled least recently.
    pub sets_per_policy: u32,
    /// The `redis-server` to load copies into; `None`: the one on PATH.
    pub redis_server: Option<PathBuf>,
    /// How long a copy may take to load before the drill gives up on it.
    pub load_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct Destination {
    pub name: String,
    pub kind: DestinationKind,
}

#[derive(Debug, Clone)]
pub enum DestinationKind {
    S3(Box<S3Destination>),
    File(FileDestination),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerSideEncryption {
    Aes256,
    Kms { key_id: Option<String> },
}

/// Where an S3 destination's keys come from when it names no key files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3Credentials {
    /// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`, else `AWS_PROFILE` and the shared config
    /// files; never the EC2 instance metadata service or ECS container credentials. The default
    /// for a destination with its own `endpoint` (`credentials: static`).
    Static,
    /// The whole AWS default chain, the instance role included. The default for a destination
    /// without an `endpoint` (real AWS); opt in elsewhere with `credentials: instance_profile`.
    DefaultChain,
}

#[derive(Debug, Clone)]
pub struct S3Destination {
    /// The destination's name under `destinations`, for messages.
    pub name: String,
    pub bucket: String,
    /// Empty, or ending with `/`.
    pub prefix: String,
    pub region: Option<String>,
    pub endpoint: Option<Url>,
    pub path_style: bool,
    pub storage_class: Option<String>,
    pub server_side_encryption: Option<ServerSideEncryption>,
    pub part_size: u64,
    pub upload_concurrency: usize,
    /// S3 keys from files (systemd credentials); otherwise per `credentials`.
    pub access_key_id_file: Option<PathBuf>,
    pub secret_access_key_file: Option<PathBuf>,
    pub credentials: S3Credentials,
}

#[derive(Debug, Clone)]
pub struct FileDestination {
    pub path: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub name: String,
    pub schedule: Schedule,
    pub instances: Vec<Selector>,
    pub destination: String,
    pub download: DownloadRoute,
    pub retention: Retention,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatchUp {
    /// After downtime, skip what was missed.
    None,
    /// After downtime, run the most recent missed run once.
    Latest,
}

#[derive(Debug, Clone)]
pub struct Schedule {
    pub cron: CronExpr,
    pub timezone: Tz,
    pub jitter: Duration,
    pub start_window: Duration,
    pub completion_window: Duration,
    pub catch_up: CatchUp,
}

/// Which instances a policy covers; re-resolved through `DescribeDBInstances` at every run.
#[derive(Debug, Clone)]
pub enum Selector {
    Uuid(String),
    /// A glob on `InstanceName`.
    Name {
        pattern: String,
        matcher: globset::GlobMatcher,
    },
    Ip(IpAddr),
}

impl Selector {
    pub fn matches(&self, instance: &crate::cds::model::Instance) -> bool {
        match self {
            Selector::Uuid(u) => instance.instance_uuid.eq_ignore_ascii_case(u),
            Selector::Name { matcher, .. } => matcher.is_match(&instance.instance_name),
            Selector::Ip(ip) => instance.ip.parse::<IpAddr>().ok() == Some(*ip),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Uuid(u) => write!(f, "uuid {u}"),
            Selector::Name { pattern, .. } => write!(f, "name {pattern:?}"),
            Selector::Ip(ip) => write!(f, "ip {ip}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownloadRoute {
    Intranet,
    Public,
    /// Intranet first, then public.
    Auto,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeepRules {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    pub keep_within: Option<Duration>,
    /// Never fewer verified copies than this, whatever the rules say.
    pub min_verified: u32,
}

impl KeepRules {
    pub fn is_empty(&self) -> bool {
        self.keep_last.is_none()
            && self.keep_hourly.is_none()
            && self.keep_daily.is_none()
            && self.keep_weekly.is_none()
            && self.keep_monthly.is_none()
            && self.keep_yearly.is_none()
            && self.keep_within.is_none()
    }
}

#[derive(Debug, Clone)]
pub struct Retention {
    pub destination: KeepRules,
    /// `None`: rdbvault never deletes provider backups for this policy.
    pub provider: Option<KeepRules>,
    pub max_deletions_per_run: u32,
    /// `retention.provider.reclaim_uncopied_after`: a provider backup of a failed or missed job
    /// (no verified copy) older than this is deleted once a newer verified set of the instance
    /// exists, never the instance's newest provider backup. `None`: never.
    pub reclaim_uncopied_after: Option<Duration>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cds::model::Instance;

    fn instance(uuid: &str, name: &str, ip: &str) -> Instance {
        Instance {
            instance_uuid: uuid.into(),
            instance_name: name.into(),
            ip: ip.into(),
            ..Instance::default()
        }
    }

    #[test]
    fn selectors_match_uuid_without_case_names_by_glob_and_ips_parsed() {
        let i = instance(
            "5D74BB81-0473-464D-B15B-0AE418619248",
            "prod-cache",
            "10.0.0.7",
        );
        let uuid = Selector::Uuid("5d74bb81-0473-464d-b15b-0ae418619248".into());
        assert!(uuid.matches(&i));
        let name = |p: &str| Selector::Name {
            pattern: p.into(),
            matcher: globset::Glob::new(p).unwrap().compile_matcher(),
        };
        assert!(name("prod-*").matches(&i));
        assert!(!name("staging-*").matches(&i));
        assert!(Selector::Ip("10.0.0.7".parse().unwrap()).matches(&i));
        assert!(!Selector::Ip("10.0.0.8".parse().unwrap()).matches(&i));
        // An instance whose IP is not an address matches no ip selector.
        let odd = instance("u", "n", "pending");
        assert!(!Selector::Ip("10.0.0.7".parse().unwrap()).matches(&odd));
        assert_eq!(name("prod-*").to_string(), "name \"prod-*\"");
        assert_eq!(
            uuid.to_string(),
            "uuid 5d74bb81-0473-464d-b15b-0ae418619248"
        );
    }

    #[test]
    fn keep_rules_are_empty_whatever_min_verified_says() {
        let mut k = KeepRules {
            min_verified: 3,
            ..KeepRules::default()
        };
        assert!(
            k.is_empty(),
            "min_verified alone keeps nothing by age or count"
        );
        k.keep_within = Some(Duration::from_secs(60));
        assert!(!k.is_empty());
    }
}
