//! `backup-now`: one job per instance a policy selects, run in the foreground with progress bars.
//!
//! The steps: find the policy and the instances it selects ([`select_instances`]), create one
//! job each, owned by this process from birth ([`start_jobs`]), run them with a heartbeat and
//! progress bars, printing each outcome as it arrives ([`run_jobs`], the lines from
//! [`outcome_lines`]), and turn the outcomes into the exit code ([`verdict`]). Every line
//! printed while the bars are up goes through them ([`ShardBars::println`]), so none is erased.
//!
//! `--dry-run` stops after the selection and shows what would happen instead (`dry_run.rs`).

mod dry_run;

use super::format::{Screen, ShardBars, duration_of, human_bytes};
use crate::cds::model::Instance;
use crate::config::{Config, Policy};
use crate::failure::Failure;
use crate::runner::Outcome;
use crate::services::Context;
use crate::store::jobs::Inserted;
use crate::store::{JobRow, ShardRow, ms};
use std::sync::Arc;

/// `backup-now --policy P [--instance UUID] [--dry-run]`: one job per selected instance, in the
/// foreground; with `dry_run`, what would happen, creating nothing.
pub async fn backup_now(
    cfg: Config,
    policy_name: &str,
    instance: Option<&str>,
    dry_run: bool,
) -> Result<(), Failure> {
    let policy = policy_named(&cfg, policy_name)?;
    let cfg = Arc::new(cfg);
    if dry_run {
        return dry_run::dry_run(cfg, &policy, instance).await;
    }
    let metrics = crate::metrics::Metrics::register(prometheus::Registry::new())?;
    let mut ctx = crate::services::open(
        cfg.clone(),
        crate::services::owner_id("backup-now"),
        metrics,
    )
    .await?;

    let all = ctx
        .cds
        .describe_db_instances(&crate::cds::Params::new())
        .await?;
    let selected = select_instances(&policy, &all, instance)?;

    let bars = ShardBars::new(Screen::stderr_beside_stdout(), Some(ctx.store.clone()));
    ctx.progress = Some(bars.reporter());
    let started = start_jobs(&ctx, &policy, &selected, &bars).await?;
    let mut tally = run_jobs(&ctx, started.job_ids, cfg.limits.max_concurrent_jobs, &bars).await?;
    // A refused instance (it has an open job) was skipped, not failed.
    tally.skipped += started.refused;
    bars.clear();
    ctx.store.close().await;
    verdict(&tally, selected.len())
}

/// The policy `--policy` names; a usage error listing the policies when there is none.
fn policy_named(cfg: &Config, name: &str) -> Result<Policy, Failure> {
    match cfg.policies.iter().find(|p| p.name == name) {
        Some(p) => Ok(p.clone()),
        None => {
            let names: Vec<_> = cfg.policies.iter().map(|p| p.name.as_str()).collect();
            Err(Failure::Usage(format!(
                "no policy named `{name}` in {}; policies: {}",
                cfg.source.display(),
                names.join(", ")
            )))
        }
    }
}

/// The instances to back up: those the policy selects, narrowed to `--instance` (compared
/// ignoring case, as the provider's UUIDs may come in either). Naming an instance the policy
/// does not select is the user's mistake (exit 2); a policy that selects nothing is a failed
/// backup (exit 3), as a scheduled run of it would be.
fn select_instances(
    policy: &Policy,
    all: &[Instance],
    instance: Option<&str>,
) -> Result<Vec<Instance>, Failure> {
    let mut selected: Vec<_> = crate::scheduler::select(policy, all)
        .into_iter()
        .cloned()
        .collect();
    if let Some(uuid) = instance {
        selected.retain(|i| i.instance_uuid.eq_ignore_ascii_case(uuid));
        if selected.is_empty() {
            return Err(Failure::Usage(format!(
                "instance {uuid} is not selected by policy `{}` (or does not exist)",
                policy.name
            )));
        }
    }
    if selected.is_empty() {
        return Err(Failure::Failed(format!(
            "policy `{}` selects no instance; nothing to back up",
            policy.name
        )));
    }
    Ok(selected)
}

/// The jobs [`start_jobs`] created, and how many instances got none.
struct Started {
    job_ids: Vec<String>,
    /// Instances that already had an open job (whoever runs it).
    refused: usize,
}

