//! One test per decision of the pure plan, over hand-made inventory rows and provider records
//! (no state DB, no S3, no simulator), and properties over random histories.

use super::*;
use crate::cds::DESC_TOKEN_PREFIX;
use crate::clock::{Clock, ManualClock};
use crate::config::KeepRules;
use crate::config::units::format_duration;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

const UUID: &str = "5d74bb81-0473-464d-b15b-0ae418619248";
const POLICY: &str = "nightly";

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn next_id() -> i64 {
    static NEXT: AtomicI64 = AtomicI64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A verified, live destination copy of `job`'s provider backup `backup` in destination `dest`.
fn dest_copy(job: &str, backup: &str, dest: &str, t: &str) -> CopyRow {
    CopyRow {
        id: next_id(),
        location: "destination".into(),
        policy: POLICY.into(),
        instance_uuid: UUID.into(),
        instance_name: "prod-1".into(),
        job_id: Some(job.into()),
        backup_id: backup.into(),
        shard_id: "0".into(),
        destination: dest.into(),
        object_key: Some(format!("{job}/{backup}.rdb")),
        size: Some(100),
        sha256: None,
        rdb_version: Some(11),
        rdb_contents: None,
        requested_at: crate::store::ms(at(t)),
        verified: 1,
        verified_at: Some(crate::store::ms(at(t))),
        pinned: 0,
        missing: 0,
        deleted_at: None,
        last_check_at: None,
        last_check_error: None,
    }
}

/// The inventory's record of `job`'s provider backup `backup`.
fn provider_copy(job: &str, backup: &str, t: &str) -> CopyRow {
    CopyRow {
        location: "provider".into(),
        destination: String::new(),
        object_key: None,
        ..dest_copy(job, backup, "", t)
    }
}

/// A `DescribeBackups` record; `job`: the job whose token its `Desc` carries.
fn record(backup: &str, job: Option<&str>, start: &str) -> Backup {
    Backup {
        backup_id: backup.into(),
        instance_id: UUID.into(),
        desc: job
            .map(|j| format!("{DESC_TOKEN_PREFIX}{j}"))
            .unwrap_or_default(),
        start_time: start.into(),
        status: Backup::FINISHED.into(),
        ..Default::default()
    }
}

fn keep_last(n: u32) -> KeepRules {
    KeepRules {
        keep_last: Some(n),
        min_verified: 1,
        ..KeepRules::default()
    }
}

fn found(state: &str) -> JobLookup {
    let state: crate::job::State = state.parse().unwrap();
    JobLookup::Found {
        policy: POLICY.into(),
        state,
    }
}

/// Everything a plan is made from, with defaults a test changes what it is about.
struct Fixture {
    rows: Vec<CopyRow>,
    records: Vec<Backup>,
    jobs: BTreeMap<String, JobLookup>,
    retention: Retention,
    known: Vec<&'static str>,
    now: DateTime<Utc>,
    dry_run: bool,
}

impl Fixture {
    fn new(destination: KeepRules, provider: Option<KeepRules>) -> Fixture {
        Fixture {
            rows: Vec::new(),
            records: Vec::new(),
            jobs: BTreeMap::new(),
            retention: Retention {
                destination,
                provider,
                max_deletions_per_run: 10,
                reclaim_uncopied_after: None,
            },
            known: vec!["a"],
            now: at("2026-06-01T00:00:00Z"),
            dry_run: false,
        }
    }

    fn rules(&self) -> Rules<'_> {
        Rules {
            policy: POLICY,
            retention: &self.retention,
            tz: Tz::UTC,
            dry_run: self.dry_run,
        }
    }

    fn sets(&self, inv: &Inventory) -> BTreeMap<String, DestSet> {
        inv.instances.get(UUID).cloned().unwrap_or_default()
    }

    fn destination(&self) -> SidePlan {
        let inv = Inventory::from_rows(&self.rows);
        let known = |name: &str| self.known.contains(&name);
        destination_side(&self.rules(), UUID, &self.sets(&inv), known)
    }

    fn provider(&self) -> SidePlan {
        let inv = Inventory::from_rows(&self.rows);
        let facts = ProviderFacts {
            records: self.records.clone(),
            jobs: &self.jobs,
            provider_tz: Tz::UTC,
            now: self.now,
        };
        provider_side(&self.rules(), &inv, UUID, &self.sets(&inv), &facts)
    }
}

