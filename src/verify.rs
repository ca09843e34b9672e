//! Re-reading stored copies: `verify` (all or some, and sampled in the daemon) and `fetch`
//! (restore to a local file). Both stream the object in bounded memory through the same checker
//! the transfer uses: size and SHA-256 against the DB and the manifest, RDB header and CRC64.

use crate::clock::SharedClock;
use crate::destination::{Handle, Handles};
use crate::store::inventory::CopyRow;
use crate::store::{Store, ms};
use crate::transfer::{Checker, Manifest, Stored};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const READ_CHUNK: usize = 1 << 20;

/// Why a copy is bad.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bad {
    /// The object (or its key) is gone.
    Missing(String),
    /// The bytes are not what was stored.
    Corrupt(String),
    /// It could not be read this time (network, permissions): says nothing about the copy.
    Unreadable(String),
}

impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bad::Missing(m) => write!(f, "missing: {m}"),
            Bad::Corrupt(m) => write!(f, "corrupt: {m}"),
            Bad::Unreadable(m) => write!(f, "could not be read (not marked bad; try again): {m}"),
        }
    }
}

/// A stored object whose length is not the verified size, said with both sizes and what to do
/// about it.
fn wrong_size(copy: &CopyRow, place: &str, actual: u64) -> Option<Bad> {
    let rdbvault = crate::config::invocation();
    let expected = u64::try_from(copy.size?).ok()?;
    if actual == expected {
        return None;
    }
    let what = if actual < expected {
        "truncated"
    } else {
        "longer than what was verified"
    };
    Some(Bad::Corrupt(format!(
        "{place}: stored copy is {actual} bytes, expected {expected} ({what}); take a fresh backup with `{rdbvault} backup-now --policy {} --instance {}`; this copy is kept for inspection, counts for no retention rule, and may be deleted by hand",
        copy.policy, copy.instance_uuid
    )))
}

/// Streams one copy through the checker (and into `out`, if given) and compares it with the DB
/// row and the manifest. `progress` gets the bytes read so far.
///
/// # Errors
/// [`Bad`] naming what differs.
pub async fn check_copy(
    handle: &Handle,
    copy: &CopyRow,
    mut out: Option<&mut tokio::fs::File>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Stored, Bad> {
    let key = copy
        .object_key
        .clone()
        .ok_or_else(|| Bad::Missing("no object key recorded".into()))?;
    let place = handle.locate(&key);
    match handle.size(&key).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            let rdbvault = crate::config::invocation();
            return Err(Bad::Missing(format!(
                "{place} does not exist (deleted outside rdbvault?); take a fresh backup with `{rdbvault} backup-now --policy {} --instance {}`; the set is marked missing and counts for no retention rule",
                copy.policy, copy.instance_uuid
            )));
        }
        Err(e) => return Err(Bad::Unreadable(format!("{e:#}"))),
    }
    let manifest: Option<Manifest> = match handle
        .read_small(&crate::transfer::manifest_key(&key))
        .await
    {
        Ok(bytes) => Some(serde_json::from_slice(&bytes).map_err(|e| {
            Bad::Corrupt(format!("the manifest of {place} is not valid JSON: {e}"))
        })?),
        Err(_) => None,
    };
    let mut reader = handle
        .open(&key)
        .await
        .map_err(|e| Bad::Unreadable(format!("{e:#}")))?;
    let mut checker = Checker::new();
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = reader
            .read(&mut buf)
            .await
            .map_err(|e| Bad::Unreadable(format!("cannot read {place}: {e}")))?;
        if n == 0 {
            break;
        }
        checker.update(&buf[..n]);
        if let Some(f) = out.as_deref_mut() {
            f.write_all(&buf[..n])
                .await
                .map_err(|e| Bad::Unreadable(format!("cannot write the local file: {e}")))?;
        }
        progress(checker.bytes());
    }
    // The bytes read, not the size the destination reports: what a restore would get.
    if let Some(bad) = wrong_size(copy, &place, checker.bytes()) {
        return Err(bad);
    }
    let stored = checker
        .finish(copy.size.map(|s| s as u64))
        .map_err(|e| Bad::Corrupt(e.to_string()))?;
    if let Some(sha) = &copy.sha256
        && *sha != stored.sha256
    {
        return Err(Bad::Corrupt(format!(
            "{place}: SHA-256 {} differs from the recorded {sha}",
            stored.sha256
        )));
    }
    match manifest {
        None => {
            return Err(Bad::Corrupt(format!("{place}: its manifest is missing")));
        }
        Some(m) if m.sha256 != stored.sha256 || m.size != stored.size => {
            return Err(Bad::Corrupt(format!(
                "{place}: the manifest says {} bytes, sha256 {}; the object is {} bytes, {}",
                m.size, m.sha256, stored.size, stored.sha256
            )));
        }
        Some(_) => {}
    }
    Ok(stored)
}

