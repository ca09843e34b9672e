//! The one validation pass from the [`raw`](super::raw) structs to the [model](super::model).
//!
//! Every value is turned into its type and every cross-reference checked, and every problem is
//! recorded rather than returned, so the user sees all of them at once, each located at
//! `file:line:column` through [`locate`] by its YAML path. A value with a problem is replaced
//! by its default so validation can go on; the result is then discarded.
//!
//! This file holds the [`Validator`], its checks for single values, and the order of the pass.
//! The sections are checked in their own files: [`cds`](mod@cds) (the API client),
//! [`service`] (state, http, log, limits, verify), [`destination`] and [`policy`]. Problems are
//! reported in the order the checks run, which is the order of the sections here.

mod cds;
mod destination;
mod notify;
mod policy;
pub(crate) mod service;

use super::locate;
use super::model::{CdsConfig, Config};
use super::raw::{RawCds, RawConfig, Text};
use super::{Problem, units};
use chrono_tz::Tz;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Validates a whole config file; `index` locates paths in its text, `source` is the file.
///
/// # Errors
/// Every problem found, in the order the checks ran.
pub(super) fn config(
    raw: RawConfig,
    index: &locate::Index,
    source: &Path,
) -> Result<Config, Vec<Problem>> {
    let mut v = Validator::new(index, source);
    let config = v.config(raw, source);
    v.finish(config)
}

/// Validates only the `cds` section (for commands that need nothing else).
///
/// # Errors
/// Every problem found in the section.
pub(super) fn cds(
    raw: &RawCds,
    index: &locate::Index,
    source: &Path,
) -> Result<CdsConfig, Vec<Problem>> {
    let mut v = Validator::new(index, source);
    let cds = v.cds(raw);
    v.finish(cds)
}

struct Validator<'a> {
    index: &'a locate::Index,
    problems: Vec<Problem>,
    /// The config file's directory, absolute: relative paths in the file are taken from here.
    base: Option<PathBuf>,
}

/// The closest of `candidates` to `given`, if it is close enough to be a likely typo.
fn suggest<'c>(given: &str, candidates: impl IntoIterator<Item = &'c str>) -> Option<&'c str> {
    candidates
        .into_iter()
        .map(|c| {
            (
                strsim::jaro_winkler(&given.to_lowercase(), &c.to_lowercase()),
                c,
            )
        })
        .filter(|(score, _)| *score > 0.85)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// Names people write for a zone that are not IANA names: abbreviations (rdbvault itself prints
/// Shanghai times as `CST`), cities that are not zone names, fixed offsets.
fn zone_alias(given: &str) -> Option<&'static str> {
    let key = given.trim().to_ascii_lowercase().replace([' ', '_'], "");
    Some(match key.as_str() {
        "cst" | "china" | "chinastandardtime" | "beijing" | "asia/beijing" | "asia/chongqing"
        | "gmt+8" | "utc+8" | "utc+08:00" | "+08:00" | "+0800" | "cst-8" => "Asia/Shanghai",
        "hkt" | "hongkong" => "Asia/Hong_Kong",
        "sgt" | "singapore" => "Asia/Singapore",
        "jst" | "tokyo" => "Asia/Tokyo",
        "kst" | "seoul" => "Asia/Seoul",
        _ => return None,
    })
}

fn did_you_mean(s: Option<&str>) -> String {
    s.map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default()
}

impl<'a> Validator<'a> {
    fn new(index: &'a locate::Index, source: &Path) -> Self {
        Validator {
            index,
            problems: Vec::new(),
            base: super::base_dir(source),
        }
    }

    /// `value` if nothing was wrong, else every problem.
    fn finish<T>(self, value: T) -> Result<T, Vec<Problem>> {
        if self.problems.is_empty() {
            Ok(value)
        } else {
            Err(self.problems)
        }
    }

    /// The whole file, section by section. The order of the calls is the order of the problems.
    fn config(&mut self, raw: RawConfig, source: &Path) -> Config {
        let cds = self.cds(&raw.cds);
        let state = self.state(&raw.state);
        let http = self.http(&raw.http);
        let log = self.log(&raw.log);
        let limits = self.limits(&raw.limits);
        let verify = self.verify(&raw.verify);
        let drill = self.drill(&raw.drill);
        let destinations = self.destinations(&raw.destinations);
        let policies = self.policies(&raw.policies, &raw.destinations);
        let notify = self.notify(&raw.notify, &policies);
        Config {
            source: source.to_path_buf(),
            cds,
            state,
            http,
            log,
            limits,
            verify,
            drill,
            notify,
            destinations,
            policies,
        }
    }

