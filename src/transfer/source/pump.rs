//! Pumping one connection's body through the checker into the sink. The loop only moves bytes;
//! what it decides (bytes to drop, the size cap, whether an ended body is complete, the
//! deadline, a stall) is in small functions of plain values, tested below with an in-memory
//! body, sink and a `ManualClock`.

use super::rate::{self, RateMeter};
use super::{Checker, Error, RateGuard, ShardSource, Sink, check_deadline};
use crate::clock::Clock;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt as _};
use std::time::Instant;

/// What every connection of one `stream_into` call shares.
pub(super) struct Call<'a> {
    pub src: &'a ShardSource,
    pub guard: RateGuard,
    /// Measures the deadline (the rate is measured with `Instant`, see `rate`).
    pub clock: &'a dyn Clock,
    pub progress: crate::transfer::Progress<'a>,
    pub cancel: &'a tokio_util::sync::CancellationToken,
    pub deadline: DateTime<Utc>,
}

/// How a body that did not fail for good ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum End {
    /// The shard is complete.
    Complete,
    /// The connection broke, ended early or was cut for being too slow; resume with Range.
    /// `got`: the bytes this connection added.
    Interrupted {
        problem: String,
        got: u64,
        stalled: bool,
    },
}

/// Streams `body` through `checker` into `sink`, dropping its first `skip` bytes.
///
/// # Errors
/// More bytes than announced (or than `max_size`), a sink failure, the deadline, cancellation.
pub(super) async fn pump<S: Sink, E: std::fmt::Display>(
    call: &Call<'_>,
    mut body: impl Stream<Item = Result<Bytes, E>> + Unpin,
    mut skip: u64,
    checker: &mut Checker,
    sink: &mut S,
) -> Result<End, Error> {
    let src = call.src;
    let before = checker.bytes();
    let interrupted = |problem: String, checker: &Checker, stalled: bool| End::Interrupted {
        problem,
        got: checker.bytes() - before,
        stalled,
    };
    let mut meter = RateMeter::new(call.guard, Instant::now());
    let mut tick = tokio::time::interval(meter.slice);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let next = tokio::select! {
            biased;
            _ = call.cancel.cancelled() => return Err(Error::Cancelled),
            n = body.next() => n,
            _ = tick.tick() => {
                if let Some(got) = meter.stalled(Instant::now()) {
                    let problem = rate::stall_problem(checker.bytes(), got, call.guard);
                    tracing::warn!(backup_id = %src.backup_id, problem = %problem, "download too slow; dropping the connection and resuming with Range");
                    return Ok(interrupted(problem, checker, true));
                }
                continue;
            }
        };
        match next {
            Some(Ok(mut chunk)) => {
                // Skipped bytes count too: the host is sending, only not what we need.
                meter.record(Instant::now(), chunk.len() as u64);
                if !drop_skipped(&mut chunk, &mut skip) {
                    continue;
                }
                check_bound(src, checker.bytes(), chunk.len())?;
                checker.update(&chunk);
                let writing = Instant::now();
                sink.write(chunk).await?;
                meter.exclude(writing.elapsed());
                (call.progress)(checker.bytes());
                check_deadline(call.clock, call.deadline)?;
            }
            Some(Err(e)) => {
                let problem = format!("connection broken at byte {}: {e}", checker.bytes());
                tracing::warn!(backup_id = %src.backup_id, problem = %problem, "download interrupted; resuming with Range");
                return Ok(interrupted(problem, checker, false));
            }
            None => {
                let Some(problem) = ended_early(src.expected_size, checker.bytes()) else {
                    return Ok(End::Complete);
                };
                tracing::warn!(backup_id = %src.backup_id, problem = %problem, "download ended early; resuming with Range");
                return Ok(interrupted(problem, checker, false));
            }
        }
    }
}

/// Drops what is still to be skipped from the front of `chunk` (a 200 answered to a Range
/// request repeats what we have). False when nothing of the chunk is left to write.
fn drop_skipped(chunk: &mut Bytes, skip: &mut u64) -> bool {
    if *skip == 0 {
        return true;
    }
    let drop = (*skip as usize).min(chunk.len());
    let _ = chunk.split_to(drop);
    *skip -= drop as u64;
    !chunk.is_empty()
}

