//! Time: the one place elvon reads clocks and turns durations into deadlines.
//!
//! [`Clock`] is the injectable clock: the system clock by default, or a fake one that moves
//! only when a test moves it, so reward windows and refresh intervals can be tested without
//! sleeping:
//!
//! ```
//! use std::time::Duration;
//! use elvon::clock::Clock;
//!
//! let clock = Clock::fake(1_000);
//! let engine = elvon::Engine::builder().clock(clock.clone()).build();
//! assert_eq!(clock.now_ms(), 1_000);
//! clock.advance(Duration::from_secs(60)); // a minute passes at once
//! assert_eq!(clock.now_ms(), 61_000);
//! # drop(engine);
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A clock: the system's, or a fake one for deterministic tests. Cheap to clone; clones of a
/// fake clock share its time.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    fake: Option<Arc<AtomicU64>>,
}

impl Clock {
    /// The system clock.
    #[must_use]
    pub fn system() -> Self {
        Clock { fake: None }
    }

    /// A fake clock standing at `start_ms` (milliseconds since the Unix epoch), moved only
    /// by [`advance`](Self::advance) and [`set_ms`](Self::set_ms).
    #[must_use]
    pub fn fake(start_ms: u64) -> Self {
        Clock {
            fake: Some(Arc::new(AtomicU64::new(start_ms))),
        }
    }

    /// Whether this is a fake clock.
    #[must_use]
    pub fn is_fake(&self) -> bool {
        self.fake.is_some()
    }

    /// Moves a fake clock forward by `d` (saturating); does nothing to the system clock.
    pub fn advance(&self, d: Duration) {
        if let Some(t) = &self.fake {
            let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
            let _ = t.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                Some(v.saturating_add(ms))
            });
        }
    }

    /// Sets a fake clock to `ms`; does nothing to the system clock.
    pub fn set_ms(&self, ms: u64) {
        if let Some(t) = &self.fake {
            t.store(ms, Ordering::Release);
        }
    }

    /// Milliseconds since the Unix epoch.
    #[must_use]
    pub fn now_ms(&self) -> u64 {
        match &self.fake {
            Some(t) => t.load(Ordering::Acquire),
            None => unix_now_ms(),
        }
    }

    /// [`now_ms`](Self::now_ms) from the coarse system clock (a few ms of resolution, but
    /// a vDSO read of a few nanoseconds): decision timestamps.
    #[inline]
    pub(crate) fn coarse_now_ms(&self) -> u64 {
        match &self.fake {
            Some(t) => t.load(Ordering::Acquire),
            None => coarse_unix_now_ms(),
        }
    }

    /// Milliseconds on a scale that never goes back: since the first call in this process
    /// for the system clock (immune to wall-clock steps), the fake time for a fake clock.
    /// What reward windows and refresh intervals are measured on.
    #[inline]
    #[must_use]
    pub fn monotonic_ms(&self) -> u64 {
        match &self.fake {
            Some(t) => t.load(Ordering::Acquire),
            None => {
                static START: OnceLock<Instant> = OnceLock::new();
                u64::try_from(START.get_or_init(Instant::now).elapsed().as_millis())
                    .unwrap_or(u64::MAX)
            }
        }
    }
}

/// `from + d`, saturating: a duration too large for an `Instant` (`Duration::MAX` is a
/// natural way to say "no deadline") gives the latest instant the platform can represent
/// near it instead of panicking.
pub(crate) fn deadline_after(from: Instant, d: Duration) -> Instant {
    if let Some(t) = from.checked_add(d) {
        return t;
    }
    // Halve until it fits: at most ~64 steps, only for absurd durations.
    let mut step = d / 2;
    let mut t = from;
    while !step.is_zero() {
        if let Some(next) = t.checked_add(step) {
            t = next;
        } else {
            step /= 2;
        }
    }
    t
}

/// A deadline `d` from now, saturating (see [`deadline_after`]).
pub(crate) fn deadline(d: Duration) -> Instant {
    deadline_after(Instant::now(), d)
}

/// Now, as unix milliseconds (0 if the clock is before 1970).
pub(crate) fn unix_now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |t| {
        t.as_secs()
            .saturating_mul(1000)
            .saturating_add(u64::from(t.subsec_millis()))
    })
}

/// Now, as unix milliseconds, from the kernel's coarse real-time clock where there is one
/// (Linux's `CLOCK_REALTIME_COARSE`: the time at the last timer tick, so up to one tick
/// behind, typically 1–4 ms, for about a fifth of the cost of the precise clock). Elsewhere
/// the precise clock. The capture queues stamp records with it.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn coarse_unix_now_ms() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse);
    match (u64::try_from(t.tv_sec), u64::try_from(t.tv_nsec)) {
        (Ok(s), Ok(ns)) => s.saturating_mul(1000).saturating_add(ns / 1_000_000),
        _ => 0,
    }
}

/// Now, as unix milliseconds (the precise clock: this platform has no coarse one).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn coarse_unix_now_ms() -> u64 {
    unix_now_ms()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_durations_saturate() {
        let now = Instant::now();
        let far = deadline_after(now, Duration::MAX);
        assert!(far > now + Duration::from_secs(86_400 * 365 * 100));
        assert_eq!(
            deadline_after(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
    }
}
