//! Validation of the daemon's own settings: `state`, `http`, `log`, `limits` and `verify`.

use super::Validator;
use crate::config::model::{
    HttpConfig, Limits, LogConfig, LogFormat, S3_MAX_OBJECT_SIZE, StateConfig, VerifyConfig,
};
use crate::config::raw::{RawDrill, RawHttp, RawLimits, RawLog, RawState, RawVerify};
use crate::config::units;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// The shortest `state.job_lease`: the owner renews it several times per lease, so a shorter
/// one would be taken over from a live owner.
const MIN_JOB_LEASE: Duration = Duration::from_secs(2);

/// `http.listen` when unset: loopback only, so nothing is exposed without a decision.
const DEFAULT_LISTEN: ([u8; 4], u16) = ([127, 0, 0, 1], 9750);

/// `limits.max_backup_size` when unset or wrong: 1TiB.
const DEFAULT_MAX_BACKUP_SIZE: u64 = 1 << 40;

impl Validator<'_> {
    pub(super) fn state(&mut self, raw: &RawState) -> StateConfig {
        let job_lease = self.duration(
            "state.job_lease",
            raw.job_lease.as_ref(),
            Duration::from_secs(60),
        );
        if job_lease < MIN_JOB_LEASE {
            self.problem(
                "state.job_lease",
                "must be at least 2s (the owner renews it several times per lease)",
            );
        }
        let url = raw.url.as_ref().map(|u| u.0.trim().to_string());
        if let Some(url) = &url {
            if let Some(why) = postgres_url_problem(url) {
                self.problem("state.url", why);
            }
            if raw.path.is_some() {
                self.problem(
                    "state.path",
                    "state.path (SQLite) and state.url (PostgreSQL) name two state DBs; keep one",
                );
            }
        } else if raw.password_file.is_some() {
            self.problem(
                "state.password_file",
                "is the PostgreSQL password, and state.url is not set",
            );
        }
        StateConfig {
            path: self.path(raw.path.as_deref().unwrap_or(Path::new("rdbvault.db"))),
            url,
            password_file: raw.password_file.as_deref().map(|p| self.path(p)),
            job_lease: job_lease.max(MIN_JOB_LEASE),
        }
    }

    pub(super) fn http(&mut self, raw: &RawHttp) -> HttpConfig {
        let listen = match &raw.listen {
            None => SocketAddr::from(DEFAULT_LISTEN),
            Some(t) => t.0.trim().parse().unwrap_or_else(|_| {
                self.problem(
                    "http.listen",
                    format!("`{}` is not an address:port such as 127.0.0.1:9750", t.0),
                );
                SocketAddr::from(DEFAULT_LISTEN)
            }),
        };
        let token_file = raw.token_file.as_deref().map(|p| self.path(p));
        if !listen.ip().is_loopback() && token_file.is_none() {
            // /v1/* tells anyone who can connect every instance, bucket and copy.
            self.problem(
                "http.listen",
                format!(
                    "`{listen}` is reachable from other hosts, so /v1/* needs a bearer token: set http.token_file to a file holding one (chmod 600), or listen on 127.0.0.1"
                ),
            );
        }
        HttpConfig { listen, token_file }
    }

    pub(super) fn log(&mut self, raw: &RawLog) -> LogConfig {
        let format = self.choice(
            "log.format",
            raw.format.as_ref(),
            &[("text", LogFormat::Text), ("json", LogFormat::Json)],
            LogFormat::Text,
        );
        let level = raw
            .level
            .as_ref()
            .map(|t| t.0.trim().to_string())
            .unwrap_or_else(|| "info".into());
        // Checked with the parser that will use it, so what passes here cannot fail at start.
        if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
            self.problem(
                "log.level",
                format!(
                    "`{level}` is not a log level; use error, warn, info, debug, trace or a filter like `info,rdbvault=debug`"
                ),
            );
        }
        LogConfig { format, level }
    }

    pub(super) fn limits(&mut self, raw: &RawLimits) -> Limits {
        Limits {
            max_concurrent_jobs: self.positive(
                "limits.max_concurrent_jobs",
                raw.max_concurrent_jobs,
                4,
            ) as usize,
            max_concurrent_transfers: self.positive(
                "limits.max_concurrent_transfers",
                raw.max_concurrent_transfers,
                2,
            ) as usize,
            max_backup_size: self.max_backup_size(raw),
        }
    }

    /// `limits.max_backup_size`: at most S3's largest object, since a larger backup could not
    /// be stored anyway; at least 1MiB, since a smaller limit would refuse real backups.
    fn max_backup_size(&mut self, raw: &RawLimits) -> u64 {
        let Some(t) = &raw.max_backup_size else {
            return DEFAULT_MAX_BACKUP_SIZE;
        };
        match units::parse_size(&t.0) {
            Ok(n) if (1 << 20..=S3_MAX_OBJECT_SIZE).contains(&n) => n,
            Ok(n) => {
                self.problem(
                    "limits.max_backup_size",
                    format!(
                        "{} is outside 1MiB to 5TiB (S3's largest object)",
                        units::format_size(n)
                    ),
                );
                DEFAULT_MAX_BACKUP_SIZE
            }
            Err(e) => {
                self.problem("limits.max_backup_size", e);
                DEFAULT_MAX_BACKUP_SIZE
            }
        }
    }

    pub(super) fn verify(&mut self, raw: &RawVerify) -> VerifyConfig {
        VerifyConfig {
            interval: self.duration(
                "verify.interval",
                raw.interval.as_ref(),
                Duration::from_secs(24 * 3600),
            ),
            copies: self.positive("verify.copies", raw.copies, 1),
        }
    }

    pub(super) fn drill(&mut self, raw: &RawDrill) -> crate::config::DrillConfig {
        let interval = self.duration(
            "drill.interval",
            raw.interval.as_ref(),
            Duration::from_secs(7 * 24 * 3600),
        );
        if interval.is_zero() {
            self.problem(
                "drill.interval",
                "must be longer than 0 (to turn drills off, set drill.enabled: false)",
            );
        }
        crate::config::DrillConfig {
            enabled: raw.enabled,
            interval,
            sets_per_policy: self.positive("drill.sets_per_policy", raw.sets_per_policy, 1),
            redis_server: raw.redis_server.as_deref().map(|p| self.path(p)),
            load_timeout: self.duration(
                "drill.load_timeout",
                raw.load_timeout.as_ref(),
                Duration::from_secs(1800),
            ),
        }
    }
}