/// Never more than announced (or, unannounced, than `limits.max_backup_size`): a longer body
/// is an error, not a bigger file. `have` bytes so far, `more` arriving.
fn check_bound(src: &ShardSource, have: u64, more: usize) -> Result<(), Error> {
    let bound = src.expected_size.unwrap_or(src.max_size);
    if have + more as u64 <= bound {
        return Ok(());
    }
    Err(Error::Verification(match src.expected_size {
        Some(expected) => {
            format!("the download is longer than the provider's BackupSize ({expected} bytes)")
        }
        None => format!(
            "the provider announced no BackupSize and the download passed limits.max_backup_size ({bound} bytes)"
        ),
    }))
}

/// Why a body that ended at byte `have` is not the whole shard; `None` when it is (or when no
/// size was announced, so its end is the only end there is).
fn ended_early(expected: Option<u64>, have: u64) -> Option<String> {
    if expected.is_none_or(|e| have >= e) {
        return None;
    }
    Some(format!(
        "body ended at byte {have} of {}",
        expected.unwrap_or_default()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::config::DownloadRoute;
    use crate::transfer::{Manifest, Stored};
    use std::time::Duration;

    /// A sink that keeps everything in memory.
    #[derive(Default)]
    struct VecSink(Vec<u8>);

    #[async_trait::async_trait]
    impl Sink for VecSink {
        async fn write(&mut self, chunk: Bytes) -> Result<(), Error> {
            self.0.extend_from_slice(&chunk);
            Ok(())
        }
        async fn commit(&mut self, _: &Stored, _: &Manifest) -> Result<(), Error> {
            Ok(())
        }
        async fn abort(&mut self) {}
    }

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn source(expected_size: Option<u64>, max_size: u64) -> ShardSource {
        ShardSource {
            instance_uuid: "i".into(),
            backup_id: "b1".into(),
            expected_size,
            max_size,
            route: DownloadRoute::Public,
            fresh_urls: None,
        }
    }

    type Item = Result<Bytes, String>;

    fn ok(bytes: &'static [u8]) -> Item {
        Ok(Bytes::from_static(bytes))
    }

    /// Runs `pump` over `items` with `checker` already holding `have` bytes; the clock reads
    /// `now` and the deadline is `t0()`.
    async fn run(
        src: &ShardSource,
        guard: RateGuard,
        now: DateTime<Utc>,
        body: impl Stream<Item = Item> + Unpin,
        skip: u64,
        have: &[u8],
    ) -> (Result<End, Error>, Vec<u8>, u64) {
        let clock = ManualClock::new(now);
        let cancel = tokio_util::sync::CancellationToken::new();
        let call = Call {
            src,
            guard,
            clock: &clock,
            progress: &|_| {},
            cancel: &cancel,
            deadline: t0(),
        };
        let mut checker = Checker::new();
        checker.update(have);
        let mut sink = VecSink::default();
        let end = pump(&call, body, skip, &mut checker, &mut sink).await;
        (end, sink.0, checker.bytes())
    }

    fn stream(items: Vec<Item>) -> impl Stream<Item = Item> + Unpin {
        futures::stream::iter(items)
    }

    #[tokio::test]
    async fn a_whole_body_completes() {
        let src = source(Some(6), 0);
        let body = stream(vec![ok(b"abc"), ok(b"def")]);
        let (end, written, n) = run(&src, RateGuard::default(), t0(), body, 0, b"").await;
        assert_eq!(end.unwrap(), End::Complete);
        assert_eq!((written.as_slice(), n), (&b"abcdef"[..], 6));
    }

    #[tokio::test]
    async fn a_200_to_a_range_request_drops_what_we_have_across_chunks() {
        // We hold "ab"; the host ignored Range and sends the whole file again.
        let src = source(Some(6), 0);
        let body = stream(vec![ok(b"a"), ok(b"bc"), ok(b"def")]);
        let (end, written, n) = run(&src, RateGuard::default(), t0(), body, 2, b"ab").await;
        assert_eq!(end.unwrap(), End::Complete);
        assert_eq!((written.as_slice(), n), (&b"cdef"[..], 6));
    }

    #[test]
    fn skipping_keeps_only_the_new_bytes() {
        let mut skip = 5;
        let mut chunk = Bytes::from_static(b"abc");
        assert!(
            !drop_skipped(&mut chunk, &mut skip),
            "all of it was skipped"
        );
        assert_eq!(skip, 2);
        let mut chunk = Bytes::from_static(b"defg");
        assert!(drop_skipped(&mut chunk, &mut skip));
        assert_eq!((&chunk[..], skip), (&b"fg"[..], 0));
        let mut empty = Bytes::new();
        assert!(
            drop_skipped(&mut empty, &mut skip),
            "nothing to skip: kept as is"
        );
    }

    #[tokio::test]
    async fn a_body_longer_than_announced_is_cut_before_the_extra_byte_is_written() {
        let src = source(Some(5), 1 << 30);
        let body = stream(vec![ok(b"abc"), ok(b"def")]);
        let (end, written, _) = run(&src, RateGuard::default(), t0(), body, 0, b"").await;
        assert_eq!(
            end.unwrap_err().to_string(),
            "verification failed: the download is longer than the provider's BackupSize (5 bytes)"
        );
        assert_eq!(written, b"abc");
    }

    #[test]
    fn without_an_announced_size_max_backup_size_bounds_the_body() {
        let src = source(None, 10);
        assert!(check_bound(&src, 6, 4).is_ok(), "exactly the limit");
        assert_eq!(
            check_bound(&src, 6, 5).unwrap_err().to_string(),
            "verification failed: the provider announced no BackupSize and the download passed limits.max_backup_size (10 bytes)"
        );
        // An announced size is the bound, however large the limit.
        assert!(check_bound(&source(Some(4), 1 << 40), 4, 1).is_err());
    }

    #[tokio::test]
    async fn a_body_that_ends_early_or_breaks_is_resumed() {
        let src = source(Some(6), 0);
        let body = stream(vec![ok(b"abc")]);
        let (end, _, _) = run(&src, RateGuard::default(), t0(), body, 0, b"").await;
        assert_eq!(
            end.unwrap(),
            End::Interrupted {
                problem: "body ended at byte 3 of 6".into(),
                got: 3,
                stalled: false,
            }
        );
        let body = stream(vec![ok(b"cd"), Err("reset by peer".into())]);
        let (end, _, _) = run(&src, RateGuard::default(), t0(), body, 0, b"ab").await;
        assert_eq!(
            end.unwrap(),
            End::Interrupted {
                problem: "connection broken at byte 4: reset by peer".into(),
                got: 2,
                stalled: false,
            }
        );
        assert_eq!(
            ended_early(None, 3),
            None,
            "no announced size: any end is the end"
        );
        assert_eq!(ended_early(Some(3), 3), None);
    }

    #[tokio::test]
    async fn a_passed_deadline_stops_after_the_chunk_in_hand() {
        let src = source(Some(6), 0);
        let late = t0() + chrono::Duration::milliseconds(1);
        let body = stream(vec![ok(b"abc"), ok(b"def")]);
        let (end, written, _) = run(&src, RateGuard::default(), late, body, 0, b"").await;
        assert!(matches!(end, Err(Error::Deadline)), "{end:?}");
        assert_eq!(written, b"abc");
        // At the deadline itself the download goes on.
        let body = stream(vec![ok(b"abc"), ok(b"def")]);
        let (end, _, _) = run(&src, RateGuard::default(), t0(), body, 0, b"").await;
        assert_eq!(end.unwrap(), End::Complete);
    }

    #[tokio::test]
    async fn a_connection_that_trickles_is_cut_as_stalled() {
        // 1000 B/s over 100 ms: 100 bytes are due per window; 10 come, then nothing.
        let guard = RateGuard {
            min_bytes_per_second: 1000,
            window: Duration::from_millis(100),
        };
        let src = source(Some(1000), 0);
        let body = stream(vec![ok(b"0123456789")]).chain(futures::stream::pending());
        let (end, written, _) = tokio::time::timeout(
            Duration::from_secs(10),
            run(&src, guard, t0(), body, 0, b""),
        )
        .await
        .expect("the stall is noticed");
        let End::Interrupted {
            problem,
            got,
            stalled,
        } = end.unwrap()
        else {
            panic!("a stalled connection is interrupted");
        };
        assert!(stalled);
        assert_eq!((got, written.len()), (10, 10));
        assert!(
            problem.starts_with("download stalled at byte 10: ")
                && problem.ends_with(
                    "below cds.download_min_rate 1000B/s over cds.download_rate_window 100ms"
                ),
            "{problem}"
        );
    }

    #[tokio::test]
    async fn cancellation_stops_the_pump() {
        let src = source(Some(6), 0);
        let clock = ManualClock::new(t0());
        let cancel = tokio_util::sync::CancellationToken::new();
        cancel.cancel();
        let call = Call {
            src: &src,
            guard: RateGuard::default(),
            clock: &clock,
            progress: &|_| {},
            cancel: &cancel,
            deadline: t0(),
        };
        let mut checker = Checker::new();
        let body = stream(vec![ok(b"abc")]);
        let end = pump(&call, body, 0, &mut checker, &mut VecSink::default()).await;
        assert!(matches!(end, Err(Error::Cancelled)), "{end:?}");
        assert_eq!(checker.bytes(), 0);
    }
}
