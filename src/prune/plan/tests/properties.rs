//! Properties of the prune plan over random histories: jobs of up to three shards, copies
//! verified or not, missing, pruned, pinned, in a destination that left the config; provider
//! records listed or not, extra records with a copied token, foreign backups; every job state.

use super::*;
use proptest::prelude::*;

/// One job: (day, shards, each shard (verified, missing, deleted, destination), pinned,
/// listed at the provider, an extra record with its token, lookup state).
type JobSpec = (u8, Vec<(bool, bool, bool, u8)>, bool, bool, bool, u8);

fn arb_job() -> impl Strategy<Value = JobSpec> {
    (
        0u8..60,
        proptest::collection::vec((any::<bool>(), 0u8..8, 0u8..8, 0u8..3), 0..3),
        0u8..10,
        any::<bool>(),
        0u8..6,
        0u8..4,
    )
        .prop_map(|(day, shards, pin, listed, extra, state)| {
            let shards = shards
                .into_iter()
                .map(|(v, m, d, dest)| (v, m == 0, d == 0, dest))
                .collect();
            (day, shards, pin == 0, listed, extra == 0, state)
        })
}

fn build(
    jobs: &[JobSpec],
    foreign: u8,
) -> (Vec<CopyRow>, Vec<Backup>, BTreeMap<String, JobLookup>) {
    let (mut rows, mut records, mut lookups) = (Vec::new(), Vec::new(), BTreeMap::new());
    let dests = ["a", "b", "gone"];
    for (i, (day, shards, pinned, listed, extra, state)) in jobs.iter().enumerate() {
        let job = format!("J{i:02}");
        let t = at("2026-01-01T00:00:00Z") + chrono::Duration::days(i64::from(*day));
        let ts = t.to_rfc3339();
        let start = t.format("%Y-%m-%d %H:%M:%S").to_string();
        for (s, (verified, missing, deleted, dest)) in shards.iter().enumerate() {
            let mut c = dest_copy(&job, &format!("b{job}-{s}"), dests[*dest as usize], &ts);
            c.verified = i64::from(*verified);
            c.missing = i64::from(*missing);
            c.deleted_at = deleted.then_some(1);
            c.pinned = i64::from(*pinned);
            rows.push(c);
            if *listed {
                records.push(record(&format!("b{job}-{s}"), Some(&job), &start));
            }
        }
        if *extra {
            records.push(record(&format!("x{job}"), Some(&job), &start));
        }
        let state = ["failed", "missed", "stored", "transferring"][*state as usize];
        lookups.insert(job, found(state));
    }
    for n in 0..foreign {
        records.push(record(&format!("auto-{n}"), None, "2026-01-15 00:00:00"));
    }
    (rows, records, lookups)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn prune_plans_keep_their_promises(
        jobs in proptest::collection::vec(arb_job(), 0..12),
        foreign in 0u8..3,
        dest_last in 1u32..4,
        provider_last in proptest::option::of(1u32..4),
        max in 0u32..6,
        reclaim_days in proptest::option::of(1u64..30),
        now_day in 0i64..120,
        dry_run in any::<bool>(),
    ) {
        let (rows, records, lookups) = build(&jobs, foreign);
        let mut f = Fixture::new(keep_last(dest_last), provider_last.map(keep_last));
        f.known = vec!["a", "b"];
        f.retention.max_deletions_per_run = max;
        f.retention.reclaim_uncopied_after = reclaim_days.map(|d| Duration::from_secs(d * 86_400));
        f.now = at("2026-01-01T00:00:00Z") + chrono::Duration::days(now_day);
        f.dry_run = dry_run;
        (f.rows, f.records, f.jobs) = (rows, records, lookups);
        let inv = Inventory::from_rows(&f.rows);
        let (dest, prov) = (f.destination(), f.provider());

        for side in [&dest, &prov] {
            prop_assert!(side.rows.iter().all(|p| !p.row.reasons.is_empty()), "every row says why");
            let deletions = side.rows.iter().filter(|p| p.deletion.is_some()).count();
            prop_assert!(deletions <= max as usize, "{deletions} deletions, max {max}");
            if dry_run {
                prop_assert_eq!(deletions, 0, "a dry run deletes nothing");
            }
            for p in &side.rows {
                prop_assert_eq!(p.deletion.is_some(), !p.row.keep && !dry_run);
                if p.deletion.is_some() {
                    prop_assert!(!p.row.pinned, "a pinned set is deleted");
                }
            }
        }
        for p in &dest.rows {
            if let Some(Deletion::Destination(copies)) = &p.deletion {
                prop_assert!(p.row.verified, "an unverified destination set is deleted");
                prop_assert!(copies.iter().all(|c| c.destination != "gone"), "deleted through a destination that left the config");
            }
        }
        // The newest verified destination set survives.
        if let Some(newest) = dest.rows.iter().filter(|p| p.row.verified).max_by_key(|p| (p.row.time, std::cmp::Reverse(p.row.set.clone()))) {
            prop_assert!(newest.row.keep, "the newest verified set {} is deleted", newest.row.set);
        }
        for p in &prov.rows {
            match &p.deletion {
                Some(Deletion::Provider { set, records, reclaim }) => {
                    prop_assert!(crate::prune::apply::provider_set_deletable(set, *reclaim), "apply's re-check would refuse {set:?}");
                    prop_assert!(*reclaim || records.iter().all(|r| inv.has_verified_copy(r)), "a record without a verified copy is deleted");
                    prop_assert!(set.created_by_rdbvault);
                }
                Some(other) => prop_assert!(false, "a destination deletion at the provider: {other:?}"),
                None => {}
            }
        }
    }
}
