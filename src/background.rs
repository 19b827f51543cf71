//! The one background-thread type: a named thread, a stop signal it can sleep on, and a
//! join when the handle is dropped. The learner thread, both config watchers and the feature
//! updater run on it.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// Starts thread `name`, which calls `tick` every `period` and ends the first time `tick`
/// returns `false`; returns whether it started. For process-wide helpers that run only while
/// they have work (the snapshot reclaimer, the decision-count publisher): the caller keeps
/// its own "running" flag under the lock its `tick` takes, so a new thread is started only
/// after the old one said it was done.
pub(crate) fn spawn_while_needed(name: &str, period: Duration, tick: fn() -> bool) -> bool {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || loop {
            std::thread::sleep(period);
            if !tick() {
                return;
            }
        })
        .is_ok()
}

/// The stop signal a background thread checks and sleeps on.
#[derive(Debug, Default)]
pub(crate) struct Stop {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl Stop {
    /// Whether the thread was told to stop.
    #[cfg_attr(not(any(feature = "kafka", feature = "postgres")), allow(dead_code))]
    pub(crate) fn is_set(&self) -> bool {
        *self.stopped.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sleeps up to `d`, waking early when told to stop; returns whether it was.
    pub(crate) fn sleep(&self, d: Duration) -> bool {
        let guard = self.stopped.lock().unwrap_or_else(PoisonError::into_inner);
        let (guard, _) = self
            .wake
            .wait_timeout_while(guard, d, |stopped| !*stopped)
            .unwrap_or_else(PoisonError::into_inner);
        *guard
    }

    fn set(&self) {
        *self.stopped.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.wake.notify_all();
    }
}

/// A running background thread; dropping it stops the thread and waits for it.
#[derive(Debug)]
#[must_use = "dropping the handle stops the thread"]
pub(crate) struct Background {
    stop: Arc<Stop>,
    handle: Option<JoinHandle<()>>,
}

impl Background {
    /// Starts thread `name` running `f`, which should return soon after its [`Stop`] is set.
    pub(crate) fn spawn(
        name: &str,
        f: impl FnOnce(&Stop) + Send + 'static,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(Stop::default());
        let signal = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || f(&signal))?;
        Ok(Background {
            stop,
            handle: Some(handle),
        })
    }

    /// Tells the thread to stop and waits for it (once; later calls do nothing).
    pub(crate) fn stop(&mut self) {
        self.stop.set();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// The thread sleeps on its stop signal; dropping the handle wakes it at once and joins it
    /// (the sleep is an hour: the test would hang if the stop did not wake it).
    #[test]
    fn dropping_the_handle_wakes_and_joins_the_thread() {
        let rounds = Arc::new(AtomicU64::new(0));
        let seen = Arc::clone(&rounds);
        let bg = Background::spawn("elvon-test", move |stop| {
            while !stop.sleep(Duration::from_secs(3_600)) {
                seen.fetch_add(1, Ordering::Relaxed);
            }
            seen.fetch_add(100, Ordering::Relaxed);
        })
        .expect("spawn");
        drop(bg);
        assert_eq!(
            rounds.load(Ordering::Relaxed),
            100,
            "stopped, ran its exit path"
        );
    }
}
