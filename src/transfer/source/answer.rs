//! One connection to the download host: send the request (reqwest follows the redirects that
//! [`check_redirect`] allows) and judge the answer by its status and headers, before any body
//! byte is read. The judgement is a pure function of plain values so every status can be
//! tested without a download host.

use super::{Downloader, Error, ShardSource, Tries, check_redirect, error_chain, redact_url};
use crate::config::DownloadRoute;
use reqwest::header::{CONTENT_RANGE, HeaderMap, LOCATION, RANGE};

/// What to do about a request that got no answer at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SendFailure {
    /// Our redirect policy said no: asking again gets the same answer.
    GiveUp,
    /// The intranet URL cannot be reached and the route allows the public one.
    SwitchToPublic,
    /// Anything else may pass: count a failed attempt and try again.
    Retry,
}

/// Decides about a failed send from what reqwest says of it: `refused_redirect` (its redirect
/// policy returned an error) and `unreachable` (connect error or timeout).
pub(super) fn send_failure(
    refused_redirect: bool,
    unreachable: bool,
    route: DownloadRoute,
    use_public: bool,
) -> SendFailure {
    if refused_redirect {
        SendFailure::GiveUp
    } else if route == DownloadRoute::Auto && !use_public && unreachable {
        SendFailure::SwitchToPublic
    } else {
        SendFailure::Retry
    }
}

/// Why an answer is worth another attempt; decides what is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RetryReason {
    /// 206 whose Content-Range does not start where we asked.
    WrongRange,
    /// 403/404/410: the URL expired or was refused; the next attempt gets a fresh one.
    UrlRefused,
    /// 408/429/5xx: the host is busy or broken.
    HostError,
}

/// The download host's answer, judged by its status and headers.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Read the body, dropping its first `skip` bytes (a 200 to a Range request starts at 0).
    Body { skip: u64 },
    /// Count a failed attempt with this problem and try again.
    Retry {
        reason: RetryReason,
        problem: String,
    },
    /// Give up the download with this message.
    GiveUp(String),
}

/// Judges an answer: `status` and `headers` as received, `answered_by` the URL that answered
/// (after redirects), `requested` the URL we asked for, `offset` the first byte we asked for.
pub(super) fn classify(
    status: u16,
    headers: &HeaderMap,
    answered_by: &url::Url,
    requested: &str,
    offset: u64,
) -> Verdict {
    match status {
        200 => Verdict::Body { skip: offset }, // the host ignored Range: drop what we have
        206 => {
            let start = content_range_start(headers);
            if start == Some(offset) {
                Verdict::Body { skip: 0 }
            } else {
                Verdict::Retry {
                    reason: RetryReason::WrongRange,
                    problem: format!(
                        "asked for bytes from {offset}, got Content-Range starting at {start:?}"
                    ),
                }
            }
        }
        403 | 404 | 410 => Verdict::Retry {
            reason: RetryReason::UrlRefused,
            problem: format!(
                "download host answered HTTP {status} for {} (expired URL?)",
                redact_url(requested)
            ),
        },
        408 | 429 | 500..=599 => Verdict::Retry {
            reason: RetryReason::HostError,
            problem: format!("download host answered HTTP {status}"),
        },
        300..=399 => Verdict::GiveUp(format!(
            "download host {} answered HTTP {status}: {}",
            redact_url(requested),
            refused_redirect(headers, answered_by)
        )),
        other => Verdict::GiveUp(format!(
            "download host answered HTTP {other} for {}",
            redact_url(requested)
        )),
    }
}

/// The first byte of `Content-Range: bytes a-b/n`, if the header says one.
fn content_range_start(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes "))
        .and_then(|v| v.split('-').next())
        .and_then(|v| v.parse::<u64>().ok())
}

/// reqwest hands back a redirect it will not follow (a scheme it does not speak): say where it
/// pointed and why that is refused.
fn refused_redirect(headers: &HeaderMap, answered_by: &url::Url) -> String {
    let target = headers
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| answered_by.join(v).ok());
    match &target {
        Some(t) => check_redirect(std::slice::from_ref(answered_by), t)
            .err()
            .unwrap_or_else(|| format!("refused a redirect to {}", redact_url(t.as_str()))),
        None => "a redirect without a usable Location".into(),
    }
}

