//! `verifying`: the destination is asked whether it holds what the journal says for every
//! shard (the object, its size, its checksum where the kind keeps one, the manifest beside it);
//! then the copies enter the inventory and the job is `stored`, in one fenced write.
//!
//! [`was_stored`], [`holds_what_the_journal_says`] and [`copies`] are the decisions; [`verify`]
//! asks the destination and completes the job.

use super::{Context, Step, Stop, destination_of, finished_metrics, requested_at_ms};
use crate::destination::{Handle, ObjectInfo};
use crate::store::inventory::NewCopy;
use crate::store::{JobRow, ShardRow, ms};
use anyhow::anyhow;

/// Whether the journal says the shard was stored: its state, and a SHA-256 recorded with it.
fn was_stored(s: &ShardRow) -> bool {
    s.state == crate::job::ShardState::Stored
        && s.sha256.as_deref().is_some_and(|sha| !sha.is_empty())
}

/// Whether the object the destination holds is the one the journal recorded: the size always,
/// the SHA-256 too where the destination kind records one with every object.
fn holds_what_the_journal_says(
    found: &ObjectInfo,
    bytes_done: i64,
    sha256: &str,
    keeps_checksums: bool,
) -> bool {
    let sha_differs = keeps_checksums && found.sha256.as_deref() != Some(sha256);
    found.size as i64 == bytes_done && !sha_differs
}

/// The inventory rows a stored job adds: per shard, its destination copy, then its provider
/// backup (which retention may now delete at the provider, having a verified copy).
fn copies(job: &JobRow, shards: &[ShardRow], requested_at: i64, verified_at: i64) -> Vec<NewCopy> {
    let mut copies = Vec::new();
    for s in shards {
        for (location, destination, object_key) in [
            ("destination", job.destination.clone(), s.object_key.clone()),
            ("provider", String::new(), None),
        ] {
            copies.push(NewCopy {
                location,
                policy: job.policy.clone(),
                instance_uuid: job.instance_uuid.clone(),
                instance_name: job.instance_name.clone(),
                job_id: job.id.clone(),
                backup_id: s.backup_id.clone(),
                shard_id: s.shard_id.clone(),
                destination,
                object_key,
                size: s.bytes_done,
                sha256: s.sha256.clone(),
                rdb_version: s.rdb_version,
                // The provider's backup is the same file: the same contents.
                rdb_contents: s.rdb_contents.clone(),
                requested_at,
                verified_at,
            });
        }
    }
    copies
}

/// What the destination holds for one stored shard must be what the journal says: the size,
/// the checksum where the kind records one, and the manifest beside it.
async fn check_stored_shard(dest: &Handle, s: &ShardRow) -> Step {
    let key = s.object_key.clone().unwrap_or_default();
    let sha = s.sha256.clone().unwrap_or_default();
    if !was_stored(s) {
        return Err(Stop::Fail(anyhow!("backup {} was not stored", s.backup_id)));
    }
    let Some(found) = dest.stat(&key).await? else {
        return Err(Stop::Fail(anyhow!("{} is missing", dest.locate(&key))));
    };
    if !holds_what_the_journal_says(&found, s.bytes_done, &sha, dest.keeps_checksums()) {
        let recorded = found
            .sha256
            .as_ref()
            .map(|m| format!(", sha256 {m:?}"))
            .unwrap_or_default();
        return Err(Stop::Fail(anyhow!(
            "{} holds {} bytes{recorded}; the journal says {} bytes, {sha}",
            dest.locate(&key),
            found.size,
            s.bytes_done
        )));
    }
    let manifest = s.manifest_key.clone().unwrap_or_default();
    if dest.stat(&manifest).await?.is_none() {
        return Err(Stop::Fail(anyhow!(
            "the manifest {} is missing",
            dest.locate(&manifest)
        )));
    }
    Ok(())
}

