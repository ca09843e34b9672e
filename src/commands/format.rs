//! The formatting shared by the commands' output: shortened labels, byte counts, local times and
//! job durations; the progress bars of `backup-now` and `fetch`; the `jobs` table's layout; the
//! pretty JSON every `--json` prints. The commands decide what goes in a cell; this file decides
//! how it looks, so the look is the same everywhere.

use super::terminal::BarsOnScreen;
use crate::config;
use crate::store::{JobRow, Store, from_ms};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// At most `max` characters of `s`, the middle replaced by `…` when cut, so both ends stay:
/// instance names and shard ids often differ only at the end (`prod-cluster-01`/`-02`,
/// `…-shard-1`/`-shard-2`), ids often at the start. By characters, not bytes: provider ids and
/// instance names may be non-ASCII, and slicing them on a byte offset panics.
fn shorten(s: &str, max: usize) -> String {
    let len = s.chars().count();
    if len <= max {
        return s.to_string();
    }
    if max == 0 {
        return String::new();
    }
    let head = (max - 1) / 2;
    let tail = max - 1 - head;
    let mut out: String = s.chars().take(head).collect();
    out.push('…');
    out.extend(s.chars().skip(len - tail));
    out
}

/// The widest an instance name or a shard is in a progress bar's label, in characters.
const LABEL_PART: usize = 16;

/// A progress bar's label: the instance name and the shard (its shard id, or the backup id
/// when the provider gives none), each shortened by characters so a bar stays one line on a
/// terminal.
pub(super) fn progress_label(instance_name: &str, shard: &str) -> String {
    format!(
        "{} {}",
        shorten(instance_name, LABEL_PART),
        shorten(shard, LABEL_PART)
    )
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
    // cannot fail: the read models printed are rows of strings and numbers, no non-string map
    // keys.
    let text = serde_json::to_string_pretty(value).expect("serialisable");
    outln!("{text}");
}

/// Set once standard output cannot be written (its reader went away, the disk is full): later
/// output is dropped rather than tried again.
static STDOUT_GONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Writes (and flushes) command output to stdout; what `outln!` expands to. `outln!` panics
/// when the reader has gone (`rdbvault jobs | head`): here a gone reader silently ends the
/// output, and any other write error is said once on stderr.
pub(crate) fn write_out(text: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    use std::sync::atomic::Ordering;
    if STDOUT_GONE.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(text).and_then(|()| out.flush()) {
        STDOUT_GONE.store(true, Ordering::Relaxed);
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("rdbvault: cannot write to standard output: {e}");
        }
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

/// The `jobs` table: the header, then one line per row. ID and STATE are as wide as their
/// longest value (at least 8 and 12), so a short id that had to grow or a `stored (copy failed
/// re-verify)` does not push the later columns out of line.
pub(super) fn jobs_table(rows: &[JobsRow]) -> Vec<String> {
    let widest = |cell: fn(&JobsRow) -> &str, least: usize| {
        rows.iter()
            .map(|r| cell(r).len())
            .max()
            .unwrap_or(0)
            .max(least)
    };
    let state_width = widest(|r| &r.state, 12);
    let id_width = widest(|r| &r.id, crate::store::lookup::SHORT_ID_LEN);
    let mut lines = Vec::with_capacity(rows.len() + 1);
    lines.push(format!(
        "{:<id_width$}  {:<14} {:<18} {:<state_width$} {:<19} {:>8} {:>10}  ERROR",
        "ID", "POLICY", "INSTANCE", "STATE", "DUE", "TOOK", "BYTES"
    ));
    for r in rows {
        lines.push(format!(
            "{:<id_width$}  {:<14} {:<18} {:<state_width$} {:<19} {:>8} {:>10}  {}",
            r.id, r.policy, r.instance, r.state, r.due, r.took, r.bytes, r.error
        ));
    }
    lines
}

/// A transfer bar's template: the label (padded to `label_width` so the bars of several shards
/// line up), the bar (cyan when `colour`, else no colour at all), bytes, rate and time left.
fn transfer_template(label_width: Option<usize>, colour: bool) -> String {
    let label = match label_width {
        Some(w) => format!("{{msg:{w}}}"),
        None => "{msg}".to_string(),
    };
    let bar = if colour {
        "{bar:30.cyan/blue}"
    } else {
        "{bar:30}"
    };
    format!("{label} [{bar}] {{bytes}}/{{total_bytes}} {{bytes_per_sec}} {{eta}}")
}

fn transfer_style(label_width: Option<usize>, colour: bool) -> ProgressStyle {
    ProgressStyle::with_template(&transfer_template(label_width, colour))
        // cannot fail: the template is built above from fixed parts (a unit test parses each).
        .expect("valid template")
        .progress_chars("=> ")
}

/// How the command line may draw on stderr: progress bars only on a terminal, colour only on a
/// terminal without `NO_COLOR` (see `terminal`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Screen {
    pub bars: bool,
    pub colour: bool,
}