impl Downloader {
    /// Sends one GET for `url` (from `offset` on, with Range) and judges the answer. `Some`:
    /// the response whose body to read and how many of its first bytes to drop. `None`: go
    /// round the retry loop again (the failure is counted in `tries`, or the route switched).
    pub(super) async fn connect(
        &self,
        src: &ShardSource,
        url: &str,
        offset: u64,
        tries: &mut Tries,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<Option<(reqwest::Response, u64)>, Error> {
        let mut request = self.http.get(url);
        if offset > 0 {
            request = request.header(RANGE, format!("bytes={offset}-"));
        }
        let response = tokio::select! {
            _ = cancel.cancelled() => return Err(Error::Cancelled),
            r = request.send() => r,
        };
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                let e = e.without_url();
                let unreachable = e.is_connect() || e.is_timeout();
                match send_failure(e.is_redirect(), unreachable, src.route, tries.use_public) {
                    SendFailure::GiveUp => {
                        return Err(Error::Download(format!(
                            "download host {}: {}",
                            redact_url(url),
                            error_chain(&e)
                        )));
                    }
                    SendFailure::SwitchToPublic => {
                        tracing::warn!(backup_id = %src.backup_id, error = %e, "intranet download URL unreachable; switching to the public URL");
                        tries.use_public = true;
                    }
                    SendFailure::Retry => {
                        let attempt =
                            tries.fail(format!("cannot connect to {}: {e}", redact_url(url)));
                        tracing::warn!(backup_id = %src.backup_id, attempt, problem = %tries.last_problem, "download attempt failed");
                    }
                }
                return Ok(None);
            }
        };
        let status = response.status().as_u16();
        match classify(status, response.headers(), response.url(), url, offset) {
            Verdict::Body { skip } => Ok(Some((response, skip))),
            Verdict::Retry { reason, problem } => {
                let attempt = tries.fail(problem);
                match reason {
                    RetryReason::WrongRange => {}
                    RetryReason::UrlRefused => {
                        tracing::warn!(backup_id = %src.backup_id, status, "download URL refused; asking DownloadBackup for a fresh one");
                    }
                    RetryReason::HostError => {
                        tracing::warn!(backup_id = %src.backup_id, status, attempt, "download host error; retrying");
                    }
                }
                Ok(None)
            }
            Verdict::GiveUp(message) => Err(Error::Download(message)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    const URL: &str = "https://dl.example.com/b.rdb?Expires=1&Signature=s3cr3t";

    fn judge(status: u16, headers: &[(&'static str, &str)], offset: u64) -> Verdict {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        classify(status, &map, &URL.parse().unwrap(), URL, offset)
    }

    #[test]
    fn a_200_starts_from_the_first_byte_also_when_a_range_was_asked() {
        assert_eq!(judge(200, &[], 0), Verdict::Body { skip: 0 });
        // The host ignored Range: the bytes we already have come again and are dropped.
        assert_eq!(judge(200, &[], 4096), Verdict::Body { skip: 4096 });
    }

    #[test]
    fn a_206_must_start_where_we_asked() {
        let range = |v: &str| judge(206, &[("content-range", v)], 100);
        assert_eq!(range("bytes 100-199/200"), Verdict::Body { skip: 0 });
        assert_eq!(
            range("bytes 0-199/200"),
            Verdict::Retry {
                reason: RetryReason::WrongRange,
                problem: "asked for bytes from 100, got Content-Range starting at Some(0)".into(),
            }
        );
        assert_eq!(
            judge(206, &[], 100),
            Verdict::Retry {
                reason: RetryReason::WrongRange,
                problem: "asked for bytes from 100, got Content-Range starting at None".into(),
            },
            "no Content-Range at all"
        );
        for garbled in ["bytes=100-199/200", "items 100-199/200", "bytes x-199/200"] {
            assert!(matches!(range(garbled), Verdict::Retry { .. }), "{garbled}");
        }
    }

    #[test]
    fn refused_urls_and_host_errors_are_retried_without_the_query() {
        for status in [403, 404, 410] {
            assert_eq!(
                judge(status, &[], 0),
                Verdict::Retry {
                    reason: RetryReason::UrlRefused,
                    problem: format!(
                        "download host answered HTTP {status} for https://dl.example.com/b.rdb (expired URL?)"
                    ),
                }
            );
        }
        for status in [408, 429, 500, 503, 599] {
            assert_eq!(
                judge(status, &[], 0),
                Verdict::Retry {
                    reason: RetryReason::HostError,
                    problem: format!("download host answered HTTP {status}"),
                }
            );
        }
    }

    #[test]
    fn other_statuses_give_up() {
        for status in [201, 204, 400, 401, 416, 451] {
            assert_eq!(
                judge(status, &[], 0),
                Verdict::GiveUp(format!(
                    "download host answered HTTP {status} for https://dl.example.com/b.rdb"
                ))
            );
        }
    }

    #[test]
    fn a_redirect_handed_back_gives_up_saying_why() {
        let Verdict::GiveUp(text) = judge(302, &[("location", "ftp://x/b.rdb?Signature=y")], 0)
        else {
            panic!("a redirect handed back is not retried");
        };
        assert_eq!(
            text,
            "download host https://dl.example.com/b.rdb answered HTTP 302: refused a redirect to ftp://x/b.rdb: only http and https are followed"
        );
        let Verdict::GiveUp(text) = judge(301, &[("location", "http://dl.example.com/c")], 0)
        else {
            panic!("a redirect handed back is not retried");
        };
        assert!(
            text.ends_with("refused a redirect from https down to http (http://dl.example.com/c)"),
            "{text}"
        );
        assert_eq!(
            judge(307, &[], 0),
            Verdict::GiveUp(
                "download host https://dl.example.com/b.rdb answered HTTP 307: a redirect without a usable Location"
                    .into()
            )
        );
    }

    #[test]
    fn a_refused_redirect_gives_up_and_only_auto_switches_an_unreachable_intranet_url() {
        use DownloadRoute::{Auto, Intranet, Public};
        for route in [Auto, Intranet, Public] {
            for public in [false, true] {
                assert_eq!(send_failure(true, true, route, public), SendFailure::GiveUp);
                assert_eq!(
                    send_failure(false, false, route, public),
                    SendFailure::Retry
                );
            }
        }
        assert_eq!(
            send_failure(false, true, Auto, false),
            SendFailure::SwitchToPublic
        );
        assert_eq!(send_failure(false, true, Auto, true), SendFailure::Retry);
        assert_eq!(
            send_failure(false, true, Intranet, false),
            SendFailure::Retry
        );
        assert_eq!(send_failure(false, true, Public, true), SendFailure::Retry);
    }
}