/// Creates one job per instance, owned by this process from birth: no dispatcher can claim it
/// between its insert and its first step. An instance with an open job gets none.
async fn start_jobs(
    ctx: &Context,
    policy: &Policy,
    selected: &[Instance],
    bars: &ShardBars,
) -> Result<Started, Failure> {
    let now = ctx.clock.now();
    let mut started = Started {
        job_ids: Vec::new(),
        refused: 0,
    };
    for inst in selected {
        let mut job = crate::scheduler::new_job(policy, inst, now, "manual", now);
        job.owner = Some(ctx.owner.clone());
        match ctx.store.insert_job(&job).await? {
            Inserted::Created => {
                bars.eprintln(&format!(
                    "job {} for {} ({}) started",
                    job.id, inst.instance_name, inst.instance_uuid
                ));
                bars.name_job(&job.id, &inst.instance_name);
                started.job_ids.push(job.id);
            }
            // (A job made by hand has no schedule key: only the first can happen.)
            Inserted::InstanceBusy { open_job } | Inserted::AlreadyScheduled { job: open_job } => {
                bars.eprintln(&format!(
                    "instance {} ({}) already has an open job {open_job}; not starting a second one",
                    inst.instance_name, inst.instance_uuid
                ));
                started.refused += 1;
            }
        }
    }
    Ok(started)
}

/// Runs the jobs, at most `max_concurrent` at a time, with a heartbeat keeping them ours and
/// SIGINT/SIGTERM stopping them at a safe point (the daemon resumes them); prints each outcome
/// as its job ends, above the bars, and counts them.
async fn run_jobs(
    ctx: &Context,
    job_ids: Vec<String>,
    max_concurrent: usize,
    bars: &ShardBars,
) -> Result<Tally, Failure> {
    let cancel = tokio_util::sync::CancellationToken::new();
    let hb = tokio::spawn(crate::daemon::heartbeat(ctx.clone(), cancel.clone()));
    let signal_cancel = cancel.clone();
    tokio::spawn(async move {
        crate::daemon::shutdown_signal().await;
        signal_cancel.cancel();
    });
    let limit = Arc::new(tokio::sync::Semaphore::new(max_concurrent));
    let mut tasks = tokio::task::JoinSet::new();
    for id in job_ids {
        let (ctx, cancel, limit) = (ctx.clone(), cancel.child_token(), limit.clone());
        tasks.spawn(async move {
            // cannot fail: `limit` is never closed.
            let _permit = limit.acquire_owned().await.expect("semaphore open");
            let outcome = crate::runner::run_job(&ctx, &id, &cancel).await;
            (id, outcome)
        });
    }
    let mut tally = Tally::default();
    while let Some(r) = tasks.join_next().await {
        let (id, outcome) =
            r.map_err(|e| Failure::Runtime(anyhow::anyhow!("job task failed: {e}")))?;
        let job = ctx.store.job(&id).await?;
        let shards = match outcome {
            // The shard lines are a courtesy: a DB hiccup here does not fail a stored backup.
            Outcome::Stored => ctx.store.shards(&job.id).await.unwrap_or_default(),
            _ => Vec::new(),
        };
        let took = duration_of(&job, ms(crate::clock::wall_now()));
        for line in outcome_lines(&job, &outcome, &shards, &took) {
            bars.println(&line);
        }
        tally.record(&outcome);
    }
    cancel.cancel();
    let _ = hb.await;
    Ok(tally)
}

/// The lines for one ended job: a stored one with its size, time (`took`) and each shard's
/// object key and SHA-256; any other with why.
fn outcome_lines(job: &JobRow, outcome: &Outcome, shards: &[ShardRow], took: &str) -> Vec<String> {
    let rdbvault = crate::config::invocation();
    let who = format!("{} {} ({})", job.id, job.instance_name, job.instance_uuid);
    match outcome {
        Outcome::Stored => {
            let mut lines = vec![format!(
                "stored  {who} {} in {took}",
                human_bytes(job.bytes)
            )];
            lines.extend(shards.iter().map(|s| {
                format!(
                    "        {} sha256 {}",
                    s.object_key.as_deref().unwrap_or_default(),
                    s.sha256.as_deref().unwrap_or_default()
                )
            }));
            lines
        }
        Outcome::Failed(e) | Outcome::Refused(e) => vec![format!("failed  {who}: {e}")],
        Outcome::Missed(e) => vec![format!("missed  {who}: {e}")],
        Outcome::LostClaim(why) => vec![format!("stopped {who}: {why}")],
        Outcome::Interrupted => {
            vec![format!(
                "stopped {who}: interrupted; `{rdbvault} run` resumes it"
            )]
        }
    }
}

