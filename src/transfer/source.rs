//! Download URLs and resumable body streams from the provider's download host.

use super::{Checker, Error, ShardSource, Sink};
use crate::cds;
use crate::config::DownloadRoute;
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use std::time::Duration;

/// Consecutive attempts without a single new byte before a download is given up.
const MAX_ATTEMPTS_WITHOUT_PROGRESS: u32 = 8;

/// Fetches backups from the provider: asks `DownloadBackup` for a URL before every connection.
#[derive(Debug, Clone)]
pub struct Downloader {
    cds: cds::Client,
    http: reqwest::Client,
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
    pub fn new(cds: cds::Client) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // Per read, not for the whole body: a multi-GiB download takes as long as it takes.
            .read_timeout(Duration::from_secs(60))
            .user_agent(concat!("rdbvault/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Downloader { cds, http })
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
            if Utc::now() > deadline {
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
                other => {
                    return Err(Error::Download(format!(
                        "download host answered HTTP {other} for {}",
                        redact_url(&url)
                    )));
                }
            }

            let mut body = response.bytes_stream();
            let before = checker.bytes();
            loop {
                let next = tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return Err(Error::Cancelled),
                    n = body.next() => n,
                };
                match next {
                    Some(Ok(mut chunk)) => {
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
                        sink.write(chunk).await?;
                        progress(checker.bytes());
                        if Utc::now() > deadline {
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
            if checker.bytes() > before {
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

    #[test]
    fn redacted_urls_keep_no_query() {
        let r =
            redact_url("http://127.0.0.1:9751/_download/b.rdb?Expires=1&Signature=secret-token");
        assert_eq!(r, "http://127.0.0.1/_download/b.rdb (port 9751)");
        assert!(!r.contains("secret-token"));
    }
}
