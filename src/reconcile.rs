//! Reconcile: compares what the state DB believes with what the destinations and the provider
//! hold. At start and once a day in the daemon.
//!
//! - Objects under a policy's prefix that no DB row knows are reported, never deleted.
//! - DB rows whose object vanished are marked missing (they show in `backups`, in
//!   `rdbvault_verified_backups`, and would fire an alert).
//! - Provider backups carrying rdbvault's token for a job the DB does not know are reported.
//! - S3 multipart uploads under the prefix older than 24 h that belong to no open job are aborted.

use crate::services::Context;
use crate::store::ms;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Findings {
    pub unknown_objects: Vec<String>,
    pub missing_copies: Vec<String>,
    pub unknown_provider_backups: Vec<String>,
    pub aborted_uploads: Vec<String>,
}

/// Runs one reconcile pass over every policy.
///
/// # Errors
/// The state DB failed; destination and provider problems are logged and skipped.
pub async fn reconcile(ctx: &Context) -> anyhow::Result<Findings> {
    let mut f = Findings::default();
    let copies = ctx.store.destination_copies().await?;
    let known: BTreeSet<String> = copies.iter().filter_map(|c| c.object_key.clone()).collect();
    let open_jobs: Vec<_> = ctx
        .store
        .list_jobs(None, None, 100_000)
        .await?
        .into_iter()
        .filter(|j| !j.state.is_terminal())
        .collect();
    let mut open_uploads = BTreeSet::new();
    for j in &open_jobs {
        for s in ctx.store.shards(&j.id).await.unwrap_or_default() {
            if let Some(u) = s.upload_id {
                open_uploads.insert(u);
            }
        }
    }
    for policy in &ctx.config.policies {
        let Some(handle) = ctx.destinations.get(&policy.destination) else {
            continue;
        };
        match handle.list(&format!("{}/", policy.name)).await {
            Ok(keys) => {
                let keys: BTreeSet<String> = keys.into_iter().collect();
                for k in &keys {
                    let base = k.strip_suffix(".manifest.json").unwrap_or(k);
                    if !known.contains(base) && !k.ends_with(".partial") {
                        tracing::warn!(policy = %policy.name, object = %handle.locate(k), "reconcile: object unknown to the state DB (left alone)");
                        f.unknown_objects.push(handle.locate(k));
                    }
                }
                for c in copies
                    .iter()
                    .filter(|c| c.policy == policy.name && c.destination == policy.destination)
                {
                    let Some(key) = &c.object_key else { continue };
                    // Keys listed for S3 include the destination prefix, which object keys do too.
                    if !keys.contains(key) && c.missing == 0 {
                        tracing::error!(policy = %policy.name, instance = %c.instance_uuid, object = %handle.locate(key), "reconcile: a stored copy has vanished; marked missing");
                        ctx.store
                            .set_verified(c.id, false, true, ms(ctx.clock.now()))
                            .await?;
                        f.missing_copies.push(handle.locate(key));
                    }
                }
            }
            Err(e) => {
                tracing::warn!(policy = %policy.name, error = %format!("{e:#}"), "reconcile: cannot list the destination")
            }
        }
        abort_stale_uploads(ctx, &policy.name, handle, &open_uploads, &mut f).await;
        // Provider side: backups with our token that the DB does not know.
        let instances: BTreeSet<String> = copies
            .iter()
            .filter(|c| c.policy == policy.name)
            .map(|c| c.instance_uuid.clone())
            .collect();
        for instance in instances {
            let Ok(records) = ctx.cds.describe_backups(&instance).await else {
                continue;
            };
            for r in records {
                if let Some(job) = crate::prune::job_of_desc(&r.desc)
                    && ctx.store.job(job).await.is_err()
                {
                    tracing::warn!(instance = %instance, backup_id = %r.backup_id, desc = %r.desc,
                        "reconcile: provider backup with rdbvault's token for a job this DB does not know (left alone)");
                    f.unknown_provider_backups.push(r.backup_id.clone());
                }
            }
        }
    }
    refresh_verified_gauge(ctx).await?;
    Ok(f)
}

