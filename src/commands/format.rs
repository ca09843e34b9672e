//! The formatting shared by the commands' output: shortened labels, byte counts, local times and
//! job durations; the progress bars of `backup-now` and `fetch`; the `jobs` table's layout; the
//! pretty JSON every `--json` prints. The commands decide what goes in a cell; this file decides
//! how it looks, so the look is the same everywhere.

use crate::config;
use crate::store::{JobRow, from_ms};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// At most `max` characters of `s`, with `…` when cut. By characters, not bytes: provider ids
/// and instance names may be non-ASCII, and slicing them on a byte offset panics.
fn shorten(s: &str, max: usize) -> String {
    if s.chars().nth(max).is_none() {
        return s.to_string();
    }
    if max == 0 {
        return String::new();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// A progress bar's label: the instance name and the shard's backup id, both shortened by
/// characters so a bar stays one line on a terminal.
pub(super) fn progress_label(instance_name: &str, backup_id: &str) -> String {
    format!("{} {}", shorten(instance_name, 16), shorten(backup_id, 12))
}

pub(super) fn human_bytes(n: i64) -> String {
    let n = n.max(0) as f64;
    for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if n >= size as f64 {
            return format!("{:.1} {unit}", n / size as f64);
        }
    }
    format!("{n} B")
}

pub(super) fn local(ms_value: i64) -> String {
    from_ms(ms_value)
        .with_timezone(&chrono::Local)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// How long a job took, from the `CreateBackup` call (or its creation) to its end; an
/// unfinished job's time so far, until `now_ms` (passed in, so a table reads the clock once).
pub(super) fn duration_of(job: &JobRow, now_ms: i64) -> String {
    let start = job.create_sent_at.unwrap_or(job.created_at);
    let end = job.finished_at.unwrap_or(now_ms);
    let secs = ((end - start).max(0) as f64 / 1000.0).round() as u64;
    config::units::format_duration(std::time::Duration::from_secs(secs))
}

/// The time in the local zone, as the other times of `jobs show`.
pub fn check_local_at(check: &crate::views::CopyCheck) -> String {
    chrono::DateTime::parse_from_rfc3339(&check.at)
        .map(|t| local(t.timestamp_millis()))
        .unwrap_or_else(|_| check.at.clone())
}

/// The time in UTC, as the other times of `backups`.
pub fn check_utc_at(check: &crate::views::CopyCheck) -> String {
    chrono::DateTime::parse_from_rfc3339(&check.at)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|_| check.at.clone())
}

/// Pretty JSON on stdout: what every `--json` prints. A reader that went away (`| head`) ends
/// the output quietly instead of a panic.
pub(super) fn print_json<T: serde::Serialize + ?Sized>(value: &T) {
    use std::io::Write as _;
    // cannot fail: the read models printed are rows of strings and numbers, no non-string map
    // keys.
    let text = serde_json::to_string_pretty(value).expect("serialisable");
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{text}").and_then(|()| out.flush())
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        eprintln!("rdbvault: cannot write to standard output: {e}");
    }
}

/// One row of the `jobs` table, every cell already decided (by `jobs::table_row`).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct JobsRow {
    pub id: String,
    pub policy: String,
    pub instance: String,
    pub state: String,
    pub due: String,
    pub took: String,
    pub bytes: String,
    pub error: String,
}

/// The `jobs` table: the header, then one line per row. STATE is as wide as its longest value
/// (at least 12), so a `stored (copy failed re-verify)` does not push the later columns out of
/// line.
pub(super) fn jobs_table(rows: &[JobsRow]) -> Vec<String> {
    let state_width = rows
        .iter()
        .map(|r| r.state.len())
        .max()
        .unwrap_or(0)
        .max(12);
    let mut lines = Vec::with_capacity(rows.len() + 1);
    lines.push(format!(
        "{:<36}  {:<14} {:<18} {:<state_width$} {:<19} {:>8} {:>10}  ERROR",
        "ID", "POLICY", "INSTANCE", "STATE", "DUE", "TOOK", "BYTES"
    ));
    for r in rows {
        lines.push(format!(
            "{:<36}  {:<14} {:<18} {:<state_width$} {:<19} {:>8} {:>10}  {}",
            r.id, r.policy, r.instance, r.state, r.due, r.took, r.bytes, r.error
        ));
    }
    lines
}

/// `backup-now`'s bars: the label padded so the bars of several shards line up.
const SHARD_BAR: &str = "{msg:30} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}";
/// `fetch`'s single bar.
const FETCH_BAR: &str = "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}";

fn transfer_style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        // cannot fail: the templates are the constants above (a unit test parses both).
        .expect("valid template")
        .progress_chars("=> ")
}

/// `fetch`'s progress bar; hidden when not `visible` (stderr is not a terminal), so logs and
/// pipes get no control characters.
pub(super) fn fetch_bar(total: u64, visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(transfer_style(FETCH_BAR));
    bar.set_message("fetch");
    bar
}

/// `backup-now`'s progress: one bar per shard, added on the shard's first report (a job's
/// shards are known only once the provider has made the backup) and labelled with its
/// instance's name and its backup id. Clones share the bars.
#[derive(Clone)]
pub(super) struct ShardBars {
    bars: MultiProgress,
    by_backup: Arc<Mutex<HashMap<String, ProgressBar>>>,
    /// Job id -> instance name, filled as the jobs are created, for the labels.
    job_names: Arc<Mutex<HashMap<String, String>>>,
}

