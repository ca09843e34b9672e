//! The configuration: the YAML schema of docs/product.md §2, loaded into typed values.
//!
//! Loading has two steps:
//! 1. serde reads the file into [`raw`] structs (`deny_unknown_fields` everywhere, so a typo is
//!    an error, never a silently ignored key). Syntax and shape errors stop here, located by
//!    serde at their line and column.
//! 2. One validation pass turns every value into its type (durations, sizes, cron, timezones,
//!    URLs, addresses) and checks cross-references. It reports *every* problem, each with
//!    `file:line:column` (from [`locate`]) and its YAML path.
//!
//! Credentials are not read here: see [`credentials`]; commands that talk to the API load them.
//!
//! Every path in the file (`state.path`, a file destination's `path`, the `*_file` keys) comes
//! out absolute: a relative one is resolved from the config file's directory ([`resolve_path`]),
//! so no user of [`Config`] ever depends on the working directory.

pub mod credentials;
pub mod locate;
pub mod raw;
pub mod schedule;
pub mod units;

use crate::cds::{ApiRegion, RetryPolicy};
use chrono_tz::Tz;
use raw::{RawConfig, RawDestination, RawKeep, RawPolicy, Text};
pub use schedule::CronExpr;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;
use url::Url;

/// The default config file when neither `-c` nor `$RDBVAULT_CONFIG` is given.
pub const DEFAULT_PATH: &str = "./rdbvault.yaml";

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

#[derive(Debug, Clone)]
pub struct StateConfig {
    /// Absolute (see [`resolve_path`]); default `rdbvault.db` beside the config file.
    pub path: PathBuf,
    /// How long a job's owner may go without renewing its heartbeat before another process
    /// takes the job over. The only test of liveness: no process table is consulted, so it
    /// works across users, containers and hosts sharing the state DB.
    pub job_lease: Duration,
}

/// The largest S3 object (5 TiB): no backup larger than this can be stored there.
pub const S3_MAX_OBJECT_SIZE: u64 = 5 << 40;

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// A file holding the bearer token that `/v1/*` requires. Mandatory when `listen` is not a
    /// loopback address; enforced on loopback too when set. Read by [`crate::http::load_token`].
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

/// One thing wrong with a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// YAML path such as `policies[0].schedule.cron`; empty for file-level problems.
    pub path: String,
    pub message: String,
}

/// Why a config could not be loaded: every problem found, all in one file.
#[derive(Debug, Clone)]
pub struct Errors {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for Errors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        if self.problems.len() > 1 {
            writeln!(f, "{file}: {} problems:", self.problems.len())?;
        }
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if self.problems.len() > 1 {
                write!(f, "  ")?;
            }
            write!(f, "{file}")?;
            if let Some(line) = p.line {
                write!(f, ":{line}")?;
                if let Some(col) = p.column {
                    write!(f, ":{col}")?;
                }
            }
            if !p.path.is_empty() {
                write!(f, ": {}", p.path)?;
            }
            write!(f, ": {}", p.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for Errors {}

/// Reads and validates a config file.
///
/// # Errors
/// Every problem found, with its location; an unreadable file is one problem.
pub fn load(path: &Path) -> Result<Config, Errors> {
    let text = std::fs::read_to_string(path).map_err(|e| Errors {
        file: path.to_path_buf(),
        problems: vec![Problem {
            line: None,
            column: None,
            path: String::new(),
            message: format!(
                "cannot read the config file: {e}; pass -c FILE or set RDBVAULT_CONFIG"
            ),
        }],
    })?;
    parse(&text, path)
}

/// Parses and validates config text; `source` is used in messages.
///
/// # Errors
/// See [`load`].
pub fn parse(text: &str, source: &Path) -> Result<Config, Errors> {
    let fail = |problems| Errors {
        file: source.to_path_buf(),
        problems,
    };
    let raw: RawConfig = if text.trim().is_empty() {
        return Err(fail(vec![Problem {
            line: None,
            column: None,
            path: String::new(),
            message: "the config file is empty; start from config/rdbvault.example.yaml".into(),
        }]));
    } else {
        deserialize(text, source)?
    };
    let index = locate::Index::build(text);
    let mut v = Validator {
        index: &index,
        problems: Vec::new(),
        base: base_dir(source),
    };
    let config = v.config(raw, source);
    if v.problems.is_empty() {
        Ok(config)
    } else {
        Err(fail(v.problems))
    }
}

/// Reads only what the API client needs (the `cds` section) from a config file, still refusing
/// unknown keys anywhere in it. A missing file that the user did not name explicitly gives the
/// defaults, so `rdbvault api` works with nothing but the environment.
///
/// # Errors
/// See [`load`].
pub fn load_cds(path: &Path, explicit: bool) -> Result<CdsConfig, Errors> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => String::new(),
        Err(_) => return load(path).map(|c| c.cds),
    };
    let raw: RawConfig = if text.trim().is_empty() {
        RawConfig::default()
    } else {
        deserialize(&text, path)?
    };
    let index = locate::Index::build(&text);
    let mut v = Validator {
        index: &index,
        problems: Vec::new(),
        base: base_dir(path),
    };
    let cds = v.cds(&raw.cds);
    if v.problems.is_empty() {
        Ok(cds)
    } else {
        Err(Errors {
            file: path.to_path_buf(),
            problems: v.problems,
        })
    }
}

