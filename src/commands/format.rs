//! The formatting shared by the commands' output: shortened labels for progress bars, byte
//! counts, local times and job durations.

use crate::config;
use crate::store::{JobRow, from_ms, ms};

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

pub(super) fn duration_of(job: &JobRow) -> String {
    let start = job.create_sent_at.unwrap_or(job.created_at);
    let end = job
        .finished_at
        .unwrap_or_else(|| ms(crate::clock::wall_now()));
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
