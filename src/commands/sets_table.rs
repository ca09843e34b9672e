//! The table of backup sets that `backups`, `prune` and `backup-now --dry-run` print: one line
//! per set and location with retention's decision and its reasons, then what was blocked, the
//! problems and the provider backups this state DB does not know.

use crate::prune::{Mode, Report};
use crate::store::Store;
use std::collections::HashMap;

/// Where the rows of a table come from: the report, the short id of each set (a job id is
/// shown as its shortest unique start, see [`Store::short_ids`]) and, for `backups`, more
/// columns of a label per row (VERIF, DRILL).
pub(super) struct SetsTable<'a> {
    pub report: &'a Report,
    pub mode: Mode,
    pub columns: Vec<(&'static str, &'a [String])>,
    pub short: HashMap<String, String>,
}

impl<'a> SetsTable<'a> {
    /// The table of `report`, with short set ids looked up in `store`; `columns`: a header and
    /// a label per row each.
    pub async fn new(
        store: &Store,
        report: &'a Report,
        mode: Mode,
        columns: Vec<(&'static str, &'a [String])>,
    ) -> crate::store::Result<Self> {
        let mut sets: Vec<String> = report.rows.iter().map(|r| r.set.clone()).collect();
        sets.sort();
        sets.dedup();
        Ok(Self {
            report,
            mode,
            columns,
            short: store.short_ids(&sets).await?,
        })
    }

    /// The lines of the table, header first.
    pub fn lines(&self) -> Vec<String> {
        let report = self.report;
        let set = |s: &'a str| self.short.get(s).map_or(s, String::as_str);
        let set_w = report
            .rows
            .iter()
            .map(|r| set(&r.set).len())
            .max()
            .unwrap_or(0)
            .max(crate::store::lookup::SHORT_ID_LEN)
            .max("SET".len());
        let widths: Vec<usize> = self
            .columns
            .iter()
            .map(|(head, labels)| {
                labels
                    .iter()
                    .map(String::len)
                    .max()
                    .unwrap_or(0)
                    .max(head.len())
            })
            .collect();
        let extra = |i: Option<usize>| -> String {
            // Without columns, the two spaces the table has always had before DECISION.
            if self.columns.is_empty() {
                return " ".into();
            }
            self.columns
                .iter()
                .zip(&widths)
                .map(|((head, labels), w)| {
                    let text = match i {
                        None => head,
                        Some(i) => labels.get(i).map_or("", String::as_str),
                    };
                    format!("{text:<w$} ")
                })
                .collect()
        };
        let mut lines = vec![format!(
            "{:<11} {:<12} {:<18} {:<19} {:<set_w$} {}DECISION: REASONS",
            "LOCATION",
            "POLICY",
            "INSTANCE",
            "TIME (UTC)",
            "SET",
            extra(None),
        )];
        for (i, r) in report.rows.iter().enumerate() {
            let name = if r.instance_name.is_empty() {
                &r.instance_uuid
            } else {
                &r.instance_name
            };
            let decision = match (r.keep, self.mode) {
                (true, _) => "keep",
                (false, Mode::DryRun) => "would delete",
                (false, _) => "delete",
            };
            let outcome = match &r.deleted {
                Some(Ok(())) => " (deleted)".to_string(),
                Some(Err(e)) => format!(" (FAILED: {e})"),
                None => String::new(),
            };
            let reasons: Vec<String> = r.reasons.iter().map(ToString::to_string).collect();
            lines.push(format!(
                "{:<11} {:<12} {:<18} {:<19} {:<set_w$} {}{decision}: {}{outcome}",
                format!("{:?}", r.location).to_lowercase(),
                r.policy,
                name,
                r.time.format("%Y-%m-%d %H:%M:%S"),
                set(&r.set),
                extra(Some(i)),
                reasons.join(", ")
            ));
        }
        for (policy, instance, location, why) in &report.blocked {
            lines.push(format!("BLOCKED {policy} {instance} {location:?}: {why}"));
        }
        for p in &report.problems {
            lines.push(format!("PROBLEM {p}"));
        }
        for u in &report.unknown_to_state_db {
            lines.push(format!(
                "UNKNOWN provider backup {} of {}: its Desc names job {}, unknown to this state DB (another rdbvault's, or a replaced DB); never touched",
                u.backup_id, u.instance_uuid, u.job_id
            ));
        }
        lines
    }

    /// Prints the table on stdout.
    pub fn print(&self) {
        for line in self.lines() {
            outln!("{line}");
        }
    }
}