fn deserialize(text: &str, source: &Path) -> Result<RawConfig, Errors> {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let (line, column) = inner
            .location()
            .map(|l| (Some(l.line()), Some(l.column())))
            .unwrap_or((None, None));
        // "." is the document root; "?" means serde never got a path (a YAML syntax error).
        let path = if path == "." || path == "?" {
            String::new()
        } else {
            path
        };
        let mut message = strip_location(&inner.to_string());
        // serde_yaml_ng prefixes its own (partial) path; we print the full one in front.
        if let Some((head, rest)) = message.split_once(": ")
            && !head.contains(' ')
            && path.starts_with(head)
        {
            message = rest.to_string();
        }
        Errors {
            file: source.to_path_buf(),
            problems: vec![Problem {
                line,
                column,
                path,
                message: explain_serde_message(&message),
            }],
        }
    })
}

/// serde_yaml_ng appends " at line L column C"; we print the location in front instead.
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// Adds a hint to serde's terse messages where the fix is known.
fn explain_serde_message(message: &str) -> String {
    if message.starts_with("unknown field") {
        format!("{message} (unknown keys are errors, so a typo cannot silently disable a rule)")
    } else {
        message.to_string()
    }
}

struct Validator<'a> {
    index: &'a locate::Index,
    problems: Vec<Problem>,
    /// The config file's directory, absolute: relative paths in the file are taken from here.
    base: Option<PathBuf>,
}

/// The directory relative paths in a config file are resolved from: the file's own directory
/// (as named, symlinks not followed), made absolute. `None` only if the working directory is
/// gone, in which case relative paths stay as written.
pub fn base_dir(source: &Path) -> Option<PathBuf> {
    let absolute = std::path::absolute(source).ok()?;
    absolute.parent().map(Path::to_path_buf)
}

/// A path written in the config, made absolute: a relative one is taken from `base` (the config
/// file's directory, [`base_dir`]), never from the process's working directory, so every command
/// finds the same state DB, archive and key files wherever it is started. Absolute paths, paths
/// starting with `$CREDENTIALS_DIRECTORY` (expanded when the file is read) and SQLite's
/// `:memory:` are left as they are. `.` components are dropped for readable messages.
pub fn resolve_path(base: Option<&Path>, path: &Path) -> PathBuf {
    let text = path.to_string_lossy();
    let keep = path.is_absolute()
        || text.starts_with("$CREDENTIALS_DIRECTORY")
        || text.starts_with("${CREDENTIALS_DIRECTORY}")
        || text == ":memory:"
        || path.as_os_str().is_empty();
    match base {
        Some(base) if !keep => base
            .join(path)
            .components()
            .filter(|c| !matches!(c, std::path::Component::CurDir))
            .collect(),
        _ => path.to_path_buf(),
    }
}

/// The closest of `candidates` to `given`, if it is close enough to be a likely typo.
fn suggest<'c>(given: &str, candidates: impl IntoIterator<Item = &'c str>) -> Option<&'c str> {
    candidates
        .into_iter()
        .map(|c| {
            (
                strsim::jaro_winkler(&given.to_lowercase(), &c.to_lowercase()),
                c,
            )
        })
        .filter(|(score, _)| *score > 0.85)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

fn did_you_mean(s: Option<&str>) -> String {
    s.map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default()
}

