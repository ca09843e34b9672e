//! Download URLs and resumable body streams from the provider's download host.

use super::{Checker, Error, ShardSource, Sink};
use crate::cds;
use crate::config::DownloadRoute;
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Consecutive attempts without a single new byte before a download is given up.
const MAX_ATTEMPTS_WITHOUT_PROGRESS: u32 = 8;

/// Most redirects a download URL may go through before the download host is distrusted.
pub const MAX_REDIRECTS: usize = 3;

/// Fetches backups from the provider: asks `DownloadBackup` for a URL before every connection.
#[derive(Debug, Clone)]
pub struct Downloader {
    cds: cds::Client,
    http: reqwest::Client,
    guard: RateGuard,
}

/// The slowest a download connection may be (`cds.download_min_rate` over
/// `cds.download_rate_window`). A per-read timeout alone does not catch a host that sends a
/// byte now and then; this does, and the connection is resumed like any broken one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateGuard {
    /// 0 turns the check off.
    pub min_bytes_per_second: u64,
    pub window: Duration,
}

impl Default for RateGuard {
    fn default() -> Self {
        RateGuard {
            min_bytes_per_second: 16 << 10,
            window: Duration::from_secs(60),
        }
    }
}

impl RateGuard {
    /// Bytes that must arrive within one window.
    fn bytes_per_window(&self) -> u64 {
        let n = u128::from(self.min_bytes_per_second) * self.window.as_millis() / 1000;
        u64::try_from(n).unwrap_or(u64::MAX)
    }

    /// E.g. `cds.download_min_rate 16KiB/s over cds.download_rate_window 1m`.
    fn describe(&self) -> String {
        format!(
            "cds.download_min_rate {}/s over cds.download_rate_window {}",
            crate::config::units::format_size(self.min_bytes_per_second),
            crate::config::units::format_duration(self.window)
        )
    }
}

/// Bytes received on one connection in slices of the window, so the rate over the last window
/// is known in constant memory.
struct RateMeter {
    guard: RateGuard,
    started: Instant,
    slice: Duration,
    /// (slice start, bytes), oldest first.
    slices: VecDeque<(Instant, u64)>,
}

impl RateMeter {
    fn new(guard: RateGuard, now: Instant) -> Self {
        RateMeter {
            guard,
            started: now,
            slice: (guard.window / 8).max(Duration::from_millis(10)),
            slices: VecDeque::new(),
        }
    }

    fn record(&mut self, now: Instant, bytes: u64) {
        match self.slices.back_mut() {
            Some((start, n)) if now.saturating_duration_since(*start) < self.slice => *n += bytes,
            _ => self.slices.push_back((now, bytes)),
        }
        self.forget(now);
    }

    /// Leaves `span` out of the measurement: time spent waiting for our own destination is not
    /// the download host's slowness.
    fn exclude(&mut self, span: Duration) {
        self.started += span;
        for (start, _) in &mut self.slices {
            *start += span;
        }
    }

    /// Drops slices that lie wholly before the window (one that overlaps it still counts, so
    /// the estimate errs towards keeping the connection).
    fn forget(&mut self, now: Instant) {
        let keep = self.guard.window + self.slice;
        while self
            .slices
            .front()
            .is_some_and(|(start, _)| now.saturating_duration_since(*start) >= keep)
        {
            self.slices.pop_front();
        }
    }

    /// The bytes of the last window, if the connection has been open a whole window and that is
    /// below the minimum rate.
    fn stalled(&mut self, now: Instant) -> Option<u64> {
        if self.guard.min_bytes_per_second == 0
            || now.saturating_duration_since(self.started) < self.guard.window
        {
            return None;
        }
        self.forget(now);
        let got: u64 = self.slices.iter().map(|(_, n)| n).sum();
        (got < self.guard.bytes_per_window()).then_some(got)
    }
}

/// Whether a download may follow a redirect to `next`; `previous` are the URLs requested so
/// far, the first one included. Only http(s), never from https down to http, at most
/// [`MAX_REDIRECTS`] hops: a download URL is a credential, and a redirect must not send the
/// request somewhere it could be read or turn it into a local file read.
///
/// # Errors
/// Why the redirect is refused, with the target redacted.
pub fn check_redirect(previous: &[url::Url], next: &url::Url) -> Result<(), String> {
    let target = redact_url(next.as_str());
    if !matches!(next.scheme(), "http" | "https") {
        return Err(format!(
            "refused a redirect to {target}: only http and https are followed"
        ));
    }
    if next.scheme() == "http" && previous.iter().any(|u| u.scheme() == "https") {
        return Err(format!(
            "refused a redirect from https down to http ({target})"
        ));
    }
    if previous.len() > MAX_REDIRECTS {
        return Err(format!(
            "refused a redirect to {target}: more than {MAX_REDIRECTS} redirects"
        ));
    }
    Ok(())
}

