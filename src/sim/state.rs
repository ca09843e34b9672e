//! The simulator's in-memory world: instances, backups, download tokens, faults, and the logic
//! of the nine actions. No HTTP here; `sim::http` maps requests onto these methods.
//!
//! This file holds the world itself and what every part shares (settings, the request log,
//! faults being used up); the rest is split by concern, each re-exported here so callers name
//! everything `sim::state::X`:
//! - `fault`: the faults and what they are ([`Fault`], [`tamper`]);
//! - `instances`: instances, their specs, and the three instance actions;
//! - `backups`: backups, their payloads, download tokens, and the four backup actions;
//! - `actions`: the dispatch of the nine actions ([`World::handle`]) and the parameter checks.

mod actions;
mod backups;
mod fault;
mod instances;

pub use actions::{Answer, TaskIdStyle};
pub use backups::{DownloadToken, Payload, Route, SimBackup};
pub use fault::{Fault, TruncateMode, tamper};
pub use instances::{InstanceSpec, SimInstance, StateFile, default_instances};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// Most shards a simulated cluster instance may have (a bigger count is refused, not allocated).
pub const MAX_SHARDS: usize = 1024;

/// The zone the simulated provider writes its zone-less times in (the real one is in China).
pub const PROVIDER_TZ: Tz = chrono_tz::Asia::Shanghai;

/// One line of the request log (`/_sim/requests`).
#[derive(Debug, Clone, Serialize)]
pub struct LoggedRequest {
    pub at: DateTime<Utc>,
    pub action: String,
    pub method: &'static str,
    pub status: u16,
    pub code: String,
}

/// Tunables of the simulated provider.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a backup stays `running`.
    pub backup_delay: Duration,
    /// How long a download URL works.
    pub url_ttl: Duration,
    /// Backup size for instances that do not set one.
    pub default_backup_size: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            backup_delay: Duration::from_secs(2),
            url_ttl: Duration::from_secs(3600),
            default_backup_size: 4 << 20,
        }
    }
}

/// The whole simulated provider.
#[derive(Debug)]
pub struct World {
    pub settings: Settings,
    pub instances: BTreeMap<String, SimInstance>,
    pub backups: Vec<SimBackup>,
    pub tokens: BTreeMap<String, DownloadToken>,
    pub faults: Vec<(u64, Fault)>,
    next_fault_id: u64,
    pub log: VecDeque<LoggedRequest>,
    pub calls: BTreeMap<String, u64>,
    pub downloads: u64,
    pub download_bytes: u64,
    /// Backups created per `Desc` (accepted `CreateBackup` calls): a harness checks no job
    /// ever made two.
    pub creates_by_desc: BTreeMap<String, u32>,
    /// Downloads actually served with a flipped byte (a `download_corrupt` fault that hit).
    pub corruptions_served: u64,
    /// API calls being answered right now, and the most at once.
    pub api_in_flight: u64,
    pub api_in_flight_max: u64,
    /// When each instance's backups were last listed, and the shortest gap seen between two
    /// listings of the same instance: the benchmark checks polling stays at one per interval.
    pub describe_backups_last: BTreeMap<String, DateTime<Utc>>,
    pub describe_backups_min_gap: Option<chrono::Duration>,
    next_ip: u32,
}

impl World {
    pub fn new(settings: Settings) -> Self {
        World {
            settings,
            instances: BTreeMap::new(),
            backups: Vec::new(),
            tokens: BTreeMap::new(),
            faults: Vec::new(),
            next_fault_id: 1,
            log: VecDeque::new(),
            calls: BTreeMap::new(),
            downloads: 0,
            download_bytes: 0,
            creates_by_desc: BTreeMap::new(),
            corruptions_served: 0,
            api_in_flight: 0,
            api_in_flight_max: 0,
            describe_backups_last: BTreeMap::new(),
            describe_backups_min_gap: None,
            next_ip: 100,
        }
    }

    pub fn add_fault(&mut self, fault: Fault) -> u64 {
        let id = self.next_fault_id;
        self.next_fault_id += 1;
        self.faults.push((id, fault));
        id
    }

    /// Finds the first active fault that `pick` accepts, uses up one of its count, and returns a
    /// copy.
    pub fn take_fault(&mut self, mut pick: impl FnMut(&Fault) -> bool) -> Option<Fault> {
        let i = self.faults.iter().position(|(_, f)| pick(f))?;
        let fault = self.faults[i].1.clone();
        let count = self.faults[i].1.count_mut();
        if let Some(n) = count {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.faults.remove(i);
            }
        }
        Some(fault)
    }

    pub fn record(&mut self, entry: LoggedRequest) {
        *self.calls.entry(entry.action.clone()).or_default() += 1;
        if self.log.len() >= 1000 {
            self.log.pop_front();
        }
        self.log.push_back(entry);
    }

    /// Forgets expired tokens (called now and then so memory stays bounded).
    pub fn prune_tokens(&mut self, now: DateTime<Utc>) {
        self.tokens
            .retain(|_, t| t.expires_at + chrono::Duration::hours(1) > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counted_fault_is_used_up_and_an_uncounted_one_stays() {
        let mut w = World::new(Settings::default());
        let once = w.add_fault(Fault::BackupFails { count: Some(2) });
        let always = w.add_fault(Fault::DownloadExpired { count: None });
        assert_eq!((once, always), (1, 2));
        let pick = |f: &Fault| matches!(f, Fault::BackupFails { .. });
        assert_eq!(
            w.take_fault(pick),
            Some(Fault::BackupFails { count: Some(2) }),
            "a copy as it was before this use"
        );
        assert!(w.take_fault(pick).is_some());
        assert!(w.take_fault(pick).is_none(), "used up and removed");
        for _ in 0..3 {
            assert!(
                w.take_fault(|f| matches!(f, Fault::DownloadExpired { .. }))
                    .is_some()
            );
        }
        assert_eq!(w.faults.len(), 1);
    }

    #[test]
    fn the_request_log_keeps_the_last_thousand_and_counts_every_call() {
        let mut w = World::new(Settings::default());
        for _ in 0..1005 {
            w.record(LoggedRequest {
                at: chrono::DateTime::UNIX_EPOCH,
                action: "DescribeBackups".into(),
                method: "GET",
                status: 200,
                code: "Success".into(),
            });
        }
        assert_eq!(w.log.len(), 1000);
        assert_eq!(w.calls["DescribeBackups"], 1005);
    }
}
