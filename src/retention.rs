//! Which copies to keep and which to delete, and why: a pure function of the copies, the policy
//! and `now`, modelled on rustic's `forget`.
//!
//! The unit is a *backup set*: every copy a job made (one per shard of a cluster instance). A set
//! is kept or deleted whole.
//!
//! Rules, all of which only ever *keep*:
//! - `keep_last N`: the N newest verified sets.
//! - `keep_hourly/daily/weekly/monthly/yearly N`: the newest verified set of each of the N newest
//!   calendar buckets that hold one, buckets taken in the policy's timezone (ISO weeks).
//! - `keep_within D`: every verified set no older than D before the newest verified set (not
//!   before now: a run of failures does not age the good copies out).
//! - `min_verified N`: if the rules keep fewer than N verified sets, the newest verified ones are
//!   kept until there are N.
//! - pinned sets are always kept.
//!
//! Safety rules on the provider side: a backup rdbvault did not create (its `Desc` carries no
//! `rdbvault:` token) is never a candidate, and neither is one whose destination copy is not
//! verified.
//!
//! Finally a circuit breaker: if the plan would delete more than `max_deletions_per_run` sets,
//! it deletes none and says so.
//!
//! Unverified sets (failed re-verification, or vanished) count towards nothing; they are deleted
//! when no rule keeps them. Decisions depend on the set of copies, never on their order.

use crate::config::KeepRules;
use chrono::{DateTime, Datelike, Timelike, Utc};
use chrono_tz::Tz;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Where a copy is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Location {
    Destination,
    Provider,
}

/// One backup set as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    /// Stable identity: the job id, or for a provider backup rdbvault does not know, its id.
    pub id: String,
    /// When the backup was asked for.
    pub time: DateTime<Utc>,
    /// Destination: every copy of the set passed verification and is present.
    /// Provider: the set's destination copies are verified.
    pub verified: bool,
    pub pinned: bool,
    /// Provider side: the backup carries rdbvault's token.
    pub created_by_rdbvault: bool,
}

