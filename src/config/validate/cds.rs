//! Validation of the `cds` section: where the API is, how long to wait for it, how to retry,
//! how often to poll a backup in progress, and how slow a download may get.

use super::Validator;
use crate::cds::{ApiRegion, RetryPolicy};
use crate::config::model::{CdsConfig, DEFAULT_DOWNLOAD_MIN_RATE, DEFAULT_DOWNLOAD_RATE_WINDOW};
use crate::config::raw::{RawCds, RawRetry};
use crate::config::units;
use std::time::Duration;
use url::Url;

impl Validator<'_> {
    pub(super) fn cds(&mut self, raw: &RawCds) -> CdsConfig {
        let endpoint = self.cds_endpoint(raw);
        let timeout = self.duration("cds.timeout", raw.timeout.as_ref(), Duration::from_secs(30));
        if timeout.is_zero() {
            self.problem("cds.timeout", "must be longer than 0s");
        }
        let time_zone = self.timezone(
            "cds.time_zone",
            raw.time_zone.as_ref(),
            chrono_tz::Asia::Shanghai,
        );
        let retry = self.cds_retry(&raw.retry);
        let (poll_interval, poll_max_interval) = self.cds_polling(raw);
        let (download_min_rate, download_rate_window) = self.cds_download_rate(raw);
        CdsConfig {
            download_min_rate,
            download_rate_window,
            poll_interval,
            poll_max_interval,
            endpoint,
            access_key_id_file: raw.access_key_id_file.as_deref().map(|p| self.path(p)),
            access_key_secret_file: raw.access_key_secret_file.as_deref().map(|p| self.path(p)),
            timeout,
            time_zone,
            retry,
        }
    }

    /// `cds.endpoint` or `cds.region` (which names a documented endpoint), not both: with both,
    /// one of them would be silently ignored.
    fn cds_endpoint(&mut self, raw: &RawCds) -> Url {
        let region = raw.region.as_ref().map(|_| {
            self.choice(
                "cds.region",
                raw.region.as_ref(),
                &[
                    ("mainland", ApiRegion::Mainland),
                    ("asia", ApiRegion::Asia),
                    ("us", ApiRegion::Us),
                ],
                ApiRegion::Mainland,
            )
        });
        let default_endpoint = || {
            Url::parse(region.unwrap_or(ApiRegion::Mainland).endpoint())
                // cannot fail: the endpoints are constant, valid https URLs.
                .expect("documented endpoints are valid URLs")
        };
        match (&raw.endpoint, region) {
            (Some(_), Some(_)) => {
                self.problem(
                    "cds.region",
                    "set either cds.endpoint or cds.region, not both",
                );
                default_endpoint()
            }
            (Some(t), None) => match Url::parse(t.0.trim()) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => u,
                _ => {
                    self.problem(
                        "cds.endpoint",
                        format!(
                            "`{}` is not an http(s) URL such as https://cdsapi.capitalonline.net",
                            t.0
                        ),
                    );
                    default_endpoint()
                }
            },
            (None, _) => default_endpoint(),
        }
    }

    /// `cds.retry`: each key unset keeps the client's own default.
    fn cds_retry(&mut self, raw: &RawRetry) -> RetryPolicy {
        let d = RetryPolicy::default();
        RetryPolicy {
            max_attempts: self.positive("cds.retry.max_attempts", raw.max_attempts, d.max_attempts),
            base_delay: self.duration(
                "cds.retry.base_delay",
                raw.base_delay.as_ref(),
                d.base_delay,
            ),
            max_delay: self.duration("cds.retry.max_delay", raw.max_delay.as_ref(), d.max_delay),
            max_elapsed: self.duration(
                "cds.retry.max_elapsed",
                raw.max_elapsed.as_ref(),
                d.max_elapsed,
            ),
        }
    }

    /// `(cds.poll_interval, cds.poll_max_interval)`: the first wait doubles up to the longest,
    /// so the longest may not be shorter than the first.
    fn cds_polling(&mut self, raw: &RawCds) -> (Duration, Duration) {
        let poll_interval = self.duration(
            "cds.poll_interval",
            raw.poll_interval.as_ref(),
            Duration::from_secs(2),
        );
        let poll_max_interval = self.duration(
            "cds.poll_max_interval",
            raw.poll_max_interval.as_ref(),
            Duration::from_secs(30),
        );
        if poll_interval.is_zero() {
            self.problem("cds.poll_interval", "must be longer than 0s");
        }
        if poll_max_interval < poll_interval {
            self.problem(
                "cds.poll_max_interval",
                "must not be shorter than cds.poll_interval",
            );
        }
        (poll_interval, poll_max_interval)
    }

    /// `(cds.download_min_rate, cds.download_rate_window)`: the slowest a download may be.
    fn cds_download_rate(&mut self, raw: &RawCds) -> (u64, Duration) {
        let download_min_rate = match &raw.download_min_rate {
            None => DEFAULT_DOWNLOAD_MIN_RATE,
            // `64KiB` or `64KiB/s`.
            Some(t) => match units::parse_size(t.0.trim().trim_end_matches("/s")) {
                Ok(n) => n,
                Err(e) => {
                    self.problem("cds.download_min_rate", format!("{e} (per second)"));
                    DEFAULT_DOWNLOAD_MIN_RATE
                }
            },
        };
        let download_rate_window = self.duration(
            "cds.download_rate_window",
            raw.download_rate_window.as_ref(),
            DEFAULT_DOWNLOAD_RATE_WINDOW,
        );
        if download_rate_window < Duration::from_secs(1) {
            self.problem(
                "cds.download_rate_window",
                "must be at least 1s (the rate is measured over this window)",
            );
        }
        (download_min_rate, download_rate_window)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{check, paths};
    use crate::cds::{ApiRegion, RetryPolicy};
    use crate::config::parse;
    use crate::config::raw::{RawCds, Text};
    use crate::config::tests::MINIMAL;
    use std::path::Path;
    use std::time::Duration;

    fn text(s: &str) -> Option<Text> {
        Some(Text(s.to_string()))
    }

    #[test]
    fn download_rate_settings_parse_and_bad_ones_are_reported() {
        let with = |cds: &str| format!("cds:\n{cds}\n{MINIMAL}");
        let c = parse(
            &with("  download_min_rate: 64KiB/s\n  download_rate_window: 2s"),
            Path::new("t.yaml"),
        )
        .unwrap();
        assert_eq!(c.cds.download_min_rate, 64 << 10);
        assert_eq!(c.cds.download_rate_window, Duration::from_secs(2));
        let c = parse(&with("  download_min_rate: 0"), Path::new("t.yaml")).unwrap();
        assert_eq!(c.cds.download_min_rate, 0, "0 turns the check off");
        let err = parse(
            &with("  download_min_rate: fast\n  download_rate_window: 0s"),
            Path::new("t.yaml"),
        )
        .unwrap_err();
        assert_eq!(
            paths(&err.problems),
            ["cds.download_min_rate", "cds.download_rate_window"]
        );
    }

    #[test]
    fn the_download_rate_defaults_are_16kib_per_second_over_a_minute() {
        let ((rate, window), problems) = check(|v| v.cds_download_rate(&RawCds::default()));
        assert!(problems.is_empty());
        assert_eq!((rate, window), (16 << 10, Duration::from_secs(60)));
    }

    #[test]
    fn the_endpoint_comes_from_the_region_or_is_given_never_both() {
        let endpoint = |raw: RawCds| check(|v| v.cds_endpoint(&raw));
        let url = |region: ApiRegion| url::Url::parse(region.endpoint()).unwrap();
        let (got, problems) = endpoint(RawCds::default());
        assert!(problems.is_empty());
        assert_eq!(got, url(ApiRegion::Mainland));
        let (got, _) = endpoint(RawCds {
            region: text("us"),
            ..RawCds::default()
        });
        assert_eq!(got, url(ApiRegion::Us));
        let (got, problems) = endpoint(RawCds {
            endpoint: text(" http://127.0.0.1:9751 "),
            ..RawCds::default()
        });
        assert!(problems.is_empty());
        assert_eq!(got.as_str(), "http://127.0.0.1:9751/");
        // Both: refused, and the region's endpoint stands in while validation goes on.
        let (got, problems) = endpoint(RawCds {
            region: text("asia"),
            endpoint: text("https://x.example"),
            ..RawCds::default()
        });
        assert_eq!(paths(&problems), ["cds.region"]);
        assert_eq!(got, url(ApiRegion::Asia));
        for bad in [
            "ftp://x.example",
            "unix:/run/api.sock",
            "cdsapi.capitalonline.net",
        ] {
            let (_, problems) = endpoint(RawCds {
                endpoint: text(bad),
                ..RawCds::default()
            });
            assert_eq!(paths(&problems), ["cds.endpoint"], "{bad}");
        }
    }

    #[test]
    fn retry_keys_left_out_keep_the_clients_defaults() {
        let (retry, problems) = check(|v| v.cds_retry(&Default::default()));
        assert!(problems.is_empty());
        let d = RetryPolicy::default();
        assert_eq!(
            (
                retry.max_attempts,
                retry.base_delay,
                retry.max_delay,
                retry.max_elapsed
            ),
            (d.max_attempts, d.base_delay, d.max_delay, d.max_elapsed)
        );
    }

    #[test]
    fn polling_needs_a_first_wait_and_a_longest_wait_not_shorter() {
        let polling = |first: &str, longest: &str| {
            check(|v| {
                v.cds_polling(&RawCds {
                    poll_interval: text(first),
                    poll_max_interval: text(longest),
                    ..RawCds::default()
                })
            })
        };
        let (got, problems) = polling("1s", "1s");
        assert!(problems.is_empty());
        assert_eq!(got, (Duration::from_secs(1), Duration::from_secs(1)));
        assert_eq!(paths(&polling("0s", "1s").1), ["cds.poll_interval"]);
        assert_eq!(paths(&polling("10s", "5s").1), ["cds.poll_max_interval"]);
    }
}
