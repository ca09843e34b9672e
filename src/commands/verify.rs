//! `verify`, and [`verify_copies`], the re-verification that the daemon's `verify:` rounds run too.

use crate::app::Failure;
use crate::config::Config;
use crate::store::{Store, ms};

/// Re-reads copies and records the result; returns the bad ones.
pub async fn verify_copies(
    store: &Store,
    cfg: &Config,
    copies: &[crate::store::inventory::CopyRow],
    mut report: impl FnMut(
        &crate::store::inventory::CopyRow,
        &Result<crate::transfer::Stored, crate::verify::Bad>,
    ),
) -> anyhow::Result<usize> {
    let mut handles: std::collections::HashMap<String, crate::destination::Handle> =
        Default::default();
    let mut bad = 0;
    for c in copies {
        let Some(dest) = cfg.destinations.get(&c.destination) else {
            anyhow::bail!(
                "copy {} is in destination `{}`, which is no longer in the config",
                c.backup_id,
                c.destination
            );
        };
        if !handles.contains_key(&c.destination) {
            handles.insert(
                c.destination.clone(),
                crate::destination::Handle::new(dest).await?,
            );
        }
        let result = crate::verify::check_copy(&handles[&c.destination], c, None, &|_| {}).await;
        let now = ms(crate::clock::wall_now());
        // A verdict on the copy is recorded with its time and reason (`jobs`, `jobs show` and
        // `backups` show it); an unreadable destination says nothing about the copy, so it
        // is reported but leaves the record as it was.
        match &result {
            Ok(_) => store.record_check(c.id, None, false, now).await?,
            Err(b @ crate::verify::Bad::Missing(_)) => {
                bad += 1;
                store
                    .record_check(c.id, Some(&b.to_string()), true, now)
                    .await?;
            }
            Err(b @ crate::verify::Bad::Corrupt(_)) => {
                bad += 1;
                store
                    .record_check(c.id, Some(&b.to_string()), false, now)
                    .await?;
            }
            Err(crate::verify::Bad::Unreadable(_)) => bad += 1,
        }
        report(c, &result);
    }
    Ok(bad)
}

/// `verify [ID ...] [--all]`.
pub async fn verify(cfg: Config, ids: Vec<String>, all: bool) -> Result<(), Failure> {
    if ids.is_empty() && !all {
        return Err(Failure::Usage(
            "name the copies to verify (job or backup ids), or pass --all".into(),
        ));
    }
    let store = Store::open(&cfg.state.path).await?;
    let copies = store.destination_copies(&ids).await?;
    if copies.is_empty() {
        return Err(Failure::Usage(if all {
            "no stored copies to verify yet".into()
        } else {
            format!("no stored copy matches {}", ids.join(", "))
        }));
    }
    let bad = verify_copies(&store, &cfg, &copies, |c, r| match r {
        Ok(s) => println!(
            "ok   {} {} {} bytes sha256 {}",
            c.destination,
            c.object_key.as_deref().unwrap_or("-"),
            s.size,
            s.sha256
        ),
        Err(b) => println!(
            "BAD  {} {} (backup {}, job {}): {b}",
            c.destination,
            c.object_key.as_deref().unwrap_or("-"),
            c.backup_id,
            c.job_id.as_deref().unwrap_or("-")
        ),
    })
    .await?;
    println!(
        "{} cop{} checked, {bad} bad",
        copies.len(),
        if copies.len() == 1 { "y" } else { "ies" }
    );
    store.close().await;
    if bad > 0 {
        return Err(Failure::Failed(format!(
            "{bad} stored cop{} failed verification (named above)",
            if bad == 1 { "y" } else { "ies" }
        )));
    }
    Ok(())
}
