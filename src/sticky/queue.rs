//! The engine's assignment writer: a bounded queue the deciding threads put new assignments
//! in, and a thread that writes them to the store in batches.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{AssignmentError, AssignmentStats, AssignmentStore, AssignmentWrite};

/// Default capacity of the assignment write queue.
pub const DEFAULT_ASSIGNMENT_QUEUE: usize = 16_384;

/// Writes taken from the queue for one `put` at most.
const BATCH: usize = 256;

#[derive(Debug, Default)]
struct Counts {
    offered: AtomicU64,
    written: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// The store, the queue's sending end and the writer thread (joined on drop, after it wrote
/// what was queued).
pub(crate) struct Writer {
    pub(crate) store: Arc<dyn AssignmentStore>,
    tx: Option<SyncSender<AssignmentWrite>>,
    counts: Arc<Counts>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// A writer with a queue of `capacity` (at least 1) writes.
    pub(crate) fn new(store: Arc<dyn AssignmentStore>, capacity: usize) -> Self {
        let (tx, rx) = sync_channel(capacity.max(1));
        let counts = Arc::new(Counts::default());
        let (s, c) = (Arc::clone(&store), Arc::clone(&counts));
        let thread = std::thread::Builder::new()
            .name("elvon-sticky".into())
            .spawn(move || write_loop(&*s, &rx, &c));
        let (tx, thread) = match thread {
            Ok(t) => (Some(tx), Some(t)),
            Err(e) => {
                // Without a writer every offer counts as dropped, and the error says why.
                *counts
                    .last_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) =
                    Some(format!("the assignment writer thread did not start: {e}"));
                (None, None)
            }
        };
        Writer {
            store,
            tx,
            counts,
            thread,
        }
    }

    /// Queues `w` without waiting; a full queue drops it (counted).
    pub(crate) fn offer(&self, w: AssignmentWrite) {
        self.counts.offered.fetch_add(1, Ordering::Relaxed);
        // Full or closed alike: the write is dropped, never waited for.
        let sent = self.tx.as_ref().is_some_and(|tx| tx.try_send(w).is_ok());
        if !sent {
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
            writes_counted("dropped", 1);
        }
    }

    pub(crate) fn stats(&self) -> AssignmentStats {
        let c = &self.counts;
        // Finished counts first: a write finishing between the loads is then seen as
        // pending, never as more finished than offered.
        let (written, dropped, failed) = (
            c.written.load(Ordering::Acquire),
            c.dropped.load(Ordering::Acquire),
            c.failed.load(Ordering::Acquire),
        );
        AssignmentStats {
            offered: c.offered.load(Ordering::Acquire),
            written,
            dropped,
            failed,
            last_error: c
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }

    /// Waits until every write offered before the call is written or failed, at most
    /// `timeout`.
    pub(crate) fn flush(&self, timeout: Duration) -> Result<(), AssignmentError> {
        let target = self.counts.offered.load(Ordering::Acquire);
        let start = Instant::now();
        loop {
            let s = self.stats();
            let done = s.written + s.dropped + s.failed;
            if done >= target {
                return Ok(());
            }
            if start.elapsed() >= timeout {
                return Err(AssignmentError::Timeout {
                    timeout,
                    pending: target - done,
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the queue ends the thread once it has written what is queued.
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn write_loop(store: &dyn AssignmentStore, rx: &Receiver<AssignmentWrite>, counts: &Counts) {
    let mut batch = Vec::with_capacity(BATCH);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        let (written, failed, error) = match store.put(&batch) {
            Ok(()) => (n, 0, None),
            Err(e @ AssignmentError::Full { rejected, .. }) => {
                let rejected = (rejected as u64).min(n);
                (n - rejected, rejected, Some(e.to_string()))
            }
            Err(e) => (0, n, Some(e.to_string())),
        };
        if let Some(e) = error {
            *counts
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(e);
        }
        counts.written.fetch_add(written, Ordering::Release);
        counts.failed.fetch_add(failed, Ordering::Release);
        writes_counted("written", written);
        writes_counted("failed", failed);
        batch.clear();
    }
}

fn writes_counted(outcome: &'static str, n: u64) {
    if n > 0 {
        metrics::counter!("elvon_sticky_writes_total", "outcome" => outcome).increment(n);
    }
}
