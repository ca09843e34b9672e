//! Decides *when*: turns each policy's cron into pending jobs, one per selected instance. It does
//! no backup I/O; the only API call it makes is one `DescribeDBInstances` per policy run, to
//! re-resolve the instance selectors.
//!
//! - Cron times are computed in the policy's IANA zone every time (never with a frozen offset),
//!   so DST changes keep local time; a nonexistent local time runs once after the gap, a
//!   repeated one once.
//! - Each (policy, instance) gets a deterministic jitter in `[0, jitter)`.
//! - A job must start within `start_window` of its due time or it is recorded `missed`
//!   (by the runner); `completion_window` is its hard deadline.
//! - After downtime, `catch_up: latest` runs the most recent missed run once; `none` records it
//!   as missed. Never a stampede.
//! - An instance with an open job gets no second one: the due run is skipped and counted in
//!   `rdbvault_schedule_skipped_total`.

use crate::cds;
use crate::config::{CatchUp, Config, Policy};
use crate::services::Context;
use crate::store::jobs::{Inserted, NewJob};
use crate::store::schedule::POLICY_ROW;
use crate::store::{JobRow, from_ms, ms};
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use sha2::Digest as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The deterministic jitter of one (policy, instance): the same every run and every restart.
pub fn jitter_for(policy: &str, instance_uuid: &str, jitter: Duration) -> Duration {
    if jitter.is_zero() {
        return Duration::ZERO;
    }
    let digest = sha2::Sha256::digest(format!("{policy}\0{instance_uuid}").as_bytes());
    // cannot fail: a SHA-256 digest has 32 bytes.
    let n = u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"));
    Duration::from_millis(n % jitter.as_millis().max(1) as u64)
}

/// The longest gap between consecutive runs over the next `samples` runs: what "missing" means
/// for this schedule (an irregular cron gets its longest interval).
pub fn expected_interval(policy: &Policy, from: DateTime<Utc>, samples: usize) -> Option<Duration> {
    let runs = policy
        .schedule
        .cron
        .upcoming(from, policy.schedule.timezone, samples + 1);
    runs.windows(2)
        .map(|w| (w[1] - w[0]).to_std().unwrap_or_default())
        .max()
}

/// Instances of the account that a policy's selectors match, without duplicates.
pub fn select<'a>(
    policy: &Policy,
    instances: &'a [cds::model::Instance],
) -> Vec<&'a cds::model::Instance> {
    let mut out: Vec<&cds::model::Instance> = Vec::new();
    for i in instances {
        if policy.instances.iter().any(|s| s.matches(i))
            && !out.iter().any(|o| o.instance_uuid == i.instance_uuid)
        {
            out.push(i);
        }
    }
    out
}

/// A pending job of `policy` for one instance, due at `due`, with its start window and
/// deadline from the policy's schedule.
pub fn new_job(
    policy: &Policy,
    inst: &cds::model::Instance,
    due: DateTime<Utc>,
    trigger: &'static str,
    now: DateTime<Utc>,
) -> NewJob {
    let s = &policy.schedule;
    let after = |d: Duration| due + chrono::Duration::from_std(d).unwrap_or_default();
    NewJob {
        // Random from the first character, so the 8-character short ids tables show are unique
        // in practice (time-ordered v7 ids made within a minute share their first 8).
        id: uuid::Uuid::new_v4().to_string(),
        policy: policy.name.clone(),
        instance_uuid: inst.instance_uuid.clone(),
        instance_name: inst.instance_name.clone(),
        region_id: inst.region_id.clone(),
        destination: policy.destination.clone(),
        trigger,
        due_at: ms(due),
        start_by: ms(after(s.start_window)),
        deadline_at: ms(after(s.completion_window)),
        created_at: ms(now),
        owner: None,
        schedule_key: None,
    }
}

/// A new job that runs `failed` again (`jobs retry`): the same policy, instance and
/// destination, trigger `retry`, due `now`, with the policy's current start window and
/// deadline. Nobody owns it: the dispatcher of a running daemon picks it up.
pub fn retry_of(policy: &Policy, failed: &JobRow, now: DateTime<Utc>) -> NewJob {
    let instance = cds::model::Instance {
        instance_uuid: failed.instance_uuid.clone(),
        instance_name: failed.instance_name.clone(),
        region_id: failed.region_id.clone(),
        ..cds::model::Instance::default()
    };
    NewJob {
        destination: failed.destination.clone(),
        ..new_job(policy, &instance, now, "retry", now)
    }
}

