//! The job dispatcher: claims due jobs from the state DB and runs each in its own task, at
//! most `limits.max_concurrent_jobs` at once per process.

use crate::runner::Outcome;
use crate::services::Context;
use crate::store::{JobRow, Store, ms};
use chrono::{DateTime, Utc};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Claims due jobs (`claim_due`) and runs them, at most `max_concurrent_jobs` at once, until
/// `cancel`.
///
/// `cancel` stops the dispatch loop (at shutdown or a config reload); running jobs are
/// children of `jobs_cancel`, so a reload lets them finish. `running` is shared across reloads
/// so a new dispatcher never starts a job the old one is still running.
pub async fn dispatch(
    ctx: Context,
    wake: Arc<Notify>,
    cancel: CancellationToken,
    jobs_cancel: CancellationToken,
    tracker: TaskTracker,
    running: Arc<Mutex<HashSet<String>>>,
) {
    let limit = ctx.config.limits.max_concurrent_jobs;
    loop {
        // Register for a wake-up before looking, so a job created meanwhile is not missed.
        let notified = wake.notified();
        let now = ctx.clock.now();
        let lease = ctx.config.state.job_lease;
        for job in claim_due(&ctx.store, &ctx.owner, now, lease, &running, limit).await {
            let (ctx2, running2, wake2, cancel2) = (
                ctx.clone(),
                running.clone(),
                wake.clone(),
                jobs_cancel.child_token(),
            );
            tracker.spawn(async move {
                run_and_follow_up(&ctx2, &job, &cancel2).await;
                running2.lock().expect("running set").remove(&job.id);
                wake2.notify_one();
            });
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = notified => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        // Job ends come in bursts with thousands of jobs: one look per pause for all of them,
        // not one per job end (each look reads the open jobs).
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(ROUND_PAUSE) => {}
        }
    }
}

/// The least time between two looks for due jobs.
const ROUND_PAUSE: Duration = Duration::from_millis(100);

/// Claims due jobs for `owner` while fewer than `limit` run here, and adds each to `running`.
/// A job another live process holds (heartbeat within `lease`) is left alone; one whose owner
/// stopped beating for longer is taken over. Jobs already in `running` are never claimed again.
pub(crate) async fn claim_due(
    store: &Store,
    owner: &str,
    now: DateTime<Utc>,
    lease: Duration,
    running: &Mutex<HashSet<String>>,
    limit: usize,
) -> Vec<JobRow> {
    let stale = now - chrono::Duration::from_std(lease).unwrap_or_default();
    // cannot fail (here and below): the set's holders only look up, insert and remove, none
    // of which panics, so the lock is never poisoned.
    let here = running.lock().expect("running set").clone();
    let mut free = limit.saturating_sub(here.len());
    // Replicas take turns: none holds more than its share of the open jobs, or the first to
    // look would take every due job and queue them behind its own transfer slots while the
    // others idle (and, woken by each job's end, keep taking more).
    if free > 0
        && let Ok(spread) = store
            .job_spread(owner, ms(stale), |mine, others| {
                enough_open_jobs(mine, others, free)
            })
            .await
    {
        free = free.min(fair_share(spread));
    }
    let claimed = match store
        .claim_due_jobs(owner, ms(now), ms(stale), free, &here)
        .await
    {
        Ok(jobs) => jobs,
        Err(e) => {
            tracing::error!(error = %e, "cannot claim due jobs");
            return Vec::new();
        }
    };
    for job in &claimed {
        if job.owner.is_some() && job.owner.as_deref() != Some(owner) {
            tracing::info!(job_id = %job.id, policy = %job.policy, instance = %job.instance_uuid,
                state = %job.state, "resuming a job left by a process that stopped");
        }
        running.lock().expect("running set").insert(job.id.clone());
    }
    claimed
}

/// How many open jobs need counting for [`fair_share`] to decide: past `(mine + free) *
/// daemons` the share leaves `free` as it is, so counting further changes nothing (with 10,000
/// open jobs, counting them all was each replica's most expensive query).
fn enough_open_jobs(mine: i64, others: i64, free: usize) -> i64 {
    let daemons = others.max(0) + 1;
    (mine.max(0) + i64::try_from(free).unwrap_or(i64::MAX / 4))
        .saturating_mul(daemons)
        .saturating_add(1)
}