/// Why a set is kept or deleted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(tag = "rule", content = "detail", rename_all = "snake_case")]
pub enum Reason {
    Pinned,
    NotCreatedByRdbvault,
    DestinationNotVerified,
    Last(u32),
    Hourly(String),
    Daily(String),
    Weekly(String),
    Monthly(String),
    Yearly(String),
    Within(String),
    MinVerified(u32),
    CircuitBreaker,
    /// Kept: the policy has no provider rules, so rdbvault deletes nothing at the provider.
    NoProviderRules,
    /// Deleted: no rule keeps it.
    NoRuleKeeps,
    /// Kept: it failed verification or vanished; not counted by any rule, never auto-deleted.
    Unverified,
    /// Kept: the copy was recorded in a destination that is no longer in the config, so
    /// rdbvault cannot reach it (and will not delete a same-named object elsewhere).
    DestinationGone(String),
    /// Kept: a provider backup carrying rdbvault's token whose own backup id has no verified
    /// copy (an extra backup made with a copied `Desc`, a late shard).
    NoVerifiedCopyOfThisBackup,
    /// Deleted: a failed or missed job's provider backup, older than
    /// `retention.provider.reclaim_uncopied_after`, with a newer verified set of the instance.
    ReclaimUncopied(String),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Pinned => write!(f, "pinned"),
            Reason::NotCreatedByRdbvault => write!(f, "not created by rdbvault: never touched"),
            Reason::DestinationNotVerified => write!(f, "its destination copy is not verified"),
            Reason::Last(n) => write!(f, "keep_last #{n}"),
            Reason::Hourly(b) => write!(f, "keep_hourly {b}"),
            Reason::Daily(b) => write!(f, "keep_daily {b}"),
            Reason::Weekly(b) => write!(f, "keep_weekly {b}"),
            Reason::Monthly(b) => write!(f, "keep_monthly {b}"),
            Reason::Yearly(b) => write!(f, "keep_yearly {b}"),
            Reason::Within(d) => write!(f, "keep_within {d}"),
            Reason::MinVerified(n) => write!(f, "min_verified floor ({n})"),
            Reason::CircuitBreaker => write!(f, "max_deletions_per_run exceeded: nothing deleted"),
            Reason::NoProviderRules => write!(
                f,
                "no provider rules: rdbvault deletes nothing at the provider"
            ),
            Reason::NoRuleKeeps => write!(f, "no rule keeps it"),
            Reason::Unverified => write!(
                f,
                "failed verification or missing: kept for inspection, counted by no rule"
            ),
            Reason::DestinationGone(d) => write!(
                f,
                "its destination `{d}` is no longer in the config: kept (add it back to prune it)"
            ),
            Reason::NoVerifiedCopyOfThisBackup => write!(
                f,
                "no verified copy of this backup id: never deleted at the provider"
            ),
            Reason::ReclaimUncopied(d) => write!(
                f,
                "reclaim_uncopied_after {d}: a failed job's backup, never copied, and a newer verified set exists"
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Decision {
    pub id: String,
    pub keep: bool,
    pub reasons: Vec<Reason>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// One decision per input set, sorted newest first (ties by id).
    pub decisions: Vec<Decision>,
    /// Set when the circuit breaker stopped every deletion.
    pub blocked: Option<String>,
}

impl Plan {
    pub fn deletions(&self) -> impl Iterator<Item = &Decision> {
        self.decisions.iter().filter(|d| !d.keep)
    }
}

/// The calendar rules, each keeping the newest set of its last N buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Calendar {
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Calendar {
    const ALL: [Calendar; 5] = [
        Calendar::Hourly,
        Calendar::Daily,
        Calendar::Weekly,
        Calendar::Monthly,
        Calendar::Yearly,
    ];

    /// How many buckets the rules keep of this kind.
    fn count(self, rules: &KeepRules) -> Option<u32> {
        match self {
            Calendar::Hourly => rules.keep_hourly,
            Calendar::Daily => rules.keep_daily,
            Calendar::Weekly => rules.keep_weekly,
            Calendar::Monthly => rules.keep_monthly,
            Calendar::Yearly => rules.keep_yearly,
        }
    }

    /// The bucket of a time, in the policy's zone.
    fn bucket(self, t: DateTime<Utc>, tz: Tz) -> String {
        let l = t.with_timezone(&tz);
        match self {
            Calendar::Hourly => format!(
                "{}-{:02}-{:02}T{:02}",
                l.year(),
                l.month(),
                l.day(),
                l.hour()
            ),
            Calendar::Daily => format!("{}-{:02}-{:02}", l.year(), l.month(), l.day()),
            Calendar::Weekly => {
                let w = l.iso_week();
                format!("{}-W{:02}", w.year(), w.week())
            }
            Calendar::Monthly => format!("{}-{:02}", l.year(), l.month()),
            Calendar::Yearly => format!("{}", l.year()),
        }
    }

    fn reason(self, bucket: String) -> Reason {
        match self {
            Calendar::Hourly => Reason::Hourly(bucket),
            Calendar::Daily => Reason::Daily(bucket),
            Calendar::Weekly => Reason::Weekly(bucket),
            Calendar::Monthly => Reason::Monthly(bucket),
            Calendar::Yearly => Reason::Yearly(bucket),
        }
    }
}

/// Why each set is kept so far, by set id (an empty entry: no reason yet).
type Reasons<'a> = BTreeMap<&'a str, BTreeSet<Reason>>;

/// Decides for one side (destination or provider) of one instance: the reasons that hold
/// whatever the rules say (pinned, unverified, not rdbvault's), then each keep rule over the
/// sets it may count, then the `min_verified` floor, then the circuit breaker.
pub fn plan(
    sets: &[Set],
    rules: &KeepRules,
    location: Location,
    tz: Tz,
    max_deletions: u32,
) -> Plan {
    // A canonical order, so the input order cannot matter.
    let mut sorted: Vec<&Set> = sets.iter().collect();
    sorted.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| a.id.cmp(&b.id)));
    let mut reasons = standing_reasons(&sorted, location);
    // Sets rules may count: verified, and on the provider side made by rdbvault.
    let candidates: Vec<&Set> = sorted
        .iter()
        .copied()
        .filter(|s| s.verified && (location == Location::Destination || s.created_by_rdbvault))
        .collect();
    keep_by_rules(&candidates, rules, tz, &mut reasons);
    keep_min_verified(&candidates, rules.min_verified, &mut reasons);
    let mut decisions: Vec<Decision> = sorted.iter().map(|s| decide(s, &reasons)).collect();
    let blocked = circuit_breaker(&mut decisions, max_deletions);
    Plan { decisions, blocked }
}