/// Creates the jobs of one run of a policy, due at `cron_time`.
///
/// # Errors
/// `DescribeDBInstances` or the state DB failed; nothing was half-created.
pub async fn fire(
    ctx: &Context,
    policy: &Policy,
    cron_time: DateTime<Utc>,
    trigger: &'static str,
    start_now: bool,
) -> anyhow::Result<Vec<String>> {
    let all = ctx.cds.describe_db_instances(&cds::Params::new()).await?;
    let selected = select(policy, &all);
    if selected.is_empty() {
        tracing::warn!(policy = %policy.name, "the policy's selectors match no instance; nothing to back up");
    }
    let now = ctx.clock.now();
    let mut created = Vec::new();
    // Soonest due first: with thousands of instances the inserts take a while, and a job must
    // exist before its own due time, not after every instance listed before it.
    let mut runs: Vec<_> = selected
        .into_iter()
        .map(|inst| {
            let jitter = jitter_for(&policy.name, &inst.instance_uuid, policy.schedule.jitter);
            let due = if start_now {
                now
            } else {
                cron_time + chrono::Duration::from_std(jitter).unwrap_or_default()
            };
            (due, inst.clone())
        })
        .collect();
    // The same order on every replica (instance id breaks ties): replicas inserting the same
    // run then meet each other's rows in one order and never wait in a cycle.
    runs.sort_by(|(a, x), (b, y)| (a, &x.instance_uuid).cmp(&(b, &y.instance_uuid)));
    let jobs: Vec<NewJob> = runs
        .iter()
        .map(|(due, inst)| NewJob {
            // One job per instance for this run, whichever replica (or how many) fires it.
            schedule_key: Some(crate::store::jobs::schedule_key(
                &policy.name,
                &inst.instance_uuid,
                ms(cron_time),
            )),
            ..new_job(policy, inst, *due, trigger, now)
        })
        .collect();
    // A few batches in flight (soonest due first still): on PostgreSQL concurrent commits
    // share their WAL flushes.
    let batches: Vec<anyhow::Result<Vec<Inserted>>> = futures::stream::iter(
        jobs.chunks(crate::store::jobs::SCHEDULED_BATCH)
            .map(<[NewJob]>::to_vec)
            .collect::<Vec<_>>(),
    )
    .map(|batch| async move { Ok(ctx.store.insert_scheduled_jobs(&batch).await?) })
    .buffered(BATCHES_IN_FLIGHT)
    .collect()
    .await;
    let mut outcomes = Vec::with_capacity(jobs.len());
    for batch in batches {
        outcomes.extend(batch?);
    }
    for ((job, (due, inst)), outcome) in jobs.iter().zip(&runs).zip(outcomes) {
        if created_here(ctx, policy, cron_time, job, *due, inst, outcome).await? {
            created.push(job.id.clone());
        }
    }
    if trigger == "schedule" {
        crate::notify::run_started(&ctx.store, &ctx.config, &policy.name, ms(cron_time)).await;
    }
    Ok(created)
}

/// How many batches of a run's job inserts are in flight at once.
const BATCHES_IN_FLIGHT: usize = 4;

/// Journals and reports what became of one instance's job of a run (see [`fire`]): true when
/// this process made it, false when another replica did or the instance is busy.
async fn created_here(
    ctx: &Context,
    policy: &Policy,
    cron_time: DateTime<Utc>,
    job: &NewJob,
    due: DateTime<Utc>,
    inst: &cds::model::Instance,
    outcome: Inserted,
) -> anyhow::Result<bool> {
    match outcome {
        Inserted::Created => {
            ctx.store
                .schedule_set(
                    &policy.name,
                    &inst.instance_uuid,
                    Some(ms(cron_time)),
                    None,
                    Some(&job.id),
                )
                .await?;
            tracing::info!(policy = %policy.name, instance = %inst.instance_uuid, job_id = %job.id,
                due = %due.format("%H:%M:%S%.3f"), trigger = job.trigger, "job created");
            return Ok(true);
        }
        Inserted::AlreadyScheduled { job } => {
            tracing::debug!(policy = %policy.name, instance = %inst.instance_uuid, job_id = %job,
                "this run's job exists already (another replica made it)");
        }
        Inserted::InstanceBusy { open_job } => {
            ctx.metrics
                .schedule_skipped
                .with_label_values(&[policy.name.as_str(), "overlap"])
                .inc();
            tracing::warn!(policy = %policy.name, instance = %inst.instance_uuid, open_job = %open_job,
                "this policy's previous job of this instance is still open; this run is skipped");
        }
    }
    Ok(false)
}

