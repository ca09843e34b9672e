//! The read model of `rdbvault status` (and of a later `GET /v1/status`): per policy, and per
//! instance the policy selected on its last run (as `rdbvault_verified_backups` counts them,
//! [`Store::selected_instances`]), the last success, the verified copies, the next run, the
//! open job and the last restore drill; whether the daemon answers; and one line for each thing
//! that needs attention ([`attention`]).
//!
//! Built from the state DB and the config alone: no provider call. Times are RFC 3339 with
//! their zone: the policy's own for a policy's times, UTC for `checked_at`.

use crate::config::{Config, Policy};
use crate::job::State;
use crate::store::{JobRow, Store, from_ms};
use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;

/// Everything `status` shows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    /// Nothing needs attention (`status` exits 0; else 3).
    pub healthy: bool,
    /// When this was read, RFC 3339 (UTC).
    pub checked_at: String,
    pub daemon: Daemon,
    pub policies: Vec<PolicyStatus>,
    /// One line per thing that needs attention, in the order `status` prints them.
    pub attention: Vec<String>,
}

/// What the daemon's `/readyz` said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DaemonState {
    /// `/readyz` answered 200.
    Ready,
    /// It answered, but not 200 (a stale scheduler, a state DB it cannot write).
    NotReady,
    /// Nothing answered in time.
    Unreachable,
}

/// The daemon as `status` found it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Daemon {
    /// The address asked: `http.listen`, with loopback for an unspecified address.
    pub address: String,
    pub state: DaemonState,
    /// The answer of `/readyz` (one line), or why there was none.
    pub detail: String,
}

/// One policy.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PolicyStatus {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    pub destination: String,
    /// `retention.destination.min_verified`: fewer verified copies than this needs attention.
    pub min_verified: u32,
    /// The next cron time, in the policy's zone (each instance's jitter comes on top); null when
    /// the cron never fires again.
    pub next_run: Option<String>,
    /// The instances the policy selected on its last run; empty before its first.
    pub instances: Vec<InstanceStatus>,
}

/// One instance of a policy.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InstanceStatus {
    pub uuid: String,
    /// As the provider named it when a job was last made; empty if unknown.
    pub name: String,
    /// The newest stored job.
    pub last_success: Option<Success>,
    /// The newest finished job, whatever its result.
    pub last_run: Option<LastRun>,
    pub verified_copies: Copies,
    pub open_job: Option<OpenJob>,
    /// The last restore drill of any of the instance's sets.
    pub last_drill: Option<LastDrill>,
}

/// A restore drill, as `status` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LastDrill {
    /// The set drilled (its job id).
    pub job_id: String,
    /// `restored` or `failed`.
    pub result: String,
    pub at: String,
    /// What loaded and was counted, or why the set does not restore.
    pub detail: String,
}