/// Checks every shard at the destination, then completes the job with its copies.
pub(super) async fn verify(ctx: &Context, job: &JobRow) -> Step {
    let dest = destination_of(ctx, job)?;
    let shards = ctx.store.shards(&job.id).await?;
    let started = ctx.now();
    for s in &shards {
        check_stored_shard(&dest, s).await?;
    }
    let now = ctx.now();
    let copies = copies(job, &shards, requested_at_ms(job), ms(now));
    ctx.store
        .complete_job(&ctx.claim(job), &copies, ms(now))
        .await?;
    let bytes: i64 = shards.iter().map(|s| s.bytes_done).sum();
    let m = &ctx.metrics;
    m.phase_duration
        .with_label_values(&[job.policy.as_str(), "verify"])
        .observe((ctx.now() - started).num_milliseconds().max(0) as f64 / 1000.0);
    m.phase_duration
        .with_label_values(&[job.policy.as_str(), "total"])
        .observe((ms(ctx.now()) - job.due_at.min(job.created_at)).max(0) as f64 / 1000.0);
    finished_metrics(ctx, job, "success", bytes, ms(now));
    ctx.event(
        job,
        "verified",
        &format!(
            "{} object(s), {bytes} bytes, verified at {}",
            shards.len(),
            job.destination
        ),
    )
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "61c3cf01742d68567e0aa561678632b6cdbaf4edd90969216e42324b4893e245";

    fn shard(backup_id: &str) -> ShardRow {
        ShardRow {
            job_id: "job-1".into(),
            backup_id: backup_id.into(),
            shard_id: format!("shard-{backup_id}"),
            size: Some(8192),
            provider_start: String::new(),
            provider_end: String::new(),
            state: crate::job::ShardState::Stored,
            object_key: Some(format!("p/i/{backup_id}.rdb")),
            manifest_key: Some(format!("p/i/{backup_id}.rdb.manifest.json")),
            upload_id: None,
            temp_path: None,
            bytes_done: 8192,
            sha256: Some(SHA.into()),
            rdb_version: Some(9),
            checksum: Some("verified".into()),
            rdb_contents: None,
        }
    }

    fn job() -> JobRow {
        JobRow {
            id: "job-1".into(),
            policy: "nightly".into(),
            instance_uuid: "inst-1".into(),
            instance_name: "prod-cache".into(),
            region_id: "CN_Beijing_A".into(),
            destination: "s3-main".into(),
            trigger: "schedule".into(),
            state: crate::job::State::Verifying,
            due_at: 1_000,
            start_by: 2_000,
            deadline_at: 9_000,
            created_at: 1_000,
            create_sent_at: Some(1_100),
            requested_at: Some(1_200),
            attempts: 1,
            ..JobRow::blank()
        }
    }

    fn object(size: u64, sha256: Option<&str>) -> ObjectInfo {
        ObjectInfo {
            size,
            sha256: sha256.map(str::to_string),
        }
    }

    #[test]
    fn a_shard_is_stored_only_in_state_stored_and_with_a_recorded_sha256() {
        assert!(was_stored(&shard("a")));
        let mut waiting = shard("a");
        waiting.state = crate::job::ShardState::Transferring;
        assert!(!was_stored(&waiting));
        for sha in [None, Some(String::new())] {
            let mut no_sha = shard("a");
            no_sha.sha256 = sha;
            assert!(!was_stored(&no_sha));
        }
    }

    #[test]
    fn a_directory_copy_is_checked_by_size_alone() {
        assert!(holds_what_the_journal_says(
            &object(8192, None),
            8192,
            SHA,
            false
        ));
        assert!(!holds_what_the_journal_says(
            &object(8191, None),
            8192,
            SHA,
            false
        ));
    }

    #[test]
    fn an_s3_copy_must_also_carry_the_recorded_sha256() {
        assert!(holds_what_the_journal_says(
            &object(8192, Some(SHA)),
            8192,
            SHA,
            true
        ));
        assert!(!holds_what_the_journal_says(
            &object(8192, Some("00")),
            8192,
            SHA,
            true
        ));
        assert!(
            !holds_what_the_journal_says(&object(8192, None), 8192, SHA, true),
            "an object without its checksum metadata is not the recorded copy"
        );
    }

    #[test]
    fn each_shard_enters_the_inventory_twice_destination_copy_then_provider_backup() {
        let shards = [shard("a"), shard("b")];
        let rows = copies(&job(), &shards, 1_200, 5_000);
        let seen: Vec<(&str, &str, &str, Option<&str>)> = rows
            .iter()
            .map(|c| {
                (
                    c.location,
                    c.backup_id.as_str(),
                    c.destination.as_str(),
                    c.object_key.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("destination", "a", "s3-main", Some("p/i/a.rdb")),
                ("provider", "a", "", None),
                ("destination", "b", "s3-main", Some("p/i/b.rdb")),
                ("provider", "b", "", None),
            ]
        );
        for c in &rows {
            assert_eq!((c.requested_at, c.verified_at), (1_200, 5_000));
            assert_eq!((c.size, c.rdb_version), (8192, Some(9)));
            assert_eq!(c.sha256.as_deref(), Some(SHA));
            assert_eq!(c.shard_id, format!("shard-{}", c.backup_id));
        }
    }

    #[test]
    fn the_time_a_job_asked_the_provider_falls_back_from_requested_to_sent_to_created() {
        let mut j = job();
        assert_eq!(requested_at_ms(&j), 1_200);
        j.requested_at = None;
        assert_eq!(requested_at_ms(&j), 1_100);
        j.create_sent_at = None;
        assert_eq!(requested_at_ms(&j), 1_000);
    }
}
