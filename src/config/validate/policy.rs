//! Validation of `policies`: each policy's name, schedule, instance selectors, destination
//! (which must name an entry under `destinations`), download route and retention rules.

use super::{Validator, did_you_mean, suggest};
use crate::config::model::{
    CatchUp, DownloadRoute, KeepRules, Policy, Retention, Schedule, Selector,
};
use crate::config::raw::{
    RawDestination, RawKeep, RawPolicy, RawRetention, RawSchedule, RawSelector,
};
use crate::config::schedule::CronExpr;
use crate::config::units;
use chrono_tz::Tz;
use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

/// `schedule.start_window` when unset.
const DEFAULT_START_WINDOW: Duration = Duration::from_secs(3600);

/// `schedule.completion_window` when unset.
const DEFAULT_COMPLETION_WINDOW: Duration = Duration::from_secs(6 * 3600);

/// `retention.max_deletions_per_run` when unset.
const DEFAULT_MAX_DELETIONS_PER_RUN: u32 = 10;

impl Validator<'_> {
    /// Every policy, in file order; names must be unique because jobs, metrics and commands
    /// find a policy by name.
    pub(super) fn policies(
        &mut self,
        raw: &[RawPolicy],
        destinations: &BTreeMap<String, RawDestination>,
    ) -> Vec<Policy> {
        if raw.is_empty() {
            self.problem(
                "policies",
                "no policies: define at least one, or rdbvault has nothing to do",
            );
        }
        let mut policies = Vec::new();
        let mut seen = HashSet::new();
        for (i, p) in raw.iter().enumerate() {
            let policy = self.policy(i, p, destinations);
            if !policy.name.is_empty() && !seen.insert(policy.name.clone()) {
                self.problem(
                    &format!("policies[{i}].name"),
                    format!(
                        "policy name `{}` is used twice; names must be unique",
                        policy.name
                    ),
                );
            }
            policies.push(policy);
        }
        policies
    }

    fn policy(
        &mut self,
        i: usize,
        p: &RawPolicy,
        destinations: &BTreeMap<String, RawDestination>,
    ) -> Policy {
        let base = format!("policies[{i}]");
        let name = self.policy_name(&base, p);
        let schedule = self.schedule(&base, p.schedule.as_ref());
        let instances = self.selectors(&base, &p.instances);
        let destination = self.policy_destination(&base, p, destinations);
        let download = self.choice(
            &format!("{base}.download"),
            p.download.as_ref(),
            &[
                ("intranet", DownloadRoute::Intranet),
                ("public", DownloadRoute::Public),
                ("auto", DownloadRoute::Auto),
            ],
            DownloadRoute::Auto,
        );
        let retention = self.retention(&base, p.retention.as_ref());
        Policy {
            name,
            schedule,
            instances,
            destination,
            download,
            retention,
        }
    }

    /// The policy's name, trimmed; empty (after a problem) when missing.
    fn policy_name(&mut self, base: &str, p: &RawPolicy) -> String {
        match &p.name {
            Some(t) => {
                let n = t.0.trim().to_string();
                self.name_ok(&format!("{base}.name"), "policy", &n);
                n
            }
            None => {
                self.problem(base, "a policy needs `name`");
                String::new()
            }
        }
    }

    /// `instances`: at least one selector; a broken one is reported and left out.
    fn selectors(&mut self, base: &str, raw: &[RawSelector]) -> Vec<Selector> {
        if raw.is_empty() {
            self.problem(
                base,
                "a policy needs `instances`: a list of { uuid: ... }, { name: \"glob\" } or { ip: ... }",
            );
        }
        raw.iter()
            .enumerate()
            .filter_map(|(j, s)| self.selector(&format!("{base}.instances[{j}]"), s))
            .collect()
    }

    fn selector(&mut self, path: &str, s: &RawSelector) -> Option<Selector> {
        let given = [s.uuid.is_some(), s.name.is_some(), s.ip.is_some()]
            .iter()
            .filter(|x| **x)
            .count();
        if given != 1 {
            self.problem(path, "each selector has exactly one of uuid, name or ip");
            return None;
        }
        if let Some(t) = &s.uuid {
            match uuid::Uuid::parse_str(t.0.trim()) {
                Ok(_) => return Some(Selector::Uuid(t.0.trim().to_ascii_lowercase())),
                Err(_) => self.problem(
                    &format!("{path}.uuid"),
                    format!(
                        "`{}` is not an instance uuid (like 5d74bb81-0473-464d-b15b-0ae418619248)",
                        t.0
                    ),
                ),
            }
        } else if let Some(t) = &s.name {
            match globset::Glob::new(t.0.trim()) {
                Ok(g) => {
                    return Some(Selector::Name {
                        pattern: t.0.trim().to_string(),
                        matcher: g.compile_matcher(),
                    });
                }
                Err(e) => self.problem(
                    &format!("{path}.name"),
                    format!("`{}` is not a valid glob: {e}", t.0),
                ),
            }
        } else if let Some(t) = &s.ip {
            match t.0.trim().parse::<IpAddr>() {
                Ok(ip) => return Some(Selector::Ip(ip)),
                Err(_) => self.problem(
                    &format!("{path}.ip"),
                    format!("`{}` is not an IP address", t.0),
                ),
            }
        }
        None
    }

    /// The name of the policy's destination, which must be defined (checked against the raw
    /// entries, so a destination with problems of its own is not reported a second time here).
    fn policy_destination(
        &mut self,
        base: &str,
        p: &RawPolicy,
        destinations: &BTreeMap<String, RawDestination>,
    ) -> String {
        let Some(t) = &p.destination else {
            self.problem(
                base,
                "a policy needs `destination`: the name of an entry under destinations",
            );
            return String::new();
        };
        let d = t.0.trim().to_string();
        if !destinations.contains_key(&d) {
            let hint = suggest(&d, destinations.keys().map(String::as_str));
            let known: Vec<_> = destinations.keys().map(String::as_str).collect();
            self.problem(
                &format!("{base}.destination"),
                format!(
                    "unknown destination `{d}`{}; defined: {}",
                    did_you_mean(hint),
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            );
        }
        d
    }

    fn schedule(&mut self, base: &str, s: Option<&RawSchedule>) -> Schedule {
        let path = format!("{base}.schedule");
        // cannot fail: a constant expression.
        let fallback_cron = CronExpr::parse("@daily").expect("@daily parses");
        let Some(s) = s else {
            self.problem(&path, "missing `schedule` (with at least `cron`)");
            return Schedule {
                cron: fallback_cron,
                timezone: Tz::UTC,
                jitter: Duration::ZERO,
                start_window: DEFAULT_START_WINDOW,
                completion_window: DEFAULT_COMPLETION_WINDOW,
                catch_up: CatchUp::Latest,
            };
        };
        let cron = match &s.cron {
            Some(t) => CronExpr::parse(&t.0).unwrap_or_else(|e| {
                self.problem(&format!("{path}.cron"), e);
                fallback_cron.clone()
            }),
            None => {
                self.problem(&path, "missing `cron`, e.g. cron: \"30 2 * * *\"");
                fallback_cron.clone()
            }
        };
        let timezone = self.timezone(&format!("{path}.timezone"), s.timezone.as_ref(), Tz::UTC);
        // The shortest time between runs, over the coming runs (a weekday cron has 1d and 3d
        // gaps; the shorter one is what a window must fit in).
        let gap = cron.shortest_gap(crate::clock::wall_now(), timezone, 64);
        let (jitter, start_window, completion_window) = self.schedule_windows(&path, s, gap);
        let catch_up = self.choice(
            &format!("{path}.catch_up"),
            s.catch_up.as_ref(),
            &[("none", CatchUp::None), ("latest", CatchUp::Latest)],
            CatchUp::Latest,
        );
        Schedule {
            cron,
            timezone,
            jitter,
            start_window,
            completion_window,
            catch_up,
        }
    }

    /// `(jitter, start_window, completion_window)`. A run that has not started within
    /// `start_window` of its time is recorded as missed, so the jitter must be shorter; and a
    /// run must be over starting before the next one is due, so neither may be longer than the
    /// shortest time between runs (`gap`). The default start window is 1h, or `gap` if shorter.
    fn schedule_windows(
        &mut self,
        path: &str,
        s: &RawSchedule,
        gap: Option<Duration>,
    ) -> (Duration, Duration, Duration) {
        let jitter = self.duration(&format!("{path}.jitter"), s.jitter.as_ref(), Duration::ZERO);
        let default_start = gap.map_or(DEFAULT_START_WINDOW, |g| g.min(DEFAULT_START_WINDOW));
        let start_window = self.duration(
            &format!("{path}.start_window"),
            s.start_window.as_ref(),
            default_start,
        );
        let completion_window = self.duration(
            &format!("{path}.completion_window"),
            s.completion_window.as_ref(),
            DEFAULT_COMPLETION_WINDOW,
        );
        if start_window.is_zero() {
            self.problem(&format!("{path}.start_window"), "must be longer than 0s");
        }
        if completion_window.is_zero() {
            self.problem(
                &format!("{path}.completion_window"),
                "must be longer than 0s",
            );
        }
        if let Some(gap) = gap {
            if !jitter.is_zero() && jitter >= gap {
                self.too_long_for_schedule(path, "jitter", jitter, gap, "shorter than");
            }
            if start_window > gap {
                self.too_long_for_schedule(path, "start_window", start_window, gap, "at most");
            }
        }
        let jitter_fits = gap.is_none_or(|g| jitter < g);
        if jitter_fits && !jitter.is_zero() && jitter >= start_window {
            self.problem(
                &format!("{path}.jitter"),
                format!(
                    "jitter ({}) must be shorter than start_window ({}), or jittered runs would be recorded as missed",
                    units::format_duration(jitter),
                    units::format_duration(start_window)
                ),
            );
        }
        (jitter, start_window, completion_window)
    }

    /// A window too long for the shortest time between runs: a problem naming both.
    fn too_long_for_schedule(
        &mut self,
        path: &str,
        key: &str,
        value: Duration,
        gap: Duration,
        limit: &str,
    ) {
        let gap = units::format_duration(gap);
        self.problem(
            &format!("{path}.{key}"),
            format!(
                "{key} ({}) does not fit between two runs of this schedule ({gap} apart): a run would still be starting when the next one is due; make it {limit} {gap} or run less often",
                units::format_duration(value),
            ),
        );
    }

    fn retention(&mut self, base: &str, r: Option<&RawRetention>) -> Retention {
        let path = format!("{base}.retention");
        let Some(r) = r else {
            self.problem(
                &path,
                "missing `retention`; e.g. retention: { destination: { keep_last: 7 } }",
            );
            return Retention {
                destination: KeepRules::default(),
                provider: None,
                max_deletions_per_run: DEFAULT_MAX_DELETIONS_PER_RUN,
                reclaim_uncopied_after: None,
            };
        };
        let destination = match &r.destination {
            Some(k) => self.keep(&format!("{path}.destination"), k),
            None => {
                self.problem(
                    &path,
                    "missing `destination` rules; e.g. destination: { keep_last: 7 }",
                );
                KeepRules::default()
            }
        };
        if let Some(d) = &r.destination
            && d.reclaim_uncopied_after.is_some()
        {
            self.problem(
                &format!("{path}.destination.reclaim_uncopied_after"),
                "reclaim_uncopied_after applies to provider backups only; move it under retention.provider",
            );
        }
        let provider = r
            .provider
            .as_ref()
            .map(|k| self.keep(&format!("{path}.provider"), k));
        let reclaim_uncopied_after = r
            .provider
            .as_ref()
            .and_then(|k| k.reclaim_uncopied_after.as_ref())
            .map(|t| {
                self.duration(
                    &format!("{path}.provider.reclaim_uncopied_after"),
                    Some(t),
                    Duration::from_secs(7 * 86_400),
                )
            });
        let max_deletions_per_run = self.positive(
            &format!("{path}.max_deletions_per_run"),
            r.max_deletions_per_run,
            DEFAULT_MAX_DELETIONS_PER_RUN,
        );
        Retention {
            destination,
            provider,
            max_deletions_per_run,
            reclaim_uncopied_after,
        }
    }

    /// One set of keep rules (`retention.destination` or `retention.provider`).
    fn keep(&mut self, path: &str, k: &RawKeep) -> KeepRules {
        let mut count = |name: &str, v: Option<u32>| -> Option<u32> {
            if v == Some(0) {
                self.problem(
                    &format!("{path}.{name}"),
                    format!("{name}: 0 keeps nothing; remove the key instead"),
                );
                return None;
            }
            v
        };
        let rules = KeepRules {
            keep_last: count("keep_last", k.keep_last),
            keep_hourly: count("keep_hourly", k.keep_hourly),
            keep_daily: count("keep_daily", k.keep_daily),
            keep_weekly: count("keep_weekly", k.keep_weekly),
            keep_monthly: count("keep_monthly", k.keep_monthly),
            keep_yearly: count("keep_yearly", k.keep_yearly),
            keep_within: k.keep_within.as_ref().map(|t| {
                units::parse_duration(&t.0).unwrap_or_else(|e| {
                    self.problem(&format!("{path}.keep_within"), e);
                    Duration::from_secs(86_400)
                })
            }),
            min_verified: match k.min_verified {
                Some(0) => {
                    self.problem(
                        &format!("{path}.min_verified"),
                        "min_verified must be at least 1: rdbvault never deletes the last verified copy",
                    );
                    1
                }
                Some(n) => n,
                None => 1,
            },
        };
        let all_zero_or_absent = [
            k.keep_last,
            k.keep_hourly,
            k.keep_daily,
            k.keep_weekly,
            k.keep_monthly,
            k.keep_yearly,
        ]
        .iter()
        .all(|v| v.unwrap_or(0) == 0)
            && k.keep_within.is_none();
        if all_zero_or_absent {
            self.problem(
                path,
                "empty retention policy: it would keep nothing beyond min_verified; set at least one of keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly, keep_yearly, keep_within",
            );
        }
        rules
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{check, paths};
    use super::*;
    use crate::config::raw::Text;

    fn text(s: &str) -> Option<Text> {
        Some(Text(s.to_string()))
    }

    fn named(name: &str) -> RawPolicy {
        RawPolicy {
            name: text(name),
            ..RawPolicy::default()
        }
    }

    #[test]
    fn a_policy_name_used_twice_is_reported_at_the_second() {
        let (policies, problems) =
            check(|v| v.policies(&[named("p"), named("q"), named("p")], &BTreeMap::new()));
        assert_eq!(policies.len(), 3, "every policy is validated");
        let twice: Vec<_> = problems
            .iter()
            .filter(|p| p.message.contains("used twice"))
            .map(|p| p.path.as_str())
            .collect();
        assert_eq!(twice, ["policies[2].name"]);
        // A missing name is reported once, as missing, however many policies lack one.
        let (_, problems) = check(|v| {
            v.policies(
                &[RawPolicy::default(), RawPolicy::default()],
                &BTreeMap::new(),
            )
        });
        assert!(!problems.iter().any(|p| p.message.contains("used twice")));
        let (_, problems) = check(|v| v.policies(&[], &BTreeMap::new()));
        assert_eq!(paths(&problems), ["policies"]);
    }

    #[test]
    fn a_selector_has_exactly_one_key_and_a_bad_one_is_left_out() {
        let sel = |uuid: Option<&str>, name: Option<&str>, ip: Option<&str>| RawSelector {
            uuid: uuid.map(|s| Text(s.to_string())),
            name: name.map(|s| Text(s.to_string())),
            ip: ip.map(|s| Text(s.to_string())),
        };
        let raw = [
            sel(None, None, None),
            sel(Some("x"), Some("y"), None),
            sel(Some(" 5D74BB81-0473-464D-B15B-0AE418619248 "), None, None),
            sel(Some("nope"), None, None),
            sel(None, Some("prod-*"), None),
            sel(None, Some("["), None),
            sel(None, None, Some("::1")),
            sel(None, None, Some("300.1.1.1")),
        ];
        let (got, problems) = check(|v| v.selectors("p", &raw));
        assert_eq!(
            paths(&problems),
            [
                "p.instances[0]",
                "p.instances[1]",
                "p.instances[3].uuid",
                "p.instances[5].name",
                "p.instances[7].ip"
            ]
        );
        let shown: Vec<_> = got.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "uuid 5d74bb81-0473-464d-b15b-0ae418619248",
                "name \"prod-*\"",
                "ip ::1"
            ]
        );
        let (got, problems) = check(|v| v.selectors("p", &[]));
        assert!(got.is_empty());
        assert_eq!(paths(&problems), ["p"]);
    }

    #[test]
    fn a_policy_destination_must_be_defined() {
        let mut defined = BTreeMap::new();
        defined.insert("local".to_string(), RawDestination::default());
        let dest = |d: Option<&str>| {
            let p = RawPolicy {
                destination: d.map(|d| Text(d.to_string())),
                ..RawPolicy::default()
            };
            check(|v| v.policy_destination("p", &p, &defined))
        };
        assert_eq!(dest(Some(" local ")), ("local".to_string(), vec![]));
        let (d, problems) = dest(Some("locl"));
        assert_eq!(d, "locl");
        assert_eq!(
            problems[0].message,
            "unknown destination `locl` (did you mean `local`?); defined: local"
        );
        let (d, problems) = dest(None);
        assert_eq!((d.as_str(), paths(&problems)), ("", vec!["p"]));
    }

    #[test]
    fn a_missing_schedule_is_reported_and_gets_the_defaults() {
        let (s, problems) = check(|v| v.schedule("p", None));
        assert_eq!(paths(&problems), ["p.schedule"]);
        assert_eq!(s.cron.as_str(), "@daily");
        assert_eq!(s.timezone, Tz::UTC);
        assert_eq!(
            (s.jitter, s.start_window, s.completion_window, s.catch_up),
            (
                Duration::ZERO,
                Duration::from_secs(3600),
                Duration::from_secs(6 * 3600),
                CatchUp::Latest
            )
        );
        let (s, problems) = check(|v| v.schedule("p", Some(&RawSchedule::default())));
        assert_eq!(paths(&problems), ["p.schedule"], "no cron");
        assert_eq!(s.start_window, Duration::from_secs(3600));
    }

    #[test]
    fn jitter_must_be_shorter_than_the_start_window_and_windows_longer_than_zero() {
        let windows = |jitter: &str, start: &str, completion: &str| {
            check(|v| {
                v.schedule_windows(
                    "s",
                    &RawSchedule {
                        jitter: text(jitter),
                        start_window: text(start),
                        completion_window: text(completion),
                        ..RawSchedule::default()
                    },
                    None,
                )
            })
        };
        let (got, problems) = windows("59m", "1h", "2h");
        assert!(problems.is_empty());
        assert_eq!(got.0, Duration::from_secs(59 * 60));
        assert_eq!(paths(&windows("1h", "1h", "2h").1), ["s.jitter"]);
        assert!(windows("0s", "1h", "2h").1.is_empty(), "no jitter is fine");
        assert_eq!(
            paths(&windows("1m", "0s", "0s").1),
            ["s.start_window", "s.completion_window", "s.jitter"]
        );
    }

    #[test]
    fn windows_must_fit_between_two_runs_and_the_default_start_window_shrinks_to_fit() {
        let windows = |jitter: &str, start: Option<&str>, gap: u64| {
            check(|v| {
                v.schedule_windows(
                    "s",
                    &RawSchedule {
                        jitter: text(jitter),
                        start_window: start.and_then(text),
                        ..RawSchedule::default()
                    },
                    Some(Duration::from_secs(gap)),
                )
            })
        };
        // Every 10 s: the default 1h start window becomes 10 s.
        let (got, problems) = windows("0s", None, 10);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(got.1, Duration::from_secs(10));
        // Daily: the default stays 1h.
        assert_eq!(windows("0s", None, 86_400).0.1, Duration::from_secs(3600));
        // Equal fits; longer does not, and the message names both and the fix.
        assert!(windows("0s", Some("1d"), 86_400).1.is_empty());
        let problems = windows("0s", Some("3d"), 86_400).1;
        assert_eq!(paths(&problems), ["s.start_window"]);
        assert!(
            problems[0].message.contains("(1d apart)")
                && problems[0].message.contains("at most 1d"),
            "{}",
            problems[0].message
        );
        // A jitter as long as the gap is refused once, for the gap.
        assert_eq!(paths(&windows("1d", Some("1d"), 86_400).1), ["s.jitter"]);
    }

    #[test]
    fn keep_rules_refuse_zeros_and_must_keep_something() {
        let (k, problems) = check(|v| {
            v.keep(
                "r",
                &RawKeep {
                    keep_last: Some(0),
                    keep_daily: Some(7),
                    min_verified: Some(0),
                    ..RawKeep::default()
                },
            )
        });
        assert_eq!(paths(&problems), ["r.keep_last", "r.min_verified"]);
        assert_eq!(
            (k.keep_last, k.keep_daily, k.min_verified),
            (None, Some(7), 1)
        );
        let (k, problems) = check(|v| {
            v.keep(
                "r",
                &RawKeep {
                    keep_within: text("2x"),
                    ..RawKeep::default()
                },
            )
        });
        assert_eq!(
            paths(&problems),
            ["r.keep_within"],
            "a bad keep_within still counts"
        );
        assert_eq!(k.keep_within, Some(Duration::from_secs(86_400)));
        let (_, problems) = check(|v| {
            v.keep(
                "r",
                &RawKeep {
                    keep_last: Some(0),
                    ..RawKeep::default()
                },
            )
        });
        assert_eq!(paths(&problems), ["r.keep_last", "r"], "zeros keep nothing");
    }

    #[test]
    fn reclaiming_uncopied_backups_is_a_provider_rule() {
        let keep = |reclaim: Option<&str>| RawKeep {
            keep_last: Some(1),
            reclaim_uncopied_after: reclaim.map(|s| Text(s.to_string())),
            ..RawKeep::default()
        };
        let (r, problems) = check(|v| {
            v.retention(
                "p",
                Some(&RawRetention {
                    destination: Some(keep(Some("1d"))),
                    provider: Some(keep(Some("3d"))),
                    max_deletions_per_run: None,
                }),
            )
        });
        assert_eq!(
            paths(&problems),
            ["p.retention.destination.reclaim_uncopied_after"]
        );
        assert_eq!(
            r.reclaim_uncopied_after,
            Some(Duration::from_secs(3 * 86_400))
        );
        assert_eq!(r.max_deletions_per_run, 10);
        let (r, _) = check(|v| {
            v.retention(
                "p",
                Some(&RawRetention {
                    destination: Some(keep(None)),
                    provider: Some(keep(None)),
                    max_deletions_per_run: Some(3),
                }),
            )
        });
        assert_eq!(r.reclaim_uncopied_after, None, "never, unless set");
        assert_eq!(r.max_deletions_per_run, 3);
    }

    #[test]
    fn a_retention_needs_destination_rules_and_provider_rules_are_optional() {
        let (r, problems) = check(|v| v.retention("p", None));
        assert_eq!(paths(&problems), ["p.retention"]);
        assert!(r.destination.is_empty() && r.provider.is_none());
        let (r, problems) = check(|v| v.retention("p", Some(&RawRetention::default())));
        assert_eq!(paths(&problems), ["p.retention"]);
        assert!(
            r.provider.is_none(),
            "no provider rules: provider backups are never deleted"
        );
    }
}
