//! Time: the one place elvon reads clocks and turns durations into deadlines.

use std::time::{Duration, Instant};

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
