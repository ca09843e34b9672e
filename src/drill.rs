//! Restore drills: proof that a stored set restores. Each shard's copy is fetched from its
//! destination (verified on the way, as `fetch` does), loaded into a throwaway `redis-server`
//! ([`server`]), and the keys it then holds in each database are compared with the counts
//! recorded when the copy was stored (`rdb::contents`). A set restores when every shard loads
//! and holds its keys; keys with an expiry may have been dropped at load, which the comparison
//! allows for, up to their number.
//!
//! `rdbvault drill` runs one by hand; the daemon runs `drill.sets_per_policy` per policy every
//! `drill.interval` (`daemon::maintenance::drills`). Both journal the result
//! (`store::drills`), which `backups`, the gauges and the alerts read.

pub mod server;

use crate::rdb::contents::Contents;
use crate::services::Context;
use crate::store::drills::{DrillRow, FAILED, RESTORED};
use crate::store::inventory::CopyRow;
use crate::store::ms;
use std::collections::BTreeMap;
use std::time::Instant;

pub use server::{LoadError, RedisBinary};

/// One stored set: the destination copies of one job (one per shard).
#[derive(Debug, Clone)]
pub struct Set {
    pub job_id: String,
    pub policy: String,
    pub instance_uuid: String,
    pub instance_name: String,
    pub requested_at: i64,
    pub copies: Vec<CopyRow>,
}

/// The sets `copies` hold: good (verified, not missing), live destination copies grouped by
/// job, in the order the copies come (newest first, as `Store::copies` gives them).
pub fn sets(copies: Vec<CopyRow>) -> Vec<Set> {
    let mut out: Vec<Set> = Vec::new();
    for c in copies {
        if !(c.at_destination() && c.is_good() && c.is_live()) {
            continue;
        }
        let job = c.job_id.clone().unwrap_or_else(|| c.backup_id.clone());
        match out.iter_mut().find(|s| s.job_id == job) {
            Some(set) => set.copies.push(c),
            None => out.push(Set {
                job_id: job,
                policy: c.policy.clone(),
                instance_uuid: c.instance_uuid.clone(),
                instance_name: c.instance_name.clone(),
                requested_at: c.requested_at,
                copies: vec![c],
            }),
        }
    }
    out
}

/// How one shard of a set did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ShardDrill {
    pub backup_id: String,
    pub shard_id: String,
    pub object_key: String,
    /// Keys per database recorded when the copy was stored (`None`: its contents could not
    /// be read then, so only the load is proven).
    pub expected: Option<BTreeMap<u64, u64>>,
    /// Keys per database the server held once loaded.
    pub loaded: Option<BTreeMap<u64, u64>>,
    pub load_seconds: f64,
    /// Why this shard does not restore; `None`: it does.
    pub problem: Option<String>,
    /// What else is worth knowing (keys that expired before the load, counts not checked).
    pub note: Option<String>,
}

/// A drill of one set.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub job_id: String,
    pub policy: String,
    pub instance_uuid: String,
    pub instance_name: String,
    /// The version of the redis-server the copies were loaded into.
    pub redis_version: String,
    pub started_at: i64,
    pub finished_at: i64,
    pub shards: Vec<ShardDrill>,
}

impl Report {
    /// Every shard loaded with its keys.
    pub fn restored(&self) -> bool {
        !self.shards.is_empty() && self.shards.iter().all(|s| s.problem.is_none())
    }

