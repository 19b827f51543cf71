//! The circuit breaker in front of Redis: opens on a failure *rate* over a sliding window.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::clock::Clock;
use crate::features::SourceError;

/// Breaker states, as the gauge reports them.
pub(super) const CLOSED: u32 = 0;
pub(super) const OPEN: u32 = 1;
pub(super) const PROBING: u32 = 2;

/// Buckets of the sliding window.
const BUCKETS: usize = 10;

/// After a failed probe the next one may go this soon, once: the first probe after Redis
/// came back often fails only because the connection is still being re-established.
const QUICK_REPROBE_MS: u64 = 50;

/// Calls and failures of one bucket of the window, packed as
/// `bucket number (24 bits) | calls (20 bits) | failures (20 bits)`.
#[derive(Default)]
struct Bucket(AtomicU64);

const COUNT_BITS: u32 = 20;
const COUNT_MAX: u64 = (1 << COUNT_BITS) - 1;

fn unpack(v: u64) -> (u64, u64, u64) {
    (
        v >> (2 * COUNT_BITS),
        (v >> COUNT_BITS) & COUNT_MAX,
        v & COUNT_MAX,
    )
}

/// A circuit breaker that opens when, within the last window, at least `min_failures` calls
/// failed and they were at least `rate` of the calls.
pub(super) struct Breaker {
    min_failures: u64,
    rate: f64,
    /// Length of one bucket, in ms.
    bucket_ms: u64,
    cool_down: Duration,
    /// Windows and cool-downs are measured on this clock's monotonic scale.
    clock: Clock,
    window: [Bucket; BUCKETS],
    pub(super) state: AtomicU32,
    /// The clock's monotonic ms when an open breaker may probe.
    retry_at: AtomicU64,
    probe_out: AtomicBool,
    /// The last probe failed and was followed by a quick re-probe already.
    reprobed: AtomicBool,
}

impl Breaker {
    pub(super) fn new(
        min_failures: u32,
        rate: f64,
        window: Duration,
        cool_down: Duration,
        clock: Clock,
    ) -> Self {
        let window_ms = u64::try_from(window.as_millis())
            .unwrap_or(u64::MAX)
            .max(10);
        Breaker {
            min_failures: u64::from(min_failures.max(1)),
            rate,
            bucket_ms: (window_ms / BUCKETS as u64).max(1),
            cool_down,
            clock,
            window: Default::default(),
            state: AtomicU32::new(CLOSED),
            retry_at: AtomicU64::new(0),
            probe_out: AtomicBool::new(false),
            reprobed: AtomicBool::new(false),
        }
    }

    fn now(&self) -> u64 {
        self.clock.monotonic_ms()
    }

    /// Counts one call (and whether it failed) into the current bucket.
    fn count(&self, now: u64, failed: bool) {
        let n = (now / self.bucket_ms) & ((1 << 24) - 1);
        let b = &self.window[(now / self.bucket_ms) as usize % BUCKETS].0;
        let mut cur = b.load(Ordering::Relaxed);
        loop {
            let (id, calls, fails) = unpack(cur);
            let (calls, fails) = if id == n { (calls, fails) } else { (0, 0) };
            let next = n << (2 * COUNT_BITS)
                | (calls + 1).min(COUNT_MAX) << COUNT_BITS
                | (fails + u64::from(failed)).min(COUNT_MAX);
            match b.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return,
                Err(v) => cur = v,
            }
        }
    }

    /// Calls and failures in the window ending now.
    fn totals(&self, now: u64) -> (u64, u64) {
        let current = now / self.bucket_ms;
        let (mut calls, mut fails) = (0, 0);
        for b in &self.window {
            let (id, c, f) = unpack(b.0.load(Ordering::Acquire));
            // Only buckets of the last BUCKETS periods (24-bit bucket numbers wrap).
            let age = (current & ((1 << 24) - 1)).wrapping_sub(id) & ((1 << 24) - 1);
            if age < BUCKETS as u64 {
                calls += c;
                fails += f;
            }
        }
        (calls, fails)
    }

    /// `Ok` to go ahead; `Err` while open (or while another probe is out).
    pub(super) fn admit(&self) -> Result<(), SourceError> {
        if self.state.load(Ordering::Acquire) == CLOSED {
            return Ok(());
        }
        let now = self.now();
        let at = self.retry_at.load(Ordering::Acquire);
        if now >= at
            && self
                .probe_out
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.set_state(PROBING);
            return Ok(());
        }
        let (calls, fails) = self.totals(now);
        Err(SourceError::Unavailable(format!(
            "redis circuit breaker open ({fails} of {calls} calls failed in the last window); \
             next probe in {} ms",
            at.saturating_sub(now)
        )))
    }

    pub(super) fn success(&self) {
        let now = self.now();
        self.count(now, false);
        if self.state.load(Ordering::Acquire) != CLOSED {
            self.reprobed.store(false, Ordering::Relaxed);
            self.probe_out.store(false, Ordering::Release);
            self.set_state(CLOSED);
        }
    }

    pub(super) fn failure(&self) {
        let now = self.now();
        self.count(now, true);
        match self.state.load(Ordering::Acquire) {
            PROBING => {
                // One quick re-probe after a failed probe, then the full cool-down again.
                let quick = !self.reprobed.swap(true, Ordering::Relaxed);
                let wait = if quick {
                    QUICK_REPROBE_MS
                } else {
                    self.reprobed.store(false, Ordering::Relaxed);
                    self.cool_ms()
                };
                self.open(now, wait);
            }
            CLOSED => {
                let (calls, fails) = self.totals(now);
                if fails >= self.min_failures && fails as f64 >= self.rate * calls as f64 {
                    self.open(now, self.cool_ms());
                }
            }
            _ => {}
        }
    }

    fn cool_ms(&self) -> u64 {
        u64::try_from(self.cool_down.as_millis()).unwrap_or(u64::MAX)
    }

    fn open(&self, now: u64, wait_ms: u64) {
        self.retry_at
            .store(now.saturating_add(wait_ms), Ordering::Release);
        self.set_state(OPEN);
        self.probe_out.store(false, Ordering::Release);
    }

    fn set_state(&self, s: u32) {
        if self.state.swap(s, Ordering::AcqRel) != s {
            metrics::gauge!("elvon_redis_breaker_state").set(f64::from(s));
            if s == OPEN {
                metrics::counter!("elvon_redis_breaker_opened_total").increment(1);
            }
        }
    }
}

