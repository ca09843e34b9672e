//! Backups: their bytes, their records, download tokens, and the four backup actions
//! (`DescribeBackups`, `CreateBackup`, `DeleteBackup`, `DownloadBackup`).

use super::actions::{Answer, TaskIdStyle, bad, required, to_json};
use super::{Fault, PROVIDER_TZ, SimInstance, World};
use crate::cds::model::{Backup, BackupDownload, format_provider_time};
use crate::rdb::{self, Generator};
use crate::sim::auth::Rejection;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

/// What a backup's bytes are.
#[derive(Debug, Clone)]
pub enum Payload {
    /// A generated RDB file; its CRC is computed in the background once, then cached.
    Generated {
        generator: Arc<Generator>,
        crc: Arc<OnceLock<u64>>,
    },
    /// A real dump file (from a real redis-server), held in memory; for small fixtures.
    File(Arc<Vec<u8>>),
}

impl Payload {
    pub fn size(&self) -> u64 {
        match self {
            Payload::Generated { generator, .. } => generator.size(),
            Payload::File(bytes) => bytes.len() as u64,
        }
    }

    pub fn is_ready(&self) -> bool {
        match self {
            Payload::Generated { crc, .. } => crc.get().is_some(),
            Payload::File(_) => true,
        }
    }