    /// One line per shard: what loaded, or why not.
    pub fn detail(&self) -> String {
        self.shards
            .iter()
            .map(|s| {
                let name = if s.shard_id.is_empty() {
                    &s.backup_id
                } else {
                    &s.shard_id
                };
                let keys = s
                    .loaded
                    .as_ref()
                    .map_or_else(String::new, |k| format!(", {}", keys_text(k)));
                match (&s.problem, &s.note) {
                    (Some(p), _) => format!("{name}: DOES NOT RESTORE: {p}"),
                    (None, Some(n)) => {
                        format!("{name}: loaded in {:.1}s{keys} ({n})", s.load_seconds)
                    }
                    (None, None) => format!(
                        "{name}: loaded in {:.1}s{keys}, as recorded",
                        s.load_seconds
                    ),
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

fn keys_text(keys: &BTreeMap<u64, u64>) -> String {
    Contents {
        keys_per_db: keys.clone(),
        ..Contents::default()
    }
    .keys_text()
}

/// Why a drill could not judge a set (none of these is a verdict on the copies).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No usable redis-server.
    #[error("{0}")]
    NoServer(String),
    /// The redis-server cannot read the copies' RDB version.
    #[error("{0}")]
    ServerTooOld(String),
    /// The drill could not be set up (a destination no longer configured, no room, ...).
    #[error("{0}")]
    Setup(String),
}

/// Drills `set` with `bin`, journals the result and counts it in this process's metrics.
/// `trigger`: `manual` or `schedule`.
///
/// # Errors
/// The drill could not judge the set ([`Error`]); nothing is journaled then.
pub async fn run_and_record(
    ctx: &Context,
    bin: &RedisBinary,
    set: &Set,
    trigger: &str,
) -> Result<Report, Error> {
    let started_at = ms(ctx.now());
    let mut shards = Vec::with_capacity(set.copies.len());
    for copy in &set.copies {
        shards.push(drill_shard(ctx, bin, copy).await?);
    }
    let report = Report {
        job_id: set.job_id.clone(),
        policy: set.policy.clone(),
        instance_uuid: set.instance_uuid.clone(),
        instance_name: set.instance_name.clone(),
        redis_version: bin.version.clone(),
        started_at,
        finished_at: ms(ctx.now()),
        shards,
    };
    let result = if report.restored() { RESTORED } else { FAILED };
    let row = DrillRow {
        id: 0,
        job_id: report.job_id.clone(),
        policy: report.policy.clone(),
        instance_uuid: report.instance_uuid.clone(),
        instance_name: report.instance_name.clone(),
        trigger: trigger.to_string(),
        started_at,
        finished_at: report.finished_at,
        result: result.to_string(),
        detail: format!("redis-server {}: {}", bin.version, report.detail()),
    };
    if let Err(e) = ctx.store.record_drill(&row).await {
        tracing::error!(job_id = %set.job_id, error = %e, "cannot journal the drill's result");
    }
    let labels = [set.policy.as_str(), set.instance_uuid.as_str()];
    ctx.metrics
        .drill_runs
        .with_label_values(&[labels[0], labels[1], result])
        .inc();
    let gauge = if report.restored() {
        &ctx.metrics.drill_last_success
    } else {
        &ctx.metrics.drill_last_failure
    };
    gauge
        .with_label_values(&labels)
        .set(report.finished_at as f64 / 1000.0);
    if !report.restored() {
        let event = crate::notify::Event {
            job_id: Some(set.job_id.clone()),
            ..crate::notify::Event::new(
                crate::config::EventKind::DrillFailed,
                &set.policy,
                &set.instance_uuid,
                &set.instance_name,
                ctx.now(),
            )
        }
        .with_error(&report.detail());
        crate::notify::emit(&ctx.store, &ctx.config, &event).await;
    }
    Ok(report)
}

/// Fetches one shard's copy into a private directory, loads it, counts its keys.
async fn drill_shard(
    ctx: &Context,
    bin: &RedisBinary,
    copy: &CopyRow,
) -> Result<ShardDrill, Error> {
    let mut out = ShardDrill {
        backup_id: copy.backup_id.clone(),
        shard_id: copy.shard_id.clone(),
        object_key: copy.object_key.clone().unwrap_or_default(),
        expected: None,
        loaded: None,
        load_seconds: 0.0,
        problem: None,
        note: None,
    };
    let handle = ctx.destinations.get(&copy.destination).ok_or_else(|| {
        Error::Setup(format!(
            "destination `{}` of this set is no longer in the config",
            copy.destination
        ))
    })?;
    // Removed with everything in it when the drill of this shard ends, whatever happened.
    let dir = tempfile::Builder::new()
        .prefix("rdbvault-drill-")
        .tempdir()
        .map_err(|e| {
            Error::Setup(format!(
                "cannot make a directory for the drill in {}: {e}; set TMPDIR to a directory with room for the copy",
                std::env::temp_dir().display()
            ))
        })?;
    let file_name = "dump.rdb";
    let stored = match fetch(handle, copy, &dir.path().join(file_name)).await? {
        Fetched::Copy(stored) => stored,
        Fetched::Bad(why) => {
            out.problem = Some(why);
            return Ok(out);
        }
    };
    let expected = copy.contents().or_else(|| stored.contents.clone().ok());
    let databases = expected
        .as_ref()
        .and_then(|c| c.keys_per_db.keys().max().copied())
        .map_or(16, |db| db.saturating_add(1));
    let started = Instant::now();
    let mut server = match server::Throwaway::start(
        bin,
        dir.path(),
        file_name,
        databases,
        ctx.config.drill.load_timeout,
    )
    .await
    {
        Ok(s) => s,
        Err(LoadError::Refused(why)) => {
            out.problem = Some(why);
            return Ok(out);
        }
        Err(LoadError::ServerTooOld(why)) => {
            return Err(Error::ServerTooOld(format!(
                "redis-server {} cannot load RDB v{} ({why}); set drill.redis_server to a Redis at least as new as the one that made the backup",
                bin.version, stored.rdb.version
            )));
        }
        Err(LoadError::Setup(why)) => return Err(Error::Setup(why)),
    };
    out.load_seconds = started.elapsed().as_secs_f64();
    let loaded = server.keys_per_db().await;
    server.stop().await;
    let loaded = match loaded {
        Ok(k) => k,
        Err(e) => {
            out.problem = Some(format!("loaded, but its keys could not be counted: {e}"));
            return Ok(out);
        }
    };
    match &expected {
        Some(c) => match compare(c, &loaded) {
            Ok(note) => out.note = note,
            Err(why) => out.problem = Some(why),
        },
        None => {
            out.note = Some("key counts not checked: the copy's contents were not recorded".into());
        }
    }
    out.expected = expected.map(|c| c.keys_per_db);
    out.loaded = Some(loaded);
    Ok(out)
}

/// What fetching a copy for a drill gave.
enum Fetched {
    /// The copy, verified, in the file.
    Copy(crate::transfer::Stored),
    /// It is gone, or not the bytes that were stored: the set does not restore.
    Bad(String),
}

/// Fetches `copy` into `path` (created 0600), verified on the way.
///
/// # Errors
/// The destination or the local disk failed this time (network, permissions, no room in
/// TMPDIR): that says nothing about the copy, so no verdict is given.
async fn fetch(
    handle: &crate::destination::Handle,
    copy: &CopyRow,
    path: &std::path::Path,
) -> Result<Fetched, Error> {
    let mut file = crate::private_fs::create(path)
        .await
        .map_err(|e| Error::Setup(format!("cannot create {}: {e}", path.display())))?;
    match crate::verify::check_copy(handle, copy, Some(&mut file), &|_| {}).await {
        Ok(stored) => {
            // On disk before the server reads it (tokio's file writes in the background).
            use tokio::io::AsyncWriteExt as _;
            file.flush()
                .await
                .map_err(|e| Error::Setup(format!("cannot write {}: {e}", path.display())))?;
            Ok(Fetched::Copy(stored))
        }
        Err(crate::verify::Bad::Unreadable(why)) => Err(Error::Setup(format!(
            "the copy of backup {} could not be fetched this time (no verdict on it): {why}",
            copy.backup_id
        ))),
        Err(bad) => Ok(Fetched::Bad(format!("the copy cannot be read back: {bad}"))),
    }
}

/// The loaded keys against the recorded ones, database by database: equal, or fewer by at most
/// the keys with an expiry (a server drops those whose time has passed as it loads). `Ok` with
/// a note when keys expired; `Err` naming every database that differs.
pub fn compare(expected: &Contents, loaded: &BTreeMap<u64, u64>) -> Result<Option<String>, String> {
    let mut databases: Vec<u64> = expected
        .keys_per_db
        .keys()
        .chain(loaded.keys())
        .copied()
        .collect();
    databases.sort_unstable();
    databases.dedup();
    let mut wrong = Vec::new();
    let mut expired = 0;
    for db in databases {
        let want = expected.keys_per_db.get(&db).copied().unwrap_or(0);
        let volatile = expected.expires_per_db.get(&db).copied().unwrap_or(0);
        let got = loaded.get(&db).copied().unwrap_or(0);
        if got == want {
            continue;
        }
        if got < want && want - got <= volatile {
            expired += want - got;
            continue;
        }
        wrong.push(format!("db{db} holds {got} keys, the copy recorded {want}"));
    }
    if !wrong.is_empty() {
        return Err(wrong.join(", "));
    }
    Ok((expired > 0).then(|| format!("{expired} key(s) with an expiry had expired by the load")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contents(keys: &[(u64, u64)], expires: &[(u64, u64)]) -> Contents {
        Contents {
            keys_per_db: keys.iter().copied().collect(),
            expires_per_db: expires.iter().copied().collect(),
            ..Contents::default()
        }
    }

    #[test]
    fn loaded_keys_must_match_except_for_expired_ones() {
        let recorded = contents(&[(0, 100), (3, 5)], &[(0, 4)]);
        let loaded = |pairs: &[(u64, u64)]| pairs.iter().copied().collect::<BTreeMap<_, _>>();
        assert_eq!(compare(&recorded, &loaded(&[(0, 100), (3, 5)])), Ok(None));
        assert_eq!(
            compare(&recorded, &loaded(&[(0, 97), (3, 5)])),
            Ok(Some(
                "3 key(s) with an expiry had expired by the load".into()
            ))
        );
        // More missing than could have expired, a database lost, keys nobody recorded.
        let err = compare(&recorded, &loaded(&[(0, 95), (7, 1)])).unwrap_err();
        assert_eq!(
            err,
            "db0 holds 95 keys, the copy recorded 100, db3 holds 0 keys, the copy recorded 5, db7 holds 1 keys, the copy recorded 0"
        );
        assert!(compare(&recorded, &loaded(&[(0, 101), (3, 5)])).is_err());
        assert_eq!(compare(&Contents::default(), &BTreeMap::new()), Ok(None));
    }

    fn copy(job: &str, backup: &str, location: &str, verified: i64) -> CopyRow {
        CopyRow {
            location: location.into(),
            policy: "p".into(),
            instance_uuid: "i".into(),
            job_id: Some(job.into()),
            backup_id: backup.into(),
            verified,
            ..CopyRow::default()
        }
    }

    #[test]
    fn sets_are_the_good_destination_copies_of_a_job() {
        let all = vec![
            copy("new", "b3", "destination", 1),
            copy("new", "b4", "destination", 1),
            copy("new", "b3", "provider", 1),
            copy("unverified", "b2", "destination", 0),
            copy("old", "b1", "destination", 1),
        ];
        let sets = sets(all);
        assert_eq!(
            sets.iter()
                .map(|s| (s.job_id.as_str(), s.copies.len()))
                .collect::<Vec<_>>(),
            [("new", 2), ("old", 1)]
        );
    }
}