/// How the jobs ended, as far as the exit code cares.
#[derive(Debug, Default)]
struct Tally {
    /// Failed, missed, or taken over by another process.
    failed: usize,
    /// Failed because the provider or the destination refused the credentials.
    refused: usize,
    /// Stopped by SIGINT/SIGTERM at a safe point; `rdbvault run` resumes them.
    interrupted: usize,
    /// Not started: the instance already had an open job (named when it was refused).
    skipped: usize,
}

impl Tally {
    fn record(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Stored => {}
            Outcome::Failed(_) | Outcome::Missed(_) | Outcome::LostClaim(_) => self.failed += 1,
            Outcome::Refused(_) => self.refused += 1,
            Outcome::Interrupted => self.interrupted += 1,
        }
    }
}

/// The exit: credentials refused, exit 2 (nothing works until the operator fixes them); any
/// other failed backup, exit 3 (even when others were interrupted or skipped: a failure is the
/// news); interruptions, exit 1 (the work is unfinished); instances skipped because they
/// already had an open job, exit 4 (nothing failed, but not everything asked for ran); else
/// success.
fn verdict(tally: &Tally, selected: usize) -> Result<(), Failure> {
    let rdbvault = crate::config::invocation();
    if tally.refused > 0 {
        return Err(Failure::Usage(format!(
            "{} of {selected} backup(s) failed because the credentials were refused (named above); fix them (`{rdbvault} check-config --online` tries them all) and run again",
            tally.refused
        )));
    }
    if tally.failed > 0 {
        return Err(Failure::Failed(format!(
            "{} of {selected} backup(s) failed",
            tally.failed
        )));
    }
    if tally.interrupted > 0 {
        return Err(Failure::Runtime(anyhow::anyhow!(
            "{} job(s) interrupted before they finished",
            tally.interrupted
        )));
    }
    if tally.skipped > 0 {
        return Err(Failure::Skipped(format!(
            "{} of {selected} backup(s) skipped: the instance already had an open job (named above); `{rdbvault} jobs` shows it",
            tally.skipped
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::exit;

    fn policy(selectors: &str) -> Policy {
        let text = format!(
            "destinations: {{ d: {{ type: file, path: /tmp }} }}\npolicies:\n  - name: nightly\n    schedule: {{ cron: \"0 2 * * *\" }}\n    instances: [ {selectors} ]\n    destination: d\n    retention: {{ destination: {{ keep_last: 1 }} }}\n"
        );
        crate::config::parse(&text, std::path::Path::new("t.yaml"))
            .unwrap()
            .policies
            .remove(0)
    }

    fn instance(uuid: &str, name: &str) -> Instance {
        Instance {
            instance_uuid: uuid.into(),
            instance_name: name.into(),
            ..Instance::default()
        }
    }

    fn fleet() -> Vec<Instance> {
        vec![
            instance("AAAA-1", "prod-cache-01"),
            instance("bbbb-2", "prod-cluster-01"),
            instance("cccc-3", "staging-cache"),
        ]
    }

    fn names(selected: &[Instance]) -> Vec<&str> {
        selected.iter().map(|i| i.instance_name.as_str()).collect()
    }

    #[test]
    fn a_policy_picks_every_instance_its_selectors_match() {
        let picked = select_instances(&policy("{ name: \"prod-*\" }"), &fleet(), None).unwrap();
        assert_eq!(names(&picked), ["prod-cache-01", "prod-cluster-01"]);
    }

    #[test]
    fn an_instance_flag_narrows_the_selection_ignoring_case() {
        let picked =
            select_instances(&policy("{ name: \"prod-*\" }"), &fleet(), Some("aaaa-1")).unwrap();
        assert_eq!(names(&picked), ["prod-cache-01"]);
    }

    #[test]
    fn an_instance_the_policy_does_not_select_is_a_usage_error() {
        let err = select_instances(&policy("{ name: \"prod-*\" }"), &fleet(), Some("cccc-3"))
            .unwrap_err();
        assert_eq!(err.exit_code(), exit::USAGE);
        assert_eq!(
            err.to_string(),
            "instance cccc-3 is not selected by policy `nightly` (or does not exist)"
        );
    }

    #[test]
    fn a_policy_that_selects_nothing_is_a_failed_backup() {
        let err = select_instances(&policy("{ name: \"none-*\" }"), &fleet(), None).unwrap_err();
        assert_eq!(err.exit_code(), exit::FAILED);
        assert_eq!(
            err.to_string(),
            "policy `nightly` selects no instance; nothing to back up"
        );
    }

    fn tally_of(refused: usize, outcomes: &[Outcome]) -> Tally {
        let mut tally = Tally::default();
        for o in outcomes {
            tally.record(o);
        }
        tally.skipped += refused;
        tally
    }

    #[test]
    fn every_stored_job_is_success() {
        let tally = tally_of(0, &[Outcome::Stored, Outcome::Stored]);
        assert!(verdict(&tally, 2).is_ok());
    }

    #[test]
    fn a_failed_missed_or_taken_over_job_is_exit_three() {
        for bad in [
            Outcome::Failed("x".into()),
            Outcome::Missed("x".into()),
            Outcome::LostClaim("x".into()),
        ] {
            let err = verdict(&tally_of(0, &[Outcome::Stored, bad]), 2).unwrap_err();
            assert_eq!(err.exit_code(), exit::FAILED);
            assert_eq!(err.to_string(), "1 of 2 backup(s) failed");
        }
    }

    #[test]
    fn a_refused_instance_is_skipped_not_failed() {
        let err = verdict(&tally_of(1, &[Outcome::Stored]), 2).unwrap_err();
        assert_eq!(err.exit_code(), exit::SKIPPED);
        assert!(
            err.to_string().starts_with("1 of 2 backup(s) skipped"),
            "{err}"
        );
        // A real failure still outranks it.
        let err = verdict(&tally_of(1, &[Outcome::Failed("x".into())]), 2).unwrap_err();
        assert_eq!(err.exit_code(), exit::FAILED);
    }

    #[test]
    fn refused_credentials_are_exit_two_whatever_else_happened() {
        let tally = tally_of(
            1,
            &[
                Outcome::Refused("InvalidAccessKeyId".into()),
                Outcome::Failed("x".into()),
                Outcome::Interrupted,
            ],
        );
        let err = verdict(&tally, 3).unwrap_err();
        assert_eq!(err.exit_code(), exit::USAGE);
        assert!(
            err.to_string().contains("credentials were refused"),
            "{err}"
        );
    }

    #[test]
    fn interrupted_jobs_alone_are_a_runtime_failure() {
        let err = verdict(&tally_of(0, &[Outcome::Interrupted, Outcome::Stored]), 2).unwrap_err();
        assert_eq!(err.exit_code(), exit::RUNTIME);
        assert_eq!(err.to_string(), "1 job(s) interrupted before they finished");
    }

    #[test]
    fn a_failure_outranks_an_interruption() {
        let tally = tally_of(0, &[Outcome::Interrupted, Outcome::Failed("x".into())]);
        assert_eq!(verdict(&tally, 2).unwrap_err().exit_code(), exit::FAILED);
    }

    fn job_row() -> JobRow {
        JobRow {
            id: "j1".into(),
            policy: "nightly".into(),
            instance_uuid: "bbbb-2".into(),
            instance_name: "prod-cluster-01".into(),
            destination: "d".into(),
            trigger: "manual".into(),
            state: crate::job::State::Stored,
            attempts: 1,
            bytes: 2 << 20,
            ..JobRow::blank()
        }
    }

    fn shard(backup_id: &str, key: &str, sha: &str) -> ShardRow {
        ShardRow {
            job_id: "j1".into(),
            backup_id: backup_id.into(),
            shard_id: String::new(),
            size: None,
            provider_start: String::new(),
            provider_end: String::new(),
            state: crate::job::ShardState::Stored,
            object_key: Some(key.into()),
            manifest_key: None,
            upload_id: None,
            temp_path: None,
            bytes_done: 0,
            sha256: Some(sha.into()),
            rdb_version: None,
            checksum: None,
            rdb_contents: None,
        }
    }

    #[test]
    fn a_stored_job_gets_a_line_and_one_more_per_shard() {
        let shards = [shard("b1", "k1.rdb", "aa"), shard("b2", "k2.rdb", "bb")];
        let lines = outcome_lines(&job_row(), &Outcome::Stored, &shards, "3s");
        assert_eq!(
            lines,
            [
                "stored  j1 prod-cluster-01 (bbbb-2) 2.0 MiB in 3s",
                "        k1.rdb sha256 aa",
                "        k2.rdb sha256 bb",
            ]
        );
    }

    #[test]
    fn any_other_ending_is_one_line_saying_why() {
        let job = job_row();
        let line = |o: Outcome| outcome_lines(&job, &o, &[], "3s");
        assert_eq!(
            line(Outcome::Failed("boom".into())),
            ["failed  j1 prod-cluster-01 (bbbb-2): boom"]
        );
        assert_eq!(
            line(Outcome::Interrupted),
            ["stopped j1 prod-cluster-01 (bbbb-2): interrupted; `rdbvault run` resumes it"]
        );
    }
}
