//! Typed requests and responses of the CDS Redis API, tolerant of the documented quirks.
//!
//! The same types serialise the simulator's answers, so field spellings live in one place.
//! Quirks handled here (see `docs/cds-api.md` §2.1):
//! - success is `Code == "Success"`; `Message` varies (`Success.`, `success`, `succes`) and is
//!   never looked at;
//! - `TaskId` may be missing, `null` or `""`;
//! - `BackupSize` is a number in samples and a string in the reference table: both are accepted;
//! - any field may be `null`, which reads as its default;
//! - backup records say `InstanceId`, not `InstanceUuid`;
//! - times are zone-less `YYYY-MM-DD HH:MM:SS` strings, read in `cds.time_zone`.

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde::{Deserialize, Deserializer, Serialize};

/// The JSON envelope of every answer.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Envelope {
    #[serde(rename = "Code", default, deserialize_with = "lenient_string")]
    pub code: String,
    #[serde(rename = "Message", default, deserialize_with = "lenient_string")]
    pub message: String,
    #[serde(rename = "Data", default)]
    pub data: serde_json::Value,
    #[serde(
        rename = "TaskId",
        default,
        deserialize_with = "task_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub task_id: Option<String>,
}

impl Envelope {
    pub const SUCCESS: &'static str = "Success";

    pub fn is_success(&self) -> bool {
        self.code == Self::SUCCESS
    }
}

/// Reads `null`, a string or a number as a string (`null` → `""`).
pub fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    })
}

/// Reads `null` as the type's default.
pub fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn task_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = lenient_string(d)?;
    Ok((!s.is_empty()).then_some(s))
}

/// Reads an integer given as a number, a numeric string, `""` or `null`.
pub fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    use serde::de::Error;
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::Number(n) => n
            .as_u64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| *f >= 0.0 && f.fract() == 0.0)
                    .map(|f| f as u64)
            })
            .map(Some)
            .ok_or_else(|| D::Error::custom(format!("expected a non-negative integer, got {n}"))),
        serde_json::Value::String(s) if s.trim().is_empty() => Ok(None),
        serde_json::Value::String(s) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| D::Error::custom(format!("expected an integer, got {s:?}"))),
        other => Err(D::Error::custom(format!(
            "expected an integer, got {other}"
        ))),
    }
}

fn lenient_i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    use serde::de::Error;
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Null => Ok(0),
        serde_json::Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| D::Error::custom(format!("expected an integer, got {n}"))),
        serde_json::Value::String(s) if s.trim().is_empty() => Ok(0),
        serde_json::Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| D::Error::custom(format!("expected an integer, got {s:?}"))),
        other => Err(D::Error::custom(format!(
            "expected an integer, got {other}"
        ))),
    }
}

/// Parses the API's zone-less `YYYY-MM-DD HH:MM:SS` in the given zone. `None` for an empty or
/// unparsable string, and for a local time that does not exist in that zone.
pub fn parse_provider_time<Tz: TimeZone>(s: &str, tz: &Tz) -> Option<DateTime<Utc>> {
    let naive = NaiveDateTime::parse_from_str(s.trim(), "%Y-%m-%d %H:%M:%S").ok()?;
    tz.from_local_datetime(&naive)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
}

/// Formats a time the way the API does (zone-less, in the given zone).
pub fn format_provider_time<Tz: TimeZone>(at: DateTime<Utc>, tz: &Tz) -> String
where
    Tz::Offset: std::fmt::Display,
{
    at.with_timezone(tz).format("%Y-%m-%d %H:%M:%S").to_string()
}

/// `DescribeRegins` item.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Region {
    #[serde(deserialize_with = "lenient_string")]
    pub city_id: String,
    #[serde(deserialize_with = "lenient_string")]
    pub city_name: String,
    /// 1: on sale; 0: taken offline for lack of resources.
    #[serde(deserialize_with = "lenient_i64")]
    pub is_saling: i64,
    #[serde(deserialize_with = "lenient_string")]
    pub region_id: String,
    #[serde(deserialize_with = "lenient_string")]
    pub region_name: String,
    #[serde(deserialize_with = "lenient_string")]
    pub site_name: String,
}

