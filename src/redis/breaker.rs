//! The circuit breaker in front of Redis.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::features::SourceError;

/// Breaker states, as the gauge reports them.
pub(super) const CLOSED: u32 = 0;
pub(super) const OPEN: u32 = 1;
pub(super) const PROBING: u32 = 2;

/// A consecutive-failure circuit breaker.
pub(super) struct Breaker {
    threshold: u32,
    cool_down: Duration,
    epoch: Instant,
    failures: AtomicU32,
    pub(super) state: AtomicU32,
    /// Monotonic ms (since `epoch`) when an open breaker may probe.
    retry_at: AtomicU64,
    probe_out: AtomicBool,
}

impl Breaker {
    pub(super) fn new(threshold: u32, cool_down: Duration) -> Self {
        Breaker {
            threshold: threshold.max(1),
            cool_down,
            epoch: Instant::now(),
            failures: AtomicU32::new(0),
            state: AtomicU32::new(CLOSED),
            retry_at: AtomicU64::new(0),
            probe_out: AtomicBool::new(false),
        }
    }

    pub(super) fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
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
        Err(SourceError::Unavailable(format!(
            "redis circuit breaker open after {} consecutive failures; next probe in {} ms",
            self.failures.load(Ordering::Relaxed),
            at.saturating_sub(now)
        )))
    }

    pub(super) fn success(&self) {
        self.failures.store(0, Ordering::Relaxed);
        if self.state.load(Ordering::Acquire) != CLOSED {
            self.probe_out.store(false, Ordering::Release);
            self.set_state(CLOSED);
        }
    }

    pub(super) fn failure(&self) {
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let state = self.state.load(Ordering::Acquire);
        if state == PROBING || (state == CLOSED && n >= self.threshold) {
            let cool = u64::try_from(self.cool_down.as_millis()).unwrap_or(u64::MAX);
            self.retry_at
                .store(self.now().saturating_add(cool), Ordering::Release);
            self.set_state(OPEN);
            self.probe_out.store(false, Ordering::Release);
        }
    }

    pub(super) fn set_state(&self, s: u32) {
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
