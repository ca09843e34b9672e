//! Download URLs and resumable body streams from the provider's download host.
//!
//! [`Downloader::stream_into`] is a retry loop over connections. Each connection goes through
//! four steps, one function each, so that every decision in them can be tested with plain
//! values (a status, headers, byte counts, times) rather than a live download host:
//! 1. pick a URL from a `DownloadBackup` answer (here: `choose_url`);
//! 2. send the request, following at most [`MAX_REDIRECTS`] redirects ([`check_redirect`]);
//! 3. classify the answer by its status and headers (`answer`);
//! 4. pump the body into the sink, within the announced size, the deadline and the minimum
//!    rate (`pump`, with the rate measured in `rate`).
//!
//! A connection that fails counts against `MAX_ATTEMPTS_WITHOUT_PROGRESS` only when it brought
//! no progress, so a long download over a flaky link goes on as long as bytes keep coming.

mod answer;
mod pump;
mod rate;

use super::{Checker, Error, ShardSource, Sink};
use crate::cds;
use crate::cds::model::BackupDownload;
use crate::clock::Clock;
use crate::config::DownloadRoute;
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use std::time::Duration;

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
            min_bytes_per_second: crate::config::DEFAULT_DOWNLOAD_MIN_RATE,
            window: crate::config::DEFAULT_DOWNLOAD_RATE_WINDOW,
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

/// Past `deadline` by `clock`: the job's completion window is over. Checked before every
/// connection and after every chunk, with the injected clock so tests can move time.
fn check_deadline(clock: &dyn Clock, deadline: DateTime<Utc>) -> Result<(), Error> {
    if clock.now() > deadline {
        return Err(Error::Deadline);
    }
    Ok(())
}

/// What the retry loop remembers between connections.
struct Tries {
    /// Attempts in a row that brought no progress.
    failures: u32,
    /// Why the last attempt failed, for the message when the download is given up.
    last_problem: String,
    /// The public URL rather than the intranet one.
    use_public: bool,
    /// A `DownloadBackup` answer not used yet (only the first connection has one).
    fresh_urls: Option<BackupDownload>,
}

impl Tries {
    fn new(src: &ShardSource) -> Self {
        Tries {
            failures: 0,
            last_problem: String::new(),
            use_public: src.route == DownloadRoute::Public,
            fresh_urls: src.fresh_urls.clone(),
        }
    }

    /// Counts one failed attempt and remembers why; returns how many failed in a row.
    fn fail(&mut self, problem: String) -> u32 {
        self.failures += 1;
        self.last_problem = problem;
        self.failures
    }

    /// Gives up after [`MAX_ATTEMPTS_WITHOUT_PROGRESS`] failed attempts in a row, naming the
    /// byte reached and the last problem.
    fn check_budget(&self, at_byte: u64) -> Result<(), Error> {
        if self.failures >= MAX_ATTEMPTS_WITHOUT_PROGRESS {
            return Err(Error::Download(format!(
                "gave up after {} attempts without progress at byte {at_byte}: {}",
                self.failures, self.last_problem
            )));
        }
        Ok(())
    }
}

/// Which URL of a `DownloadBackup` answer to use.
#[derive(Debug, PartialEq, Eq)]
enum UrlChoice {
    Use(String),
    /// The intranet URL is missing and the route allows the public one: switch, ask again.
    SwitchToPublic,
}