    /// Copies the bytes at `offset` into `buf`. Only call once [`Payload::is_ready`].
    pub fn fill(&self, offset: u64, buf: &mut [u8]) {
        match self {
            Payload::Generated { generator, crc } => {
                // cannot fail: the only caller (the download handler) checks `is_ready` first.
                generator.fill(offset, buf, *crc.get().expect("payload is ready"))
            }
            Payload::File(bytes) => {
                let start = offset as usize;
                buf.copy_from_slice(&bytes[start..start + buf.len()]);
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct SimBackup {
    pub backup_id: String,
    pub instance_uuid: String,
    pub shard_id: String,
    pub desc: String,
    pub mode: &'static str,
    pub started: DateTime<Utc>,
    pub finish_at: DateTime<Utc>,
    /// Set when a `backup_fails` fault picked this backup.
    pub fails: bool,
    pub payload: Payload,
}

impl SimBackup {
    pub fn status(&self, now: DateTime<Utc>) -> &'static str {
        if now < self.finish_at || !self.payload.is_ready() {
            "running"
        } else if self.fails {
            "failed"
        } else {
            "finished"
        }
    }

    fn record(&self, now: DateTime<Utc>) -> Backup {
        let status = self.status(now);
        let done = status != "running";
        Backup {
            backup_id: self.backup_id.clone(),
            instance_id: self.instance_uuid.clone(),
            backup_type: "full-backup".into(),
            backup_mode: self.mode.into(),
            // Unknown while running: sent as null, which clients must tolerate.
            backup_size: (status == "finished").then(|| self.payload.size()),
            desc: self.desc.clone(),
            start_time: format_provider_time(self.started, &PROVIDER_TZ),
            end_time: if done {
                format_provider_time(self.finish_at.max(self.started), &PROVIDER_TZ)
            } else {
                String::new()
            },
            status: status.into(),
        }
    }
}

/// Which download URL a token was issued for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Route {
    Public,
    Intranet,
}

#[derive(Debug, Clone)]
pub struct DownloadToken {
    pub backup_id: String,
    pub expires_at: DateTime<Utc>,
    pub route: Route,
}

impl World {
    /// Starts one backup record per shard (one for non-cluster instances).
    pub fn start_backup(
        &mut self,
        inst: &SimInstance,
        desc: String,
        mode: &'static str,
        now: DateTime<Utc>,
        fails: bool,
        make_payload: &mut dyn FnMut(u64, u16, u64) -> Payload,
    ) -> Vec<String> {
        let shards: Vec<String> = if inst.shards.is_empty() {
            vec![String::new()]
        } else {
            inst.shards.clone()
        };
        let version = rdb::rdb_version_for_redis(&inst.info.version);
        let finish_at =
            now + chrono::Duration::from_std(self.settings.backup_delay).unwrap_or_default();
        let mut ids = Vec::new();
        for shard in shards {
            let backup_id = format!("{}{}", inst.backup_id_prefix, uuid::Uuid::new_v4().simple());
            let seed = fastrand::u64(..);
            let payload = match &inst.payload_file {
                Some(bytes) => Payload::File(bytes.clone()),
                None => make_payload(inst.backup_size, version, seed),
            };
            ids.push(backup_id.clone());
            self.backups.push(SimBackup {
                backup_id,
                instance_uuid: inst.info.instance_uuid.clone(),
                shard_id: shard,
                desc: desc.clone(),
                mode,
                started: now,
                finish_at,
                fails,
                payload,
            });
        }
        ids
    }

    /// `DescribeBackups`: the instance's backups, newest first. Notes the gap since the last
    /// listing of the same instance (the benchmark checks polling stays paced).
    pub(super) fn describe_backups(
        &mut self,
        params: &BTreeMap<String, serde_json::Value>,
        now: DateTime<Utc>,
    ) -> Result<Answer, Rejection> {
        let uuid = required(params, "InstanceUuid")?.to_ascii_lowercase();
        self.instance(&uuid)?;
        if let Some(last) = self.describe_backups_last.insert(uuid.clone(), now) {
            let gap = now - last;
            if self.describe_backups_min_gap.is_none_or(|min| gap < min) {
                self.describe_backups_min_gap = Some(gap);
            }
        }
        let list: Vec<Backup> = self
            .backups
            .iter()
            .filter(|b| b.instance_uuid == uuid)
            .rev()
            .map(|b| b.record(now))
            .collect();
        Ok(Answer {
            data: to_json(list),
            task_id: TaskIdStyle::Missing,
        })
    }

    /// `CreateBackup`: refused while the instance is being created or already backing up.
    pub(super) fn create_backup(
        &mut self,
        params: &BTreeMap<String, serde_json::Value>,
        now: DateTime<Utc>,
        make_payload: &mut dyn FnMut(u64, u16, u64) -> Payload,
    ) -> Result<Answer, Rejection> {
        let uuid = required(params, "InstanceUuid")?.to_ascii_lowercase();
        let desc = params
            .get("Desc")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        let inst = self.instance(&uuid)?.clone();
        if now < inst.ready_at {
            return Err(bad("UnsupportedOperation", "实例状态不允许备份"));
        }
        if self
            .backups
            .iter()
            .any(|b| b.instance_uuid == uuid && b.status(now) == "running")
        {
            return Err(bad("ResourceInUse", "资源正在被其他任务占用，操作冲突"));
        }
        let fails = self
            .take_fault(|f| matches!(f, Fault::BackupFails { .. }))
            .is_some();
        *self.creates_by_desc.entry(desc.clone()).or_default() += 1;
        self.start_backup(&inst, desc, "manual", now, fails, make_payload);
        Ok(Answer {
            data: serde_json::json!({}),
            task_id: TaskIdStyle::Value(uuid::Uuid::new_v4().to_string()),
        })
    }

    /// `DeleteBackup`: refused while it runs; its download URLs stop working.
    pub(super) fn delete_backup(
        &mut self,
        params: &BTreeMap<String, serde_json::Value>,
        now: DateTime<Utc>,
    ) -> Result<Answer, Rejection> {
        let uuid = required(params, "InstanceUuid")?.to_ascii_lowercase();
        let backup_id = required(params, "BackupId")?;
        self.instance(&uuid)?;
        let Some(pos) = self
            .backups
            .iter()
            .position(|b| b.backup_id == backup_id && b.instance_uuid == uuid)
        else {
            return Err(bad("ResourceNotFound", format!("备份 {backup_id} 不存在")));
        };
        if self.backups[pos].status(now) == "running" {
            return Err(bad("ResourceInUse", "备份进行中，不能删除"));
        }
        self.backups.remove(pos);
        self.tokens.retain(|_, t| t.backup_id != backup_id);
        Ok(Answer {
            data: serde_json::json!({}),
            task_id: TaskIdStyle::Value(uuid::Uuid::new_v4().to_string()),
        })
    }

    /// `DownloadBackup`: a public and an intranet URL for a finished backup, each with its own
    /// token that expires after `url_ttl`.
    pub(super) fn download_backup(
        &mut self,
        params: &BTreeMap<String, serde_json::Value>,
        now: DateTime<Utc>,
        base_url: &str,
    ) -> Result<Answer, Rejection> {
        let uuid = required(params, "InstanceUuid")?.to_ascii_lowercase();
        let backup_id = required(params, "BackupId")?.to_string();
        self.instance(&uuid)?;
        let backup = self
            .backups
            .iter()
            .find(|b| b.backup_id == backup_id && b.instance_uuid == uuid)
            .ok_or_else(|| bad("ResourceNotFound", format!("备份 {backup_id} 不存在")))?;
        match backup.status(now) {
            "finished" => {}
            "running" => return Err(bad("ResourceInUse", "备份尚未完成")),
            _ => return Err(bad("UnsupportedOperation", "备份失败，无法下载")),
        }
        let mut record = backup.record(now);
        let shard_id = backup.shard_id.clone();
        // DownloadBackup documents BackupSize as a string: send it as one here.
        let size_text = record.backup_size.take().map(|s| s.to_string());
        let expires_at =
            now + chrono::Duration::from_std(self.settings.url_ttl).unwrap_or_default();
        let intranet_base = if self
            .take_fault(|f| matches!(f, Fault::IntranetUnreachable { .. }))
            .is_some()
        {
            // Port 9 (discard) is closed here: the connection is refused, as for a host that
            // is only reachable from inside the provider's network.
            "http://127.0.0.1:9".to_string()
        } else {
            base_url.to_string()
        };
        let mut url_for = |route: Route, base: &str| {
            let token = uuid::Uuid::new_v4().simple().to_string();
            self.tokens.insert(
                token.clone(),
                DownloadToken {
                    backup_id: backup_id.clone(),
                    expires_at,
                    route,
                },
            );
            format!(
                "{base}/_download/{backup_id}.rdb?Expires={}&OSSAccessKeyId=sim&Signature={token}",
                expires_at.timestamp()
            )
        };
        let public = url_for(Route::Public, base_url);
        let intranet = url_for(Route::Intranet, &intranet_base);
        let download = BackupDownload {
            backup: record,
            shard_id,
            backup_download_url: public,
            backup_intranet_download_url: intranet,
        };
        let mut data = to_json(download);
        if let Some(size) = size_text {
            data["BackupSize"] = serde_json::Value::String(size);
        }
        Ok(Answer {
            data,
            task_id: TaskIdStyle::Empty,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::state::{InstanceSpec, Settings};

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, serde_json::Value> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect()
    }

    fn file(_: u64, _: u16, _: u64) -> Payload {
        Payload::File(Arc::new(vec![0; 8]))
    }

    /// A world with one cluster instance of two shards; its uuid.
    fn world() -> (World, String) {
        let mut w = World::new(Settings::default());
        let spec = InstanceSpec {
            name: "c".into(),
            architecture_type: Some(2),
            ..InstanceSpec::default()
        };
        let uuid = w.insert_instance(spec, t0()).unwrap();
        (w, uuid)
    }

    #[test]
    fn a_cluster_backup_is_one_record_per_shard_and_a_second_waits() {
        let (mut w, uuid) = world();
        let p = params(&[("InstanceUuid", &uuid), ("Desc", "job-1")]);
        let answer = w.create_backup(&p, t0(), &mut file).unwrap();
        assert!(matches!(answer.task_id, TaskIdStyle::Value(_)));
        assert_eq!(w.backups.len(), 2);
        assert_eq!(w.creates_by_desc["job-1"], 1);
        let busy = w.create_backup(&p, t0(), &mut file).err().unwrap();
        assert_eq!((busy.status, &*busy.code), (409, "ResourceInUse"));
        let later = t0() + chrono::Duration::seconds(2);
        w.create_backup(&p, later, &mut file).unwrap();
        assert_eq!(w.creates_by_desc["job-1"], 2);
    }

    #[test]
    fn a_backup_fails_fault_marks_the_next_backup() {
        let (mut w, uuid) = world();
        w.add_fault(Fault::BackupFails { count: Some(1) });
        let p = params(&[("InstanceUuid", &uuid)]);
        w.create_backup(&p, t0(), &mut file).unwrap();
        let later = t0() + chrono::Duration::seconds(2);
        assert!(w.backups.iter().all(|b| b.status(later) == "failed"));
        let listed = w.describe_backups(&p, later).unwrap().data;
        assert_eq!(listed[0]["Status"], "failed");
        assert!(
            listed[0]["BackupSize"].is_null(),
            "no size for a failed backup"
        );
    }

    #[test]
    fn listing_records_the_shortest_gap_and_lists_newest_first() {
        let (mut w, uuid) = world();
        let p = params(&[("InstanceUuid", &uuid)]);
        w.create_backup(&p, t0(), &mut file).unwrap();
        w.describe_backups(&p, t0()).unwrap();
        w.describe_backups(&p, t0() + chrono::Duration::seconds(5))
            .unwrap();
        w.describe_backups(&p, t0() + chrono::Duration::seconds(7))
            .unwrap();
        assert_eq!(
            w.describe_backups_min_gap,
            Some(chrono::Duration::seconds(2))
        );
        let running = w.describe_backups(&p, t0()).unwrap().data;
        assert_eq!(running[0]["Status"], "running");
        assert_eq!(running[0]["EndTime"], "");
        assert_eq!(
            running[0]["BackupId"],
            serde_json::json!(w.backups[1].backup_id)
        );
    }

    #[test]
    fn downloads_are_only_for_finished_backups_and_get_two_tokens() {
        let (mut w, uuid) = world();
        let p = params(&[("InstanceUuid", &uuid)]);
        w.create_backup(&p, t0(), &mut file).unwrap();
        let id = w.backups[0].backup_id.clone();
        let d = params(&[("InstanceUuid", &uuid), ("BackupId", &id)]);
        let running = w.download_backup(&d, t0(), "http://sim").err().unwrap();
        assert_eq!(running.code, "ResourceInUse");
        let later = t0() + chrono::Duration::seconds(2);
        let answer = w.download_backup(&d, later, "http://sim").unwrap();
        assert!(matches!(answer.task_id, TaskIdStyle::Empty));
        assert_eq!(answer.data["BackupSize"], "8", "a string, as documented");
        let public = answer.data["BackupDownloadUrl"].as_str().unwrap();
        assert!(
            public.starts_with(&format!("http://sim/_download/{id}.rdb?Expires=")),
            "{public}"
        );
        assert_eq!(w.tokens.len(), 2);
        assert!(
            w.tokens
                .values()
                .all(|t| t.expires_at == later + chrono::Duration::hours(1))
        );
        // An unreachable intranet: the intranet URL points at a closed port.
        w.add_fault(Fault::IntranetUnreachable { count: Some(1) });
        let answer = w.download_backup(&d, later, "http://sim").unwrap();
        let intranet = answer.data["BackupIntranetDownloadUrl"].as_str().unwrap();
        assert!(
            intranet.starts_with("http://127.0.0.1:9/_download/"),
            "{intranet}"
        );
        // Deleting the backup revokes its tokens.
        w.delete_backup(&d, later).unwrap();
        assert!(w.tokens.is_empty());
        assert_eq!(
            w.download_backup(&d, later, "http://sim")
                .err()
                .unwrap()
                .status,
            404
        );
    }

    #[test]
    fn a_running_backup_is_not_deleted() {
        let (mut w, uuid) = world();
        w.create_backup(&params(&[("InstanceUuid", &uuid)]), t0(), &mut file)
            .unwrap();
        let id = w.backups[0].backup_id.clone();
        let d = params(&[("InstanceUuid", &uuid), ("BackupId", &id)]);
        assert_eq!(
            w.delete_backup(&d, t0()).err().unwrap().code,
            "ResourceInUse"
        );
        let other = params(&[("InstanceUuid", &uuid), ("BackupId", "nope")]);
        assert_eq!(w.delete_backup(&other, t0()).err().unwrap().status, 404);
    }
}