impl Screen {
    /// For a command whose bars are the only thing on screen while they are up (`fetch`):
    /// bars when stderr is a terminal.
    pub(super) fn stderr() -> Screen {
        Screen {
            bars: super::terminal::bars_on_stderr(false),
            colour: super::terminal::colour_on_stderr(),
        }
    }

    /// For a command that prints results on stdout while its bars are up (`backup-now`): bars
    /// only when stdout is a terminal too.
    pub(super) fn stderr_beside_stdout() -> Screen {
        Screen {
            bars: super::terminal::bars_on_stderr(true),
            colour: super::terminal::colour_on_stderr(),
        }
    }
}

/// A bar set that draws on stderr when `screen.bars` (and registers it so log lines step
/// around it), else one that is kept but never drawn.
fn bar_set(screen: Screen) -> (MultiProgress, Option<BarsOnScreen>) {
    let bars = MultiProgress::new();
    if !screen.bars {
        bars.set_draw_target(ProgressDrawTarget::hidden());
        return (bars, None);
    }
    let on_screen = super::terminal::bars_on_screen(&bars);
    (bars, Some(on_screen))
}

/// `fetch`'s progress bar, labelled with the copy's instance and shard; drawn only when
/// `screen.bars` (stderr is a terminal), so logs and pipes get no control characters.
pub(super) struct FetchBar {
    bar: ProgressBar,
    _set: MultiProgress,
    _on_screen: Option<BarsOnScreen>,
}

impl FetchBar {
    pub(super) fn new(total: u64, label: String, screen: Screen) -> FetchBar {
        let (set, on_screen) = bar_set(screen);
        let bar = set.add(ProgressBar::new(total));
        bar.set_style(transfer_style(None, screen.colour));
        bar.set_message(label);
        FetchBar {
            bar,
            _set: set,
            _on_screen: on_screen,
        }
    }

    pub(super) fn set_position(&self, done: u64) {
        self.bar.set_position(done);
    }

    /// Takes the bar off the screen (before the result line is printed).
    pub(super) fn finish_and_clear(&self) {
        self.bar.finish_and_clear();
    }
}

/// `backup-now`'s progress: one bar per shard, added on the shard's first report (a job's
/// shards are known only once the provider has made the backup) and labelled with its
/// instance's name and its shard. Every line the command prints while the bars are up goes
/// through [`ShardBars::println`] / [`ShardBars::eprintln`], which lift the bars while it is
/// written, so no redraw (and not the final clear) can erase it, whatever the terminal's width.
/// Clones share the bars.
#[derive(Clone)]
pub(super) struct ShardBars {
    bars: MultiProgress,
    colour: bool,
    by_backup: Arc<Mutex<HashMap<String, ProgressBar>>>,
    /// Job id -> instance name, filled as the jobs are created, for the labels.
    job_names: Arc<Mutex<HashMap<String, String>>>,
    /// Where a shard's id is looked up for its bar's label.
    store: Option<Store>,
    /// Log lines step around the bars while this is held (taken by [`ShardBars::clear`]).
    on_screen: Arc<Mutex<Option<BarsOnScreen>>>,
}

impl ShardBars {
    /// Bars drawn on stderr when `screen.bars` (a terminal), else kept but never drawn; their
    /// labels name each shard by its id as `store` records it (else by its backup id).
    pub(super) fn new(screen: Screen, store: Option<Store>) -> ShardBars {
        let (bars, on_screen) = bar_set(screen);
        ShardBars {
            bars,
            colour: screen.colour,
            by_backup: Arc::default(),
            job_names: Arc::default(),
            store,
            on_screen: Arc::new(Mutex::new(on_screen)),
        }
    }

    /// Prints a line on stdout above the bars.
    pub(super) fn println(&self, line: &str) {
        self.bars.suspend(|| outln!("{line}"));
    }