/// The reasons that do not depend on the keep rules.
fn standing_reasons<'a>(sorted: &[&'a Set], location: Location) -> Reasons<'a> {
    let mut reasons = Reasons::new();
    for s in sorted {
        let entry = reasons.entry(s.id.as_str()).or_default();
        if s.pinned {
            entry.insert(Reason::Pinned);
        }
        if location == Location::Destination && !s.verified {
            entry.insert(Reason::Unverified);
        }
        if location == Location::Provider && !s.created_by_rdbvault {
            entry.insert(Reason::NotCreatedByRdbvault);
        } else if location == Location::Provider && !s.verified {
            entry.insert(Reason::DestinationNotVerified);
        }
    }
    reasons
}

/// Adds a reason to a set; every set has an entry (see [`standing_reasons`]).
fn add(reasons: &mut Reasons<'_>, s: &Set, reason: Reason) {
    if let Some(entry) = reasons.get_mut(s.id.as_str()) {
        entry.insert(reason);
    }
}

/// `keep_last`, the calendar rules and `keep_within`, over the candidates (newest first).
fn keep_by_rules(candidates: &[&Set], rules: &KeepRules, tz: Tz, reasons: &mut Reasons<'_>) {
    if let Some(n) = rules.keep_last {
        for (i, s) in candidates.iter().take(n as usize).enumerate() {
            add(reasons, s, Reason::Last(i as u32 + 1));
        }
    }
    for kind in Calendar::ALL {
        let Some(n) = kind.count(rules) else { continue };
        let mut seen = BTreeSet::new();
        for s in candidates {
            if seen.len() >= n as usize {
                break;
            }
            let b = kind.bucket(s.time, tz);
            if seen.insert(b.clone()) {
                add(reasons, s, kind.reason(b));
            }
        }
    }
    if let (Some(within), Some(newest)) = (rules.keep_within, candidates.first()) {
        let from = newest.time - chrono::Duration::from_std(within).unwrap_or_default();
        let label = crate::config::units::format_duration(within);
        for s in candidates.iter().filter(|s| s.time >= from) {
            add(reasons, s, Reason::Within(label.clone()));
        }
    }
}

fn is_kept(reasons: &Reasons<'_>, s: &Set) -> bool {
    reasons.get(s.id.as_str()).is_some_and(|r| !r.is_empty())
}

/// Keeps the newest unkept candidates until `min_verified` are kept.
fn keep_min_verified(candidates: &[&Set], min_verified: u32, reasons: &mut Reasons<'_>) {
    let kept = candidates.iter().filter(|s| is_kept(reasons, s)).count() as u32;
    let mut missing = min_verified.saturating_sub(kept);
    for s in candidates {
        if missing == 0 {
            break;
        }
        if !is_kept(reasons, s) {
            add(reasons, s, Reason::MinVerified(min_verified));
            missing -= 1;
        }
    }
}

/// A set with a reason is kept with all of them; one without is deleted, saying why.
fn decide(s: &Set, reasons: &Reasons<'_>) -> Decision {
    match reasons.get(s.id.as_str()).filter(|r| !r.is_empty()) {
        Some(r) => Decision {
            id: s.id.clone(),
            keep: true,
            reasons: r.iter().cloned().collect(),
        },
        None => Decision {
            id: s.id.clone(),
            keep: false,
            reasons: vec![if s.verified {
                Reason::NoRuleKeeps
            } else {
                Reason::Unverified
            }],
        },
    }
}

