//! The config file exactly as written: serde structs with `deny_unknown_fields`, values that need
//! parsing kept as text. Turning them into typed values happens in one validation pass
//! (`config::validate`), so every problem is reported, not only the first.

use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A scalar as written: a string, or a number or boolean turned into its text (so `timeout: 30`
/// can be answered with "30 has no unit" rather than a type error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text(pub String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match serde_yaml_ng::Value::deserialize(d)? {
            serde_yaml_ng::Value::String(s) => Ok(Text(s)),
            serde_yaml_ng::Value::Number(n) => Ok(Text(n.to_string())),
            serde_yaml_ng::Value::Bool(b) => Ok(Text(b.to_string())),
            serde_yaml_ng::Value::Null => Err(D::Error::custom("expected a value, found nothing")),
            _ => Err(D::Error::custom(
                "expected a single value (text or number), found a list or a mapping",
            )),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub cds: RawCds,
    #[serde(default)]
    pub state: RawState,
    #[serde(default)]
    pub http: RawHttp,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub verify: RawVerify,
    #[serde(default)]
    pub drill: RawDrill,
    #[serde(default)]
    pub notify: Vec<RawNotify>,
    #[serde(default)]
    pub destinations: BTreeMap<String, RawDestination>,
    #[serde(default)]
    pub policies: Vec<RawPolicy>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCds {
    pub endpoint: Option<Text>,
    pub region: Option<Text>,
    pub access_key_id_file: Option<PathBuf>,
    pub access_key_secret_file: Option<PathBuf>,
    pub timeout: Option<Text>,
    pub time_zone: Option<Text>,
    pub poll_interval: Option<Text>,
    pub poll_max_interval: Option<Text>,
    pub download_min_rate: Option<Text>,
    pub download_rate_window: Option<Text>,
    #[serde(default)]
    pub retry: RawRetry,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    pub max_attempts: Option<u32>,
    pub base_delay: Option<Text>,
    pub max_delay: Option<Text>,
    pub max_elapsed: Option<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    pub path: Option<PathBuf>,
    pub url: Option<Text>,
    pub password_file: Option<PathBuf>,
    pub job_lease: Option<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    pub listen: Option<Text>,
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub format: Option<Text>,
    pub level: Option<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVerify {
    pub interval: Option<Text>,
    pub copies: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    #[serde(rename = "type")]
    pub kind: Option<Text>,
    pub name: Option<Text>,
    pub url: Option<Text>,
    pub secret_file: Option<PathBuf>,
    pub events: Option<Vec<Text>>,
    pub policies: Option<Vec<Text>>,
    pub timeout: Option<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDrill {
    pub enabled: Option<bool>,
    pub interval: Option<Text>,
    pub sets_per_policy: Option<u32>,
    pub redis_server: Option<PathBuf>,
    pub load_timeout: Option<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_concurrent_jobs: Option<u32>,
    pub max_concurrent_transfers: Option<u32>,
    pub max_backup_size: Option<Text>,
}

/// Both destination types in one struct, so an S3 key under a `file` destination is reported
/// with its location instead of as an opaque "unknown variant".
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDestination {
    #[serde(rename = "type")]
    pub kind: Option<Text>,
    // s3
    pub bucket: Option<Text>,
    pub prefix: Option<Text>,
    pub region: Option<Text>,
    pub endpoint: Option<Text>,
    pub path_style: Option<bool>,
    pub storage_class: Option<Text>,
    pub server_side_encryption: Option<Text>,
    pub kms_key_id: Option<Text>,
    pub part_size: Option<Text>,
    pub upload_concurrency: Option<u32>,
    pub access_key_id_file: Option<PathBuf>,
    pub secret_access_key_file: Option<PathBuf>,
    pub credentials: Option<Text>,
    // file
    pub path: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub name: Option<Text>,
    pub schedule: Option<RawSchedule>,
    #[serde(default)]
    pub instances: Vec<RawSelector>,
    pub destination: Option<Text>,
    pub download: Option<Text>,
    pub retention: Option<RawRetention>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSchedule {
    pub cron: Option<Text>,
    pub timezone: Option<Text>,
    pub jitter: Option<Text>,
    pub start_window: Option<Text>,
    pub completion_window: Option<Text>,
    pub catch_up: Option<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSelector {
    pub uuid: Option<Text>,
    pub name: Option<Text>,
    pub ip: Option<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetention {
    pub destination: Option<RawKeep>,
    pub provider: Option<RawKeep>,
    pub max_deletions_per_run: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeep {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    pub keep_within: Option<Text>,
    pub min_verified: Option<u32>,
    /// Only under `retention.provider`.
    pub reclaim_uncopied_after: Option<Text>,
}
