//! The rate guard's two decisions: whether a connection is too slow to keep (`RateMeter`), and
//! whether a connection that ended brought progress (`made_progress`). Both take times and byte
//! counts as plain values. Times are monotonic (`Instant`), not the injected wall clock: a rate
//! is a duration measurement, and a wall clock that steps would fake a stall or hide one.

use super::RateGuard;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Bytes received on one connection in slices of the window, so the rate over the last window
/// is known in constant memory.
pub(super) struct RateMeter {
    guard: RateGuard,
    started: Instant,
    /// How often the pump asks whether the connection stalled.
    pub(super) slice: Duration,
    /// (slice start, bytes), oldest first.
    slices: VecDeque<(Instant, u64)>,
}

impl RateMeter {
    pub(super) fn new(guard: RateGuard, now: Instant) -> Self {
        RateMeter {
            guard,
            started: now,
            slice: (guard.window / 8).max(Duration::from_millis(10)),
            slices: VecDeque::new(),
        }
    }

    pub(super) fn record(&mut self, now: Instant, bytes: u64) {
        match self.slices.back_mut() {
            Some((start, n)) if now.saturating_duration_since(*start) < self.slice => *n += bytes,
            _ => self.slices.push_back((now, bytes)),
        }
        self.forget(now);
    }

    /// Leaves `span` out of the measurement: time spent waiting for our own destination is not
    /// the download host's slowness.
    pub(super) fn exclude(&mut self, span: Duration) {
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
    pub(super) fn stalled(&mut self, now: Instant) -> Option<u64> {
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

/// Whether a connection that brought `got` bytes before it ended made progress (resetting the
/// count of attempts without progress). A connection cut for being too slow that brought less
/// than a window's worth is no progress, or a host that trickles would be retried forever.
pub(super) fn made_progress(guard: RateGuard, got: u64, stalled: bool) -> bool {
    got > 0 && !(stalled && got < guard.bytes_per_window())
}

/// The problem a stalled connection is given up with.
pub(super) fn stall_problem(at_byte: u64, got: u64, guard: RateGuard) -> String {
    format!(
        "download stalled at byte {at_byte}: {} in the last {}, below {}",
        crate::config::units::format_size(got),
        crate::config::units::format_duration(guard.window),
        guard.describe()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUARD: RateGuard = RateGuard {
        min_bytes_per_second: 1000,
        window: Duration::from_secs(10),
    };

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn the_rate_meter_flags_a_trickle_but_not_a_steady_or_paused_stream() {
        let guard = GUARD;
        let t0 = Instant::now();
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
    fn a_rate_below_the_minimum_over_a_whole_window_is_a_stall() {
        let t0 = Instant::now();
        let mut m = RateMeter::new(GUARD, t0);
        // 900 B/s against a minimum of 1000 B/s.
        for i in 1..=9 {
            m.record(t0 + s(i), 900);
            assert_eq!(m.stalled(t0 + s(i)), None, "second {i}: less than a window");
        }
        m.record(t0 + s(10), 900);
        assert_eq!(m.stalled(t0 + s(10)), Some(9000));
    }

    #[test]
    fn a_short_burst_that_brings_the_window_above_the_minimum_is_no_stall() {
        let t0 = Instant::now();
        let mut m = RateMeter::new(GUARD, t0);
        // Nothing for 9 s, then a window's worth in one burst.
        m.record(t0 + s(9), 10_000);
        assert_eq!(m.stalled(t0 + s(10)), None);
        assert_eq!(
            m.stalled(t0 + s(18)),
            None,
            "the burst is still in the window"
        );
        // Once the burst has left the window the rate is judged again.
        assert_eq!(m.stalled(t0 + s(21)), Some(0));
        // A burst just short of the minimum is a stall.
        let mut m = RateMeter::new(GUARD, t0);
        m.record(t0 + s(9), 9_999);
        assert_eq!(m.stalled(t0 + s(10)), Some(9_999));
    }

    #[test]
    fn a_cut_connection_is_progress_only_with_a_windows_worth() {
        // 1000 B/s over 10 s: 10,000 bytes per window.
        assert!(!made_progress(GUARD, 0, false), "nothing is no progress");
        assert!(
            made_progress(GUARD, 1, false),
            "any byte of a broken connection"
        );
        assert!(!made_progress(GUARD, 9_999, true), "a trickle that was cut");
        assert!(made_progress(GUARD, 10_000, true));
        assert!(!made_progress(GUARD, 0, true));
    }

    #[test]
    fn a_stall_names_the_rate_and_the_window() {
        assert_eq!(
            stall_problem(4096, 500, GUARD),
            "download stalled at byte 4096: 500B in the last 10s, below cds.download_min_rate 1000B/s over cds.download_rate_window 10s"
        );
    }
}