/// The scheduler loop; returns when `cancel` fires.
pub async fn run(ctx: Context, config: Arc<Config>, wake: Arc<Notify>, cancel: CancellationToken) {
    let mut next: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(config.policies.len());
    let now = ctx.clock.now();
    for policy in &config.policies {
        next.push(start_policy(&ctx, policy, now, &wake).await);
    }
    loop {
        let now = ctx.clock.now();
        ctx.metrics
            .scheduler_heartbeat
            .set(now.timestamp_millis() as f64 / 1000.0);
        for (i, policy) in config.policies.iter().enumerate() {
            let Some(due) = next[i] else { continue };
            if due > now {
                continue;
            }
            let window_end =
                due + chrono::Duration::from_std(policy.schedule.start_window).unwrap_or_default();
            match fire(&ctx, policy, due, "schedule", false).await {
                Ok(_) => wake.notify_one(),
                Err(e) if now < window_end => {
                    tracing::warn!(policy = %policy.name, error = %format!("{e:#}"), "cannot create this run's jobs yet; retrying");
                    continue;
                }
                Err(e) => {
                    tracing::error!(policy = %policy.name, error = %format!("{e:#}"),
                        due = %due, "gave up creating this run's jobs: its start window closed");
                }
            }
            // The run is handled (or given up): on to the next cron time after now.
            let following = policy
                .schedule
                .cron
                .next_after(now, policy.schedule.timezone);
            let _ = ctx
                .store
                .schedule_set(
                    &policy.name,
                    POLICY_ROW,
                    Some(ms(due)),
                    following.map(ms),
                    None,
                )
                .await;
            next[i] = following;
            publish_schedule(&ctx, policy, following);
        }
        // Sleep until the next due time, but at most 1 s, so the heartbeat stays fresh and a
        // seconds-field cron fires on time.
        let now = ctx.clock.now();
        let until = next
            .iter()
            .flatten()
            .min()
            .map(|t| (*t - now).to_std().unwrap_or_default())
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(1));
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(until) => {}
        }
    }
}

fn publish_schedule(ctx: &Context, policy: &Policy, next: Option<DateTime<Utc>>) {
    if let Some(t) = next {
        ctx.metrics
            .schedule_next_run
            .with_label_values(&[policy.name.as_str()])
            .set(t.timestamp_millis() as f64 / 1000.0);
    }
    if let Some(interval) = expected_interval(policy, ctx.clock.now(), 64) {
        ctx.metrics
            .schedule_expected_interval
            .with_label_values(&[policy.name.as_str()])
            .set(interval.as_secs_f64());
    }
}