    /// Prints a line on stderr above the bars.
    pub(super) fn eprintln(&self, line: &str) {
        self.bars.suspend(|| eprintln!("{line}"));
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
        let bar = map
            .entry(backup.to_string())
            .or_insert_with(|| self.add_bar(job, backup, total));
        bar.set_position(done);
        if total == Some(done) {
            bar.finish();
        }
    }

    /// A new shard's bar, labelled with its backup id until its shard id is read.
    fn add_bar(&self, job: &str, backup: &str, total: Option<u64>) -> ProgressBar {
        // Added before it is styled, so nothing is drawn outside the group.
        let bar = self.bars.add(ProgressBar::new(total.unwrap_or(0)));
        bar.set_style(transfer_style(Some(2 * LABEL_PART + 1), self.colour));
        let name = self
            .job_names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(job)
            .cloned()
            .unwrap_or_else(|| "backup".into());
        bar.set_message(progress_label(&name, backup));
        self.label_with_shard_id(&bar, job, backup, name);
        bar
    }

    /// Relabels `bar` with its shard id, read from the state DB (the snapshot phase recorded
    /// the shards before the transfer began). The reporter is called synchronously with the
    /// backup id alone, so the read happens beside it; a shard without an id keeps the backup
    /// id.
    fn label_with_shard_id(&self, bar: &ProgressBar, job: &str, backup: &str, name: String) {
        let (Some(store), Ok(runtime)) = (&self.store, tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let (store, bar, job, backup) = (
            store.clone(),
            bar.clone(),
            job.to_string(),
            backup.to_string(),
        );
        runtime.spawn(async move {
            let Ok(shards) = store.shards(&job).await else {
                return;
            };
            if let Some(s) = shards
                .iter()
                .find(|s| s.backup_id == backup && !s.shard_id.is_empty())
            {
                bar.set_message(progress_label(&name, &s.shard_id));
            }
        });
    }

    /// Removes the bars from the terminal once every job has ended (every line printed through
    /// [`ShardBars::println`] stays), and lets log lines go straight to stderr again.
    pub(super) fn clear(&self) {
        self.bars.clear().ok();
        self.on_screen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }
}

#[cfg(test)]
mod label_tests {
    use super::*;

    #[test]
    fn labels_shorten_non_ascii_ids_by_characters_keeping_both_ends() {
        let label = progress_label("缓存-生产-一号", "备份-一二三四五六七八九十一二三四五六");
        assert_eq!(label, "缓存-生产-一号 备份-一二三四…九十一二三四五六");
        assert_eq!(
            shorten("备份-一二三四五六七八九十一二三四五六", 16)
                .chars()
                .count(),
            16
        );
        assert_eq!(shorten("short", 12), "short");
        assert_eq!(shorten("exactly-12ch", 12), "exactly-12ch");
        assert_eq!(shorten("", 12), "");
        assert_eq!(shorten("abc", 0), "");
        assert_eq!(shorten("abcdef", 1), "…");
        assert_eq!(shorten("abcdef", 2), "…f");
    }

    #[test]
    fn the_shards_of_one_instance_keep_distinct_labels() {
        // The simulator's shard ids, and long names that differ only at the end.
        assert_eq!(
            progress_label("prod-cluster-01", "8c1f6a52-shard-1"),
            "prod-cluster-01 8c1f6a52-shard-1"
        );
        assert_ne!(
            progress_label("production-cache-primary-01", "8c1f6a52-shard-10001"),
            progress_label("production-cache-primary-01", "8c1f6a52-shard-10002"),
        );
        assert_ne!(
            progress_label("production-cache-primary-01", "s"),
            progress_label("production-cache-primary-02", "s"),
        );
        // No shard id: the backup id, both of its ends.
        assert_eq!(
            progress_label("prod-cache-01", "9926c4b435de4fb89fff61a299967034"),
            "prod-cache-01 9926c4b…99967034"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_progress_bar_template_parses() {
        for width in [None, Some(2 * LABEL_PART + 1)] {
            for colour in [false, true] {
                let template = transfer_template(width, colour);
                assert!(
                    ProgressStyle::with_template(&template).is_ok(),
                    "{template}"
                );
            }
        }
    }

    #[test]
    fn a_bar_without_colour_names_no_colour() {
        let plain = transfer_template(Some(33), false);
        assert_eq!(
            plain,
            "{msg:33} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}"
        );
        assert!(transfer_template(None, true).contains("{bar:30.cyan/blue}"));
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
            destination: "d".into(),
            trigger: "manual".into(),
            state: crate::job::State::Transferring,
            create_sent_at: Some(10_000),
            ..JobRow::blank()
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
