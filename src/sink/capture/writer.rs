//! The writer thread: drains every ring into the sink's backend.

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::Arc;

use super::decode::{self, Captured};
use super::ring::{lock, Ring};
use super::{extra_words, Queue, BUSY, HEADER, IDLE, NEW_SNAP};
use crate::sink::Counters;
use crate::snapshot::Snapshot;

/// Where a sink's records go.
pub(crate) trait Backend {
    /// One record. The backend counts it written or failed in `counters`, now or later.
    fn record(&mut self, record: &Captured<'_>, counters: &Counters);
    /// The end of a pass over the rings: write out what is batched.
    fn pass_done(&mut self, counters: &Counters);
    /// A flush was asked for: make everything handed over so far durable.
    fn flush(&mut self, counters: &Counters);
}

/// The writer's end of a ring.
pub(super) struct Reader {
    pub(super) ring: Arc<Ring>,
    pub(super) head: u64,
    pub(super) records: u64,
    pub(super) snap: Option<Arc<Snapshot>>,
}

impl Reader {
    /// Hands every published record to `backend`; returns how many.
    pub(super) fn drain(
        &mut self,
        bytes: &mut Vec<u8>,
        backend: &mut impl Backend,
        c: &Counters,
    ) -> usize {
        let ring = &*self.ring;
        let tail = ring.producer.0.tail.load(Acquire);
        let mut n = 0;
        while self.head < tail {
            let at = self.head;
            let w = |i: u64| ring.word(at + i).load(Relaxed);
            let h0 = w(0);
            let len = h0 & 0xffff_ffff;
            let payload = HEADER + extra_words(h0 >> 32 & 0xff);
            if len < payload || at + len > tail {
                // Cannot happen (only `try_push` writes rings); skip what is there.
                c.failed(1);
                self.head = tail;
                break;
            }
            if h0 >> 32 & NEW_SNAP != 0 {
                self.snap = lock(&ring.snaps).pop_front().or(self.snap.take());
            }
            bytes.clear();
            for i in payload..len {
                bytes.extend_from_slice(&w(i).to_le_bytes());
            }
            let record = self
                .snap
                .as_deref()
                .and_then(|snap| decode::read_record(snap, h0, &w, bytes));
            match record {
                Some(r) => backend.record(&r, c),
                None => c.failed(1),
            }
            self.head = at + len;
            self.records += 1;
            n += 1;
            // Give room back as we go, so a full ring drains while the backend waits.
            if n % 64 == 0 {
                publish(ring, self.head, self.records);
            }
        }
        publish(ring, self.head, self.records);
        n
    }
}

/// Gives consumed room back to the producer.
pub(super) fn publish(ring: &Ring, head: u64, records: u64) {
    let c = &ring.consumer.0;
    c.records.store(records, Release);
    c.head.store(head, Release);
}

/// Starts the writer thread `name` draining `queue` into `backend`.
pub(crate) fn spawn_writer(
    queue: &Arc<Queue>,
    name: &str,
    mut backend: impl Backend + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let queue = Arc::clone(queue);
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || run(&queue, &mut backend))
}

/// The writer thread's loop: drains every ring into `backend` until the queue is closed and
/// drained.
pub(super) fn run(queue: &Queue, backend: &mut impl Backend) {
    let _ = queue.writer.set(std::thread::current());
    let c = &*queue.counters;
    let mut readers: Vec<Reader> = Vec::new();
    let mut generation = u64::MAX;
    let mut bytes = Vec::new();
    let mut mirrored = (0u64, 0u64);
    let mut idle = IDLE.0;
    loop {
        let closing = queue.closing.load(Acquire);
        let asked = queue.flush_asked.load(Acquire);
        let g = queue.generation.load(Acquire);
        if g != generation {
            generation = g;
            let live = lock(&queue.registry).live.clone();
            readers.retain(|r| live.iter().any(|l| Arc::ptr_eq(l, &r.ring)));
            for ring in live {
                if !readers.iter().any(|r| Arc::ptr_eq(&r.ring, &ring)) {
                    readers.push(Reader {
                        ring,
                        head: 0,
                        records: 0,
                        snap: None,
                    });
                }
            }
        }
        let mut n = 0;
        for r in &mut readers {
            n += r.drain(&mut bytes, backend, c);
        }
        backend.pass_done(c);
        if n > 0 {
            c.depth(n);
        }
        retire(queue, &mut readers, &mut bytes, backend);
        let s = queue.stats();
        c.mirror(s.offered - mirrored.0, s.dropped - mirrored.1);
        mirrored = (s.offered, s.dropped);
        if asked > queue.flush_done.load(Relaxed) {
            backend.flush(c);
            queue.flush_done.store(asked, Release);
        }
        if closing {
            break;
        }
        if n >= BUSY {
            idle = IDLE.0;
            continue;
        }
        std::thread::park_timeout(idle);
        idle = if n == 0 {
            (idle * 2).min(IDLE.1)
        } else {
            IDLE.0
        };
    }
    for ring in &lock(&queue.registry).live {
        ring.gone.store(true, Release);
    }
}

/// Lets go of the rings whose thread has ended, once drained, keeping their counts.
pub(super) fn retire(
    queue: &Queue,
    readers: &mut Vec<Reader>,
    bytes: &mut Vec<u8>,
    b: &mut impl Backend,
) {
    let c = &*queue.counters;
    let mut i = 0;
    while i < readers.len() {
        if !readers[i].ring.closed.load(Acquire) {
            i += 1;
            continue;
        }
        // The thread is gone, so this drain sees its last record.
        if readers[i].drain(bytes, b, c) > 0 {
            b.pass_done(c);
        }
        let r = readers.swap_remove(i);
        let mut reg = lock(&queue.registry);
        reg.retired_offered += r.ring.producer.0.offered.load(Acquire);
        reg.retired_dropped += r.ring.producer.0.dropped.load(Acquire);
        reg.live.retain(|l| !Arc::ptr_eq(l, &r.ring));
        r.ring.gone.store(true, Release);
    }
}
