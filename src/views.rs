//! The read models that the command line and the HTTP API (`/v1/*`) both serve: one job with
//! its shards, events and re-verification results ([`JobDetail`]), the inventory with each
//! set's checks ([`inventory_with_checks`]), the policies with their next runs
//! ([`policies_json`]). Tables and colours stay in `commands`; the JSON is defined here once.

/// The overall health `status` shows (and a later `/v1/status`).
pub mod status;

use crate::config::Config;
use crate::job::State;
use crate::store::{JobRow, Store, from_ms};

/// The last re-verification (`verify`, or the daemon's `verify:` rounds) of one stored copy.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CopyCheck {
    pub backup_id: String,
    pub shard_id: String,
    pub destination: String,
    pub object_key: Option<String>,
    pub ok: bool,
    /// When, RFC 3339 (UTC).
    pub at: String,
    /// Why it failed; absent when it passed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl CopyCheck {
    pub fn of(c: &crate::store::inventory::CopyRow) -> Option<CopyCheck> {
        let at = c.last_check_at?;
        Some(CopyCheck {
            backup_id: c.backup_id.clone(),
            shard_id: c.shard_id.clone(),
            destination: c.destination.clone(),
            object_key: c.object_key.clone(),
            ok: c.last_check_error.is_none(),
            at: from_ms(at).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            error: c.last_check_error.clone(),
        })
    }
}

/// The re-verification results of a job's stored copies.
pub async fn job_checks(
    store: &Store,
    job_id: &str,
) -> Result<Vec<CopyCheck>, crate::store::Error> {
    Ok(store
        .checked_copies_of_job(job_id)
        .await?
        .iter()
        .filter_map(CopyCheck::of)
        .collect())
}

/// One job as `jobs --json`, `jobs show --json` and `GET /v1/jobs` show it.
#[derive(serde::Serialize)]
pub struct JobDetail {
    #[serde(flatten)]
    pub job: JobRow,
    pub shards: Vec<crate::store::ShardRow>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<crate::store::jobs::EventRow>>,
    /// The last re-verification of each stored copy that has had one.
    pub reverify: Vec<CopyCheck>,
    /// Whether a stored copy of the job failed its last re-verification (the job stays
    /// `stored`: it did store a verified copy; the copy went bad afterwards).
    pub reverify_failed: bool,
}

/// A job's state for the `jobs` table and `jobs show`: `stored (copy failed re-verify)` when a
/// stored copy failed its last re-verification.
pub fn state_label(state: State, checks: &[CopyCheck]) -> String {
    if checks.iter().any(|c| !c.ok) {
        format!("{state} (copy failed re-verify)")
    } else {
        state.to_string()
    }
}

impl JobDetail {
    /// A job with its shards, their re-verifications and (given) its events. The provider's
    /// zone-less `provider_start`/`provider_end` are given in RFC 3339 (UTC), read in
    /// `provider_tz` (`cds.time_zone`), like every other time of the read models.
    pub async fn load(
        store: &Store,
        job: JobRow,
        events: Option<Vec<crate::store::jobs::EventRow>>,
        provider_tz: chrono_tz::Tz,
    ) -> Result<JobDetail, crate::store::Error> {
        let mut shards = store.shards(&job.id).await?;
        for s in &mut shards {
            s.provider_start = provider_rfc3339(&s.provider_start, provider_tz);
            s.provider_end = provider_rfc3339(&s.provider_end, provider_tz);
        }
        let reverify = job_checks(store, &job.id).await?;
        Ok(JobDetail {
            reverify_failed: reverify.iter().any(|c| !c.ok),
            job,
            shards,
            events,
            reverify,
        })
    }
}

/// The JSON of `jobs --json` and `GET /v1/jobs`.
pub async fn jobs_json(
    store: &Store,
    policy: Option<&str>,
    state: Option<State>,
    limit: u32,
    provider_tz: chrono_tz::Tz,
) -> Result<Vec<JobDetail>, crate::store::Error> {
    let mut out = Vec::new();
    for job in store.list_jobs(policy, state, limit).await? {
        out.push(JobDetail::load(store, job, None, provider_tz).await?);
    }
    Ok(out)
}

/// A provider time (`YYYY-MM-DD HH:MM:SS` in `tz`) as RFC 3339 in UTC; empty stays empty, and
/// a text that is not such a time is kept as the provider wrote it.
fn provider_rfc3339(text: &str, tz: chrono_tz::Tz) -> String {
    if text.trim().is_empty() {
        return String::new();
    }
    match crate::cds::model::parse_provider_time(text, &tz) {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        None => text.to_string(),
    }
}

/// The JSON of `backups --json` (provider list live) and `GET /v1/backups` (provider side from
/// the state DB alone, so no HTTP request costs a provider call): a dry-run plan of every
/// policy.
pub async fn inventory(
    ctx: &crate::services::Context,
    policy: Option<&str>,
    instance: Option<&str>,
    view: crate::prune::ProviderView,
) -> anyhow::Result<crate::prune::Report> {
    crate::prune::plan_policies(ctx, policy, instance, crate::prune::Mode::DryRun, view).await
}