impl InstanceStatus {
    /// `name (uuid)`, or the uuid alone when the name is unknown.
    pub fn label(&self) -> String {
        if self.name.is_empty() {
            self.uuid.clone()
        } else {
            format!("{} ({})", self.name, self.uuid)
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Success {
    pub job_id: String,
    /// When the job was stored.
    pub at: String,
    /// Seconds between then and `checked_at`.
    pub age_seconds: i64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct LastRun {
    pub job_id: String,
    pub state: State,
    /// When it finished.
    pub at: String,
    /// Why it failed or was missed.
    pub error: Option<String>,
}

/// Verified copies (backup sets) that are neither missing nor deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Copies {
    pub destination: i64,
    pub provider: i64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct OpenJob {
    pub id: String,
    pub state: State,
    /// When it entered its state.
    pub since: String,
    pub trigger: String,
}

/// A time as RFC 3339 in `tz`, to the second.
fn at(ms: i64, tz: Tz) -> String {
    from_ms(ms)
        .with_timezone(&tz)
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Builds the status from the state DB and the config; `daemon` is what its `/readyz` said.
///
/// # Errors
/// The state DB failed.
pub async fn status(
    store: &Store,
    config: &Config,
    now: DateTime<Utc>,
    daemon: Daemon,
) -> Result<Status, crate::store::Error> {
    let finished = store.last_finished().await?;
    let open = store.open_jobs().await?;
    let drills: Vec<_> = store
        .last_drill_of_each_set()
        .await?
        .into_values()
        .collect();
    let mut policies = Vec::with_capacity(config.policies.len());
    for p in &config.policies {
        let counts = store.verified_set_counts(&p.name).await?;
        let selected = store.selected_instances(&p.name).await?;
        let jobs = Jobs {
            finished: &finished,
            open: &open,
            counts: &counts,
            drills: &drills,
        };
        policies.push(policy_status(p, now, &selected, &jobs));
    }
    let attention = attention(&policies, &daemon);
    Ok(Status {
        healthy: attention.is_empty(),
        checked_at: now.to_rfc3339_opts(SecondsFormat::Secs, true),
        daemon,
        policies,
        attention,
    })
}

/// What the state DB says, read once for all policies.
struct Jobs<'a> {
    /// The newest finished job of each (policy, instance, result) (`Store::last_finished`).
    finished: &'a [JobRow],
    open: &'a [JobRow],
    /// This policy's verified sets per (instance, location).
    counts: &'a [(String, String, i64)],
    /// The last drill of each set.
    drills: &'a [crate::store::drills::DrillRow],
}

/// One policy's status, from what the state DB says.
fn policy_status(
    p: &Policy,
    now: DateTime<Utc>,
    selected: &[String],
    jobs: &Jobs<'_>,
) -> PolicyStatus {
    let tz = p.schedule.timezone;
    PolicyStatus {
        name: p.name.clone(),
        cron: p.schedule.cron.as_str().to_string(),
        timezone: tz.name().to_string(),
        destination: p.destination.clone(),
        min_verified: p.retention.destination.min_verified,
        next_run: p
            .schedule
            .cron
            .next_after(now, tz)
            .map(|t| at(crate::store::ms(t), tz)),
        instances: selected
            .iter()
            .map(|uuid| instance_status(&p.name, uuid, tz, now, jobs))
            .collect(),
    }
}

/// One instance of a policy.
fn instance_status(
    policy: &str,
    uuid: &str,
    tz: Tz,
    now: DateTime<Utc>,
    jobs: &Jobs<'_>,
) -> InstanceStatus {
    let mine = |j: &&JobRow| j.policy == policy && j.instance_uuid == uuid;
    let finished: Vec<&JobRow> = jobs.finished.iter().filter(mine).collect();
    let open = jobs.open.iter().find(mine);
    let stored = finished.iter().find(|j| j.state == State::Stored);
    let last = finished.iter().max_by_key(|j| j.finished_at);
    let count = |location: &str| {
        jobs.counts
            .iter()
            .find(|(i, l, _)| i == uuid && l == location)
            .map_or(0, |c| c.2)
    };
    let name = open
        .into_iter()
        .chain(finished.iter().copied())
        .map(|j| j.instance_name.clone())
        .find(|n| !n.is_empty())
        .unwrap_or_default();
    InstanceStatus {
        uuid: uuid.to_string(),
        name,
        last_success: stored.map(|j| {
            let t = j.finished_at.unwrap_or(j.created_at);
            Success {
                job_id: j.id.clone(),
                at: at(t, tz),
                age_seconds: (crate::store::ms(now) - t).max(0) / 1000,
            }
        }),
        last_run: last.map(|j| LastRun {
            job_id: j.id.clone(),
            state: j.state,
            at: at(j.finished_at.unwrap_or(j.created_at), tz),
            error: j.error.clone(),
        }),
        verified_copies: Copies {
            destination: count("destination"),
            provider: count("provider"),
        },
        open_job: open.map(|j| OpenJob {
            id: j.id.clone(),
            state: j.state,
            since: at(state_since(j), tz),
            trigger: j.trigger.clone(),
        }),
        last_drill: jobs
            .drills
            .iter()
            .filter(|d| d.policy == policy && d.instance_uuid == uuid)
            .max_by_key(|d| (d.finished_at, d.id))
            .map(|d| LastDrill {
                job_id: d.job_id.clone(),
                result: d.result.clone(),
                at: at(d.finished_at, tz),
                detail: d.detail.clone(),
            }),
    }
}

/// When an open job entered its state (Unix ms), from its phase times.
pub fn state_since(j: &JobRow) -> i64 {
    let phase = match j.state {
        State::Requested | State::Snapshotting => j.requested_at.or(j.create_sent_at),
        State::Transferring => j.snapshot_done_at.or(j.transfer_started_at),
        State::Verifying => j.transfer_done_at,
        State::Pending | State::Stored | State::Failed | State::Missed => None,
    };
    phase.unwrap_or(j.created_at)
}

/// The first line of an error, at most 200 characters: enough to say what broke on one line.
fn headline(error: Option<&str>) -> String {
    let first = error.unwrap_or("no reason recorded").lines().next();
    let mut out: String = first.unwrap_or_default().chars().take(200).collect();
    if out.is_empty() {
        out = "no reason recorded".into();
    }
    out
}

/// What needs attention, one line each: an instance whose last run failed or was missed, or
/// whose last restore drill failed, one with fewer verified copies at the destination than the policy's `min_verified`, and a
/// daemon that is down or not ready.
pub fn attention(policies: &[PolicyStatus], daemon: &Daemon) -> Vec<String> {
    let mut out = Vec::new();
    for p in policies {
        for i in &p.instances {
            let who = format!("policy `{}`, instance {}", p.name, i.label());
            if let Some(run) = &i.last_run
                && matches!(run.state, State::Failed | State::Missed)
            {
                out.push(format!(
                    "{who}: last run {} at {} (job {}): {}",
                    run.state.as_str(),
                    run.at,
                    run.job_id,
                    headline(run.error.as_deref())
                ));
            }
            if let Some(d) = &i.last_drill
                && d.result != crate::store::drills::RESTORED
            {
                out.push(format!(
                    "{who}: the last restore drill at {} (set {}) FAILED: {}",
                    d.at, d.job_id, d.detail
                ));
            }
            let have = i.verified_copies.destination;
            if have < i64::from(p.min_verified) {
                out.push(format!(
                    "{who}: {have} verified cop{} at the destination, fewer than min_verified {}",
                    if have == 1 { "y" } else { "ies" },
                    p.min_verified
                ));
            }
        }
    }
    match daemon.state {
        DaemonState::Ready => {}
        DaemonState::NotReady => out.push(format!(
            "daemon: not ready at {}: {}",
            daemon.address, daemon.detail
        )),
        DaemonState::Unreachable => out.push(format!(
            "daemon: not reachable at {} ({})",
            daemon.address, daemon.detail
        )),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready() -> Daemon {
        Daemon {
            address: "127.0.0.1:9750".into(),
            state: DaemonState::Ready,
            detail: "ready".into(),
        }
    }

    fn instance(last: Option<(State, Option<&str>)>, copies: i64) -> InstanceStatus {
        InstanceStatus {
            uuid: "5d74bb81".into(),
            name: "prod-cache".into(),
            last_success: None,
            last_run: last.map(|(state, error)| LastRun {
                job_id: "j1".into(),
                state,
                at: "2026-03-01T02:30:05+08:00".into(),
                error: error.map(String::from),
            }),
            verified_copies: Copies {
                destination: copies,
                provider: copies,
            },
            open_job: None,
            last_drill: None,
        }
    }

    fn policy(min_verified: u32, instances: Vec<InstanceStatus>) -> PolicyStatus {
        PolicyStatus {
            name: "nightly".into(),
            cron: "30 2 * * *".into(),
            timezone: "Asia/Shanghai".into(),
            destination: "archive".into(),
            min_verified,
            next_run: None,
            instances,
        }
    }

    #[test]
    fn a_stored_last_run_with_enough_copies_and_a_ready_daemon_needs_no_attention() {
        let p = policy(2, vec![instance(Some((State::Stored, None)), 2)]);
        assert!(attention(&[p], &ready()).is_empty());
    }

    #[test]
    fn a_failed_last_run_is_named_with_its_time_job_and_first_line_of_error() {
        let p = policy(
            1,
            vec![instance(
                Some((State::Failed, Some("cancelled by operator\ncause"))),
                3,
            )],
        );
        assert_eq!(
            attention(&[p], &ready()),
            [
                "policy `nightly`, instance prod-cache (5d74bb81): last run failed at 2026-03-01T02:30:05+08:00 (job j1): cancelled by operator"
            ]
        );
    }

    #[test]
    fn a_missed_last_run_needs_attention_too() {
        let p = policy(
            1,
            vec![instance(Some((State::Missed, Some("could not start"))), 1)],
        );
        let lines = attention(&[p], &ready());
        assert_eq!(lines.len(), 1);
        assert!(lines[0].contains("last run missed at"), "{lines:?}");
    }

    #[test]
    fn fewer_verified_copies_than_min_verified_needs_attention_and_says_how_many() {
        let p = policy(3, vec![instance(Some((State::Stored, None)), 1)]);
        assert_eq!(
            attention(&[p], &ready()),
            [
                "policy `nightly`, instance prod-cache (5d74bb81): 1 verified copy at the destination, fewer than min_verified 3"
            ]
        );
        let never = policy(1, vec![instance(None, 0)]);
        assert!(attention(&[never], &ready())[0].contains("0 verified copies"));
    }

    #[test]
    fn a_daemon_that_is_down_or_not_ready_needs_attention_each_on_its_own_line() {
        let down = Daemon {
            state: DaemonState::Unreachable,
            detail: "connection refused".into(),
            ..ready()
        };
        assert_eq!(
            attention(&[], &down),
            ["daemon: not reachable at 127.0.0.1:9750 (connection refused)"]
        );
        let stale = Daemon {
            state: DaemonState::NotReady,
            detail: "scheduler heartbeat is stale (40s old)".into(),
            ..ready()
        };
        let p = policy(1, vec![instance(Some((State::Failed, None)), 0)]);
        let lines = attention(&[p], &stale);
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[0].ends_with("no reason recorded"), "{lines:?}");
        assert_eq!(
            lines[2],
            "daemon: not ready at 127.0.0.1:9750: scheduler heartbeat is stale (40s old)"
        );
    }

    #[test]
    fn an_open_job_is_dated_from_the_start_of_its_current_phase() {
        let mut j = crate::store::JobRow {
            id: "j".into(),
            policy: "p".into(),
            instance_uuid: "i".into(),
            destination: "d".into(),
            trigger: "schedule".into(),
            state: State::Pending,
            due_at: 5,
            created_at: 1,
            create_sent_at: Some(2),
            requested_at: Some(3),
            snapshot_done_at: Some(4),
            transfer_started_at: Some(4),
            transfer_done_at: Some(6),
            attempts: 1,
            ..JobRow::blank()
        };
        for (state, since) in [
            (State::Pending, 1),
            (State::Requested, 3),
            (State::Snapshotting, 3),
            (State::Transferring, 4),
            (State::Verifying, 6),
        ] {
            j.state = state;
            assert_eq!(state_since(&j), since, "{state}");
        }
    }
}
