//! The capture queue behind the JSON-lines and Kafka sinks: per-thread rings of atomic
//! words, so that `record` allocates nothing, takes no lock and makes no system call.
//!
//! Each deciding thread gets one single-producer ring per sink, allocated on its first record.
//! `record` encodes the decision into the ring with plain (relaxed) stores and publishes it
//! with one release store of the ring's tail; it counts the record as offered, and as dropped
//! when the ring is full. One writer thread per sink drains every ring, turns each record
//! into the JSON of a [`DecisionRecord`](super::DecisionRecord) and hands it to the backend
//! (the file, or Kafka). The writer never blocks on the rings, so a deciding thread never
//! has a sleeper to wake: it sleeps 1 ms between passes (up to 4 ms while the rings stay
//! empty, none while it is behind), and `flush` wakes it.
//!
//! The snapshot a record refers to (for variant and rule names) is not reference-counted per
//! record: a ring passes a snapshot to the writer once, through a side queue, and its later
//! records refer to the last one passed. A snapshot passed stays alive until the writer has
//! moved past it, so comparing addresses on the deciding thread is exact.

use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;
use std::time::Duration;

use super::{Counters, DecisionEvent, FlushError, Overflow, SinkStats};

/// Words of a record before its payload (one more when it has a model version).
const HEADER: u64 = 8;
/// Header flag: the ring's next side-queue snapshot applies from this record on.
const NEW_SNAP: u64 = 1;
/// Header flag: the record has a model version (the word after the header).
const HAS_MODEL: u64 = 2;
/// Header flag: the payload carries the slot name (one the snapshot does not have).
const SLOT_NAME: u64 = 4;
/// Header flag: the record has a pass probability below 1 (the word after the header and
/// the model version).
const HAS_PASS: u64 = 8;

/// Words between the header and the payload: the model version and the pass probability,
/// when the flags say they are there.
fn extra_words(flags: u64) -> u64 {
    u64::from(flags & HAS_MODEL != 0) + u64::from(flags & HAS_PASS != 0)
}
/// Snapshots a ring may have passed to the writer and the writer not yet reached.
const SNAPS: usize = 16;
/// Ring words per record of queue capacity (128 bytes); a ring has at least [`MIN_WORDS`].
const WORDS_PER_RECORD: usize = 16;
const MIN_WORDS: usize = 4096;
const MAX_WORDS: usize = 1 << 28;
/// The writer's sleep between passes: the first after a pass that found records, doubling up
/// to the second while the rings stay empty. Sleeping even when records trickle in lets them
/// gather, so the writer reads ring lines in batches instead of pulling each record's lines
/// from the deciding core as soon as they are written (which slows the next `record`).
const IDLE: (Duration, Duration) = (Duration::from_millis(1), Duration::from_millis(4));
/// A pass that took at least this many records means the writer is behind: no sleep.
const BUSY: usize = 1024;

mod decode;
mod encode;
mod ring;
#[cfg(test)]
mod tests;
mod writer;

pub(crate) use decode::Captured;
use encode::{Local, Producer, ProducerState, LOCAL};
use ring::{lock, Ring};
pub(crate) use writer::{spawn_writer, Backend};

/// The rings of one sink, and what the writer and the sink handles share.
pub(crate) struct Queue {
    id: u64,
    /// Records per ring.
    capacity: u64,
    words: usize,
    registry: Mutex<Registry>,
    /// Bumped whenever the registry's ring list changes.
    generation: AtomicU64,
    /// For a thread whose thread-local state is unusable (being destroyed).
    shared: Mutex<Option<(Producer, Vec<u8>)>>,
    /// Written and failed are counted here (by the writer or the backend's reports); offered
    /// and dropped live in the rings and are mirrored to metrics by the writer.
    pub(crate) counters: Arc<Counters>,
    closing: AtomicBool,
    writer: OnceLock<Thread>,
    flush_asked: AtomicU64,
    flush_done: AtomicU64,
    overflow: Overflow,
}