fn row<'a>(side: &'a SidePlan, set: &str) -> &'a Planned {
    side.rows
        .iter()
        .find(|p| p.row.set == set)
        .unwrap_or_else(|| panic!("no row for {set}: {:#?}", side.rows))
}

fn sets_of(side: &SidePlan) -> Vec<&str> {
    side.rows.iter().map(|p| p.row.set.as_str()).collect()
}

/// Three verified jobs J < K < L, each with its provider backup listed.
fn three_jobs(destination: KeepRules, provider: Option<KeepRules>) -> Fixture {
    let mut f = Fixture::new(destination, provider);
    for (job, t, start) in [
        ("J", "2026-05-01T00:00:00Z", "2026-05-01 00:00:00"),
        ("K", "2026-05-02T00:00:00Z", "2026-05-02 00:00:00"),
        ("L", "2026-05-03T00:00:00Z", "2026-05-03 00:00:00"),
    ] {
        let backup = format!("b{job}");
        f.rows.push(dest_copy(job, &backup, "a", t));
        f.rows.push(provider_copy(job, &backup, t));
        f.records.push(record(&backup, Some(job), start));
    }
    f
}

#[test]
fn destination_side_deletes_what_retention_lets_go_with_every_copy_of_the_set() {
    let mut f = three_jobs(keep_last(2), None);
    f.rows
        .push(dest_copy("J", "bJ-shard1", "a", "2026-05-01T00:00:00Z"));
    let side = f.destination();
    assert_eq!(sets_of(&side), ["L", "K", "J"], "newest first");
    assert!(row(&side, "L").row.keep && row(&side, "K").row.keep);
    let j = row(&side, "J");
    assert!(!j.row.keep);
    assert_eq!(j.row.reasons, [Reason::NoRuleKeeps]);
    assert_eq!(j.row.backup_ids, ["bJ", "bJ-shard1"]);
    let Some(Deletion::Destination(copies)) = &j.deletion else {
        panic!("J is deleted: {:?}", j.deletion)
    };
    assert_eq!(copies.len(), 2, "a set is deleted whole");
    assert!(side.blocked.is_empty());
}

#[test]
fn dry_run_plans_the_same_decisions_but_deletes_nothing() {
    let mut f = three_jobs(keep_last(1), Some(keep_last(1)));
    let live = (f.destination(), f.provider());
    f.dry_run = true;
    let dry = (f.destination(), f.provider());
    for (live, dry) in [(&live.0, &dry.0), (&live.1, &dry.1)] {
        let decisions = |s: &SidePlan| -> Vec<(String, bool, Vec<Reason>)> {
            s.rows
                .iter()
                .map(|p| (p.row.set.clone(), p.row.keep, p.row.reasons.clone()))
                .collect()
        };
        assert_eq!(decisions(live), decisions(dry));
        assert_eq!(live.rows.iter().filter(|p| p.deletion.is_some()).count(), 2);
        assert!(dry.rows.iter().all(|p| p.deletion.is_none()));
        assert_eq!(dry.rows.iter().filter(|p| !p.row.keep).count(), 2);
    }
}

#[test]
fn a_copy_in_a_destination_that_left_the_config_is_kept_with_destination_gone() {
    let mut f = Fixture::new(keep_last(1), None);
    f.rows = vec![
        dest_copy("J", "bJ", "old", "2026-05-01T00:00:00Z"),
        dest_copy("K", "bK", "a", "2026-05-02T00:00:00Z"),
        dest_copy("L", "bL", "a", "2026-05-03T00:00:00Z"),
    ];
    let side = f.destination();
    let j = row(&side, "J");
    assert!(j.row.keep);
    assert_eq!(j.row.reasons, [Reason::DestinationGone("old".into())]);
    assert!(j.deletion.is_none());
    assert!(!row(&side, "K").row.keep, "a reachable set still goes");

    // A set a rule keeps says so, wherever its copy is.
    f.retention.destination = keep_last(3);
    let side = f.destination();
    assert_eq!(row(&side, "J").row.reasons, [Reason::Last(3)]);
}