    /// See [`resolve_path`](super::resolve_path).
    fn path(&self, path: &Path) -> PathBuf {
        super::resolve_path(self.base.as_deref(), path)
    }

    fn problem(&mut self, path: &str, message: impl Into<String>) {
        let loc = self.index.value(path);
        self.problems.push(Problem {
            line: loc.map(|l| l.line),
            column: loc.map(|l| l.column),
            path: path.to_string(),
            message: message.into(),
        });
    }

    fn duration(&mut self, path: &str, value: Option<&Text>, default: Duration) -> Duration {
        match value {
            None => default,
            Some(t) => units::parse_duration(&t.0).unwrap_or_else(|e| {
                self.problem(path, e);
                default
            }),
        }
    }

    fn timezone(&mut self, path: &str, value: Option<&Text>, default: Tz) -> Tz {
        let Some(t) = value else { return default };
        t.0.trim().parse::<Tz>().unwrap_or_else(|_| {
            let hint = zone_alias(&t.0)
                .or_else(|| suggest(&t.0, chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name())));
            self.problem(
                path,
                format!(
                    "unknown timezone `{}`{}; use an IANA name such as Asia/Shanghai or UTC",
                    t.0,
                    did_you_mean(hint)
                ),
            );
            default
        })
    }

    fn choice<T: Copy>(
        &mut self,
        path: &str,
        value: Option<&Text>,
        options: &[(&str, T)],
        default: T,
    ) -> T {
        let Some(t) = value else { return default };
        match options.iter().find(|(name, _)| *name == t.0.trim()) {
            Some((_, v)) => *v,
            None => {
                let names: Vec<_> = options.iter().map(|(n, _)| *n).collect();
                self.problem(
                    path,
                    format!("`{}` is not one of: {}", t.0, names.join(", ")),
                );
                default
            }
        }
    }

    fn positive(&mut self, path: &str, value: Option<u32>, default: u32) -> u32 {
        match value {
            Some(0) => {
                self.problem(path, "must be at least 1");
                default
            }
            Some(n) => n,
            None => default,
        }
    }

    /// Destination and policy names end up in object keys and metric labels, so they are held
    /// to characters that are safe in both.
    fn name_ok(&mut self, path: &str, what: &str, name: &str) -> bool {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !name.starts_with('.');
        if !ok {
            self.problem(
                path,
                format!(
                    "{what} name `{name}` must be 1-64 characters of A-Z a-z 0-9 - _ . (it becomes part of object keys and metric labels)"
                ),
            );
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::MINIMAL;
    use crate::config::{CatchUp, DownloadRoute, parse};

    /// A validator over an empty index (no locations), for the checks of single values.
    pub(super) fn check<T>(f: impl FnOnce(&mut Validator<'_>) -> T) -> (T, Vec<Problem>) {
        let index = locate::Index::default();
        let mut v = Validator::new(&index, Path::new("/etc/rdbvault/t.yaml"));
        let value = f(&mut v);
        (value, v.problems)
    }

    /// The YAML paths of the problems, in order.
    pub(super) fn paths(problems: &[Problem]) -> Vec<&str> {
        problems.iter().map(|p| p.path.as_str()).collect()
    }

    fn text(s: &str) -> Text {
        Text(s.to_string())
    }

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = parse(MINIMAL, Path::new("t.yaml")).unwrap();
        assert_eq!(c.cds.endpoint.as_str(), "https://cdsapi.capitalonline.net/");
        assert_eq!(c.cds.timeout, Duration::from_secs(30));
        assert_eq!(c.http.listen.to_string(), "127.0.0.1:9750");
        // Beside the config file, wherever the command runs.
        let here = std::env::current_dir().unwrap();
        assert_eq!(c.state.path, here.join("rdbvault.db"));
        assert_eq!(c.limits.max_concurrent_jobs, 4);
        let p = &c.policies[0];
        assert_eq!(p.schedule.timezone, Tz::UTC);
        assert_eq!(p.schedule.catch_up, CatchUp::Latest);
        assert_eq!(p.download, DownloadRoute::Auto);
        assert_eq!(p.retention.destination.min_verified, 1);
        assert!(p.retention.provider.is_none());
        assert_eq!(c.cds.download_min_rate, 16 << 10);
        assert_eq!(c.cds.download_rate_window, Duration::from_secs(60));
    }

    #[test]
    fn every_problem_is_reported_with_a_location() {
        let text = r#"
cds:
  timeout: 30
destinations:
  local: { type: file, path: /tmp/x }
policies:
  - name: p
    schedule: { cron: "30 2 * *", timezone: Asia/Shangai }
    instances: [ { ip: "not-an-ip" } ]
    destination: locl
    retention: { destination: { min_verified: 2 } }
"#;
        let err = parse(text, Path::new("t.yaml")).unwrap_err();
        assert_eq!(
            paths(&err.problems),
            [
                "cds.timeout",
                "policies[0].schedule.cron",
                "policies[0].schedule.timezone",
                "policies[0].instances[0].ip",
                "policies[0].destination",
                "policies[0].retention.destination"
            ]
        );
        assert!(err.problems.iter().all(|p| p.line.is_some()));
        let text = err.to_string();
        assert!(text.contains("t.yaml:3:12: cds.timeout"), "{text}");
        assert!(text.contains("did you mean `Asia/Shanghai`?"), "{text}");
        assert!(text.contains("did you mean `local`?"), "{text}");
    }

    #[test]
    fn sections_are_reported_in_file_order() {
        let text = "\
cds: { timeout: 0s }
state: { job_lease: 1s }
http: { listen: nowhere }
log: { format: xml }
limits: { max_concurrent_jobs: 0 }
verify: { copies: 0 }
destinations: {}
policies: []
";
        let err = parse(text, Path::new("t.yaml")).unwrap_err();
        assert_eq!(
            paths(&err.problems),
            [
                "cds.timeout",
                "state.job_lease",
                "http.listen",
                "log.format",
                "limits.max_concurrent_jobs",
                "verify.copies",
                "destinations",
                "policies"
            ]
        );
    }

    #[test]
    fn zone_abbreviations_and_beijing_point_at_asia_shanghai() {
        for given in [
            "CST",
            "Asia/Beijing",
            "Beijing",
            "UTC+8",
            "China Standard Time",
        ] {
            assert_eq!(zone_alias(given), Some("Asia/Shanghai"), "{given}");
        }
        assert_eq!(zone_alias("Europe/Berln"), None);
        let (_, problems) = check(|v| v.timezone("t", Some(&text("CST")), Tz::UTC));
        assert!(
            problems[0]
                .message
                .contains("did you mean `Asia/Shanghai`?"),
            "{}",
            problems[0].message
        );
    }

    #[test]
    fn suggestions_are_offered_only_for_likely_typos() {
        let known = ["local", "offsite-s3"];
        assert_eq!(suggest("locl", known), Some("local"));
        assert_eq!(
            suggest("LOCAL", known),
            Some("local"),
            "case does not matter"
        );
        assert_eq!(suggest("archive", known), None);
        assert_eq!(did_you_mean(Some("x")), " (did you mean `x`?)");
        assert_eq!(did_you_mean(None), "");
    }

    #[test]
    fn a_bad_choice_names_the_options_and_keeps_the_default() {
        let options = [("a", 1), ("b", 2)];
        let (v, problems) = check(|v| v.choice("k", Some(&text(" b ")), &options, 0));
        assert_eq!(
            (v, problems.len()),
            (2, 0),
            "surrounding blanks are ignored"
        );
        let (v, problems) = check(|v| v.choice("k", Some(&text("c")), &options, 0));
        assert_eq!(v, 0);
        assert_eq!(problems[0].message, "`c` is not one of: a, b");
        let (v, problems) = check(|v| v.choice("k", None, &options, 9));
        assert_eq!((v, problems.len()), (9, 0));
    }

    #[test]
    fn zero_is_refused_where_at_least_one_is_needed() {
        let (v, problems) = check(|v| v.positive("k", Some(0), 4));
        assert_eq!((v, paths(&problems)), (4, vec!["k"]));
        let (v, problems) = check(|v| v.positive("k", Some(3), 4));
        assert_eq!((v, problems.len()), (3, 0));
    }

    #[test]
    fn names_must_be_safe_in_keys_and_labels() {
        for good in ["a", "prod-1.daily_x", &"n".repeat(64)] {
            let (ok, problems) = check(|v| v.name_ok("k", "policy", good));
            assert!(ok && problems.is_empty(), "{good}");
        }
        for bad in ["", ".hidden", "a/b", "a b", &"n".repeat(65)] {
            let (ok, problems) = check(|v| v.name_ok("k", "policy", bad));
            assert!(!ok, "{bad}");
            assert!(
                problems[0]
                    .message
                    .starts_with(&format!("policy name `{bad}`")),
                "{}",
                problems[0].message
            );
        }
    }

    #[test]
    fn a_relative_path_is_taken_from_the_config_files_directory() {
        let (p, _) = check(|v| v.path(Path::new("./data/x.db")));
        assert_eq!(p, PathBuf::from("/etc/rdbvault/data/x.db"));
    }
}