/// An error and its sources on one line (reqwest's own text says only "error following
/// redirect"; the reason is in a source).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = s.source();
    }
    text
}

/// The path of a URL without its query (which is a credential): safe to log.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => {
            format!(
                "{}://{}{}",
                u.scheme(),
                u.host_str().unwrap_or(""),
                u.path()
            ) + &u.port().map(|p| format!(" (port {p})")).unwrap_or_default()
        }
        Err(_) => "<unparsable URL>".into(),
    }
}

impl Downloader {
    /// # Errors
    /// The TLS stack cannot be initialised.
    pub fn new(cds: cds::Client, guard: RateGuard) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // Per read, not for the whole body: a multi-GiB download takes as long as it takes.
            // A host that trickles is caught by `guard` instead.
            .read_timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::custom(
                |attempt| match check_redirect(attempt.previous(), attempt.url()) {
                    Ok(()) => attempt.follow(),
                    Err(why) => attempt.error(why),
                },
            ))
            .user_agent(concat!("rdbvault/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Downloader { cds, http, guard })
    }

    async fn backoff(
        &self,
        failures: u32,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<(), Error> {
        let ceiling =
            Duration::from_millis(250 * (1u64 << failures.min(6))).min(Duration::from_secs(15));
        let delay = Duration::from_millis(fastrand::u64(0..=ceiling.as_millis() as u64));
        tokio::select! {
            _ = cancel.cancelled() => Err(Error::Cancelled),
            _ = tokio::time::sleep(delay) => Ok(()),
        }
    }

    /// Streams the rest of the shard (from `checker.bytes()`) through `checker` into `sink`.
    ///
    /// # Errors
    /// A download that fails for good, more bytes than `BackupSize`, a sink failure, the
    /// deadline, or cancellation.
    pub async fn stream_into<S: Sink>(
        &self,
        src: &ShardSource,
        checker: &mut Checker,
        sink: &mut S,
        progress: super::Progress<'_>,
        cancel: &tokio_util::sync::CancellationToken,
        deadline: DateTime<Utc>,
    ) -> Result<(), Error> {
        let mut failures = 0u32;
        let mut last_problem = String::new();
        let mut use_public = src.route == DownloadRoute::Public;
        let mut fresh_urls = src.fresh_urls.clone();
        loop {
            if cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            if self.cds.clock().now() > deadline {
                return Err(Error::Deadline);
            }
            if failures >= MAX_ATTEMPTS_WITHOUT_PROGRESS {
                return Err(Error::Download(format!(
                    "gave up after {failures} attempts without progress at byte {}: {last_problem}",
                    checker.bytes()
                )));
            }
            if failures > 0 {
                self.backoff(failures, cancel).await?;
            }
            let offset = checker.bytes();
            if src.expected_size == Some(offset) && offset > 0 {
                return Ok(());
            }
            // A fresh URL for every connection: they expire.
            let fetched = match fresh_urls.take() {
                Some(info) => Ok(info),
                None => {
                    self.cds
                        .download_backup(&src.instance_uuid, &src.backup_id)
                        .await
                }
            };
            let info = match fetched {
                Ok(info) => info,
                Err(e) if e.is_retryable() => {
                    failures += 1;
                    last_problem = e.to_string();
                    continue;
                }
                Err(e) => return Err(Error::Download(e.to_string())),
            };
            let url = if use_public {
                info.backup_download_url.clone()
            } else {
                info.backup_intranet_download_url.clone()
            };
            if url.is_empty() {
                if src.route == DownloadRoute::Auto && !use_public {
                    use_public = true;
                    continue;
                }
                return Err(Error::Download(format!(
                    "DownloadBackup gave no {} URL for backup {}",
                    if use_public { "public" } else { "intranet" },
                    src.backup_id
                )));
            }
            let mut request = self.http.get(&url);
            if offset > 0 {
                request = request.header(reqwest::header::RANGE, format!("bytes={offset}-"));
            }
            let response = tokio::select! {
                _ = cancel.cancelled() => return Err(Error::Cancelled),
                r = request.send() => r,
            };
            let response = match response {
                Ok(r) => r,
                Err(e) => {
                    let e = e.without_url();
                    if e.is_redirect() {
                        // Our redirect policy said no: asking again gets the same answer.
                        return Err(Error::Download(format!(
                            "download host {}: {}",
                            redact_url(&url),
                            error_chain(&e)
                        )));
                    }
                    if src.route == DownloadRoute::Auto
                        && !use_public
                        && (e.is_connect() || e.is_timeout())
                    {
                        tracing::warn!(backup_id = %src.backup_id, error = %e, "intranet download URL unreachable; switching to the public URL");
                        use_public = true;
                        continue;
                    }
                    failures += 1;
                    last_problem = format!("cannot connect to {}: {e}", redact_url(&url));
                    tracing::warn!(backup_id = %src.backup_id, attempt = failures, problem = %last_problem, "download attempt failed");
                    continue;
                }
            };
            let status = response.status().as_u16();
            let mut skip = 0u64;
            match status {
                200 => skip = offset, // the host ignored Range: drop what we already have
                206 => {
                    let start = response
                        .headers()
                        .get(reqwest::header::CONTENT_RANGE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("bytes "))
                        .and_then(|v| v.split('-').next())
                        .and_then(|v| v.parse::<u64>().ok());
                    if start != Some(offset) {
                        failures += 1;
                        last_problem = format!(
                            "asked for bytes from {offset}, got Content-Range starting at {start:?}"
                        );
                        continue;
                    }
                }
                403 | 404 | 410 => {
                    failures += 1;
                    last_problem = format!(
                        "download host answered HTTP {status} for {} (expired URL?)",
                        redact_url(&url)
                    );
                    tracing::warn!(backup_id = %src.backup_id, status, "download URL refused; asking DownloadBackup for a fresh one");
                    continue;
                }
                408 | 429 | 500..=599 => {
                    failures += 1;
                    last_problem = format!("download host answered HTTP {status}");
                    tracing::warn!(backup_id = %src.backup_id, status, attempt = failures, "download host error; retrying");
                    continue;
                }
                300..=399 => {
                    // reqwest hands back a redirect it will not follow (a scheme it does not
                    // speak): say where it pointed and why that is refused.
                    let target = response
                        .headers()
                        .get(reqwest::header::LOCATION)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| response.url().join(v).ok());
                    let why = match &target {
                        Some(t) => check_redirect(&[response.url().clone()], t)
                            .err()
                            .unwrap_or_else(|| {
                                format!("refused a redirect to {}", redact_url(t.as_str()))
                            }),
                        None => "a redirect without a usable Location".into(),
                    };
                    return Err(Error::Download(format!(
                        "download host {} answered HTTP {status}: {why}",
                        redact_url(&url)
                    )));
                }
                other => {
                    return Err(Error::Download(format!(
                        "download host answered HTTP {other} for {}",
                        redact_url(&url)
                    )));
                }
            }

            let mut body = response.bytes_stream();
            let before = checker.bytes();
            let mut meter = RateMeter::new(self.guard, Instant::now());
            let mut tick = tokio::time::interval(meter.slice);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut stalled = false;
            loop {
                let next = tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return Err(Error::Cancelled),
                    n = body.next() => n,
                    _ = tick.tick() => {
                        if let Some(got) = meter.stalled(Instant::now()) {
                            stalled = true;
                            last_problem = format!(
                                "download stalled at byte {}: {} in the last {}, below {}",
                                checker.bytes(),
                                crate::config::units::format_size(got),
                                crate::config::units::format_duration(self.guard.window),
                                self.guard.describe()
                            );
                            tracing::warn!(backup_id = %src.backup_id, problem = %last_problem, "download too slow; dropping the connection and resuming with Range");
                            break;
                        }
                        continue;
                    }
                };
                match next {
                    Some(Ok(mut chunk)) => {
                        // Skipped bytes count too: the host is sending, only not what we need.
                        meter.record(Instant::now(), chunk.len() as u64);
                        if skip > 0 {
                            let drop = (skip as usize).min(chunk.len());
                            let _ = chunk.split_to(drop);
                            skip -= drop as u64;
                            if chunk.is_empty() {
                                continue;
                            }
                        }
                        // Never more than announced (or, unannounced, than max_backup_size):
                        // a longer body is an error, not a bigger file.
                        let bound = src.expected_size.unwrap_or(src.max_size);
                        if checker.bytes() + chunk.len() as u64 > bound {
                            return Err(Error::Verification(match src.expected_size {
                                Some(expected) => format!(
                                    "the download is longer than the provider's BackupSize ({expected} bytes)"
                                ),
                                None => format!(
                                    "the provider announced no BackupSize and the download passed limits.max_backup_size ({bound} bytes)"
                                ),
                            }));
                        }
                        checker.update(&chunk);
                        let writing = Instant::now();
                        sink.write(chunk).await?;
                        meter.exclude(writing.elapsed());
                        progress(checker.bytes());
                        if self.cds.clock().now() > deadline {
                            return Err(Error::Deadline);
                        }
                    }
                    Some(Err(e)) => {
                        last_problem = format!(
                            "connection broken at byte {}: {}",
                            checker.bytes(),
                            e.without_url()
                        );
                        tracing::warn!(backup_id = %src.backup_id, problem = %last_problem, "download interrupted; resuming with Range");
                        break;
                    }
                    None => {
                        if src.expected_size.is_none_or(|e| checker.bytes() >= e) {
                            return Ok(());
                        }
                        last_problem = format!(
                            "body ended at byte {} of {}",
                            checker.bytes(),
                            src.expected_size.unwrap_or_default()
                        );
                        tracing::warn!(backup_id = %src.backup_id, problem = %last_problem, "download ended early; resuming with Range");
                        break;
                    }
                }
            }
            // A stalled connection that brought less than a window's worth is no progress, or
            // a host that trickles would be retried forever.
            let got = checker.bytes() - before;
            if got > 0 && !(stalled && got < self.guard.bytes_per_window()) {
                failures = 0;
            } else {
                failures += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> url::Url {
        s.parse().unwrap()
    }

    #[test]
    fn redirects_only_to_http_without_downgrade_and_at_most_three_hops() {
        let start = [u("https://dl.example.com/b.rdb?Signature=s3cr3t")];
        assert!(check_redirect(&start, &u("https://other.example.com/b.rdb")).is_ok());
        let err =
            check_redirect(&start, &u("http://other.example.com/b.rdb?Signature=x")).unwrap_err();
        assert!(err.contains("https down to http"), "{err}");
        assert!(!err.contains("Signature"), "{err}");
        let plain = [u("http://dl.example.com/b.rdb")];
        assert!(check_redirect(&plain, &u("http://dl.example.com/c.rdb")).is_ok());
        assert!(check_redirect(&plain, &u("https://dl.example.com/c.rdb")).is_ok());
        for bad in ["file:///etc/passwd", "ftp://example.com/x", "gopher://x/"] {
            let err = check_redirect(&plain, &u(bad)).unwrap_err();
            assert!(err.contains("only http and https"), "{bad}: {err}");
        }
        // https anywhere earlier in the chain forbids http later.
        let chain = [u("https://a/"), u("https://b/")];
        assert!(check_redirect(&chain, &u("http://c/")).is_err());
        let three = [u("http://a/"), u("http://b/"), u("http://c/")];
        assert!(
            check_redirect(&three, &u("http://d/")).is_ok(),
            "the third hop"
        );
        let four = [
            u("http://a/"),
            u("http://b/"),
            u("http://c/"),
            u("http://d/"),
        ];
        let err = check_redirect(&four, &u("http://e/")).unwrap_err();
        assert!(err.contains("more than 3 redirects"), "{err}");
    }

    #[test]
    fn the_rate_meter_flags_a_trickle_but_not_a_steady_or_paused_stream() {
        let guard = RateGuard {
            min_bytes_per_second: 1000,
            window: Duration::from_secs(10),
        };
        let t0 = Instant::now();
        let s = Duration::from_secs;
        // Steady at 2000 B/s: never stalled.
        let mut m = RateMeter::new(guard, t0);
        for i in 1..=30 {
            m.record(t0 + s(i), 2000);
            assert_eq!(m.stalled(t0 + s(i)), None, "second {i}");
        }
        // One byte every 5 s: stalled once a whole window has passed, not before.
        let mut m = RateMeter::new(guard, t0);
        m.record(t0 + s(5), 1);
        assert_eq!(m.stalled(t0 + s(9)), None, "too early to judge");
        m.record(t0 + s(10), 1);
        assert_eq!(m.stalled(t0 + s(10)), Some(2));
        // A fast start does not excuse a stall later.
        let mut m = RateMeter::new(guard, t0);
        m.record(t0 + s(1), 1_000_000);
        assert_eq!(m.stalled(t0 + s(5)), None);
        assert_eq!(m.stalled(t0 + s(30)), Some(0));
        // Time spent writing to the destination is left out.
        let mut m = RateMeter::new(guard, t0);
        m.record(t0 + s(1), 12_000);
        m.exclude(s(20));
        assert_eq!(m.stalled(t0 + s(30)), None);
        let mut m = RateMeter::new(guard, t0);
        m.record(t0 + s(1), 12_000);
        assert_eq!(m.stalled(t0 + s(30)), Some(0), "the same without the pause");
        // 0 turns the check off.
        let mut m = RateMeter::new(
            RateGuard {
                min_bytes_per_second: 0,
                ..guard
            },
            t0,
        );
        assert_eq!(m.stalled(t0 + s(100)), None);
    }

    #[test]
    fn redacted_urls_keep_no_query() {
        let r =
            redact_url("http://127.0.0.1:9751/_download/b.rdb?Expires=1&Signature=secret-token");
        assert_eq!(r, "http://127.0.0.1/_download/b.rdb (port 9751)");
        assert!(!r.contains("secret-token"));
    }
}
