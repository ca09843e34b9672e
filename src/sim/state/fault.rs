//! Faults switched on through `/_sim/faults`: what each one does to the simulated provider, and
//! how one is used up. `World::take_fault` picks them; the API and the download host apply them.

use serde::{Deserialize, Serialize};

/// A fault switched on through `/_sim/faults`. `count: None` lasts until cleared.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// The next `count` calls of `action` (or `*`) fail with this status and code.
    ApiError {
        #[serde(default = "any_action")]
        action: String,
        #[serde(default)]
        count: Option<u32>,
        #[serde(default = "default_status")]
        status: u16,
        #[serde(default = "default_code")]
        code: String,
    },
    /// Calls of `action` answer only after `millis`.
    Latency {
        #[serde(default = "any_action")]
        action: String,
        #[serde(default)]
        count: Option<u32>,
        millis: u64,
    },
    /// Downloads stop after `after_bytes`: `abort` breaks the connection (the declared length is
    /// not reached), `short` declares and sends a shorter body (only a size check catches it).
    DownloadTruncate {
        #[serde(default)]
        count: Option<u32>,
        after_bytes: u64,
        #[serde(default)]
        mode: TruncateMode,
    },
    /// Downloads carry one flipped byte at `offset` (default: the middle of the file).
    DownloadCorrupt {
        #[serde(default)]
        count: Option<u32>,
        #[serde(default)]
        offset: Option<u64>,
    },
    /// Download URLs are refused with 403 as if they had expired.
    DownloadExpired {
        #[serde(default)]
        count: Option<u32>,
    },
    /// The download host answers with this status.
    DownloadError {
        #[serde(default)]
        count: Option<u32>,
        status: u16,
    },
    /// Downloads are served at most this many bytes per second.
    DownloadThrottle {
        #[serde(default)]
        count: Option<u32>,
        bytes_per_second: u64,
    },
    /// Downloads trickle: `chunk_bytes` at a time, one chunk every `every_millis`.
    DownloadTrickle {
        #[serde(default)]
        count: Option<u32>,
        chunk_bytes: u64,
        every_millis: u64,
    },
    /// The download host answers `302 Found` with `Location: to`, or with the request's own URL
    /// when `to` is absent (so `count: 5` makes a chain of five redirects).
    DownloadRedirect {
        #[serde(default)]
        count: Option<u32>,
        #[serde(default)]
        to: Option<String>,
    },
    /// `DownloadBackup` hands out intranet URLs that no one answers (connection refused).
    IntranetUnreachable {
        #[serde(default)]
        count: Option<u32>,
    },
    /// The next `count` backups created end in status `failed`.
    BackupFails {
        #[serde(default)]
        count: Option<u32>,
    },
    /// Successful answers of `action` are altered before they are sent, the way a broken or
    /// hostile provider might answer: every JSON object inside `Data` that has one of `set`'s
    /// keys gets that key's value (`"BackupSize": 1e30`, `"BackupId": "../x"`), and with
    /// `duplicate` every list inside `Data` carries each item twice.
    TamperAnswer {
        #[serde(default = "any_action")]
        action: String,
        #[serde(default)]
        count: Option<u32>,
        #[serde(default)]
        set: serde_json::Map<String, serde_json::Value>,
        #[serde(default)]
        duplicate: bool,
    },
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TruncateMode {
    #[default]
    Abort,
    Short,
}

fn any_action() -> String {
    "*".into()
}
fn default_status() -> u16 {
    500
}
fn default_code() -> String {
    "InternalError".into()
}

impl Fault {
    /// The count of uses left; `None` lasts until cleared.
    pub(super) fn count_mut(&mut self) -> &mut Option<u32> {
        match self {
            Fault::ApiError { count, .. }
            | Fault::Latency { count, .. }
            | Fault::DownloadTruncate { count, .. }
            | Fault::DownloadCorrupt { count, .. }
            | Fault::DownloadExpired { count }
            | Fault::DownloadError { count, .. }
            | Fault::DownloadThrottle { count, .. }
            | Fault::DownloadTrickle { count, .. }
            | Fault::DownloadRedirect { count, .. }
            | Fault::IntranetUnreachable { count }
            | Fault::BackupFails { count }
            | Fault::TamperAnswer { count, .. } => count,
        }
    }
}

/// Applies a [`Fault::TamperAnswer`] to an answer's `Data`, in place.
pub fn tamper(
    data: &mut serde_json::Value,
    set: &serde_json::Map<String, serde_json::Value>,
    duplicate: bool,
) {
    match data {
        serde_json::Value::Object(map) => {
            for (key, value) in set {
                if let Some(slot) = map.get_mut(key) {
                    *slot = value.clone();
                }
            }
            for v in map.values_mut() {
                tamper(v, set, duplicate);
            }
        }
        serde_json::Value::Array(items) => {
            for v in items.iter_mut() {
                tamper(v, set, duplicate);
            }
            if duplicate {
                let copies = items.clone();
                items.extend(copies);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tampering_sets_keys_at_every_depth_and_duplicates_lists() {
        let mut data = serde_json::json!({
            "BackupSize": 1,
            "List": [{"BackupId": "a", "Other": 1}],
        });
        let set = serde_json::json!({"BackupId": "../x", "BackupSize": 1e30});
        tamper(&mut data, set.as_object().unwrap(), true);
        assert_eq!(
            data,
            serde_json::json!({
                "BackupSize": 1e30,
                "List": [{"BackupId": "../x", "Other": 1}, {"BackupId": "../x", "Other": 1}],
            })
        );
        // Keys that are not there are not added.
        let mut data = serde_json::json!({"A": 1});
        tamper(&mut data, set.as_object().unwrap(), false);
        assert_eq!(data, serde_json::json!({"A": 1}));
    }

    #[test]
    fn faults_read_with_their_defaults() {
        let f: Fault = serde_json::from_str(r#"{"kind": "api_error"}"#).unwrap();
        assert_eq!(
            f,
            Fault::ApiError {
                action: "*".into(),
                count: None,
                status: 500,
                code: "InternalError".into(),
            }
        );
        let f: Fault =
            serde_json::from_str(r#"{"kind": "download_truncate", "after_bytes": 5}"#).unwrap();
        assert!(matches!(
            f,
            Fault::DownloadTruncate {
                mode: TruncateMode::Abort,
                ..
            }
        ));
        assert!(
            serde_json::from_str::<Fault>(r#"{"kind": "latency", "millis": 1, "x": 2}"#).is_err()
        );
    }
}