impl Validator<'_> {
    /// See [`resolve_path`].
    fn path(&self, path: &Path) -> PathBuf {
        resolve_path(self.base.as_deref(), path)
    }

    fn problem(&mut self, path: &str, message: impl Into<String>) {
        let loc = self.index.value(path);
        self.problems.push(Problem {
            line: loc.map(|l| l.line),
            column: loc.map(|l| l.column),
            path: path.to_string(),
            message: message.into(),
        });
    }

    fn duration(&mut self, path: &str, value: Option<&Text>, default: Duration) -> Duration {
        match value {
            None => default,
            Some(t) => units::parse_duration(&t.0).unwrap_or_else(|e| {
                self.problem(path, e);
                default
            }),
        }
    }

    fn timezone(&mut self, path: &str, value: Option<&Text>, default: Tz) -> Tz {
        let Some(t) = value else { return default };
        t.0.trim().parse::<Tz>().unwrap_or_else(|_| {
            let hint = suggest(&t.0, chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name()));
            self.problem(
                path,
                format!(
                    "unknown timezone `{}`{}; use an IANA name such as Asia/Shanghai or UTC",
                    t.0,
                    did_you_mean(hint)
                ),
            );
            default
        })
    }

    fn choice<T: Copy>(
        &mut self,
        path: &str,
        value: Option<&Text>,
        options: &[(&str, T)],
        default: T,
    ) -> T {
        let Some(t) = value else { return default };
        match options.iter().find(|(name, _)| *name == t.0.trim()) {
            Some((_, v)) => *v,
            None => {
                let names: Vec<_> = options.iter().map(|(n, _)| *n).collect();
                self.problem(
                    path,
                    format!("`{}` is not one of: {}", t.0, names.join(", ")),
                );
                default
            }
        }
    }

    fn positive(&mut self, path: &str, value: Option<u32>, default: u32) -> u32 {
        match value {
            Some(0) => {
                self.problem(path, "must be at least 1");
                default
            }
            Some(n) => n,
            None => default,
        }
    }

    fn config(&mut self, raw: RawConfig, source: &Path) -> Config {
        let cds = self.cds(&raw.cds);
        let job_lease = self.duration(
            "state.job_lease",
            raw.state.job_lease.as_ref(),
            Duration::from_secs(60),
        );
        if job_lease < Duration::from_secs(2) {
            self.problem(
                "state.job_lease",
                "must be at least 2s (the owner renews it several times per lease)",
            );
        }
        let state = StateConfig {
            path: self.path(
                raw.state
                    .path
                    .as_deref()
                    .unwrap_or(Path::new("rdbvault.db")),
            ),
            job_lease: job_lease.max(Duration::from_secs(2)),
        };
        let listen = match &raw.http.listen {
            None => SocketAddr::from(([127, 0, 0, 1], 9750)),
            Some(t) => t.0.trim().parse().unwrap_or_else(|_| {
                self.problem(
                    "http.listen",
                    format!("`{}` is not an address:port such as 127.0.0.1:9750", t.0),
                );
                SocketAddr::from(([127, 0, 0, 1], 9750))
            }),
        };
        let token_file = raw.http.token_file.as_deref().map(|p| self.path(p));
        if !listen.ip().is_loopback() && token_file.is_none() {
            // /v1/* tells anyone who can connect every instance, bucket and copy.
            self.problem(
                "http.listen",
                format!(
                    "`{listen}` is reachable from other hosts, so /v1/* needs a bearer token: set http.token_file to a file holding one (chmod 600), or listen on 127.0.0.1"
                ),
            );
        }
        let format = self.choice(
            "log.format",
            raw.log.format.as_ref(),
            &[("text", LogFormat::Text), ("json", LogFormat::Json)],
            LogFormat::Text,
        );
        let level = raw
            .log
            .level
            .as_ref()
            .map(|t| t.0.trim().to_string())
            .unwrap_or_else(|| "info".into());
        if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
            self.problem(
                "log.level",
                format!(
                    "`{level}` is not a log level; use error, warn, info, debug, trace or a filter like `info,rdbvault=debug`"
                ),
            );
        }
        let limits = Limits {
            max_concurrent_jobs: self.positive(
                "limits.max_concurrent_jobs",
                raw.limits.max_concurrent_jobs,
                4,
            ) as usize,
            max_concurrent_transfers: self.positive(
                "limits.max_concurrent_transfers",
                raw.limits.max_concurrent_transfers,
                2,
            ) as usize,
            max_backup_size: match &raw.limits.max_backup_size {
                None => 1 << 40,
                Some(t) => match units::parse_size(&t.0) {
                    Ok(n) if (1 << 20..=S3_MAX_OBJECT_SIZE).contains(&n) => n,
                    Ok(n) => {
                        self.problem(
                            "limits.max_backup_size",
                            format!(
                                "{} is outside 1MiB to 5TiB (S3's largest object)",
                                units::format_size(n)
                            ),
                        );
                        1 << 40
                    }
                    Err(e) => {
                        self.problem("limits.max_backup_size", e);
                        1 << 40
                    }
                },
            },
        };

        let verify = VerifyConfig {
            interval: self.duration(
                "verify.interval",
                raw.verify.interval.as_ref(),
                Duration::from_secs(24 * 3600),
            ),
            copies: self.positive("verify.copies", raw.verify.copies, 1),
        };
        let mut destinations = BTreeMap::new();
        if raw.destinations.is_empty() {
            self.problem(
                "destinations",
                "no destinations: define at least one (type: s3 or type: file)",
            );
        }
        for (name, d) in &raw.destinations {
            if let Some(dest) = self.destination(name, d) {
                destinations.insert(name.clone(), dest);
            }
        }

        if raw.policies.is_empty() {
            self.problem(
                "policies",
                "no policies: define at least one, or rdbvault has nothing to do",
            );
        }
        let mut policies = Vec::new();
        let mut seen = HashSet::new();
        for (i, p) in raw.policies.iter().enumerate() {
            let policy = self.policy(i, p, &raw.destinations);
            if !policy.name.is_empty() && !seen.insert(policy.name.clone()) {
                self.problem(
                    &format!("policies[{i}].name"),
                    format!(
                        "policy name `{}` is used twice; names must be unique",
                        policy.name
                    ),
                );
            }
            policies.push(policy);
        }

        Config {
            source: source.to_path_buf(),
            cds,
            state,
            http: HttpConfig { listen, token_file },
            log: LogConfig { format, level },
            limits,
            verify,
            destinations,
            policies,
        }
    }

    fn cds(&mut self, raw: &raw::RawCds) -> CdsConfig {
        let region = raw.region.as_ref().map(|_| {
            self.choice(
                "cds.region",
                raw.region.as_ref(),
                &[
                    ("mainland", ApiRegion::Mainland),
                    ("asia", ApiRegion::Asia),
                    ("us", ApiRegion::Us),
                ],
                ApiRegion::Mainland,
            )
        });
        let default_endpoint = || {
            Url::parse(region.unwrap_or(ApiRegion::Mainland).endpoint())
                // cannot fail: the endpoints are constant, valid https URLs.
                .expect("documented endpoints are valid URLs")
        };
        let endpoint = match (&raw.endpoint, region) {
            (Some(_), Some(_)) => {
                self.problem(
                    "cds.region",
                    "set either cds.endpoint or cds.region, not both",
                );
                default_endpoint()
            }
            (Some(t), None) => match Url::parse(t.0.trim()) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => u,
                _ => {
                    self.problem(
                        "cds.endpoint",
                        format!(
                            "`{}` is not an http(s) URL such as https://cdsapi.capitalonline.net",
                            t.0
                        ),
                    );
                    default_endpoint()
                }
            },
            (None, _) => default_endpoint(),
        };
        let timeout = self.duration("cds.timeout", raw.timeout.as_ref(), Duration::from_secs(30));
        if timeout.is_zero() {
            self.problem("cds.timeout", "must be longer than 0s");
        }
        let time_zone = self.timezone(
            "cds.time_zone",
            raw.time_zone.as_ref(),
            chrono_tz::Asia::Shanghai,
        );
        let d = RetryPolicy::default();
        let retry = RetryPolicy {
            max_attempts: self.positive(
                "cds.retry.max_attempts",
                raw.retry.max_attempts,
                d.max_attempts,
            ),
            base_delay: self.duration(
                "cds.retry.base_delay",
                raw.retry.base_delay.as_ref(),
                d.base_delay,
            ),
            max_delay: self.duration(
                "cds.retry.max_delay",
                raw.retry.max_delay.as_ref(),
                d.max_delay,
            ),
            max_elapsed: self.duration(
                "cds.retry.max_elapsed",
                raw.retry.max_elapsed.as_ref(),
                d.max_elapsed,
            ),
        };
        let poll_interval = self.duration(
            "cds.poll_interval",
            raw.poll_interval.as_ref(),
            Duration::from_secs(2),
        );
        let poll_max_interval = self.duration(
            "cds.poll_max_interval",
            raw.poll_max_interval.as_ref(),
            Duration::from_secs(30),
        );
        if poll_interval.is_zero() {
            self.problem("cds.poll_interval", "must be longer than 0s");
        }
        if poll_max_interval < poll_interval {
            self.problem(
                "cds.poll_max_interval",
                "must not be shorter than cds.poll_interval",
            );
        }
        let guard = crate::transfer::source::RateGuard::default();
        let download_min_rate = match &raw.download_min_rate {
            None => guard.min_bytes_per_second,
            // `64KiB` or `64KiB/s`.
            Some(t) => match units::parse_size(t.0.trim().trim_end_matches("/s")) {
                Ok(n) => n,
                Err(e) => {
                    self.problem("cds.download_min_rate", format!("{e} (per second)"));
                    guard.min_bytes_per_second
                }
            },
        };
        let download_rate_window = self.duration(
            "cds.download_rate_window",
            raw.download_rate_window.as_ref(),
            guard.window,
        );
        if download_rate_window < Duration::from_secs(1) {
            self.problem(
                "cds.download_rate_window",
                "must be at least 1s (the rate is measured over this window)",
            );
        }
        CdsConfig {
            download_min_rate,
            download_rate_window,
            poll_interval,
            poll_max_interval,
            endpoint,
            access_key_id_file: raw.access_key_id_file.as_deref().map(|p| self.path(p)),
            access_key_secret_file: raw.access_key_secret_file.as_deref().map(|p| self.path(p)),
            timeout,
            time_zone,
            retry,
        }
    }

    fn name_ok(&mut self, path: &str, what: &str, name: &str) -> bool {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !name.starts_with('.');
        if !ok {
            self.problem(
                path,
                format!(
                    "{what} name `{name}` must be 1-64 characters of A-Z a-z 0-9 - _ . (it becomes part of object keys and metric labels)"
                ),
            );
        }
        ok
    }

    fn destination(&mut self, name: &str, d: &RawDestination) -> Option<Destination> {
        let base = format!("destinations.{name}");
        self.name_ok(&base, "destination", name);
        let kind = match d.kind.as_ref().map(|t| t.0.trim()) {
            None => {
                self.problem(&base, "missing `type`: s3 or file");
                return None;
            }
            Some("s3") => {
                if d.path.is_some() {
                    self.problem(
                        &format!("{base}.path"),
                        "`path` belongs to type: file; an s3 destination uses bucket and prefix",
                    );
                }
                DestinationKind::S3(Box::new(self.s3(name, &base, d)))
            }
            Some("file") => {
                let s3_keys = [
                    ("bucket", d.bucket.is_some()),
                    ("prefix", d.prefix.is_some()),
                    ("region", d.region.is_some()),
                    ("endpoint", d.endpoint.is_some()),
                    ("path_style", d.path_style.is_some()),
                    ("storage_class", d.storage_class.is_some()),
                    ("server_side_encryption", d.server_side_encryption.is_some()),
                    ("kms_key_id", d.kms_key_id.is_some()),
                    ("part_size", d.part_size.is_some()),
                    ("upload_concurrency", d.upload_concurrency.is_some()),
                    ("access_key_id_file", d.access_key_id_file.is_some()),
                    ("secret_access_key_file", d.secret_access_key_file.is_some()),
                    ("credentials", d.credentials.is_some()),
                ];
                for (key, present) in s3_keys {
                    if present {
                        self.problem(
                            &format!("{base}.{key}"),
                            format!("`{key}` belongs to type: s3, not type: file"),
                        );
                    }
                }
                match &d.path {
                    Some(p) if !p.as_os_str().is_empty() => {
                        DestinationKind::File(FileDestination { path: self.path(p) })
                    }
                    _ => {
                        self.problem(&base, "a file destination needs `path`");
                        return None;
                    }
                }
            }
            Some(other) => {
                self.problem(
                    &format!("{base}.type"),
                    format!("unknown destination type `{other}`; use s3 or file"),
                );
                return None;
            }
        };
        Some(Destination {
            name: name.to_string(),
            kind,
        })
    }

    fn s3(&mut self, name: &str, base: &str, d: &RawDestination) -> S3Destination {
        let bucket = match &d.bucket {
            Some(t) if !t.0.trim().is_empty() => t.0.trim().to_string(),
            _ => {
                self.problem(base, "an s3 destination needs `bucket`");
                String::new()
            }
        };
        let mut prefix = d
            .prefix
            .as_ref()
            .map(|t| t.0.trim().trim_start_matches('/').to_string())
            .unwrap_or_default();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        let endpoint = d
            .endpoint
            .as_ref()
            .and_then(|t| match Url::parse(t.0.trim()) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => Some(u),
                _ => {
                    self.problem(
                        &format!("{base}.endpoint"),
                        format!("`{}` is not an http(s) URL", t.0),
                    );
                    None
                }
            });
        let sse = match d.server_side_encryption.as_ref().map(|t| t.0.trim()) {
            None => None,
            Some("AES256") => Some(ServerSideEncryption::Aes256),
            Some("aws:kms") => Some(ServerSideEncryption::Kms {
                key_id: d.kms_key_id.as_ref().map(|t| t.0.trim().to_string()),
            }),
            Some(other) => {
                self.problem(
                    &format!("{base}.server_side_encryption"),
                    format!("`{other}` is not one of: AES256, aws:kms"),
                );
                None
            }
        };
        if d.kms_key_id.is_some() && !matches!(sse, Some(ServerSideEncryption::Kms { .. })) {
            self.problem(
                &format!("{base}.kms_key_id"),
                "kms_key_id needs server_side_encryption: aws:kms",
            );
        }
        let part_size = match &d.part_size {
            None => 16 << 20,
            Some(t) => match units::parse_size(&t.0) {
                Ok(n) if (5 << 20..=5 << 30).contains(&n) => n,
                Ok(n) => {
                    self.problem(
                        &format!("{base}.part_size"),
                        format!(
                            "{} is outside what S3 allows for a part: 5MiB to 5GiB",
                            units::format_size(n)
                        ),
                    );
                    16 << 20
                }
                Err(e) => {
                    self.problem(&format!("{base}.part_size"), e);
                    16 << 20
                }
            },
        };
        let upload_concurrency = match d.upload_concurrency {
            None => 4,
            Some(n @ 1..=64) => n as usize,
            Some(n) => {
                self.problem(
                    &format!("{base}.upload_concurrency"),
                    format!("{n} is outside 1..=64"),
                );
                4
            }
        };
        if d.access_key_id_file.is_some() != d.secret_access_key_file.is_some() {
            self.problem(
                base,
                "set both access_key_id_file and secret_access_key_file, or neither (then the environment, a profile or, with credentials: instance_profile, the instance role)",
            );
        }
        // A store with its own endpoint (CDS object storage, MinIO, SeaweedFS) has no instance
        // role: asking the metadata service would only wait for a timeout, or hand a foreign
        // store the host's AWS role. Only real AWS gets the whole chain unless asked.
        let default_credentials = if endpoint.is_some() {
            S3Credentials::Static
        } else {
            S3Credentials::DefaultChain
        };
        let credentials = self.choice(
            &format!("{base}.credentials"),
            d.credentials.as_ref(),
            &[
                ("static", S3Credentials::Static),
                ("instance_profile", S3Credentials::DefaultChain),
            ],
            default_credentials,
        );
        if credentials == S3Credentials::DefaultChain
            && d.credentials.is_some()
            && d.access_key_id_file.is_some()
        {
            self.problem(
                &format!("{base}.credentials"),
                "credentials: instance_profile and access_key_id_file / secret_access_key_file exclude each other; keep one",
            );
        }
        S3Destination {
            name: name.to_string(),
            credentials,
            bucket,
            prefix,
            region: d.region.as_ref().map(|t| t.0.trim().to_string()),
            endpoint,
            path_style: d.path_style.unwrap_or(false),
            storage_class: d.storage_class.as_ref().map(|t| t.0.trim().to_string()),
            server_side_encryption: sse,
            part_size,
            upload_concurrency,
            access_key_id_file: d.access_key_id_file.as_deref().map(|p| self.path(p)),
            secret_access_key_file: d.secret_access_key_file.as_deref().map(|p| self.path(p)),
        }
    }

    fn policy(
        &mut self,
        i: usize,
        p: &RawPolicy,
        destinations: &BTreeMap<String, RawDestination>,
    ) -> Policy {
        let base = format!("policies[{i}]");
        let name = match &p.name {
            Some(t) => {
                let n = t.0.trim().to_string();
                self.name_ok(&format!("{base}.name"), "policy", &n);
                n
            }
            None => {
                self.problem(&base, "a policy needs `name`");
                String::new()
            }
        };

        let schedule = self.schedule(&base, p.schedule.as_ref());

        if p.instances.is_empty() {
            self.problem(
                &base,
                "a policy needs `instances`: a list of { uuid: ... }, { name: \"glob\" } or { ip: ... }",
            );
        }
        let mut instances = Vec::new();
        for (j, s) in p.instances.iter().enumerate() {
            let path = format!("{base}.instances[{j}]");
            let given = [s.uuid.is_some(), s.name.is_some(), s.ip.is_some()]
                .iter()
                .filter(|x| **x)
                .count();
            if given != 1 {
                self.problem(&path, "each selector has exactly one of uuid, name or ip");
                continue;
            }
            if let Some(t) = &s.uuid {
                match uuid::Uuid::parse_str(t.0.trim()) {
                    Ok(_) => instances.push(Selector::Uuid(t.0.trim().to_ascii_lowercase())),
                    Err(_) => self.problem(
                        &format!("{path}.uuid"),
                        format!("`{}` is not an instance uuid (like 5d74bb81-0473-464d-b15b-0ae418619248)", t.0),
                    ),
                }
            } else if let Some(t) = &s.name {
                match globset::Glob::new(t.0.trim()) {
                    Ok(g) => instances.push(Selector::Name {
                        pattern: t.0.trim().to_string(),
                        matcher: g.compile_matcher(),
                    }),
                    Err(e) => self.problem(
                        &format!("{path}.name"),
                        format!("`{}` is not a valid glob: {e}", t.0),
                    ),
                }
            } else if let Some(t) = &s.ip {
                match t.0.trim().parse::<IpAddr>() {
                    Ok(ip) => instances.push(Selector::Ip(ip)),
                    Err(_) => self.problem(
                        &format!("{path}.ip"),
                        format!("`{}` is not an IP address", t.0),
                    ),
                }
            }
        }

        let destination = match &p.destination {
            Some(t) => {
                let d = t.0.trim().to_string();
                if !destinations.contains_key(&d) {
                    let hint = suggest(&d, destinations.keys().map(String::as_str));
                    let known: Vec<_> = destinations.keys().map(String::as_str).collect();
                    self.problem(
                        &format!("{base}.destination"),
                        format!(
                            "unknown destination `{d}`{}; defined: {}",
                            did_you_mean(hint),
                            if known.is_empty() {
                                "none".to_string()
                            } else {
                                known.join(", ")
                            }
                        ),
                    );
                }
                d
            }
            None => {
                self.problem(
                    &base,
                    "a policy needs `destination`: the name of an entry under destinations",
                );
                String::new()
            }
        };

        let download = self.choice(
            &format!("{base}.download"),
            p.download.as_ref(),
            &[
                ("intranet", DownloadRoute::Intranet),
                ("public", DownloadRoute::Public),
                ("auto", DownloadRoute::Auto),
            ],
            DownloadRoute::Auto,
        );

        let retention = self.retention(&base, p.retention.as_ref());
        Policy {
            name,
            schedule,
            instances,
            destination,
            download,
            retention,
        }
    }

    fn schedule(&mut self, base: &str, s: Option<&raw::RawSchedule>) -> Schedule {
        let path = format!("{base}.schedule");
        // cannot fail: a constant expression.
        let fallback_cron = CronExpr::parse("@daily").expect("@daily parses");
        let Some(s) = s else {
            self.problem(&path, "missing `schedule` (with at least `cron`)");
            return Schedule {
                cron: fallback_cron,
                timezone: Tz::UTC,
                jitter: Duration::ZERO,
                start_window: Duration::from_secs(3600),
                completion_window: Duration::from_secs(6 * 3600),
                catch_up: CatchUp::Latest,
            };
        };
        let cron = match &s.cron {
            Some(t) => CronExpr::parse(&t.0).unwrap_or_else(|e| {
                self.problem(&format!("{path}.cron"), e);
                fallback_cron.clone()
            }),
            None => {
                self.problem(&path, "missing `cron`, e.g. cron: \"30 2 * * *\"");
                fallback_cron.clone()
            }
        };
        let timezone = self.timezone(&format!("{path}.timezone"), s.timezone.as_ref(), Tz::UTC);
        let jitter = self.duration(&format!("{path}.jitter"), s.jitter.as_ref(), Duration::ZERO);
        let start_window = self.duration(
            &format!("{path}.start_window"),
            s.start_window.as_ref(),
            Duration::from_secs(3600),
        );
        let completion_window = self.duration(
            &format!("{path}.completion_window"),
            s.completion_window.as_ref(),
            Duration::from_secs(6 * 3600),
        );
        if start_window.is_zero() {
            self.problem(&format!("{path}.start_window"), "must be longer than 0s");
        }
        if completion_window.is_zero() {
            self.problem(
                &format!("{path}.completion_window"),
                "must be longer than 0s",
            );
        }
        if !jitter.is_zero() && jitter >= start_window {
            self.problem(
                &format!("{path}.jitter"),
                format!(
                    "jitter ({}) must be shorter than start_window ({}), or jittered runs would be recorded as missed",
                    units::format_duration(jitter),
                    units::format_duration(start_window)
                ),
            );
        }
        let catch_up = self.choice(
            &format!("{path}.catch_up"),
            s.catch_up.as_ref(),
            &[("none", CatchUp::None), ("latest", CatchUp::Latest)],
            CatchUp::Latest,
        );
        Schedule {
            cron,
            timezone,
            jitter,
            start_window,
            completion_window,
            catch_up,
        }
    }

    fn keep(&mut self, path: &str, k: &RawKeep) -> KeepRules {
        let mut count = |name: &str, v: Option<u32>| -> Option<u32> {
            if v == Some(0) {
                self.problem(
                    &format!("{path}.{name}"),
                    format!("{name}: 0 keeps nothing; remove the key instead"),
                );
                return None;
            }
            v
        };
        let rules = KeepRules {
            keep_last: count("keep_last", k.keep_last),
            keep_hourly: count("keep_hourly", k.keep_hourly),
            keep_daily: count("keep_daily", k.keep_daily),
            keep_weekly: count("keep_weekly", k.keep_weekly),
            keep_monthly: count("keep_monthly", k.keep_monthly),
            keep_yearly: count("keep_yearly", k.keep_yearly),
            keep_within: k.keep_within.as_ref().map(|t| {
                units::parse_duration(&t.0).unwrap_or_else(|e| {
                    self.problem(&format!("{path}.keep_within"), e);
                    Duration::from_secs(86_400)
                })
            }),
            min_verified: match k.min_verified {
                Some(0) => {
                    self.problem(
                        &format!("{path}.min_verified"),
                        "min_verified must be at least 1: rdbvault never deletes the last verified copy",
                    );
                    1
                }
                Some(n) => n,
                None => 1,
            },
        };
        let all_zero_or_absent = [
            k.keep_last,
            k.keep_hourly,
            k.keep_daily,
            k.keep_weekly,
            k.keep_monthly,
            k.keep_yearly,
        ]
        .iter()
        .all(|v| v.unwrap_or(0) == 0)
            && k.keep_within.is_none();
        if all_zero_or_absent {
            self.problem(
                path,
                "empty retention policy: it would keep nothing beyond min_verified; set at least one of keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly, keep_yearly, keep_within",
            );
        }
        rules
    }

    fn retention(&mut self, base: &str, r: Option<&raw::RawRetention>) -> Retention {
        let path = format!("{base}.retention");
        let Some(r) = r else {
            self.problem(
                &path,
                "missing `retention`; e.g. retention: { destination: { keep_last: 7 } }",
            );
            return Retention {
                destination: KeepRules::default(),
                provider: None,
                max_deletions_per_run: 10,
                reclaim_uncopied_after: None,
            };
        };
        let destination = match &r.destination {
            Some(k) => self.keep(&format!("{path}.destination"), k),
            None => {
                self.problem(
                    &path,
                    "missing `destination` rules; e.g. destination: { keep_last: 7 }",
                );
                KeepRules::default()
            }
        };
        if let Some(d) = &r.destination
            && d.reclaim_uncopied_after.is_some()
        {
            self.problem(
                &format!("{path}.destination.reclaim_uncopied_after"),
                "reclaim_uncopied_after applies to provider backups only; move it under retention.provider",
            );
        }
        let provider = r
            .provider
            .as_ref()
            .map(|k| self.keep(&format!("{path}.provider"), k));
        let reclaim_uncopied_after = r
            .provider
            .as_ref()
            .and_then(|k| k.reclaim_uncopied_after.as_ref())
            .map(|t| {
                self.duration(
                    &format!("{path}.provider.reclaim_uncopied_after"),
                    Some(t),
                    Duration::from_secs(7 * 86_400),
                )
            });
        let max_deletions_per_run = self.positive(
            &format!("{path}.max_deletions_per_run"),
            r.max_deletions_per_run,
            10,
        );
        Retention {
            destination,
            provider,
            max_deletions_per_run,
            reclaim_uncopied_after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
destinations:
  local: { type: file, path: /tmp/x }
policies:
  - name: p
    schedule: { cron: "@daily" }
    instances: [ { name: "prod-*" } ]
    destination: local
    retention: { destination: { keep_last: 3 } }
"#;

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = parse(MINIMAL, Path::new("t.yaml")).unwrap();
        assert_eq!(c.cds.endpoint.as_str(), "https://cdsapi.capitalonline.net/");
        assert_eq!(c.cds.timeout, Duration::from_secs(30));
        assert_eq!(c.http.listen.to_string(), "127.0.0.1:9750");
        // Beside the config file, wherever the command runs.
        let here = std::env::current_dir().unwrap();
        assert_eq!(c.state.path, here.join("rdbvault.db"));
        assert_eq!(c.limits.max_concurrent_jobs, 4);
        let p = &c.policies[0];
        assert_eq!(p.schedule.timezone, Tz::UTC);
        assert_eq!(p.schedule.catch_up, CatchUp::Latest);
        assert_eq!(p.download, DownloadRoute::Auto);
        assert_eq!(p.retention.destination.min_verified, 1);
        assert!(p.retention.provider.is_none());
        assert_eq!(c.cds.download_min_rate, 16 << 10);
        assert_eq!(c.cds.download_rate_window, Duration::from_secs(60));
    }

    #[test]
    fn download_rate_settings_parse_and_bad_ones_are_reported() {
        let with = |cds: &str| format!("cds:\n{cds}\n{MINIMAL}");
        let c = parse(
            &with("  download_min_rate: 64KiB/s\n  download_rate_window: 2s"),
            Path::new("t.yaml"),
        )
        .unwrap();
        assert_eq!(c.cds.download_min_rate, 64 << 10);
        assert_eq!(c.cds.download_rate_window, Duration::from_secs(2));
        let c = parse(&with("  download_min_rate: 0"), Path::new("t.yaml")).unwrap();
        assert_eq!(c.cds.download_min_rate, 0, "0 turns the check off");
        let err = parse(
            &with("  download_min_rate: fast\n  download_rate_window: 0s"),
            Path::new("t.yaml"),
        )
        .unwrap_err();
        let paths: Vec<_> = err.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["cds.download_min_rate", "cds.download_rate_window"]);
    }

    #[test]
    fn every_problem_is_reported_with_a_location() {
        let text = r#"
cds:
  timeout: 30
destinations:
  local: { type: file, path: /tmp/x }
policies:
  - name: p
    schedule: { cron: "30 2 * *", timezone: Asia/Shangai }
    instances: [ { ip: "not-an-ip" } ]
    destination: locl
    retention: { destination: { min_verified: 2 } }
"#;
        let err = parse(text, Path::new("t.yaml")).unwrap_err();
        let paths: Vec<_> = err.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "cds.timeout",
                "policies[0].schedule.cron",
                "policies[0].schedule.timezone",
                "policies[0].instances[0].ip",
                "policies[0].destination",
                "policies[0].retention.destination"
            ]
        );
        assert!(err.problems.iter().all(|p| p.line.is_some()));
        let text = err.to_string();
        assert!(text.contains("t.yaml:3:12: cds.timeout"), "{text}");
        assert!(text.contains("did you mean `Asia/Shanghai`?"), "{text}");
        assert!(text.contains("did you mean `local`?"), "{text}");
    }

    #[test]
    fn a_non_loopback_listen_needs_a_token_file() {
        let open = format!("http:\n  listen: 0.0.0.0:9750\n{MINIMAL}");
        let err = parse(&open, Path::new("t.yaml")).unwrap_err();
        assert_eq!(err.problems.len(), 1, "{err}");
        let text = err.to_string();
        assert!(text.contains("t.yaml:2:11: http.listen"), "{text}");
        assert!(text.contains("http.token_file"), "{text}");
        let with_token = open.replace(
            "listen: 0.0.0.0:9750",
            "listen: 0.0.0.0:9750\n  token_file: /run/secrets/rdbvault_token",
        );
        let c = parse(&with_token, Path::new("t.yaml")).unwrap();
        assert_eq!(
            c.http.token_file,
            Some(PathBuf::from("/run/secrets/rdbvault_token"))
        );
        // Loopback needs none; [::1] is loopback too.
        for listen in ["127.0.0.1:9750", "\"[::1]:9750\""] {
            let local = open.replace("0.0.0.0:9750", listen);
            assert!(parse(&local, Path::new("t.yaml")).is_ok(), "{listen}");
        }
    }

    #[test]
    fn unknown_key_is_located_by_serde() {
        let text = MINIMAL.replace("retention:", "retension:");
        let err = parse(&text, Path::new("t.yaml")).unwrap_err();
        assert_eq!(err.problems.len(), 1);
        let p = &err.problems[0];
        assert_eq!(p.path, "policies[0].retension");
        assert!(
            p.message.contains("unknown field `retension`"),
            "{}",
            p.message
        );
        assert_eq!(p.line, Some(9));
    }

    #[test]
    fn relative_paths_are_resolved_from_the_config_files_directory() {
        let text = r#"
cds:
  access_key_id_file: keys/cds_id
  access_key_secret_file: $CREDENTIALS_DIRECTORY/cds_secret
state: { path: ./state/rdbvault.db }
http: { token_file: ../token }
destinations:
  local: { type: file, path: archive }
  abs: { type: file, path: /srv/archive }
  s3: { type: s3, bucket: b, access_key_id_file: s3_id, secret_access_key_file: /run/s3_secret }
policies:
  - name: p
    schedule: { cron: "@daily" }
    instances: [ { name: "prod-*" } ]
    destination: local
    retention: { destination: { keep_last: 3 } }
"#;
        let c = parse(text, Path::new("/etc/rdbvault/conf.yaml")).unwrap();
        let etc = Path::new("/etc/rdbvault");
        assert_eq!(c.state.path, etc.join("state/rdbvault.db"));
        assert_eq!(c.http.token_file, Some(etc.join("../token")));
        assert_eq!(c.cds.access_key_id_file, Some(etc.join("keys/cds_id")));
        assert_eq!(
            c.cds.access_key_secret_file,
            Some(PathBuf::from("$CREDENTIALS_DIRECTORY/cds_secret")),
            "expanded when read, never joined"
        );
        let file = |name: &str| match &c.destinations[name].kind {
            DestinationKind::File(f) => f.path.clone(),
            DestinationKind::S3(_) => unreachable!(),
        };
        assert_eq!(file("local"), etc.join("archive"));
        assert_eq!(file("abs"), PathBuf::from("/srv/archive"));
        let DestinationKind::S3(s3) = &c.destinations["s3"].kind else {
            unreachable!()
        };
        assert_eq!(s3.access_key_id_file, Some(etc.join("s3_id")));
        assert_eq!(
            s3.secret_access_key_file,
            Some(PathBuf::from("/run/s3_secret"))
        );
        // A config named relatively resolves from where it is, made absolute.
        let c = parse(text, Path::new("sub/conf.yaml")).unwrap();
        let here = std::env::current_dir().unwrap();
        assert_eq!(c.state.path, here.join("sub/state/rdbvault.db"));
        // The `cds` section alone (rdbvault api) follows the same rule.
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("c.yaml");
        std::fs::write(&conf, text).unwrap();
        let cds = load_cds(&conf, true).unwrap();
        assert_eq!(cds.access_key_id_file, Some(dir.path().join("keys/cds_id")));
    }

    #[test]
    fn s3_credentials_default_by_endpoint_and_a_bad_value_is_located() {
        let with = |dest: &str| {
            MINIMAL.replace(
                "  local: { type: file, path: /tmp/x }",
                &format!(
                    "  local: {{ type: file, path: /tmp/x }}\n  s3: {{ type: s3, bucket: b{dest} }}"
                ),
            )
        };
        let creds = |text: &str| {
            let c = parse(text, Path::new("t.yaml")).unwrap();
            let DestinationKind::S3(s3) = &c.destinations["s3"].kind else {
                unreachable!()
            };
            (s3.name.clone(), s3.credentials)
        };
        assert_eq!(creds(&with("")), ("s3".into(), S3Credentials::DefaultChain));
        let endpoint = ", endpoint: http://127.0.0.1:9000";
        assert_eq!(creds(&with(endpoint)).1, S3Credentials::Static);
        assert_eq!(
            creds(&with(&format!("{endpoint}, credentials: instance_profile"))).1,
            S3Credentials::DefaultChain
        );
        assert_eq!(
            creds(&with(", credentials: static")).1,
            S3Credentials::Static
        );
        let err = parse(&with(", credentials: imds"), Path::new("t.yaml")).unwrap_err();
        let text = err.to_string();
        assert_eq!(
            err.problems[0].path, "destinations.s3.credentials",
            "{text}"
        );
        assert!(err.problems[0].line.is_some(), "{text}");
        assert!(text.contains("static, instance_profile"), "{text}");
        let both =
            ", credentials: instance_profile, access_key_id_file: /k, secret_access_key_file: /s";
        let err = parse(&with(both), Path::new("t.yaml")).unwrap_err();
        assert_eq!(err.problems[0].path, "destinations.s3.credentials");
    }
}