/// How many more open jobs a daemon may claim: its share of all open jobs among the live
/// daemons (itself and `others`), less what it holds. `spread` is [`Store::job_spread`]'s.
fn fair_share((mine, others, open): (i64, i64, i64)) -> usize {
    let daemons = others.max(0) + 1;
    let share = (open + daemons - 1) / daemons;
    usize::try_from(share - mine).unwrap_or(0)
}

/// Runs one claimed job, then what its end changes: the verified-copies gauge of its instance
/// and retention of that instance after a new copy. Nothing here costs in proportion to the
/// fleet (every job end would make it quadratic); the whole-fleet gauges have loops of their
/// own (the verified gauge every 15 s, the job gauge with each heartbeat).
async fn run_and_follow_up(ctx: &Context, job: &JobRow, cancel: &CancellationToken) {
    let outcome = crate::runner::run_job(ctx, &job.id, cancel).await;
    // Whatever the outcome: a new copy counts at once, and an instance whose first job failed
    // is exported at 0. Retention (which may wait for the instance's DescribeBackups pacing)
    // then recounts.
    if let Err(e) =
        crate::reconcile::refresh_verified_gauge_of(ctx, &job.policy, &job.instance_uuid).await
    {
        tracing::error!(error = %format!("{e:#}"), "cannot refresh rdbvault_verified_backups");
    }
    if outcome == Outcome::Stored {
        tracing::info!(job_id = %job.id, policy = %job.policy, instance = %job.instance_uuid, "job stored");
        // A new verified copy may let retention drop an old one of this instance; the others
        // have not changed.
        // Under a lease of its own, so two replicas never prune one instance at once.
        let name = format!("retention:{}:{}", job.policy, job.instance_uuid);
        let pruned = super::maintenance::with_lease(ctx, &name, async |ctx: &Context| {
            super::maintenance::prune_policy_logged(ctx, &job.policy, Some(&job.instance_uuid))
                .await;
        })
        .await;
        if pruned.is_none() {
            tracing::debug!(job_id = %job.id, "another replica is applying retention to this instance");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::jobs::NewJob;

    fn job(id: &str, instance: &str, owner: Option<&str>, at: i64) -> NewJob {
        NewJob {
            id: id.into(),
            policy: "p".into(),
            instance_uuid: instance.into(),
            instance_name: "n".into(),
            region_id: String::new(),
            destination: "d".into(),
            trigger: "schedule",
            due_at: 0,
            start_by: at + 3_600_000,
            deadline_at: at + 7_200_000,
            created_at: at,
            owner: owner.map(str::to_string),
            schedule_key: None,
        }
    }

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::testing::temp_store(dir.path()).await;
        (dir, store)
    }

    #[test]
    fn a_daemon_claims_up_to_its_share_of_the_open_jobs() {
        // Alone: everything.
        assert_eq!(fair_share((0, 0, 10_000)), 10_000);
        // Three daemons: a third each, rounded up, less what it holds.
        assert_eq!(fair_share((0, 2, 10_000)), 3_334);
        assert_eq!(fair_share((3_000, 2, 10_000)), 334);
        assert_eq!(fair_share((5_000, 2, 10_000)), 0);
        assert_eq!(fair_share((0, 0, 0)), 0);
    }

    #[tokio::test]
    async fn replicas_split_the_due_jobs_instead_of_the_first_taking_all() {
        let dir = tempfile::tempdir().unwrap();
        let stores = crate::store::testing::temp_stores(dir.path(), 2).await;
        for i in 0..10 {
            stores[0]
                .insert_job(&job(&format!("j{i}"), &format!("i{i}"), None, ms(t(0))))
                .await
                .unwrap();
        }
        let lease = Duration::from_secs(60);
        let (a_running, b_running) = (Mutex::new(HashSet::new()), Mutex::new(HashSet::new()));
        // B already holds a job (it is alive); A looks first.
        stores[1]
            .insert_job(&job("held", "i-held", Some("daemon:b"), ms(t(0))))
            .await
            .unwrap();
        stores[1].heartbeat("daemon:b", ms(t(1))).await.unwrap();
        let a = claim_due(&stores[0], "daemon:a", t(1), lease, &a_running, 100).await;
        assert_eq!(a.len(), 6, "11 open jobs, 2 daemons: A takes its 6");
        let b = claim_due(&stores[1], "daemon:b", t(1), lease, &b_running, 100).await;
        assert_eq!(b.len(), 4, "B takes the rest");
    }

    #[tokio::test]
    async fn no_more_jobs_are_claimed_than_free_slots_and_none_twice() {
        let (_dir, store) = store().await;
        for (id, instance) in [("a", "i1"), ("b", "i2"), ("c", "i3")] {
            store
                .insert_job(&job(id, instance, None, ms(t(0))))
                .await
                .unwrap();
        }
        let running = Mutex::new(HashSet::from(["a".to_string()]));
        let lease = Duration::from_secs(60);
        let claimed = claim_due(&store, "me", t(1), lease, &running, 2).await;
        // "a" is already running here; one slot was free.
        assert_eq!(claimed.len(), 1);
        assert_ne!(claimed[0].id, "a");
        assert_eq!(running.lock().unwrap().len(), 2);
        // Full: nothing more, even though one job is still due.
        assert!(
            claim_due(&store, "me", t(2), lease, &running, 2)
                .await
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_live_owners_job_is_left_and_a_silent_owners_job_is_taken_over_after_the_lease() {
        let (_dir, store) = store().await;
        store
            .insert_job(&job("x", "i1", Some("other"), ms(t(0))))
            .await
            .unwrap();
        let lease = Duration::from_secs(60);
        let running = Mutex::new(HashSet::new());
        // Its owner beat 30 s ago: alive.
        store.heartbeat("other", ms(t(0))).await.unwrap();
        assert!(
            claim_due(&store, "me", t(30), lease, &running, 4)
                .await
                .is_empty()
        );
        // Silent for longer than the lease: this process resumes it.
        let claimed = claim_due(&store, "me", t(61), lease, &running, 4).await;
        assert_eq!(claimed.len(), 1);
        assert_eq!(store.job("x").await.unwrap().owner.as_deref(), Some("me"));
        // And the old owner's claim is gone: its writes are fenced off.
        let fenced = crate::store::jobs::Claim::new("x", "other");
        assert!(!store.holds(&fenced).await.unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn replicas_claiming_at_once_never_share_a_job_or_run_an_instance_twice() {
        use std::collections::HashMap;
        let dir = tempfile::tempdir().unwrap();
        let stores = crate::store::testing::temp_stores(dir.path(), 2).await;
        for i in 0..50 {
            let instance = format!("inst-{}", i % 5);
            // Ten policies, so each instance has a queue of ten (one open job per policy).
            let queued = NewJob {
                policy: format!("p{}", i / 5),
                ..job(&format!("j{i:02}"), &instance, None, 0)
            };
            assert_eq!(
                stores[0].insert_job(&queued).await.unwrap(),
                crate::store::jobs::Inserted::Created
            );
        }
        let claimed_by: Arc<Mutex<HashMap<String, String>>> = Arc::default();
        let busy: Arc<Mutex<HashMap<String, String>>> = Arc::default();
        let mut workers = Vec::new();
        for w in 0..4 {
            let store = stores[w % 2].clone();
            let (claimed_by, busy) = (claimed_by.clone(), busy.clone());
            workers.push(tokio::spawn(async move {
                let owner = format!("replica-{w}");
                let running = Mutex::new(HashSet::new());
                for _ in 0..200 {
                    let got =
                        claim_due(&store, &owner, t(10), Duration::from_secs(60), &running, 3)
                            .await;
                    for j in &got {
                        let previous = claimed_by
                            .lock()
                            .unwrap()
                            .insert(j.id.clone(), owner.clone());
                        assert!(previous.is_none(), "{} claimed twice", j.id);
                        let other = busy
                            .lock()
                            .unwrap()
                            .insert(j.instance_uuid.clone(), j.id.clone());
                        assert!(other.is_none(), "{} ran beside {other:?}", j.id);
                    }
                    for j in got {
                        busy.lock().unwrap().remove(&j.instance_uuid);
                        let claim = crate::store::jobs::Claim::new(&j.id, &owner);
                        store.fail_job(&claim, ms(t(10)), "done").await.unwrap();
                        running.lock().unwrap().remove(&j.id);
                    }
                    if claimed_by.lock().unwrap().len() == 50 {
                        break;
                    }
                }
            }));
        }
        for w in workers {
            w.await.unwrap();
        }
        assert_eq!(claimed_by.lock().unwrap().len(), 50, "every job ran once");
    }
}