/// More deletions than `max_deletions`: keep everything and say why.
fn circuit_breaker(decisions: &mut [Decision], max_deletions: u32) -> Option<String> {
    let deletions = decisions.iter().filter(|d| !d.keep).count();
    if deletions <= max_deletions as usize {
        return None;
    }
    for d in decisions.iter_mut().filter(|d| !d.keep) {
        d.keep = true;
        d.reasons.push(Reason::CircuitBreaker);
    }
    Some(format!(
        "{deletions} deletions planned, more than max_deletions_per_run ({max_deletions}): nothing deleted; raise the limit or prune by hand if this is intended"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn set(id: &str, t: &str) -> Set {
        Set {
            id: id.into(),
            time: at(t),
            verified: true,
            pinned: false,
            created_by_rdbvault: true,
        }
    }

    fn rules() -> KeepRules {
        KeepRules {
            min_verified: 1,
            ..KeepRules::default()
        }
    }

    fn kept(p: &Plan) -> Vec<&str> {
        p.decisions
            .iter()
            .filter(|d| d.keep)
            .map(|d| d.id.as_str())
            .collect()
    }

    #[test]
    fn keep_last_counts_only_verified_sets() {
        let mut sets = vec![
            set("a", "2026-01-01T00:00:00Z"),
            set("b", "2026-01-02T00:00:00Z"),
            set("c", "2026-01-03T00:00:00Z"),
        ];
        sets[2].verified = false; // the newest failed verification
        let p = plan(
            &sets,
            &KeepRules {
                keep_last: Some(1),
                ..rules()
            },
            Location::Destination,
            Tz::UTC,
            10,
        );
        assert_eq!(kept(&p), ["c", "b"]);
        let c = p.decisions.iter().find(|d| d.id == "c").unwrap();
        assert_eq!(
            c.reasons,
            [Reason::Unverified],
            "kept for inspection, counted by no rule"
        );
        let a = p.decisions.iter().find(|d| d.id == "a").unwrap();
        assert!(!a.keep);
    }

    #[test]
    fn min_verified_floor_holds_when_rules_keep_nothing() {
        // Everything is older than keep_within of... the newest verified one, so within keeps it.
        let sets = vec![
            set("a", "2020-01-01T00:00:00Z"),
            set("b", "2020-01-02T00:00:00Z"),
            set("c", "2020-01-03T00:00:00Z"),
        ];
        let r = KeepRules {
            keep_hourly: Some(1),
            min_verified: 2,
            ..KeepRules::default()
        };
        let p = plan(&sets, &r, Location::Destination, Tz::UTC, 10);
        assert_eq!(kept(&p), ["c", "b"]);
        assert!(p.decisions[1].reasons.contains(&Reason::MinVerified(2)));
    }

    #[test]
    fn keep_within_counts_from_the_newest_verified_copy_not_now() {
        let sets = vec![
            set("a", "2020-01-01T00:00:00Z"),
            set("b", "2020-01-05T00:00:00Z"),
            set("c", "2020-01-06T00:00:00Z"),
        ];
        let r = KeepRules {
            keep_within: Some(Duration::from_secs(2 * 86400)),
            ..rules()
        };
        let p = plan(&sets, &r, Location::Destination, Tz::UTC, 10);
        assert_eq!(kept(&p), ["c", "b"]);
    }

    #[test]
    fn provider_side_never_touches_foreign_or_unverified_backups() {
        let mut sets = vec![
            set("mine-old", "2026-01-01T00:00:00Z"),
            set("auto", "2026-01-02T00:00:00Z"),
            set("unverified", "2026-01-03T00:00:00Z"),
            set("mine-new", "2026-01-04T00:00:00Z"),
        ];
        sets[1].created_by_rdbvault = false;
        sets[2].verified = false;
        let p = plan(
            &sets,
            &KeepRules {
                keep_last: Some(1),
                ..rules()
            },
            Location::Provider,
            Tz::UTC,
            10,
        );
        assert_eq!(kept(&p), ["mine-new", "unverified", "auto"]);
        assert!(
            p.decisions
                .iter()
                .find(|d| d.id == "auto")
                .unwrap()
                .reasons
                .contains(&Reason::NotCreatedByRdbvault)
        );
        assert!(
            p.decisions
                .iter()
                .find(|d| d.id == "unverified")
                .unwrap()
                .reasons
                .contains(&Reason::DestinationNotVerified)
        );
    }

    #[test]
    fn pinned_sets_are_kept_and_the_circuit_breaker_blocks_everything() {
        let mut sets: Vec<Set> = (1..=9)
            .map(|d| set(&format!("s{d}"), &format!("2026-01-0{d}T00:00:00Z")))
            .collect();
        sets[0].pinned = true;
        let p = plan(
            &sets,
            &KeepRules {
                keep_last: Some(2),
                ..rules()
            },
            Location::Destination,
            Tz::UTC,
            10,
        );
        assert_eq!(kept(&p), ["s9", "s8", "s1"]);
        let p = plan(
            &sets,
            &KeepRules {
                keep_last: Some(2),
                ..rules()
            },
            Location::Destination,
            Tz::UTC,
            3,
        );
        assert!(p.blocked.is_some());
        assert_eq!(p.deletions().count(), 0);
    }

    /// (kind, zone, times, n, expected kept): calendar buckets across DST, month ends, leap days.
    #[test]
    fn calendar_buckets_table() {
        use Calendar::*;
        let berlin = chrono_tz::Europe::Berlin;
        let shanghai = chrono_tz::Asia::Shanghai;
        type Case<'a> = (Calendar, Tz, Vec<(&'a str, &'a str)>, u32, Vec<&'a str>);
        // One case per line: (rule, zone, sets, N, kept newest first).
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            // Fall back in Berlin: local 02:30 happens twice (00:30Z CEST, 01:30Z CET). Buckets
            // are local wall-clock hours, so both fall in "2026-10-25T02" and the newer is kept.
            (Hourly, berlin, vec![("a", "2026-10-25T00:30:00Z"), ("b", "2026-10-25T01:30:00Z"), ("c", "2026-10-25T02:30:00Z")], 5, vec!["c", "b"]),
            // Spring forward in Berlin: 01:59 CET and 03:01 CEST, minutes apart, same local day;
            // 23:30Z the day before is 00:30 local on the 29th too.
            (Daily, berlin, vec![("a", "2026-03-29T00:59:00Z"), ("b", "2026-03-29T01:01:00Z"), ("c", "2026-03-28T23:30:00Z")], 5, vec!["b"]),
            // Month end in Shanghai: 2026-01-31T16:30Z is already 1 February local.
            (Monthly, shanghai, vec![("jan", "2026-01-31T15:30:00Z"), ("feb", "2026-01-31T16:30:00Z")], 2, vec!["feb", "jan"]),
            (Monthly, Tz::UTC, vec![("jan", "2026-01-31T15:30:00Z"), ("jan2", "2026-01-31T16:30:00Z")], 2, vec!["jan2"]),
            // Leap day: 29 Feb is its own day, and in February.
            (Daily, Tz::UTC, vec![("28", "2028-02-28T12:00:00Z"), ("29", "2028-02-29T12:00:00Z"), ("1", "2028-03-01T12:00:00Z")], 2, vec!["1", "29"]),
            (Monthly, Tz::UTC, vec![("29", "2028-02-29T23:00:00Z"), ("1", "2028-03-01T01:00:00Z")], 1, vec!["1"]),
            // ISO weeks: 2026-12-31 (Thu) and 2027-01-01 (Fri) are both in 2026-W53.
            (Weekly, Tz::UTC, vec![("thu", "2026-12-31T12:00:00Z"), ("fri", "2027-01-01T12:00:00Z"), ("mon", "2027-01-04T12:00:00Z")], 5, vec!["mon", "fri"]),
            // Yearly across a zone's new year.
            (Yearly, shanghai, vec![("a", "2026-12-31T15:00:00Z"), ("b", "2026-12-31T17:00:00Z")], 5, vec!["b", "a"]),
        ];
        for (kind, tz, times, n, want) in cases {
            let sets: Vec<Set> = times.iter().map(|(id, t)| set(id, t)).collect();
            let mut r = rules();
            match kind {
                Hourly => r.keep_hourly = Some(n),
                Daily => r.keep_daily = Some(n),
                Weekly => r.keep_weekly = Some(n),
                Monthly => r.keep_monthly = Some(n),
                Yearly => r.keep_yearly = Some(n),
            }
            assert_eq!(kind.count(&r), Some(n));
            let p = plan(&sets, &r, Location::Destination, tz, 100);
            assert_eq!(kept(&p), want, "{kind:?} in {tz}: {times:?}");
        }
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn arb_set(i: usize) -> impl Strategy<Value = Set> {
        (0i64..3 * 365 * 24, 0u8..10, any::<bool>(), 0u8..20).prop_map(
            move |(hours, v, created, p)| Set {
                id: format!("set-{i}"),
                time: DateTime::from_timestamp(1_700_000_000 + hours * 3600, 0).unwrap(),
                verified: v < 7,
                pinned: p == 0,
                created_by_rdbvault: created,
            },
        )
    }

    fn arb_sets() -> impl Strategy<Value = Vec<Set>> {
        (0usize..30).prop_flat_map(|n| (0..n).map(arb_set).collect::<Vec<_>>())
    }

    fn arb_rules() -> impl Strategy<Value = KeepRules> {
        let opt = || proptest::option::of(1u32..8);
        (
            opt(),
            opt(),
            opt(),
            opt(),
            opt(),
            opt(),
            proptest::option::of(1u64..2000),
            1u32..5,
            0u32..6,
        )
            .prop_map(|(last, h, d, w, m, y, within, min_verified, fallback)| {
                let mut r = KeepRules {
                    keep_last: last,
                    keep_hourly: h,
                    keep_daily: d,
                    keep_weekly: w,
                    keep_monthly: m,
                    keep_yearly: y,
                    keep_within: within.map(|h| std::time::Duration::from_secs(h * 3600)),
                    min_verified,
                };
                if r.is_empty() {
                    r.keep_last = Some(fallback.max(1));
                }
                r
            })
    }

    fn arb_tz() -> impl Strategy<Value = Tz> {
        prop_oneof![
            Just(Tz::UTC),
            Just(chrono_tz::Europe::Berlin),
            Just(chrono_tz::Asia::Shanghai),
            Just(chrono_tz::America::New_York),
            Just(chrono_tz::Australia::Lord_Howe),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        #[test]
        fn retention_invariants_hold_for_random_histories(
            sets in arb_sets(),
            rules in arb_rules(),
            provider in any::<bool>(),
            tz in arb_tz(),
            max_deletions in 0u32..15,
            shuffle_seed in any::<u64>(),
        ) {
            let location = if provider { Location::Provider } else { Location::Destination };
            let p = plan(&sets, &rules, location, tz, max_deletions);
            prop_assert_eq!(p.decisions.len(), sets.len());
            let by_id: BTreeMap<&str, &Set> = sets.iter().map(|s| (s.id.as_str(), s)).collect();

            // Never more deletions than the cap.
            prop_assert!(p.deletions().count() <= max_deletions as usize);
            // Every decision says why.
            prop_assert!(p.decisions.iter().all(|d| !d.reasons.is_empty()));
            for d in p.deletions() {
                let s = by_id[d.id.as_str()];
                prop_assert!(!s.pinned, "a pinned set was deleted");
                prop_assert!(s.verified || provider, "an unverified destination set was deleted");
                if provider {
                    prop_assert!(s.created_by_rdbvault, "deleted a provider backup rdbvault did not create");
                    prop_assert!(s.verified, "deleted a provider backup whose destination copy is not verified");
                }
            }
            // Never below min_verified: the floor counts only verified (eligible) sets.
            let eligible = sets.iter().filter(|s| s.verified && (!provider || s.created_by_rdbvault)).count();
            let kept_eligible = p.decisions.iter().filter(|d| d.keep).filter(|d| {
                let s = by_id[d.id.as_str()];
                s.verified && (!provider || s.created_by_rdbvault)
            }).count();
            prop_assert!(kept_eligible >= eligible.min(rules.min_verified as usize));
            // The newest verified set always survives.
            if let Some(newest) = sets.iter().filter(|s| s.verified && (!provider || s.created_by_rdbvault)).max_by(|a, b| a.time.cmp(&b.time).then_with(|| b.id.cmp(&a.id))) {
                prop_assert!(p.decisions.iter().any(|d| d.id == newest.id && d.keep));
            }
            // The same decisions for any input order.
            let mut shuffled = sets.clone();
            fastrand::Rng::with_seed(shuffle_seed).shuffle(&mut shuffled);
            prop_assert_eq!(plan(&shuffled, &rules, location, tz, max_deletions), p);
        }
    }
}
