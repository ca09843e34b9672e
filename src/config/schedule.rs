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

/// The fields of a 5- or 6-field expression, with the numbers each accepts.
fn fields(count: usize) -> &'static [(&'static str, u32, u32)] {
    const FIVE: [(&str, u32, u32); 5] = [
        ("minute", 0, 59),
        ("hour", 0, 23),
        ("day-of-month", 1, 31),
        ("month", 1, 12),
        ("day-of-week", 0, 7),
    ];
    const SIX: [(&str, u32, u32); 6] = [
        ("second", 0, 59),
        ("minute", 0, 59),
        ("hour", 0, 23),
        ("day-of-month", 1, 31),
        ("month", 1, 12),
        ("day-of-week", 0, 7),
    ];
    if count == 6 { &SIX } else { &FIVE }
}

fn field_names(count: usize) -> String {
    fields(count)
        .iter()
        .map(|(name, lo, hi)| format!("{name} {lo}-{hi}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Names the field and its range when a number is outside it (`minute 61 is outside 0-59`),
/// which the cron parser only reports as "out of bounds", and a word that is no month or day
/// name (`MON-XYZ`), which it reports in its own terms. Steps (`*/90`) must be at least 1 and
/// at most the field's span. Every such problem is named, not only the first. Croner's extras
/// (`L`, `W`, `#`, `?`) are left to the parser.
fn check_field_ranges(expr: &str) -> Result<(), String> {
    const MONTHS: [&str; 12] = [
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ];
    const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
    let parts: Vec<&str> = expr.split_whitespace().collect();
    let mut problems = Vec::new();
    for (part, (name, lo, hi)) in parts.iter().zip(fields(parts.len())) {
        for item in part.split(',') {
            let (range, step) = match item.split_once('/') {
                Some((r, s)) => (r, Some(s)),
                None => (item, None),
            };
            for bound in range.split('-') {
                if let Ok(n) = bound.parse::<u32>()
                    && (n < *lo || n > *hi)
                {
                    problems.push(format!("{name} `{n}` is outside {lo}-{hi}"));
                }
                let word = bound.to_ascii_uppercase();
                let names: &[&str] = match *name {
                    "month" => &MONTHS,
                    "day-of-week" => &DAYS,
                    _ => &[],
                };
                if word.len() >= 2
                    && word.chars().all(|c| c.is_ascii_alphabetic())
                    && word != "LW"
                    && !names.contains(&word.as_str())
                {
                    problems.push(if names.is_empty() {
                        format!("{name} `{bound}` is not a number")
                    } else {
                        format!(
                            "{name} `{bound}` is neither a number nor a name ({})",
                            names.join(" ")
                        )
                    });
                }
            }
            if let Some(step) = step.and_then(|s| s.parse::<u32>().ok())
                && (step == 0 || step > hi - lo + 1)
            {
                problems.push(format!(
                    "the {name} step `/{step}` must be 1 to {}",
                    hi - lo + 1
                ));
            }
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(format!(
        "`{expr}`: {} (fields: {})",
        problems.join("; "),
        field_names(parts.len())
    ))
}

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
        if !trimmed.starts_with('@') {
            check_field_ranges(trimmed)?;
        }
        let cron = parser.parse(trimmed).map_err(|e| {
            format!(
                "`{trimmed}` is not a valid cron expression: {e} (fields: {})",
                field_names(trimmed.split_whitespace().count())
            )
        })?;
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

    /// The shortest time between two consecutive runs among the next `samples` + 1 runs after
    /// `after`; `None` if it fires fewer than twice.
    pub fn shortest_gap(
        &self,
        after: DateTime<Utc>,
        tz: Tz,
        samples: usize,
    ) -> Option<std::time::Duration> {
        self.upcoming(after, tz, samples + 1)
            .windows(2)
            .map(|w| (w[1] - w[0]).to_std().unwrap_or_default())
            .min()
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

    #[test]
    fn a_number_outside_its_field_names_the_field_and_its_range() {
        let e = CronExpr::parse("0 61 * * *").unwrap_err();
        assert!(e.contains("hour `61` is outside 0-23"), "{e}");
        let e = CronExpr::parse("61 3 * * *").unwrap_err();
        assert!(e.contains("minute `61` is outside 0-59"), "{e}");
        let e = CronExpr::parse("0 3 * 13 *").unwrap_err();
        assert!(e.contains("month `13` is outside 1-12"), "{e}");
        let e = CronExpr::parse("0 3 0 * *").unwrap_err();
        assert!(e.contains("day-of-month `0` is outside 1-31"), "{e}");
        let e = CronExpr::parse("75 * * * * *").unwrap_err();
        assert!(e.contains("second `75` is outside 0-59"), "{e}");
        let e = CronExpr::parse("*/0 * * * *").unwrap_err();
        assert!(e.contains("minute step `/0` must be 1 to 60"), "{e}");
        for good in [
            "0 3 * * 1-5",
            "*/15 0-23 1,15 JAN-DEC MON",
            "30 2 * * 7",
            "0 0 L * *",
        ] {
            CronExpr::parse(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
    }
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

    #[test]
    fn every_bad_field_is_named_and_a_word_that_is_no_name_says_so() {
        let e = CronExpr::parse("30 2 * 13 8").unwrap_err();
        assert!(e.contains("month `13` is outside 1-12"), "{e}");
        assert!(e.contains("day-of-week `8` is outside 0-7"), "{e}");
        let e = CronExpr::parse("30 2 * * MON-XYZ").unwrap_err();
        assert!(
            e.contains(
                "day-of-week `XYZ` is neither a number nor a name (SUN MON TUE WED THU FRI SAT)"
            ),
            "{e}"
        );
        assert!(!e.contains("CronPattern"), "{e}");
        assert!(CronExpr::parse("30 2 * JAN-MAR MON-FRI").is_ok());
        assert!(CronExpr::parse("0 0 L * *").is_ok());
    }
}