#[derive(Default)]
struct Registry {
    live: Vec<Arc<Ring>>,
    /// Counts of rings whose thread ended and which the writer drained and let go.
    retired_offered: u64,
    retired_dropped: u64,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("capacity", &self.capacity)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Queue {
    /// A queue of `capacity` records per deciding thread, counting under sink name `sink`.
    pub(crate) fn new(capacity: usize, sink: &'static str, overflow: Overflow) -> Self {
        static IDS: AtomicU64 = AtomicU64::new(1);
        let capacity = capacity.max(1);
        Queue {
            id: IDS.fetch_add(1, Relaxed),
            capacity: capacity as u64,
            words: capacity
                .saturating_mul(WORDS_PER_RECORD)
                .clamp(MIN_WORDS, MAX_WORDS)
                .next_power_of_two(),
            registry: Mutex::new(Registry::default()),
            generation: AtomicU64::new(0),
            shared: Mutex::new(None),
            counters: Arc::new(Counters::new(sink)),
            closing: AtomicBool::new(false),
            writer: OnceLock::new(),
            flush_asked: AtomicU64::new(0),
            flush_done: AtomicU64::new(0),
            overflow,
        }
    }

    fn producer(&self) -> Producer {
        let ring = Arc::new(Ring::new(self.words));
        let mut r = lock(&self.registry);
        r.live.push(Arc::clone(&ring));
        self.generation.fetch_add(1, Release);
        Producer {
            queue: self.id,
            ring,
            st: ProducerState {
                capacity: self.capacity,
                ..ProducerState::default()
            },
        }
    }

    /// Offers one decision: encoded into this thread's ring, or counted as dropped.
    pub(crate) fn offer(&self, event: &DecisionEvent<'_>) {
        let done = LOCAL
            .try_with(|local| {
                let Ok(mut local) = local.try_borrow_mut() else {
                    return false;
                };
                let Local { producers, scratch } = &mut *local;
                let at = match producers.iter().position(|p| p.queue == self.id) {
                    Some(at) => at,
                    None => {
                        // Forget the rings of sinks that have stopped.
                        producers.retain(|p| !p.ring.gone.load(Acquire));
                        producers.push(self.producer());
                        producers.len() - 1
                    }
                };
                producers[at].push(event, scratch, self);
                true
            })
            .unwrap_or(false);
        if !done {
            let mut shared = lock(&self.shared);
            let (p, scratch) = shared.get_or_insert_with(|| (self.producer(), Vec::new()));
            p.push(event, scratch, self);
        }
    }

    /// The sink's counters: the written and failed counts, then each ring's dropped, then
    /// each ring's offered, so that the outcomes never sum to more than `offered`.
    pub(crate) fn stats(&self) -> SinkStats {
        let r = lock(&self.registry);
        let mut s = self.counters.stats();
        s.dropped += r.retired_dropped;
        for ring in &r.live {
            s.dropped += ring.producer.0.dropped.load(Acquire);
        }
        s.offered += r.retired_offered;
        for ring in &r.live {
            s.offered += ring.producer.0.offered.load(Acquire);
        }
        s
    }

    /// Wakes the writer if it sleeps (never called on the deciding path).
    pub(crate) fn wake(&self) {
        if let Some(t) = self.writer.get() {
            t.unpark();
        }
    }

    /// Asks the writer to flush after its next pass; [`Queue::flushed`] tells when it has.
    pub(crate) fn ask_flush(&self) -> u64 {
        let ticket = self.flush_asked.fetch_add(1, AcqRel) + 1;
        self.wake();
        ticket
    }

    pub(crate) fn flushed(&self, ticket: u64) -> bool {
        self.flush_done.load(Acquire) >= ticket
    }

    /// Asks for a flush and waits, at most `timeout`, until the writer has done it: every
    /// record offered before the call has been handed to the backend and the backend flushed.
    /// `alive` says whether the writer thread still runs.
    pub(crate) fn wait_flushed(
        &self,
        timeout: Duration,
        alive: impl Fn() -> bool,
    ) -> Result<(), FlushError> {
        let deadline = crate::clock::deadline(timeout);
        let ticket = self.ask_flush();
        loop {
            if self.flushed(ticket) {
                return Ok(());
            }
            if !alive() {
                return Err(FlushError::WriterGone);
            }
            if std::time::Instant::now() >= deadline {
                return Err(FlushError::Timeout {
                    timeout,
                    pending: self.stats().pending(),
                });
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    /// No more records will come (the last sink handle is gone): the writer drains every
    /// ring once more and returns.
    pub(crate) fn close(&self) {
        self.closing.store(true, Release);
        self.wake();
    }
}