#[test]
fn the_last_verified_copy_is_never_deleted_whatever_fails_after_it() {
    let mut f = Fixture::new(keep_last(1), None);
    let mut bad = dest_copy("K", "bK-1", "a", "2026-05-02T00:00:00Z");
    bad.verified = 0; // one shard of a newer cluster backup failed re-verification
    let mut missing = dest_copy("L", "bL", "a", "2026-05-03T00:00:00Z");
    missing.missing = 1;
    f.rows = vec![
        dest_copy("J", "bJ", "a", "2026-01-01T00:00:00Z"),
        dest_copy("K", "bK-0", "a", "2026-05-02T00:00:00Z"),
        bad,
        missing,
    ];
    let side = f.destination();
    assert!(side.rows.iter().all(|p| p.row.keep && p.deletion.is_none()));
    assert_eq!(row(&side, "J").row.reasons, [Reason::Last(1)]);
    assert!(row(&side, "J").row.verified);
    assert_eq!(row(&side, "K").row.reasons, [Reason::Unverified]);
    assert!(!row(&side, "K").row.verified);
    assert_eq!(row(&side, "L").row.reasons, [Reason::Unverified]);
}

#[test]
fn a_provider_record_with_no_verified_copy_is_kept() {
    let mut f = three_jobs(keep_last(3), Some(keep_last(1)));
    // J's only copy failed re-verification: its provider backup is the one good source left.
    f.rows[0].verified = 0;
    let side = f.provider();
    let j = row(&side, "J");
    assert!(j.row.keep && j.deletion.is_none());
    assert!(!j.row.verified);
    assert_eq!(j.row.reasons, [Reason::DestinationNotVerified]);
    assert!(
        !row(&side, "K").row.keep,
        "K is verified and no rule keeps it"
    );
}

#[test]
fn a_record_that_only_carries_a_jobs_desc_token_is_its_own_kept_set() {
    let mut f = three_jobs(keep_last(3), Some(keep_last(1)));
    // An extra backup made with J's `Desc` copied: nothing verified it.
    f.records
        .push(record("bX", Some("J"), "2026-05-01 00:05:00"));
    let side = f.provider();
    let x = row(&side, "bX");
    assert!(x.row.keep && x.deletion.is_none());
    assert_eq!(x.row.reasons, [Reason::NoVerifiedCopyOfThisBackup]);
    assert_eq!(x.row.backup_ids, ["bX"]);
    assert_eq!(x.row.time, at("2026-05-01T00:05:00Z"), "its own start time");
    assert!(!x.row.verified);
    // J's own record still goes, alone.
    let j = row(&side, "J");
    assert!(!j.row.keep);
    let Some(Deletion::Provider {
        records, reclaim, ..
    }) = &j.deletion
    else {
        panic!("J is deleted: {:?}", j.deletion)
    };
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].backup_id, "bJ");
    assert!(!reclaim);
}

#[test]
fn a_token_record_of_a_job_unknown_to_the_state_db_is_listed_and_never_planned() {
    let mut f = three_jobs(keep_last(3), Some(keep_last(1)));
    f.records
        .push(record("bU", Some("U"), "2026-04-01 00:00:00"));
    f.jobs.insert("U".into(), JobLookup::NotFound);
    let side = f.provider();
    assert_eq!(
        side.unknown,
        [UnknownBackup {
            instance_uuid: UUID.into(),
            backup_id: "bU".into(),
            job_id: "U".into(),
        }]
    );
    assert!(!sets_of(&side).contains(&"bU") && !sets_of(&side).contains(&"U"));
}

#[test]
fn a_token_record_of_another_policys_job_is_that_policys_business() {
    let mut f = three_jobs(keep_last(3), Some(keep_last(1)));
    f.records
        .push(record("bO", Some("O"), "2026-04-01 00:00:00"));
    f.jobs.insert(
        "O".into(),
        JobLookup::Found {
            policy: "hourly".into(),
            state: crate::job::State::Stored,
        },
    );
    let side = f.provider();
    assert_eq!(sets_of(&side), ["L", "K", "J"]);
    assert!(side.unknown.is_empty() && side.problems.is_empty());
}