/// Re-reads copies (`verify`, and the daemon's `verify:` rounds) and records each verdict
/// with its time and reason; returns how many were bad.
///
/// # Errors
/// A copy names a destination that left the config; the state DB failed.
/// Queues a `verify_failed` notification per copy that failed re-verification.
pub async fn tell_failures(
    store: &Store,
    config: &crate::config::Config,
    failed: &[(CopyRow, String)],
) {
    for (c, why) in failed {
        let event = crate::notify::Event {
            job_id: c.job_id.clone(),
            ..crate::notify::Event::new(
                crate::config::EventKind::VerifyFailed,
                &c.policy,
                &c.instance_uuid,
                &c.instance_name,
                chrono::Utc::now(),
            )
        }
        .with_error(&format!(
            "{} ({}): {why}",
            c.object_key.as_deref().unwrap_or(&c.backup_id),
            c.destination
        ));
        crate::notify::emit(store, config, &event).await;
    }
}

pub async fn verify_copies(
    store: &Store,
    destinations: &Handles,
    clock: &SharedClock,
    copies: &[CopyRow],
    mut report: impl FnMut(&CopyRow, &Result<crate::transfer::Stored, Bad>),
) -> anyhow::Result<usize> {
    let mut bad = 0;
    for c in copies {
        let Some(handle) = destinations.get(&c.destination) else {
            anyhow::bail!(
                "copy {} is in destination `{}`, which is no longer in the config",
                c.backup_id,
                c.destination
            );
        };
        let result = check_copy(handle, c, None, &|_| {}).await;
        let now = ms(clock.now());
        // A verdict on the copy is recorded with its time and reason (`jobs`, `jobs show` and
        // `backups` show it); an unreadable destination says nothing about the copy, so it
        // is reported but leaves the record as it was.
        match &result {
            Ok(_) => store.record_check(c.id, None, false, now).await?,
            Err(b @ Bad::Missing(_)) => {
                bad += 1;
                store
                    .record_check(c.id, Some(&b.to_string()), true, now)
                    .await?;
            }
            Err(b @ Bad::Corrupt(_)) => {
                bad += 1;
                store
                    .record_check(c.id, Some(&b.to_string()), false, now)
                    .await?;
            }
            Err(Bad::Unreadable(_)) => bad += 1,
        }
        report(c, &result);
    }
    Ok(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_stored_file_says_both_sizes_and_what_to_do() {
        let copy = CopyRow {
            policy: "nightly".into(),
            instance_uuid: "u-1".into(),
            size: Some(1000),
            ..CopyRow::default()
        };
        let bad = wrong_size(&copy, "s3://b/k.rdb", 600).unwrap().to_string();
        assert!(
            bad.contains("stored copy is 600 bytes, expected 1000 (truncated)"),
            "{bad}"
        );
        assert!(
            bad.contains("rdbvault backup-now --policy nightly --instance u-1"),
            "{bad}"
        );
        assert!(wrong_size(&copy, "x", 1000).is_none());
        assert!(wrong_size(&CopyRow { size: None, ..copy }, "x", 5).is_none());
    }
}