/// At start: the policy's next due time, after handling a run missed while rdbvault was down.
async fn start_policy(
    ctx: &Context,
    policy: &Policy,
    now: DateTime<Utc>,
    wake: &Notify,
) -> Option<DateTime<Utc>> {
    let tz = policy.schedule.timezone;
    let cron = &policy.schedule.cron;
    let following = cron.next_after(now, tz);
    let state = ctx
        .store
        .schedule_get(&policy.name, POLICY_ROW)
        .await
        .ok()
        .flatten();
    let last_due = state.as_ref().and_then(|s| s.last_due_at).map(from_ms);
    // The most recent cron time at or before now (search forward from the last handled one).
    let missed = last_due.and_then(|last| {
        let mut t = last;
        let mut latest = None;
        for _ in 0..100_000 {
            match cron.next_after(t, tz) {
                Some(n) if n <= now => {
                    latest = Some(n);
                    t = n;
                }
                _ => break,
            }
        }
        latest
    });
    if let Some(m) = missed {
        let window_end =
            m + chrono::Duration::from_std(policy.schedule.start_window).unwrap_or_default();
        let result = if now <= window_end {
            // Still inside its window: an ordinary (late) run.
            fire(ctx, policy, m, "schedule", false).await
        } else {
            match policy.schedule.catch_up {
                CatchUp::Latest => {
                    tracing::info!(policy = %policy.name, missed = %m, "catch_up: latest: running the most recent missed run now");
                    fire(ctx, policy, m, "catch_up", true).await
                }
                CatchUp::None => {
                    tracing::warn!(policy = %policy.name, missed = %m, "catch_up: none: the run missed while rdbvault was down is recorded as missed");
                    // Jobs whose start window has passed: the runner records them as missed.
                    fire(ctx, policy, m, "catch_up", false).await
                }
            }
        };
        match result {
            Ok(_) => {
                wake.notify_one();
                let _ = ctx
                    .store
                    .schedule_set(
                        &policy.name,
                        POLICY_ROW,
                        Some(ms(m)),
                        following.map(ms),
                        None,
                    )
                    .await;
            }
            Err(e) => {
                tracing::error!(policy = %policy.name, error = %format!("{e:#}"), "cannot handle the missed run")
            }
        }
    } else {
        let _ = ctx
            .store
            .schedule_set(&policy.name, POLICY_ROW, None, following.map(ms), None)
            .await;
    }
    publish_schedule(ctx, policy, following);
    following
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_is_deterministic_bounded_and_spread() {
        let j = Duration::from_secs(300);
        let a = jitter_for("nightly", "5d74bb81", j);
        assert_eq!(a, jitter_for("nightly", "5d74bb81", j));
        assert!(a < j);
        let spread: std::collections::HashSet<_> = (0..50)
            .map(|i| jitter_for("nightly", &format!("instance-{i}"), j).as_secs())
            .collect();
        assert!(spread.len() > 30, "jitter should spread instances");
        assert_eq!(jitter_for("p", "i", Duration::ZERO), Duration::ZERO);
    }

    fn policy(cron: &str) -> Policy {
        let text = format!(
            "destinations: {{ d: {{ type: file, path: /tmp }} }}\npolicies:\n  - name: p\n    schedule: {{ cron: \"{cron}\", timezone: Europe/Berlin }}\n    instances: [ {{ name: x }} ]\n    destination: d\n    retention: {{ destination: {{ keep_last: 1 }} }}\n"
        );
        crate::config::parse(&text, std::path::Path::new("t.yaml"))
            .unwrap()
            .policies
            .remove(0)
    }

    #[test]
    fn a_retry_is_due_now_for_the_same_instance_and_destination_with_the_policys_current_windows() {
        let p = policy("0 2 * * *");
        let now = DateTime::parse_from_rfc3339("2026-11-02T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let failed = crate::store::JobRow {
            id: "old".into(),
            policy: "p".into(),
            instance_uuid: "5d74bb81".into(),
            instance_name: "prod-cache".into(),
            region_id: "CN_Beijing_A".into(),
            // The destination the failed job was made for, even if the policy moved on.
            destination: "archive".into(),
            trigger: "schedule".into(),
            state: crate::job::State::Failed,
            due_at: 1,
            start_by: 2,
            deadline_at: 3,
            created_at: 1,
            finished_at: Some(3),
            attempts: 1,
            error: Some("boom".into()),
            ..crate::store::JobRow::blank()
        };
        let job = retry_of(&p, &failed, now);
        assert_ne!(job.id, "old");
        assert_eq!(
            (
                job.policy.as_str(),
                job.instance_uuid.as_str(),
                job.instance_name.as_str()
            ),
            ("p", "5d74bb81", "prod-cache")
        );
        assert_eq!(
            (job.region_id.as_str(), job.destination.as_str()),
            ("CN_Beijing_A", "archive")
        );
        assert_eq!(
            (job.trigger, job.due_at, job.created_at),
            ("retry", ms(now), ms(now))
        );
        let after = |d: Duration| ms(now) + d.as_millis() as i64;
        assert_eq!(job.start_by, after(p.schedule.start_window));
        assert_eq!(job.deadline_at, after(p.schedule.completion_window));
        assert_eq!(job.owner, None, "the daemon's dispatcher picks it up");
    }

    #[test]
    fn expected_interval_is_the_longest_gap() {
        let from = DateTime::parse_from_rfc3339("2026-11-02T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            expected_interval(&policy("0 * * * *"), from, 48),
            Some(Duration::from_secs(3600))
        );
        // Weekdays only: the weekend makes the longest gap three days.
        assert_eq!(
            expected_interval(&policy("0 2 * * 1-5"), from, 20),
            Some(Duration::from_secs(3 * 86_400))
        );
        assert_eq!(
            expected_interval(&policy("*/3 * * * * *"), from, 10),
            Some(Duration::from_secs(3))
        );
    }
}