#[test]
fn a_job_that_cannot_be_looked_up_is_a_problem_and_its_record_is_not_planned() {
    let mut f = three_jobs(keep_last(3), Some(keep_last(1)));
    f.records
        .push(record("bU", Some("U"), "2026-04-01 00:00:00"));
    f.jobs
        .insert("U".into(), JobLookup::Failed("database is locked".into()));
    let side = f.provider();
    assert_eq!(
        side.problems,
        ["policy nightly: backup bU: cannot look up job U: database is locked"]
    );
    assert_eq!(sets_of(&side), ["L", "K", "J"]);
}

#[test]
fn a_backup_rdbvault_did_not_create_is_never_a_candidate() {
    let mut f = three_jobs(keep_last(3), Some(keep_last(1)));
    f.records
        .push(record("auto-1", None, "2026-04-01 00:00:00"));
    let side = f.provider();
    let a = row(&side, "auto-1");
    assert!(a.row.keep && a.deletion.is_none());
    assert_eq!(a.row.reasons, [Reason::NotCreatedByRdbvault]);
    assert_eq!(
        a.row.instance_name, "prod-1",
        "named after the instance's sets"
    );
}

#[test]
fn without_provider_rules_nothing_is_deleted_at_the_provider() {
    let mut f = three_jobs(keep_last(1), None);
    f.records
        .push(record("auto-1", None, "2026-04-01 00:00:00"));
    let side = f.provider();
    assert!(side.rows.iter().all(|p| p.row.keep && p.deletion.is_none()));
    assert_eq!(row(&side, "J").row.reasons, [Reason::NoProviderRules]);
    assert_eq!(
        row(&side, "auto-1").row.reasons,
        [Reason::NotCreatedByRdbvault]
    );
}

#[test]
fn the_circuit_breaker_blocks_every_deletion_of_a_side() {
    let mut f = three_jobs(keep_last(1), Some(keep_last(1)));
    f.retention.max_deletions_per_run = 1;
    for side in [f.destination(), f.provider()] {
        assert_eq!(side.blocked.len(), 1, "{:?}", side.blocked);
        assert!(side.rows.iter().all(|p| p.row.keep && p.deletion.is_none()));
        assert!(
            row(&side, "J")
                .row
                .reasons
                .contains(&Reason::CircuitBreaker)
        );
    }
}

/// K is verified; F failed a day before it, its backup never copied.
fn failed_before_a_verified_job() -> Fixture {
    let mut f = Fixture::new(keep_last(3), Some(keep_last(5)));
    f.retention.reclaim_uncopied_after = Some(Duration::from_secs(86_400));
    f.rows = vec![
        dest_copy("K", "bK", "a", "2026-05-02T00:00:00Z"),
        provider_copy("K", "bK", "2026-05-02T00:00:00Z"),
    ];
    f.records = vec![
        record("bF", Some("F"), "2026-05-01 00:00:00"),
        record("bK", Some("K"), "2026-05-02 00:00:00"),
    ];
    f.jobs.insert("F".into(), found("failed"));
    f
}

#[test]
fn reclaim_uncopied_after_lets_go_only_once_the_age_is_passed() {
    let mut f = failed_before_a_verified_job();
    let clock = ManualClock::new(at("2026-05-02T00:00:00Z")); // exactly 1d after F
    f.now = clock.now();
    let side = f.provider();
    let fr = row(&side, "F");
    assert!(
        fr.row.keep && fr.deletion.is_none(),
        "not older than 1d yet"
    );
    assert_eq!(fr.row.reasons, [Reason::DestinationNotVerified]);

    clock.advance(chrono::Duration::seconds(1));
    f.now = clock.now();
    let side = f.provider();
    let fr = row(&side, "F");
    assert!(!fr.row.keep);
    assert_eq!(
        fr.row.reasons,
        [Reason::ReclaimUncopied(format_duration(
            Duration::from_secs(86_400)
        ))]
    );
    assert!(matches!(
        &fr.deletion,
        Some(Deletion::Provider { reclaim: true, records, .. }) if records.len() == 1
    ));
    assert!(row(&side, "K").row.keep);
}