impl ShardBars {
    /// Bars drawn on stderr when `visible` (a terminal), else kept but never drawn.
    pub(super) fn new(visible: bool) -> ShardBars {
        let bars = MultiProgress::new();
        if !visible {
            bars.set_draw_target(ProgressDrawTarget::hidden());
        }
        ShardBars {
            bars,
            by_backup: Arc::default(),
            job_names: Arc::default(),
        }
    }

    /// Names a job's bars after its instance (before the job runs, so its first bar has it).
    pub(super) fn name_job(&self, job_id: &str, instance_name: &str) {
        self.job_names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(job_id.to_string(), instance_name.to_string());
    }

    /// The reporter the runner calls: (job id, backup id, bytes so far, expected size).
    pub(super) fn reporter(&self) -> crate::services::ProgressFn {
        let bars = self.clone();
        Arc::new(
            move |job: &str, backup: &str, done: u64, total: Option<u64>| {
                bars.report(job, backup, done, total)
            },
        )
    }

    fn report(&self, job: &str, backup: &str, done: u64, total: Option<u64>) {
        // A poisoned lock only means a reporter panicked mid-update: the map is still usable.
        let mut map = self.by_backup.lock().unwrap_or_else(|e| e.into_inner());
        let bar = map.entry(backup.to_string()).or_insert_with(|| {
            // Added before it is styled, so nothing is drawn outside the group.
            let b = self.bars.add(ProgressBar::new(total.unwrap_or(0)));
            b.set_style(transfer_style(SHARD_BAR));
            let names = self.job_names.lock().unwrap_or_else(|e| e.into_inner());
            let name = names.get(job).map(String::as_str).unwrap_or("backup");
            b.set_message(progress_label(name, backup));
            b
        });
        bar.set_position(done);
        if total == Some(done) {
            bar.finish();
        }
    }

    /// Removes the bars from the terminal once every job has ended.
    pub(super) fn clear(&self) {
        self.bars.clear().ok();
    }
}

#[cfg(test)]
mod label_tests {
    use super::*;

    #[test]
    fn labels_shorten_non_ascii_ids_by_characters() {
        let label = progress_label("缓存-生产-一号", "备份-一二三四五六七八九十");
        assert_eq!(label, "缓存-生产-一号 备份-一二三四五六七八…");
        assert_eq!(shorten("备份-一二三四五六七八九十", 12).chars().count(), 12);
        assert_eq!(
            progress_label("prod-cache-01", "0123456789abcdef"),
            "prod-cache-01 0123456789a…"
        );
        assert_eq!(shorten("short", 12), "short");
        assert_eq!(shorten("exactly-12ch", 12), "exactly-12ch");
        assert_eq!(shorten("", 12), "");
        assert_eq!(shorten("abc", 0), "");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_progress_bar_templates_parse() {
        for template in [SHARD_BAR, FETCH_BAR] {
            assert!(ProgressStyle::with_template(template).is_ok(), "{template}");
        }
    }

    fn row(state: &str) -> JobsRow {
        JobsRow {
            id: "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".into(),
            policy: "nightly".into(),
            instance: "prod-cache-01".into(),
            state: state.into(),
            due: "2026-01-02 03:04:05".into(),
            took: "1m 30s".into(),
            bytes: "8.0 MiB".into(),
            error: String::new(),
        }
    }

    #[test]
    fn the_jobs_table_keeps_state_at_least_twelve_wide() {
        let lines = jobs_table(&[row("stored")]);
        assert_eq!(lines.len(), 2);
        let header_err = lines[0].find("ERROR").unwrap();
        assert_eq!(
            &lines[0][..header_err],
            format!(
                "{:<36}  {:<14} {:<18} {:<12} {:<19} {:>8} {:>10}  ",
                "ID", "POLICY", "INSTANCE", "STATE", "DUE", "TOOK", "BYTES"
            )
        );
        assert_eq!(
            lines[1].len(),
            header_err,
            "an empty ERROR ends the row at its column"
        );
    }

    #[test]
    fn the_jobs_table_widens_state_to_its_longest_value_so_columns_stay_aligned() {
        let lines = jobs_table(&[row("stored"), row("stored (copy failed re-verify)")]);
        let due = lines[0].find("DUE").unwrap();
        assert_eq!(lines[1].find("2026-01-02").unwrap(), due);
        assert_eq!(lines[2].find("2026-01-02").unwrap(), due);
    }

    #[test]
    fn an_unfinished_job_has_taken_until_now() {
        let job = JobRow {
            id: "j".into(),
            policy: "p".into(),
            instance_uuid: "u".into(),
            instance_name: "n".into(),
            region_id: String::new(),
            destination: "d".into(),
            trigger: "manual".into(),
            state: crate::job::State::Transferring,
            due_at: 0,
            start_by: 0,
            deadline_at: 0,
            created_at: 0,
            create_sent_at: Some(10_000),
            requested_at: None,
            snapshot_done_at: None,
            transfer_started_at: None,
            transfer_done_at: None,
            verified_at: None,
            finished_at: None,
            attempts: 0,
            next_attempt_at: None,
            bytes: 0,
            error: None,
            owner: None,
            heartbeat_at: None,
        };
        let so_far = duration_of(&job, 100_000);
        assert_eq!(
            so_far,
            duration_of(
                &JobRow {
                    finished_at: Some(100_000),
                    ..job.clone()
                },
                0
            )
        );
        assert_eq!(
            so_far,
            config::units::format_duration(std::time::Duration::from_secs(90))
        );
    }
}