/// Aborts the uploads under a policy's prefix that no open job names and that started more
/// than a day ago (a process that died mid-upload and whose job was since finished or failed).
async fn abort_stale_uploads(
    ctx: &Context,
    policy: &str,
    handle: &crate::destination::Handle,
    open_uploads: &BTreeSet<String>,
    f: &mut Findings,
) {
    let uploads = match handle.open_uploads(&format!("{policy}/")).await {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!(policy, error = %format!("{e:#}"), "reconcile: cannot list multipart uploads");
            return;
        }
    };
    let day_ago = ctx.clock.now() - chrono::Duration::hours(24);
    for u in uploads {
        // An upload without a start time is left alone, like a recent one.
        let recent = u.started.is_none_or(|t| t > day_ago);
        if open_uploads.contains(&u.upload_id) || recent {
            continue;
        }
        match handle.abort_upload(&u.key, &u.upload_id).await {
            Ok(()) => {
                tracing::warn!(policy, key = %u.key, "reconcile: aborted a stale multipart upload");
                f.aborted_uploads.push(handle.locate(&u.key));
            }
            Err(e) => {
                tracing::error!(key = %u.key, error = %e, "reconcile: cannot abort a stale multipart upload")
            }
        }
    }
}

/// What `rdbvault_verified_backups{policy,instance,location}` should say: for every configured
/// policy and every instance it selects ([`crate::store::Store::selected_instances`]), both
/// locations, 0 when the instance has no verified copy there (so an instance that never had a
/// good backup is exported, and can alert). Instances the policy no longer selects, and
/// policies no longer in the config, are left out.
///
/// # Errors
/// The state DB failed.
pub async fn verified_gauge_values(
    store: &crate::store::Store,
    config: &crate::config::Config,
) -> anyhow::Result<BTreeMap<(String, String, String), i64>> {
    let mut out = BTreeMap::new();
    for policy in &config.policies {
        let counts: BTreeMap<(String, String), i64> = store
            .verified_set_counts(&policy.name)
            .await?
            .into_iter()
            .map(|(i, l, n)| ((i, l), n))
            .collect();
        for instance in store.selected_instances(&policy.name).await? {
            for location in ["provider", "destination"] {
                let n = counts
                    .get(&(instance.clone(), location.to_string()))
                    .copied()
                    .unwrap_or(0);
                out.insert(
                    (policy.name.clone(), instance.clone(), location.to_string()),
                    n,
                );
            }
        }
    }
    Ok(out)
}

/// Recounts `rdbvault_verified_backups` of one instance of one policy (both locations): what a
/// job's end or a prune of that instance changed. Cost independent of the fleet's size; the
/// whole vector is brought in line by [`refresh_verified_gauge`] on its own schedule.
///
/// # Errors
/// The state DB failed; the gauge is left as it was.
pub async fn refresh_verified_gauge_of(
    ctx: &Context,
    policy: &str,
    instance: &str,
) -> anyhow::Result<()> {
    let counts = ctx.store.verified_set_counts_of(policy, instance).await?;
    for location in ["provider", "destination"] {
        let n = counts
            .iter()
            .find(|(l, _)| l == location)
            .map_or(0, |(_, n)| *n);
        ctx.metrics
            .verified_backups
            .with_label_values(&[policy, instance, location])
            .set(n);
    }
    Ok(())
}

/// Brings `rdbvault_verified_backups` in line with the state DB ([`verified_gauge_values`]):
/// sets every wanted series and removes the others (an instance that left its policy, a policy
/// that left the config), without ever resetting the whole vector, so no scrape sees a series
/// missing that should be there.
///
/// # Errors
/// The state DB failed; the gauge is left as it was.
pub async fn refresh_verified_gauge(ctx: &Context) -> anyhow::Result<()> {
    let wanted = verified_gauge_values(&ctx.store, &ctx.config).await?;
    let gauge = &ctx.metrics.verified_backups;
    let present: Vec<(String, String, String)> = prometheus::core::Collector::collect(gauge)
        .iter()
        .flat_map(|family| family.get_metric())
        .map(|m| {
            let label = |name: &str| {
                m.get_label()
                    .iter()
                    .find(|l| l.name() == name)
                    .map(|l| l.value().to_string())
                    .unwrap_or_default()
            };
            (label("policy"), label("instance"), label("location"))
        })
        .collect();
    for key in present {
        if !wanted.contains_key(&key) {
            let _ = gauge.remove_label_values(&[&key.0, &key.1, &key.2]);
        }
    }
    for ((p, i, l), n) in wanted {
        gauge
            .with_label_values(&[p.as_str(), i.as_str(), l.as_str()])
            .set(n);
    }
    Ok(())
}