#[test]
fn reclaim_takes_only_a_failed_or_missed_job_of_this_policy() {
    let mut f = failed_before_a_verified_job();
    for (lookup, reclaimed) in [
        (found("failed"), true),
        (found("missed"), true),
        (found("transferring"), false),
        (found("stored"), false),
    ] {
        f.jobs.insert("F".into(), lookup.clone());
        let side = f.provider();
        assert_eq!(!row(&side, "F").row.keep, reclaimed, "{lookup:?}");
    }
    // Known to the inventory (so planned) but the lookup says another policy's: left alone.
    f.rows
        .push(provider_copy("F", "bF", "2026-05-01T00:00:00Z"));
    f.jobs.insert(
        "F".into(),
        JobLookup::Found {
            policy: "hourly".into(),
            state: crate::job::State::Failed,
        },
    );
    assert!(row(&f.provider(), "F").row.keep);
}

#[test]
fn reclaim_never_takes_the_newest_backup_a_pinned_one_or_one_without_a_newer_verified_set() {
    // The failed job's backup is the instance's newest provider backup (even though M, newer
    // still, has a verified copy whose provider backup is gone).
    let mut f = failed_before_a_verified_job();
    f.records[0].start_time = "2026-05-03 00:00:00".into();
    f.rows
        .push(dest_copy("M", "bM", "a", "2026-05-04T00:00:00Z"));
    f.now = at("2026-06-01T00:00:00Z");
    assert!(row(&f.provider(), "F").row.keep);

    // No verified set newer than it at the destination (K's copy is missing).
    let mut f = failed_before_a_verified_job();
    f.rows[0].missing = 1;
    assert!(row(&f.provider(), "F").row.keep);

    // Pinned.
    let mut f = failed_before_a_verified_job();
    let mut pin = provider_copy("F", "bF", "2026-05-01T00:00:00Z");
    pin.verified = 0;
    pin.pinned = 1;
    f.rows.push(pin);
    let side = f.provider();
    assert!(row(&side, "F").row.keep);
    assert!(row(&side, "F").row.pinned);
}

#[test]
fn reclaim_that_would_pass_max_deletions_reclaims_nothing_and_says_so() {
    let mut f = failed_before_a_verified_job();
    f.retention.max_deletions_per_run = 0;
    let side = f.provider();
    assert_eq!(
        side.blocked,
        [
            "reclaiming 1 uncopied provider backup(s) besides 0 deletion(s) would exceed max_deletions_per_run (0): none reclaimed"
        ]
    );
    assert!(row(&side, "F").row.keep);
}

#[test]
fn the_inventory_counts_pruned_copies_and_one_bad_shard_unverifies_a_job() {
    let mut bad = dest_copy("C", "bC-1", "a", "2026-05-01T00:00:00Z");
    bad.verified = 0;
    let mut pruned = dest_copy("D", "bD", "a", "2026-04-01T00:00:00Z");
    pruned.deleted_at = Some(1);
    let mut pinned = provider_copy("E", "bE", "2026-04-02T00:00:00Z");
    pinned.pinned = 1;
    pinned.instance_uuid = "other-instance".into();
    let inv = Inventory::from_rows(&[
        dest_copy("C", "bC-0", "a", "2026-05-01T00:00:00Z"),
        bad,
        pruned,
        pinned,
    ]);
    assert_eq!(inv.verified_jobs, BTreeSet::from(["D".to_string()]));
    assert_eq!(inv.verified_backups["C"], BTreeSet::from(["bC-0".into()]));
    assert!(inv.verified_backups.contains_key("D"));
    let sets = &inv.instances[UUID];
    assert_eq!(
        sets.keys().collect::<Vec<_>>(),
        ["C"],
        "a pruned set is gone"
    );
    assert_eq!(sets["C"].copies.len(), 2);
    assert!(
        inv.instances["other-instance"].is_empty(),
        "provider copies only: still planned"
    );
    assert_eq!(inv.pinned_jobs, BTreeSet::from(["E".to_string()]));

    assert!(inv.has_verified_copy(&record("bC-0", Some("C"), "")));
    assert!(!inv.has_verified_copy(&record("bC-1", Some("C"), "")));
    assert!(!inv.has_verified_copy(&record("bC-0", None, "")));
}

mod properties;
