//! Cron expressions in a timezone.
//!
//! Accepted: 5 fields (`min hour dom month dow`), 6 fields with leading seconds, and the aliases
//! `@hourly @daily @weekly @monthly @yearly`. Day-of-month and day-of-week are ORed, as in
//! Vixie cron. The next run is computed in the policy's IANA zone each time, never with a frozen
//! UTC offset, so schedules keep their local time across DST changes: a local time that does not
//! exist (spring forward) runs at the first instant after the gap, one that happens twice (fall
//! back) runs once.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use std::fmt;

const ALIASES: [&str; 6] = [
    "@hourly",
    "@daily",
    "@weekly",
    "@monthly",
    "@yearly",
    "@annually",
];

/// A parsed cron expression.
#[derive(Clone)]
pub struct CronExpr {
    text: String,
    cron: Cron,
}

impl fmt::Debug for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CronExpr({:?})", self.text)
    }
}

impl fmt::Display for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl PartialEq for CronExpr {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl CronExpr {
    /// # Errors
    /// A message that says what is wrong and what is accepted.
    pub fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        if trimmed.starts_with('@') {
            if !ALIASES.contains(&trimmed.to_ascii_lowercase().as_str()) {
                return Err(format!(
                    "unknown cron alias `{trimmed}`; use one of {}",
                    ALIASES.join(", ")
                ));
            }
        } else {
            let fields = trimmed.split_whitespace().count();
            if fields != 5 && fields != 6 {
                return Err(format!(
                    "`{trimmed}` has {fields} field{}; a cron expression has 5 (minute hour day-of-month month day-of-week) or 6 (seconds first)",
                    if fields == 1 { "" } else { "s" }
                ));
            }
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build();
        let cron = parser
            .parse(trimmed)
            .map_err(|e| format!("`{trimmed}` is not a valid cron expression: {e}"))?;
        Ok(CronExpr {
            text: trimmed.to_string(),
            cron,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first run strictly after `after`, in `tz`. `None` if the expression never fires again
    /// (e.g. `0 0 30 2 *`).
    pub fn next_after(&self, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&tz);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The next `n` runs after `after`.
    pub fn upcoming(&self, after: DateTime<Utc>, tz: Tz, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n);
        let mut t = after;
        while out.len() < n {
            match self.next_after(t, tz) {
                Some(next) => {
                    out.push(next);
                    t = next;
                }
                None => break,
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn accepts_five_six_fields_and_aliases() {
        for ok in [
            "30 2 * * *",
            "0 30 2 * * *",
            "@hourly",
            "@daily",
            "@weekly",
            "*/15 * * * MON-FRI",
        ] {
            CronExpr::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn rejects_wrong_field_counts_and_garbage() {
        let e = CronExpr::parse("30 2 * *").unwrap_err();
        assert!(e.contains("4 fields"), "{e}");
        assert!(
            CronExpr::parse("0 0 0 1 1 * 2030")
                .unwrap_err()
                .contains("7 fields")
        );
        assert!(CronExpr::parse("61 * * * *").is_err());
        assert!(
            CronExpr::parse("@fortnightly")
                .unwrap_err()
                .contains("@hourly")
        );
    }

    #[test]
    fn next_runs_follow_local_time_in_the_zone() {
        let c = CronExpr::parse("30 2 * * *").unwrap();
        let runs = c.upcoming(utc("2026-01-01T00:00:00Z"), chrono_tz::Asia::Shanghai, 3);
        // 02:30 in Shanghai is 18:30 UTC the day before.
        assert_eq!(runs[0], utc("2026-01-01T18:30:00Z"));
        assert_eq!(runs[1], utc("2026-01-02T18:30:00Z"));
        assert_eq!(runs.len(), 3);
    }

    #[test]
    fn keeps_local_time_across_dst() {
        let c = CronExpr::parse("0 9 * * *").unwrap();
        let tz = chrono_tz::Europe::Berlin;
        // Spring forward 2026-03-29: 09:00 is 08:00 UTC before, 07:00 UTC after.
        let runs = c.upcoming(utc("2026-03-27T12:00:00Z"), tz, 3);
        let local: Vec<_> = runs
            .iter()
            .map(|t| t.with_timezone(&tz).format("%d %H:%M").to_string())
            .collect();
        assert_eq!(local, ["28 09:00", "29 09:00", "30 09:00"]);
        assert_eq!(runs[0], utc("2026-03-28T08:00:00Z"));
        assert_eq!(runs[1], utc("2026-03-29T07:00:00Z"));
    }

    #[test]
    fn nonexistent_local_time_runs_once_after_the_gap_and_repeated_time_runs_once() {
        let tz = chrono_tz::Europe::Berlin;
        let c = CronExpr::parse("30 2 * * *").unwrap();
        // 2026-03-29 02:30 does not exist in Berlin.
        let runs = c.upcoming(utc("2026-03-28T12:00:00Z"), tz, 2);
        assert_eq!(
            runs[0],
            tz.with_ymd_and_hms(2026, 3, 29, 3, 0, 0)
                .unwrap()
                .with_timezone(&Utc)
        );
        // 2026-10-25 02:30 happens twice; it runs once.
        let runs = c.upcoming(utc("2026-10-24T12:00:00Z"), tz, 2);
        let day = |t: &DateTime<Utc>| t.with_timezone(&tz).format("%d").to_string();
        assert_eq!(day(&runs[0]), "25");
        assert_eq!(day(&runs[1]), "26");
    }
}
