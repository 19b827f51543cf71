//! An in-memory sink for tests and examples.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use super::{Counters, DecisionEvent, DecisionRecord, DecisionSink, SinkStats};

/// Keeps decision records in memory, up to a capacity; records beyond it are dropped and
/// counted. Cheap to clone (clones share the buffer). Meant for tests: `record` takes a
/// short lock.
#[derive(Debug, Clone)]
pub struct MemorySink {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    records: Mutex<VecDeque<DecisionRecord>>,
    capacity: usize,
    counters: Counters,
}

impl MemorySink {
    /// A sink that holds at most `capacity` records.
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        MemorySink {
            inner: Arc::new(Inner {
                records: Mutex::new(VecDeque::new()),
                capacity,
                counters: Counters::new("memory"),
            }),
        }
    }

    /// Removes and returns the records held.
    #[must_use]
    pub fn take(&self) -> Vec<DecisionRecord> {
        let mut q = self
            .inner
            .records
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        q.drain(..).collect()
    }

    /// A copy of the records held.
    #[must_use]
    pub fn records(&self) -> Vec<DecisionRecord> {
        let q = self
            .inner
            .records
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        q.iter().cloned().collect()
    }

    /// The sink's counters (`written` counts records stored).
    #[must_use]
    pub fn stats(&self) -> SinkStats {
        self.inner.counters.stats()
    }
}

impl DecisionSink for MemorySink {
    fn record(&self, event: &DecisionEvent<'_>) {
        let c = &self.inner.counters;
        c.offered();
        let mut q = self
            .inner
            .records
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if q.len() >= self.inner.capacity {
            c.dropped();
            return;
        }
        q.push_back(DecisionRecord::from_event(event));
        c.depth(q.len());
        c.written(1);
    }
}