/// What is wrong with a `state.url`, if anything: it must be a `postgres://` (or
/// `postgresql://`) URL with a host, and without a password (which would show in `ps`, in logs
/// and in every copy of the config).
pub fn postgres_url_problem(url: &str) -> Option<String> {
    let parsed = match url::Url::parse(url) {
        Ok(u) => u,
        Err(e) => {
            return Some(format!(
                "is not a URL ({e}); write postgres://USER@HOST:PORT/DATABASE"
            ));
        }
    };
    if !matches!(parsed.scheme(), "postgres" | "postgresql") {
        return Some(format!(
            "must be a postgres:// URL (found {}://); for SQLite set state.path instead",
            parsed.scheme()
        ));
    }
    if parsed.password().is_some() || parsed.query_pairs().any(|(k, _)| k == "password") {
        return Some(
            "must not carry the password (it would show in ps, logs and copies of this file); put it in a file named by state.password_file, or in PGPASSWORD"
                .into(),
        );
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Some("names no host; write postgres://USER@HOST:PORT/DATABASE".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::tests::{check, paths};
    use crate::config::parse;
    use crate::config::raw::{RawLimits, RawState, Text};
    use crate::config::tests::MINIMAL;
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    fn text(s: &str) -> Option<Text> {
        Some(Text(s.to_string()))
    }

    #[test]
    fn a_non_loopback_listen_needs_a_token_file() {
        let open = format!("http:\n  listen: 0.0.0.0:9750\n{MINIMAL}");
        let err = parse(&open, Path::new("t.yaml")).unwrap_err();
        assert_eq!(err.problems.len(), 1, "{err}");
        let text = err.to_string();
        assert!(text.contains("t.yaml:2:11: http.listen"), "{text}");
        assert!(text.contains("http.token_file"), "{text}");
        let with_token = open.replace(
            "listen: 0.0.0.0:9750",
            "listen: 0.0.0.0:9750\n  token_file: /run/secrets/rdbvault_token",
        );
        let c = parse(&with_token, Path::new("t.yaml")).unwrap();
        assert_eq!(
            c.http.token_file,
            Some(PathBuf::from("/run/secrets/rdbvault_token"))
        );
        // Loopback needs none; [::1] is loopback too.
        for listen in ["127.0.0.1:9750", "\"[::1]:9750\""] {
            let local = open.replace("0.0.0.0:9750", listen);
            assert!(parse(&local, Path::new("t.yaml")).is_ok(), "{listen}");
        }
    }

    #[test]
    fn a_job_lease_under_2s_is_reported_and_raised_to_2s() {
        let lease = |t: &str| {
            check(|v| {
                v.state(&RawState {
                    job_lease: text(t),
                    ..RawState::default()
                })
                .job_lease
            })
        };
        let (got, problems) = lease("1s");
        assert_eq!(paths(&problems), ["state.job_lease"]);
        assert_eq!(got, Duration::from_secs(2));
        let (got, problems) = lease("2s");
        assert!(problems.is_empty());
        assert_eq!(got, Duration::from_secs(2));
        let (state, _) = check(|v| v.state(&RawState::default()));
        assert_eq!(state.job_lease, Duration::from_secs(60));
        assert_eq!(state.path, PathBuf::from("/etc/rdbvault/rdbvault.db"));
    }

    #[test]
    fn the_largest_backup_is_between_1mib_and_s3s_largest_object() {
        let size = |t: Option<&str>| {
            check(|v| {
                v.max_backup_size(&RawLimits {
                    max_backup_size: t.map(|t| Text(t.to_string())),
                    ..RawLimits::default()
                })
            })
        };
        assert_eq!(size(None), (1 << 40, vec![]));
        assert_eq!(size(Some("1MiB")).0, 1 << 20);
        assert_eq!(size(Some("5TiB")).0, 5 << 40);
        for bad in ["1023KiB", "6TiB", "huge"] {
            let (got, problems) = size(Some(bad));
            assert_eq!(got, 1 << 40, "{bad}");
            assert_eq!(paths(&problems), ["limits.max_backup_size"], "{bad}");
        }
    }

    #[test]
    fn a_log_level_is_checked_by_the_filter_parser_that_will_use_it() {
        let level = |t: &str| {
            check(|v| {
                v.log(&crate::config::raw::RawLog {
                    level: text(t),
                    ..Default::default()
                })
            })
        };
        assert!(level("info,rdbvault=debug").1.is_empty());
        assert_eq!(paths(&level("info,,=[").1), ["log.level"]);
    }

    #[test]
    fn a_state_url_must_be_postgres_with_a_host_and_no_password() {
        use super::postgres_url_problem as problem;
        assert_eq!(problem("postgres://rdb@db.internal:5432/vault"), None);
        assert_eq!(problem("postgresql://rdb@10.0.0.5/vault"), None);
        for (url, says) in [
            (
                "postgres://rdb:hunter2@db/vault",
                "must not carry the password",
            ),
            (
                "postgres://rdb@db/vault?password=x",
                "must not carry the password",
            ),
            ("mysql://rdb@db/vault", "must be a postgres:// URL"),
            ("db.internal:5432", "must be a postgres:// URL"),
            ("postgres:///vault", "names no host"),
            ("not a url", "is not a URL"),
        ] {
            let got = problem(url).unwrap_or_default();
            assert!(got.contains(says), "{url}: {got}");
            assert!(!got.contains("hunter2"), "{got}");
        }
    }
}