/// The public or the intranet URL of `info`, per the route and whether the route already fell
/// back to public. An empty URL is the provider saying it has none for that network.
fn choose_url(
    src: &ShardSource,
    use_public: bool,
    info: &BackupDownload,
) -> Result<UrlChoice, Error> {
    let url = if use_public {
        &info.backup_download_url
    } else {
        &info.backup_intranet_download_url
    };
    if !url.is_empty() {
        return Ok(UrlChoice::Use(url.clone()));
    }
    if src.route == DownloadRoute::Auto && !use_public {
        return Ok(UrlChoice::SwitchToPublic);
    }
    Err(Error::Download(format!(
        "DownloadBackup gave no {} URL for backup {}",
        if use_public { "public" } else { "intranet" },
        src.backup_id
    )))
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
        let call = pump::Call {
            src,
            guard: self.guard,
            clock: self.cds.clock().as_ref(),
            progress,
            cancel,
            deadline,
        };
        let mut tries = Tries::new(src);
        loop {
            if cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            check_deadline(call.clock, deadline)?;
            tries.check_budget(checker.bytes())?;
            if tries.failures > 0 {
                self.backoff(tries.failures, cancel).await?;
            }
            let offset = checker.bytes();
            if src.expected_size == Some(offset) && offset > 0 {
                return Ok(());
            }
            let Some(url) = self.pick_url(src, &mut tries).await? else {
                continue;
            };
            let Some((response, skip)) =
                self.connect(src, &url, offset, &mut tries, cancel).await?
            else {
                continue;
            };
            let body = response
                .bytes_stream()
                .map(|r| r.map_err(reqwest::Error::without_url));
            match pump::pump(&call, body, skip, checker, sink).await? {
                pump::End::Complete => return Ok(()),
                pump::End::Interrupted {
                    problem,
                    got,
                    stalled,
                } => {
                    tries.last_problem = problem;
                    if rate::made_progress(self.guard, got, stalled) {
                        tries.failures = 0;
                    } else {
                        tries.failures += 1;
                    }
                }
            }
        }
    }

    /// The URL for the next connection, or `None` to go round the loop again (a failed
    /// `DownloadBackup` counted in `tries`, or a switch to the public route).
    async fn pick_url(
        &self,
        src: &ShardSource,
        tries: &mut Tries,
    ) -> Result<Option<String>, Error> {
        // A fresh URL for every connection: they expire.
        let fetched = match tries.fresh_urls.take() {
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
                tries.fail(e.to_string());
                return Ok(None);
            }
            Err(e) => return Err(Error::Download(e.to_string())),
        };
        match choose_url(src, tries.use_public, &info)? {
            UrlChoice::Use(url) => Ok(Some(url)),
            UrlChoice::SwitchToPublic => {
                tries.use_public = true;
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn u(s: &str) -> url::Url {
        s.parse().unwrap()
    }

    fn source(route: DownloadRoute) -> ShardSource {
        ShardSource {
            instance_uuid: "5d74bb81-0473-464d-b15b-0ae418619248".into(),
            backup_id: "b1".into(),
            expected_size: Some(100),
            max_size: 1 << 30,
            route,
            fresh_urls: None,
        }
    }

    fn answer(public: &str, intranet: &str) -> BackupDownload {
        BackupDownload {
            backup_download_url: public.into(),
            backup_intranet_download_url: intranet.into(),
            ..BackupDownload::default()
        }
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
    fn a_redirect_from_https_down_to_http_is_refused_even_later_in_the_chain() {
        let first = [u("https://dl.example.com/b.rdb")];
        let err = check_redirect(&first, &u("http://dl.example.com/b.rdb")).unwrap_err();
        assert_eq!(
            err,
            "refused a redirect from https down to http (http://dl.example.com/b.rdb)"
        );
        let later = [u("https://a/"), u("https://b/"), u("https://c/")];
        assert!(check_redirect(&later, &u("http://d/")).is_err());
        // Up again is fine.
        assert!(check_redirect(&[u("http://a/")], &u("https://b/")).is_ok());
    }

    #[test]
    fn the_fourth_hop_is_refused_whatever_the_scheme() {
        let hops: Vec<url::Url> = ["https://a/", "https://b/", "https://c/", "https://d/"]
            .into_iter()
            .map(u)
            .collect();
        assert!(
            check_redirect(&hops[..3], &u("https://x/")).is_ok(),
            "third"
        );
        let err = check_redirect(&hops, &u("https://x/")).unwrap_err();
        assert_eq!(
            err,
            "refused a redirect to https://x/: more than 3 redirects"
        );
    }

    #[test]
    fn redacted_urls_keep_no_query() {
        let r =
            redact_url("http://127.0.0.1:9751/_download/b.rdb?Expires=1&Signature=secret-token");
        assert_eq!(r, "http://127.0.0.1/_download/b.rdb (port 9751)");
        assert!(!r.contains("secret-token"));
        assert_eq!(redact_url("not a url"), "<unparsable URL>");
    }

    #[test]
    fn the_route_picks_the_url() {
        let both = answer("https://pub/b.rdb", "http://intra/b.rdb");
        let pick = |route, public| choose_url(&source(route), public, &both).unwrap();
        assert_eq!(
            pick(DownloadRoute::Public, true),
            UrlChoice::Use("https://pub/b.rdb".into())
        );
        assert_eq!(
            pick(DownloadRoute::Intranet, false),
            UrlChoice::Use("http://intra/b.rdb".into())
        );
        assert_eq!(
            pick(DownloadRoute::Auto, false),
            UrlChoice::Use("http://intra/b.rdb".into()),
            "auto tries the intranet first"
        );
        assert_eq!(
            pick(DownloadRoute::Auto, true),
            UrlChoice::Use("https://pub/b.rdb".into()),
            "once switched, public"
        );
        assert!(Tries::new(&source(DownloadRoute::Public)).use_public);
        assert!(!Tries::new(&source(DownloadRoute::Auto)).use_public);
    }

    #[test]
    fn a_missing_url_switches_auto_to_public_and_fails_the_others() {
        let no_intranet = answer("https://pub/b.rdb", "");
        assert_eq!(
            choose_url(&source(DownloadRoute::Auto), false, &no_intranet).unwrap(),
            UrlChoice::SwitchToPublic
        );
        let err = choose_url(&source(DownloadRoute::Intranet), false, &no_intranet).unwrap_err();
        assert_eq!(
            err.to_string(),
            "download failed: DownloadBackup gave no intranet URL for backup b1"
        );
        let none = answer("", "");
        let err = choose_url(&source(DownloadRoute::Auto), true, &none).unwrap_err();
        assert_eq!(
            err.to_string(),
            "download failed: DownloadBackup gave no public URL for backup b1"
        );
        assert!(choose_url(&source(DownloadRoute::Public), true, &none).is_err());
    }

    #[test]
    fn the_deadline_passes_by_the_injected_clock() {
        let deadline = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let clock = ManualClock::new(deadline - chrono::Duration::seconds(1));
        assert!(check_deadline(&clock, deadline).is_ok());
        clock.advance(chrono::Duration::seconds(1));
        assert!(
            check_deadline(&clock, deadline).is_ok(),
            "at it is not past it"
        );
        clock.advance(chrono::Duration::milliseconds(1));
        assert!(matches!(
            check_deadline(&clock, deadline),
            Err(Error::Deadline)
        ));
    }

    #[test]
    fn attempts_without_progress_are_given_up_naming_the_last_problem() {
        let mut tries = Tries::new(&source(DownloadRoute::Public));
        for n in 1..MAX_ATTEMPTS_WITHOUT_PROGRESS {
            assert_eq!(tries.fail(format!("problem {n}")), n);
            assert!(tries.check_budget(10).is_ok(), "attempt {n}");
        }
        tries.fail("HTTP 503".into());
        let err = tries.check_budget(10).unwrap_err();
        assert_eq!(
            err.to_string(),
            "download failed: gave up after 8 attempts without progress at byte 10: HTTP 503"
        );
    }
}