/// How the breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakerState {
    /// Calls go to Redis.
    Closed,
    /// Calls fail at once until the cool-down passes.
    Open,
    /// One probe call is out; its result closes or re-opens the breaker.
    Probing,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(
            5,
            0.5,
            Duration::from_secs(60),
            Duration::from_secs(60),
            Clock::fake(0),
        )
    }

    /// Point 15 of issue 13: a few failures among many successes (one bad user, one slow
    /// call) do not open the breaker; a failure rate over the threshold does.
    #[test]
    fn opens_on_a_failure_rate_not_on_a_run_of_failures() {
        let b = breaker();
        for _ in 0..100 {
            b.success();
        }
        for _ in 0..10 {
            b.failure();
        }
        assert_eq!(b.state.load(Ordering::Acquire), CLOSED, "10 of 110 failed");
        for _ in 0..100 {
            b.failure();
        }
        assert_eq!(b.state.load(Ordering::Acquire), OPEN, "110 of 210 failed");
        assert!(b.admit().is_err());
    }

    #[test]
    fn a_dead_backend_opens_after_the_minimum_failures() {
        let b = breaker();
        for _ in 0..4 {
            b.failure();
        }
        assert_eq!(b.state.load(Ordering::Acquire), CLOSED);
        b.failure();
        assert_eq!(b.state.load(Ordering::Acquire), OPEN);
    }

    /// Point 16: a failed probe is followed by a quick re-probe, not a whole cool-down.
    #[test]
    fn a_failed_probe_is_retried_quickly_once() {
        let clock = Clock::fake(1_000);
        let b = Breaker::new(
            1,
            0.5,
            Duration::from_secs(1),
            Duration::ZERO,
            clock.clone(),
        );
        b.failure();
        assert_eq!(b.state.load(Ordering::Acquire), OPEN);
        assert!(b.admit().is_ok(), "cool-down of zero: probe at once");
        b.failure();
        let first = b.retry_at.load(Ordering::Acquire);
        assert_eq!(first, b.now() + QUICK_REPROBE_MS, "quick re-probe");
        assert!(b.admit().is_err(), "not before the re-probe is due");
        clock.advance(Duration::from_millis(QUICK_REPROBE_MS));
        assert!(b.admit().is_ok(), "re-probe admitted");
        b.success();
        assert_eq!(b.state.load(Ordering::Acquire), CLOSED);
    }

    #[test]
    fn an_open_breaker_probes_once_the_cool_down_has_passed_on_its_clock() {
        let clock = Clock::fake(5_000);
        let b = Breaker::new(
            1,
            0.5,
            Duration::from_secs(1),
            Duration::from_secs(30),
            clock.clone(),
        );
        b.failure();
        assert!(b.admit().is_err(), "open");
        clock.advance(Duration::from_millis(29_999));
        assert!(
            b.admit().is_err(),
            "a millisecond before the cool-down ends"
        );
        clock.advance(Duration::from_millis(1));
        assert!(b.admit().is_ok(), "the probe");
        assert!(b.admit().is_err(), "one probe at a time");
        b.success();
        assert_eq!(b.state.load(Ordering::Acquire), CLOSED);
    }
}