/// `DescribeAvailableDBConfig` data.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct DbConfigCatalog {
    #[serde(deserialize_with = "lenient_string")]
    pub product_name: String,
    #[serde(deserialize_with = "lenient_string")]
    pub region_id: String,
    #[serde(deserialize_with = "null_default")]
    pub products: Vec<Product>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Product {
    #[serde(deserialize_with = "lenient_string")]
    pub version: String,
    #[serde(deserialize_with = "null_default")]
    pub architectures: Vec<Architecture>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Architecture {
    #[serde(deserialize_with = "lenient_string")]
    pub architecture_name: String,
    /// 1 replication, 2 cluster, 3 economy replication.
    #[serde(deserialize_with = "lenient_i64")]
    pub architecture_type: i64,
    #[serde(deserialize_with = "null_default")]
    pub compute_roles: Vec<ComputeRole>,
    /// Documented as a string, sent as a list in the sample: kept as raw JSON.
    pub engines_type: serde_json::Value,
    #[serde(deserialize_with = "null_default")]
    pub network_links: Vec<NetworkLink>,
    #[serde(deserialize_with = "lenient_string")]
    pub sub_product_name: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ComputeRole {
    #[serde(deserialize_with = "lenient_string")]
    pub compute_name: String,
    #[serde(deserialize_with = "lenient_i64")]
    pub compute_type: i64,
    #[serde(deserialize_with = "null_default")]
    pub standards: Standards,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Standards {
    /// Disk offers; their numeric fields come as numbers or strings, so they stay raw JSON.
    #[serde(deserialize_with = "null_default")]
    pub attach_disk: Vec<serde_json::Value>,
    #[serde(deserialize_with = "null_default")]
    pub cpu_ram: Vec<CpuRam>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct CpuRam {
    #[serde(rename = "CPU", deserialize_with = "lenient_i64")]
    pub cpu: i64,
    #[serde(rename = "Name", deserialize_with = "lenient_string")]
    pub name: String,
    #[serde(rename = "PaasGoodsId", deserialize_with = "lenient_i64")]
    pub paas_goods_id: i64,
    /// GB.
    #[serde(rename = "RAM", deserialize_with = "lenient_i64")]
    pub ram: i64,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct NetworkLink {
    #[serde(deserialize_with = "lenient_string")]
    pub desc_detail: String,
    #[serde(deserialize_with = "lenient_string")]
    pub link_type: String,
    #[serde(deserialize_with = "lenient_string")]
    pub name: String,
}

/// `CreateDBInstance` data.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreatedInstances {
    #[serde(deserialize_with = "null_default")]
    pub instances_uuid: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Tag {
    #[serde(rename = "TagID")]
    pub tag_id: serde_json::Value,
    #[serde(rename = "TagName", deserialize_with = "lenient_string")]
    pub tag_name: String,
}

/// `DescribeDBInstances` item. Undocumented extras are ignored.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Instance {
    #[serde(deserialize_with = "lenient_string")]
    pub instance_uuid: String,
    #[serde(deserialize_with = "lenient_string")]
    pub instance_name: String,
    #[serde(rename = "IP", deserialize_with = "lenient_string")]
    pub ip: String,
    #[serde(deserialize_with = "lenient_u64")]
    pub port: Option<u64>,
    /// Memory in MB (not GB, unlike the catalogue).
    #[serde(deserialize_with = "lenient_u64")]
    pub ram: Option<u64>,
    #[serde(deserialize_with = "lenient_string")]
    pub region_id: String,
    #[serde(deserialize_with = "lenient_string")]
    pub vdc_id: String,
    #[serde(deserialize_with = "lenient_string")]
    pub vdc_name: String,
    #[serde(deserialize_with = "lenient_string")]
    pub display_name: String,
    #[serde(deserialize_with = "lenient_string")]
    pub app_name: String,
    /// `RUNNING` is the only documented value.
    #[serde(deserialize_with = "lenient_string")]
    pub status: String,
    #[serde(deserialize_with = "lenient_string")]
    pub status_str: String,
    #[serde(deserialize_with = "lenient_string")]
    pub sub_product_name: String,
    #[serde(deserialize_with = "lenient_string")]
    pub sub_product_key: String,
    #[serde(deserialize_with = "lenient_string")]
    pub version: String,
    #[serde(deserialize_with = "lenient_string")]
    pub link_type: String,
    #[serde(deserialize_with = "lenient_string")]
    pub link_type_str: String,
    #[serde(deserialize_with = "lenient_string")]
    pub created_time: String,
    #[serde(deserialize_with = "lenient_string")]
    pub resource_id: String,
    #[serde(deserialize_with = "lenient_string")]
    pub project_name: String,
    #[serde(deserialize_with = "null_default")]
    pub tags: Vec<Tag>,
    pub relation_service: serde_json::Value,
    pub clone_services: serde_json::Value,
    pub master_info: serde_json::Value,
    pub ro_groups: serde_json::Value,
}

/// A backup record, from `DescribeBackups` (and, with more fields, `DownloadBackup`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Backup {
    #[serde(deserialize_with = "lenient_string")]
    pub backup_id: String,
    /// The instance uuid, spelt `InstanceId` in backup records.
    #[serde(deserialize_with = "lenient_string")]
    pub instance_id: String,
    #[serde(deserialize_with = "lenient_string")]
    pub backup_type: String,
    /// `manual` or `auto`.
    #[serde(deserialize_with = "lenient_string")]
    pub backup_mode: String,
    /// Bytes; a number or a string on the wire.
    #[serde(deserialize_with = "lenient_u64")]
    pub backup_size: Option<u64>,
    #[serde(deserialize_with = "lenient_string")]
    pub desc: String,
    #[serde(deserialize_with = "lenient_string")]
    pub start_time: String,
    #[serde(deserialize_with = "lenient_string")]
    pub end_time: String,
    /// Only `finished` is documented; anything else means "not downloadable yet".
    #[serde(deserialize_with = "lenient_string")]
    pub status: String,
}

impl Backup {
    pub const FINISHED: &'static str = "finished";

    pub fn is_finished(&self) -> bool {
        self.status == Self::FINISHED
    }

    /// True when the provider says the backup failed. Only `finished` is documented; the
    /// spellings of failure seen or plausible (`failed`, `error`, `fail`, any case) all count.
    pub fn is_failed(&self) -> bool {
        matches!(
            self.status.to_ascii_lowercase().as_str(),
            "failed" | "error" | "fail"
        )
    }
}

/// `DownloadBackup` data: the backup record plus its shard and its download URLs.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct BackupDownload {
    #[serde(flatten)]
    pub backup: Backup,
    /// The cluster shard id; `""` for other editions.
    #[serde(deserialize_with = "lenient_string")]
    pub shard_id: String,
    /// Public URL (https in samples).
    #[serde(deserialize_with = "lenient_string")]
    pub backup_download_url: String,
    /// Intranet URL (http in samples).
    #[serde(deserialize_with = "lenient_string")]
    pub backup_intranet_download_url: String,
}

/// What the write actions return: just the task id, which cannot be queried for Redis.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskRef {
    pub task_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_tolerates_missing_empty_and_null_task_id() {
        for (body, want) in [
            (
                r#"{"Code":"Success","Message":"succes","Data":{},"TaskId":"t-1"}"#,
                Some("t-1"),
            ),
            (
                r#"{"Code":"Success","Message":"Success.","Data":{},"TaskId":""}"#,
                None,
            ),
            (
                r#"{"Code":"Success","Message":"success","Data":{},"TaskId":null}"#,
                None,
            ),
            (r#"{"Code":"Success","Data":[]}"#, None),
        ] {
            let e: Envelope = serde_json::from_str(body).unwrap();
            assert!(e.is_success());
            assert_eq!(e.task_id.as_deref(), want, "{body}");
        }
    }

    #[test]
    fn code_decides_success_not_message() {
        let e: Envelope =
            serde_json::from_str(r#"{"Code":"InternalError","Message":"Success."}"#).unwrap();
        assert!(!e.is_success());
        let e: Envelope = serde_json::from_str(r#"{"Code":"Success","Message":"error"}"#).unwrap();
        assert!(e.is_success());
    }

    #[test]
    fn backup_size_number_string_null_and_instance_id() {
        let cases = [
            (r#"{"BackupSize": 178}"#, Some(178)),
            (r#"{"BackupSize": "176"}"#, Some(176)),
            (r#"{"BackupSize": null}"#, None),
            (r#"{"BackupSize": ""}"#, None),
            (r#"{}"#, None),
        ];
        for (json, want) in cases {
            let b: Backup = serde_json::from_str(json).unwrap();
            assert_eq!(b.backup_size, want, "{json}");
        }
        let b: Backup = serde_json::from_str(
            r#"{"BackupId":"b1","InstanceId":"i1","Desc":null,"Status":"finished","EndTime":null}"#,
        )
        .unwrap();
        assert_eq!(b.instance_id, "i1");
        assert_eq!(b.desc, "");
        assert!(b.is_finished());
    }

    #[test]
    fn download_backup_sample_from_the_reference_parses() {
        let data = r#"{
            "BackupDownloadUrl": "https:/***************************",
            "BackupId": "**********",
            "BackupIntranetDownloadUrl": "http://***************",
            "BackupMode": "manual", "BackupSize": 176, "BackupType": "full-backup", "Desc": "",
            "EndTime": "2020-08-21 15:59:02", "InstanceId": "*************",
            "ShardId": "*************", "StartTime": "2020-08-21 15:58:45", "Status": "finished"}"#;
        let d: BackupDownload = serde_json::from_str(data).unwrap();
        assert_eq!(d.backup.backup_size, Some(176));
        assert_eq!(d.shard_id, "*************");
        assert_eq!(d.backup_intranet_download_url, "http://***************");
    }

    #[test]
    fn instance_sample_with_nulls_parses() {
        let data = r#"{"CloneServices": null, "CreatedTime": "2020-03-13 15:38:35",
            "DisplayName": "中国大陆-北京-可用区H", "IP": "10.0.0.5", "InstanceName": "n",
            "InstanceUuid": "u", "LinkType": "default_link", "LinkTypeStr": "默认链路",
            "MasterInfo": "", "Port": 9736, "Ram": 1024, "RegionId": "CN_Beijing_H",
            "RelationService": null, "ResourceId": "r", "RoGroups": null, "Status": "RUNNING",
            "StatusStr": "运行中", "SubProductName": "Redis 读写分离版", "VdcId": "v",
            "VdcName": "北京8", "Version": "2.8.19", "Tags": null}"#;
        let i: Instance = serde_json::from_str(data).unwrap();
        assert_eq!(i.ram, Some(1024));
        assert_eq!(i.port, Some(9736));
        assert_eq!(i.ip, "10.0.0.5");
        assert!(i.tags.is_empty());
    }

    #[test]
    fn provider_times_are_read_in_the_configured_zone() {
        let t = parse_provider_time("2020-08-21 18:11:04", &chrono_tz::Asia::Shanghai).unwrap();
        assert_eq!(t.to_rfc3339(), "2020-08-21T10:11:04+00:00");
        assert!(parse_provider_time("", &Utc).is_none());
        assert_eq!(
            format_provider_time(t, &chrono_tz::Asia::Shanghai),
            "2020-08-21 18:11:04"
        );
    }

    #[test]
    fn failure_spellings_count_as_failed_and_nothing_else_does() {
        let with = |status: &str| Backup {
            status: status.into(),
            ..Default::default()
        };
        for s in ["failed", "FAILED", "Error", "fail"] {
            assert!(with(s).is_failed(), "{s}");
        }
        for s in ["finished", "running", "", "failing"] {
            assert!(!with(s).is_failed(), "{s}");
        }
    }
}