/// Per report row (same order), the re-verification results of its destination copies.
pub async fn set_checks(
    store: &Store,
    report: &crate::prune::Report,
) -> anyhow::Result<Vec<Vec<CopyCheck>>> {
    let mut out = Vec::with_capacity(report.rows.len());
    for r in &report.rows {
        if r.location != crate::retention::Location::Destination {
            out.push(Vec::new());
            continue;
        }
        let checks = job_checks(store, &r.set)
            .await?
            .into_iter()
            .filter(|c| r.backup_ids.contains(&c.backup_id))
            .collect();
        out.push(checks);
    }
    Ok(out)
}

/// Per report row (same order), the keys per database its set held when stored, summed over
/// its shards (`rdb::contents`); `None` when a shard's contents were not recorded (stored
/// before rdbvault read them, or unreadable). One read of the inventory for all rows.
pub async fn set_keys(
    store: &Store,
    report: &crate::prune::Report,
) -> anyhow::Result<Vec<Option<std::collections::BTreeMap<u64, u64>>>> {
    use std::collections::{BTreeMap, HashMap};
    let mut by_set: HashMap<(String, String), Vec<Option<crate::rdb::contents::Contents>>> =
        HashMap::new();
    for c in store.copies(None, None).await? {
        let set = c.job_id.clone().unwrap_or_else(|| c.backup_id.clone());
        by_set
            .entry((set, c.location.clone()))
            .or_default()
            .push(c.contents());
    }
    Ok(report
        .rows
        .iter()
        .map(|r| {
            let location = format!("{:?}", r.location).to_lowercase();
            let shards = by_set.get(&(r.set.clone(), location))?;
            let mut total: BTreeMap<u64, u64> = BTreeMap::new();
            for shard in shards {
                for (db, n) in &shard.as_ref()?.keys_per_db {
                    *total.entry(*db).or_default() += n;
                }
            }
            Some(total)
        })
        .collect())
}

/// The JSON of `backups --json` and `GET /v1/backups`: the report, each row with `reverify`
/// (the last re-verification of each of its copies) and `reverify_failed`.
pub fn inventory_json(
    report: &crate::prune::Report,
    checks: &[Vec<CopyCheck>],
) -> serde_json::Value {
    // cannot fail: rows of strings and numbers, no non-string map keys.
    let mut v = serde_json::to_value(report).expect("serialisable");
    if let Some(rows) = v.get_mut("rows").and_then(|r| r.as_array_mut()) {
        for (row, c) in rows.iter_mut().zip(checks) {
            if let Some(o) = row.as_object_mut() {
                o.insert("reverify_failed".into(), c.iter().any(|c| !c.ok).into());
                o.insert(
                    "reverify".into(),
                    serde_json::to_value(c).expect("serialisable"),
                );
            }
        }
    }
    v
}

/// [`inventory`] as JSON with each set's re-verification results ([`inventory_json`]).
///
/// # Errors
/// See [`inventory`].
pub async fn inventory_with_checks(
    ctx: &crate::services::Context,
    policy: Option<&str>,
    instance: Option<&str>,
    view: crate::prune::ProviderView,
) -> anyhow::Result<serde_json::Value> {
    let report = inventory(ctx, policy, instance, view).await?;
    let checks = set_checks(&ctx.store, &report).await?;
    Ok(inventory_json(&report, &checks))
}

/// The JSON of `GET /v1/policies`: each policy with its next runs.
pub fn policies_json(cfg: &Config, now: chrono::DateTime<chrono::Utc>) -> serde_json::Value {
    serde_json::Value::Array(
        cfg.policies
            .iter()
            .map(|p| {
                let s = &p.schedule;
                serde_json::json!({
                    "name": p.name,
                    "cron": s.cron.as_str(),
                    "timezone": s.timezone.name(),
                    "next_runs": s.cron.upcoming(now, s.timezone, 3).iter().map(|t| t.to_rfc3339()).collect::<Vec<_>>(),
                    "expected_interval_seconds": crate::scheduler::expected_interval(p, now, 64).map(|d| d.as_secs()),
                    "destination": p.destination,
                    "instances": p.instances.iter().map(ToString::to_string).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn provider_times_are_given_in_rfc3339_utc_read_in_the_provider_zone() {
        let shanghai = chrono_tz::Asia::Shanghai;
        assert_eq!(
            super::provider_rfc3339("2026-11-30 04:25:51", shanghai),
            "2026-11-29T20:25:51Z"
        );
        assert_eq!(
            super::provider_rfc3339("2026-11-30 04:25:51", chrono_tz::UTC),
            "2026-11-30T04:25:51Z"
        );
        assert_eq!(super::provider_rfc3339("", shanghai), "");
        assert_eq!(super::provider_rfc3339("soon", shanghai), "soon");
    }
}
