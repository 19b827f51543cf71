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

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::Thread;
use std::time::Duration;

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

use super::record::{coarse_now_ms, status_name, ArmProbability, RecordReason, RECORD_SCHEMA};
use super::{Counters, DecisionEvent, FlushError, Overflow, SinkStats};
use crate::decision::{DecisionId, FeatureStatus};
use crate::features::Value;
use crate::snapshot::{RawCause, RawReason, Snapshot};

/// Words of a record before its payload (one more when it has a model version).
const HEADER: u64 = 8;
/// Header flag: the ring's next side-queue snapshot applies from this record on.
const NEW_SNAP: u64 = 1;
/// Header flag: the record has a model version (the word after the header).
const HAS_MODEL: u64 = 2;
/// Header flag: the payload carries the slot name (one the snapshot does not have).
const SLOT_NAME: u64 = 4;
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

/// Keeps what one side writes on its own cache lines.
#[repr(align(128))]
#[derive(Default)]
struct Padded<T>(T);

/// Written by the deciding thread.
#[derive(Default)]
struct ProducerSide {
    /// Words published.
    tail: AtomicU64,
    offered: AtomicU64,
    dropped: AtomicU64,
}

/// Written by the writer thread.
#[derive(Default)]
struct ConsumerSide {
    /// Words consumed.
    head: AtomicU64,
    /// Records consumed.
    records: AtomicU64,
}

/// One thread's ring for one sink.
struct Ring {
    words: Box<[AtomicU64]>,
    mask: u64,
    producer: Padded<ProducerSide>,
    consumer: Padded<ConsumerSide>,
    /// Snapshots passed to the writer, oldest first.
    snaps: Mutex<VecDeque<Arc<Snapshot>>>,
    /// The producing thread is gone (set when its thread-local state is dropped).
    closed: AtomicBool,
    /// The writer is gone: the producer forgets the ring.
    gone: AtomicBool,
}

impl Ring {
    fn new(words: usize) -> Self {
        Ring {
            words: (0..words).map(|_| AtomicU64::new(0)).collect(),
            mask: words as u64 - 1,
            producer: Padded::default(),
            consumer: Padded::default(),
            snaps: Mutex::new(VecDeque::with_capacity(SNAPS)),
            closed: AtomicBool::new(false),
            gone: AtomicBool::new(false),
        }
    }

    #[inline]
    fn word(&self, at: u64) -> &AtomicU64 {
        // `mask` is `words.len() - 1` and `words.len()` a power of two: always in bounds.
        &self.words[(at & self.mask) as usize]
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A deciding thread's end of a ring.
struct Producer {
    queue: u64,
    ring: Arc<Ring>,
    st: ProducerState,
}

/// A producer's positions and counts (apart from the ring, to borrow both at once).
#[derive(Default)]
struct ProducerState {
    capacity: u64,
    tail: u64,
    records: u64,
    /// The consumer's positions as last read (refreshed only when the ring looks full).
    head: u64,
    head_records: u64,
    /// Address of the snapshot last passed to the writer.
    snap: usize,
    offered: u64,
    dropped: u64,
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.ring.closed.store(true, Release);
    }
}

/// What became of one record offered to a ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Push {
    Done,
    /// No room now (the writer is behind): waiting may help.
    Full,
    /// Can never fit this ring.
    Never,
}

/// A thread's producers (one per sink it recorded to) and its encoding scratch.
#[derive(Default)]
struct Local {
    producers: Vec<Producer>,
    scratch: Vec<u8>,
}

thread_local! {
    static LOCAL: RefCell<Local> = RefCell::new(Local::default());
}

/// Scratch capacity kept between records; a larger buffer is shrunk back after use.
const SCRATCH_KEEP: usize = 16 * 1024;

impl Producer {
    fn push(&mut self, event: &DecisionEvent<'_>, scratch: &mut Vec<u8>, queue: &Queue) {
        let (ring, st) = (&*self.ring, &mut self.st);
        st.offered += 1;
        ring.producer.0.offered.store(st.offered, Relaxed);
        let mut outcome = st.try_push(ring, event, scratch);
        if let (Push::Full, Overflow::Block(bound)) = (outcome, queue.overflow) {
            // Wait for the writer to make room, at most `bound`.
            let deadline = crate::clock::deadline(bound);
            while outcome == Push::Full && std::time::Instant::now() < deadline {
                queue.wake();
                std::thread::sleep(Duration::from_micros(50));
                outcome = st.try_push(ring, event, scratch);
            }
        }
        if outcome != Push::Done {
            st.dropped += 1;
            ring.producer.0.dropped.store(st.dropped, Release);
        }
        if scratch.capacity() > SCRATCH_KEEP {
            scratch.clear();
            scratch.shrink_to(SCRATCH_KEEP);
        }
    }
}

impl ProducerState {
    /// Writes the record; `false` when the ring has no room for it.
    /// Writes the record, or says why it could not.
    fn try_push(&mut self, ring: &Ring, event: &DecisionEvent<'_>, scratch: &mut Vec<u8>) -> Push {
        let d = event.decision;
        let o = &d.outcome;
        // A full ring (by count) drops before paying for the encoding.
        if self.records - self.head_records >= self.capacity {
            self.head_records = ring.consumer.0.records.load(Acquire);
            if self.records - self.head_records >= self.capacity {
                return Push::Full;
            }
        }
        scratch.clear();
        encode_features(event, scratch);
        let probs = o.bandit.as_ref().map_or(&[][..], |b| b.probs());
        // The engine resolved `d.slot` from `event.slot` by exact name, so the snapshot has
        // the name unless the slot is unknown.
        let slot_name = d
            .snap
            .slots
            .get(d.slot as usize)
            .is_none()
            .then_some(event.slot);
        let (Ok(user_len), Ok(slot_len), Ok(features_len), Ok(n_probs)) = (
            u32::try_from(event.user.len()),
            u32::try_from(slot_name.map_or(0, str::len)),
            u32::try_from(scratch.len()),
            u16::try_from(probs.len()),
        ) else {
            return Push::Never;
        };
        let payload = event.user.len()
            + slot_name.map_or(0, |s| 4 + s.len())
            + scratch.len()
            + 8 * probs.len();
        let mut flags = 0;
        if o.bandit.is_some() {
            flags |= HAS_MODEL;
        }
        if slot_name.is_some() {
            flags |= SLOT_NAME;
        }
        let n = HEADER + u64::from(o.bandit.is_some()) + payload.div_ceil(8) as u64;
        let size = ring.mask + 1;
        if n > size || n > u64::from(u32::MAX) {
            return Push::Never;
        }
        // Room by count was checked above; now room by words.
        if self.tail + n - self.head > size {
            self.head = ring.consumer.0.head.load(Acquire);
            if self.tail + n - self.head > size {
                return Push::Full;
            }
        }
        let snap = Arc::as_ptr(&d.snap) as usize;
        if snap != self.snap {
            let mut snaps = lock(&ring.snaps);
            // Bounded and never grown here: a writer this far behind costs a record.
            if snaps.len() == SNAPS {
                return Push::Full;
            }
            snaps.push_back(Arc::clone(&d.snap));
            self.snap = snap;
            flags |= NEW_SNAP;
        }
        let mut out = Words {
            ring,
            at: self.tail,
            acc: 0,
            fill: 0,
        };
        let status = u64::from(status_code(d.features));
        out.word(n | flags << 32 | status << 40 | u64::from(n_probs) << 48);
        let id = d.id.as_u128();
        out.word(id as u64);
        out.word((id >> 64) as u64);
        out.word(coarse_now_ms());
        out.word(o.propensity.to_bits());
        out.word(u64::from(d.slot) | u64::from(o.variant) << 32);
        out.word(pack_reason(o.reason));
        out.word(u64::from(user_len) | u64::from(features_len) << 32);
        if let Some(b) = &o.bandit {
            out.word(b.model_version);
        }
        out.bytes(event.user.as_bytes());
        if let Some(name) = slot_name {
            out.bytes(&slot_len.to_le_bytes());
            out.bytes(name.as_bytes());
        }
        out.bytes(scratch);
        for p in probs {
            out.bytes(&p.to_le_bytes());
        }
        out.finish();
        debug_assert_eq!(out.at, self.tail + n);
        self.tail += n;
        self.records += 1;
        ring.producer.0.tail.store(self.tail, Release);
        Push::Done
    }
}

/// Writes a record's words and bytes into a ring from a position (room already checked).
struct Words<'r> {
    ring: &'r Ring,
    at: u64,
    /// Bytes not yet stored (little-endian), `fill` of them.
    acc: u64,
    fill: u32,
}

impl Words<'_> {
    #[inline]
    fn word(&mut self, v: u64) {
        self.ring.word(self.at).store(v, Relaxed);
        self.at += 1;
    }

    /// Appends bytes: whole words while at a word boundary, the rest one by one.
    #[inline]
    fn bytes(&mut self, mut b: &[u8]) {
        if self.fill == 0 {
            while let Some((w, rest)) = b.split_first_chunk::<8>() {
                self.word(u64::from_le_bytes(*w));
                b = rest;
            }
        }
        for &x in b {
            self.acc |= u64::from(x) << (8 * self.fill);
            self.fill += 1;
            if self.fill == 8 {
                self.finish();
            }
        }
    }

    /// Stores the partial word, zero-padded (the last one of a record).
    #[inline]
    fn finish(&mut self) {
        if self.fill > 0 {
            let w = std::mem::take(&mut self.acc);
            self.fill = 0;
            self.word(w);
        }
    }
}

/// Appends the features the event's slot reads: per feature its position in the slot's
/// feature list (u32), a tag and the value.
fn encode_features(event: &DecisionEvent<'_>, out: &mut Vec<u8>) {
    let text = |out: &mut Vec<u8>, s: &str| {
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    };
    for (i, _, v) in event.features_used_at() {
        out.extend_from_slice(&(i as u32).to_le_bytes());
        match v {
            Value::Bool(b) => out.push(u8::from(*b)),
            Value::Int(x) => {
                out.push(2);
                out.extend_from_slice(&x.to_le_bytes());
            }
            Value::Float(x) => {
                out.push(3);
                out.extend_from_slice(&x.to_le_bytes());
            }
            Value::Str(s) => {
                out.push(4);
                text(out, s);
            }
            Value::List(l) => {
                out.push(5);
                out.extend_from_slice(&(l.len() as u32).to_le_bytes());
                for s in l {
                    text(out, s);
                }
            }
        }
    }
}

fn status_code(s: FeatureStatus) -> u8 {
    match s {
        FeatureStatus::Provided => 0,
        FeatureStatus::Fetched => 1,
        FeatureStatus::TimedOut => 2,
        FeatureStatus::Failed => 3,
        FeatureStatus::Unavailable => 4,
    }
}

fn status_from(c: u64) -> Option<FeatureStatus> {
    Some(match c {
        0 => FeatureStatus::Provided,
        1 => FeatureStatus::Fetched,
        2 => FeatureStatus::TimedOut,
        3 => FeatureStatus::Failed,
        4 => FeatureStatus::Unavailable,
        _ => return None,
    })
}

/// A reason in one word: tag in the top byte, a 16-bit and a 32-bit field below.
fn pack_reason(r: RawReason) -> u64 {
    let (tag, a, b): (u64, u16, u32) = match r {
        RawReason::Rule { rule, bucket } => (0, rule, bucket),
        RawReason::Holdout { layer: None } => (1, 0, 0),
        RawReason::Holdout { layer: Some(l) } => (2, 0, l),
        RawReason::NotInLayer { layer } => (3, 0, layer),
        RawReason::Default => (4, 0, 0),
        RawReason::KillSwitch => (5, 0, 0),
        RawReason::UnknownSlot => (6, 0, 0),
        RawReason::Fallback(RawCause::Missing(f)) => (7, 0, f),
        RawReason::Fallback(RawCause::WrongType(f)) => (8, 0, f),
        RawReason::Fallback(RawCause::SourceTimeout) => (9, 0, 0),
        RawReason::Fallback(RawCause::SourceError) => (10, 0, 0),
        RawReason::Fallback(RawCause::SourceUnavailable) => (11, 0, 0),
    };
    tag << 56 | u64::from(a) << 32 | u64::from(b)
}

fn unpack_reason(w: u64) -> Option<RawReason> {
    let (a, b) = ((w >> 32) as u16, w as u32);
    Some(match w >> 56 {
        0 => RawReason::Rule { rule: a, bucket: b },
        1 => RawReason::Holdout { layer: None },
        2 => RawReason::Holdout { layer: Some(b) },
        3 => RawReason::NotInLayer { layer: b },
        4 => RawReason::Default,
        5 => RawReason::KillSwitch,
        6 => RawReason::UnknownSlot,
        7 => RawReason::Fallback(RawCause::Missing(b)),
        8 => RawReason::Fallback(RawCause::WrongType(b)),
        9 => RawReason::Fallback(RawCause::SourceTimeout),
        10 => RawReason::Fallback(RawCause::SourceError),
        11 => RawReason::Fallback(RawCause::SourceUnavailable),
        _ => return None,
    })
}

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

/// A record as the writer reads it back.
pub(crate) struct Captured<'a> {
    snap: &'a Snapshot,
    slot: u32,
    variant: u32,
    reason: RawReason,
    propensity: f64,
    model_version: Option<u64>,
    id: DecisionId,
    status: FeatureStatus,
    timestamp_ms: u64,
    /// The user id (the Kafka message key).
    pub(crate) user: &'a str,
    slot_name: &'a str,
    features: &'a [u8],
    probs: &'a [u8],
}

/// The JSON of a [`Captured`]: the same fields, names and order as
/// [`DecisionRecord`](super::DecisionRecord) (the sink tests decode every line as one).
#[derive(Serialize)]
struct Line<'a> {
    schema: u32,
    id: DecisionId,
    timestamp_ms: u64,
    slot: &'a str,
    user: &'a str,
    variant: Option<&'a str>,
    reason: RecordReason,
    propensity: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    probabilities: Option<Vec<ArmProbability>>,
    features: EncodedFeatures<'a>,
    feature_status: &'a str,
    config_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    model_version: Option<u64>,
}

impl Captured<'_> {
    /// Appends the record's JSON object (no newline) to `out`.
    pub(crate) fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        let probabilities = self
            .snap
            .bandit_spec(self.slot, self.reason)
            .filter(|_| !self.probs.is_empty())
            .map(|spec| {
                spec.arm_ids
                    .iter()
                    .zip(self.probs.chunks_exact(8))
                    .map(|(v, b)| ArmProbability::new(v, f64::from_le_bytes(word(b))))
                    .collect()
            });
        let names = self
            .snap
            .slots
            .get(self.slot as usize)
            .map_or(&[][..], |s| &s.features);
        let line = Line {
            schema: RECORD_SCHEMA,
            id: self.id,
            timestamp_ms: self.timestamp_ms,
            slot: self.slot_name,
            user: self.user,
            variant: self.snap.variant(self.slot, self.variant).map(|v| &*v.id),
            reason: self.snap.resolve_reason(self.slot, self.reason).into(),
            propensity: self.propensity,
            probabilities,
            features: EncodedFeatures {
                names,
                bytes: self.features,
            },
            feature_status: status_name(self.status),
            config_version: self.snap.version(),
            model_version: self.model_version,
        };
        serde_json::to_writer(out, &line)
    }
}

/// Up to 8 bytes as a little-endian word's bytes (zero-padded).
fn word(b: &[u8]) -> [u8; 8] {
    let mut a = [0u8; 8];
    let n = b.len().min(8);
    a[..n].copy_from_slice(&b[..n]);
    a
}

/// Decodes [`encode_features`]' bytes while serializing them as a JSON object.
struct EncodedFeatures<'a> {
    names: &'a [Box<str>],
    bytes: &'a [u8],
}

/// Reads the encoded feature bytes front to back.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Option<[u8; 8]> {
        self.take(8).map(word)
    }
    fn text(&mut self) -> Option<&'a str> {
        let n = self.u32()? as usize;
        std::str::from_utf8(self.take(n)?).ok()
    }
}

/// A list of strings, serialized from its encoding.
struct EncodedList<'a> {
    n: u32,
    bytes: &'a [u8],
}

impl Serialize for EncodedList<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut c = Cursor(self.bytes);
        let mut seq = s.serialize_seq(Some(self.n as usize))?;
        for _ in 0..self.n {
            let t = c.text().ok_or_else(|| bad_encoding::<S>())?;
            seq.serialize_element(t)?;
        }
        seq.end()
    }
}

fn bad_encoding<S: Serializer>() -> S::Error {
    serde::ser::Error::custom("a captured decision record is malformed")
}

impl Serialize for EncodedFeatures<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        let mut c = Cursor(self.bytes);
        while !c.0.is_empty() {
            let entry = (|| {
                let name = &**self.names.get(c.u32()? as usize)?;
                Some(match c.u8()? {
                    t @ (0 | 1) => map.serialize_entry(name, &(t == 1)),
                    2 => map.serialize_entry(name, &i64::from_le_bytes(c.u64()?)),
                    3 => map.serialize_entry(name, &f64::from_le_bytes(c.u64()?)),
                    4 => map.serialize_entry(name, c.text()?),
                    5 => {
                        let n = c.u32()?;
                        let start = c.0;
                        for _ in 0..n {
                            c.text()?;
                        }
                        let used = start.len() - c.0.len();
                        map.serialize_entry(
                            name,
                            &EncodedList {
                                n,
                                bytes: &start[..used],
                            },
                        )
                    }
                    _ => return None,
                })
            })();
            match entry {
                Some(r) => r?,
                None => return Err(bad_encoding::<S>()),
            }
        }
        map.end()
    }
}

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
struct Reader {
    ring: Arc<Ring>,
    head: u64,
    records: u64,
    snap: Option<Arc<Snapshot>>,
}

impl Reader {
    /// Hands every published record to `backend`; returns how many.
    fn drain(&mut self, bytes: &mut Vec<u8>, backend: &mut impl Backend, c: &Counters) -> usize {
        let ring = &*self.ring;
        let tail = ring.producer.0.tail.load(Acquire);
        let mut n = 0;
        while self.head < tail {
            let at = self.head;
            let w = |i: u64| ring.word(at + i).load(Relaxed);
            let h0 = w(0);
            let len = h0 & 0xffff_ffff;
            let payload = HEADER + (h0 >> 32 & HAS_MODEL != 0) as u64;
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
                .and_then(|snap| decode(snap, h0, &w, bytes));
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
fn publish(ring: &Ring, head: u64, records: u64) {
    let c = &ring.consumer.0;
    c.records.store(records, Release);
    c.head.store(head, Release);
}

fn decode<'a>(
    snap: &'a Snapshot,
    h0: u64,
    w: &impl Fn(u64) -> u64,
    bytes: &'a [u8],
) -> Option<Captured<'a>> {
    let flags = h0 >> 32 & 0xff;
    let lens = w(7);
    let (user_len, features_len) = (lens as u32 as usize, (lens >> 32) as usize);
    let probs_len = 8 * (h0 >> 48) as usize;
    let slot_variant = w(5);
    let (slot, variant) = (slot_variant as u32, (slot_variant >> 32) as u32);
    let (user, rest) = bytes.split_at_checked(user_len)?;
    let (slot_name, rest) = if flags & SLOT_NAME != 0 {
        let mut c = Cursor(rest);
        let name = c.text()?;
        (name, c.0)
    } else {
        (&*snap.slots.get(slot as usize)?.id, rest)
    };
    let (features, rest) = rest.split_at_checked(features_len)?;
    let probs = rest.get(..probs_len)?;
    Some(Captured {
        snap,
        slot,
        variant,
        reason: unpack_reason(w(6))?,
        propensity: f64::from_bits(w(4)),
        model_version: (flags & HAS_MODEL != 0).then(|| w(HEADER)),
        id: DecisionId::from_u128(u128::from(w(1)) | u128::from(w(2)) << 64),
        status: status_from(h0 >> 40 & 0xff)?,
        timestamp_ms: w(3),
        user: std::str::from_utf8(user).ok()?,
        slot_name,
        features,
        probs,
    })
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
fn run(queue: &Queue, backend: &mut impl Backend) {
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
fn retire(queue: &Queue, readers: &mut Vec<Reader>, bytes: &mut Vec<u8>, b: &mut impl Backend) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::{DecisionRecord, DecisionSink};
    use crate::{Engine, Features};

    /// Decodes every record back into a `DecisionRecord`.
    #[derive(Default)]
    struct Collect(Arc<Mutex<Vec<DecisionRecord>>>);

    impl Backend for Collect {
        fn record(&mut self, r: &Captured<'_>, c: &Counters) {
            let mut json = Vec::new();
            match r
                .write_json(&mut json)
                .and_then(|()| serde_json::from_slice::<DecisionRecord>(&json))
            {
                Ok(rec) => {
                    lock(&self.0).push(rec);
                    c.written(1);
                }
                Err(_) => c.failed(1),
            }
        }
        fn pass_done(&mut self, _: &Counters) {}
        fn flush(&mut self, _: &Counters) {}
    }

    struct TestSink(Arc<Queue>);

    impl DecisionSink for TestSink {
        fn record(&self, event: &DecisionEvent<'_>) {
            self.0.offer(event);
        }
    }

    fn start(
        capacity: usize,
    ) -> (
        Arc<Queue>,
        Arc<Mutex<Vec<DecisionRecord>>>,
        std::thread::JoinHandle<()>,
    ) {
        let queue = Arc::new(Queue::new(capacity, "test", Overflow::Drop));
        let out = Arc::new(Mutex::new(Vec::new()));
        let mut backend = Collect(Arc::clone(&out));
        let q = Arc::clone(&queue);
        let writer = std::thread::spawn(move || run(&q, &mut backend));
        (queue, out, writer)
    }

    fn flush(q: &Queue) {
        let ticket = q.ask_flush();
        let t = std::time::Instant::now();
        while !q.flushed(ticket) {
            assert!(t.elapsed() < Duration::from_secs(10), "flush timed out");
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    /// A decision as made: id, user, variant, the `tag` feature.
    type Made = (DecisionId, String, Option<String>, String);

    const CONFIG: &str = r#"{"version": "v1", "slots": [{"id": "s", "variants": [{"id": "a"}, {"id": "b"}],
        "default": "a", "rules": [{"when": {"feature": "tag", "op": "eq", "value": "x"}, "serve": "b"},
        {"split": {"variants": [{"variant": "a", "weight": 50}, {"variant": "b", "weight": 50}]}}]}]}"#;

    /// Four threads, records of very different sizes (so they wrap the smallest ring at every
    /// offset), a config swap half-way, threads that end: every record comes back exactly as
    /// decided, each thread's in order, and the counts add up after the rings are let go.
    #[test]
    fn records_come_back_exactly_from_many_threads_across_wraps_and_swaps() {
        let (queue, out, writer) = start(1);
        assert_eq!(queue.words, MIN_WORDS);
        let engine = Engine::builder().sink(TestSink(Arc::clone(&queue))).build();
        engine.load_config_json(CONFIG).unwrap();
        let per_thread = 3_000usize;
        let made: Vec<Vec<Made>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|t| {
                    let engine = engine.clone();
                    s.spawn(move || {
                        let mut made = Vec::new();
                        for i in 0..per_thread {
                            if t == 0 && i == per_thread / 2 {
                                engine
                                    .load_config_json(&CONFIG.replace("v1", "v2"))
                                    .unwrap();
                            }
                            let user = format!("u{t}-{i}-{}", "z".repeat(i % 97));
                            let tag = if i % 3 == 0 {
                                "x".to_owned()
                            } else {
                                "é".repeat(i % 300)
                            };
                            let d = engine.decide(
                                "s",
                                &user,
                                &Features::new().with("tag", tag.clone()).with("other", 1),
                            );
                            made.push((d.id(), user, d.variant().map(str::to_owned), tag));
                            // Give the writer time now and then, so both full and
                            // non-full rings are seen.
                            if i % 500 == 0 {
                                std::thread::sleep(Duration::from_millis(2));
                            }
                        }
                        made
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        flush(&queue);
        // The writer lets go of the rings of the ended threads.
        let t = std::time::Instant::now();
        while lock(&queue.registry).live.len() > 1 {
            assert!(t.elapsed() < Duration::from_secs(10), "rings not retired");
            queue.wake();
            std::thread::sleep(Duration::from_millis(1));
        }
        let s = queue.stats();
        assert_eq!(s.offered, 4 * per_thread as u64, "{s:?}");
        assert_eq!(s.failed, 0, "{s:?}");
        assert_eq!(s.offered, s.written + s.dropped, "{s:?}");
        assert!(s.dropped > 0, "a 32 KiB ring must overflow: {s:?}");
        let got = lock(&out).clone();
        assert_eq!(got.len() as u64, s.written);
        let mut versions = std::collections::BTreeSet::new();
        for thread in &made {
            // This thread's records, in the order they arrived.
            let mine: Vec<&DecisionRecord> = got
                .iter()
                .filter(|r| thread.iter().any(|m| m.0 == r.id))
                .collect();
            let mut expected = thread.iter();
            for r in mine {
                let e = expected.by_ref().find(|e| e.0 == r.id).expect("in order");
                assert_eq!((&r.user, &r.variant), (&e.1, &e.2));
                assert_eq!(
                    r.features.get("tag").and_then(|v| v.as_str()),
                    Some(e.3.as_str())
                );
                assert!(
                    r.features.get("other").is_none(),
                    "only the slot's features"
                );
                versions.insert(r.config_version.clone());
            }
        }
        assert!(
            versions.contains("v1") && versions.contains("v2"),
            "{versions:?}"
        );
        drop(engine);
        queue.close();
        writer.join().unwrap();
    }

    #[test]
    fn a_record_larger_than_the_ring_is_dropped_and_counted() {
        let (queue, out, writer) = start(1);
        let engine = Engine::builder().sink(TestSink(Arc::clone(&queue))).build();
        engine.load_config_json(CONFIG).unwrap();
        let huge = "x".repeat(MIN_WORDS * 8);
        let _ = engine.decide("s", "u", &Features::new().with("tag", huge));
        let _ = engine.decide("s", "u", &Features::new().with("tag", "x"));
        flush(&queue);
        let s = queue.stats();
        assert_eq!((s.offered, s.written, s.dropped, s.failed), (2, 1, 1, 0));
        assert_eq!(lock(&out)[0].variant.as_deref(), Some("b"));
        drop(engine);
        queue.close();
        writer.join().unwrap();
    }

    #[test]
    fn reasons_survive_packing() {
        let all = [
            RawReason::Rule {
                rule: u16::MAX,
                bucket: u32::MAX,
            },
            RawReason::Rule { rule: 3, bucket: 0 },
            RawReason::Holdout { layer: None },
            RawReason::Holdout { layer: Some(7) },
            RawReason::NotInLayer { layer: u32::MAX },
            RawReason::Default,
            RawReason::KillSwitch,
            RawReason::UnknownSlot,
            RawReason::Fallback(RawCause::Missing(9)),
            RawReason::Fallback(RawCause::WrongType(u32::MAX)),
            RawReason::Fallback(RawCause::SourceTimeout),
            RawReason::Fallback(RawCause::SourceError),
            RawReason::Fallback(RawCause::SourceUnavailable),
        ];
        for r in all {
            assert_eq!(unpack_reason(pack_reason(r)), Some(r));
        }
        assert_eq!(unpack_reason(12 << 56), None);
        for s in [
            FeatureStatus::Provided,
            FeatureStatus::Fetched,
            FeatureStatus::TimedOut,
            FeatureStatus::Failed,
            FeatureStatus::Unavailable,
        ] {
            assert_eq!(status_from(u64::from(status_code(s))), Some(s));
        }
    }

    /// Records the event both ways: through the queue, and as `DecisionRecord::from_event`.
    struct BothWays(Arc<Queue>, Mutex<Vec<DecisionRecord>>);

    impl DecisionSink for BothWays {
        fn record(&self, event: &DecisionEvent<'_>) {
            self.0.offer(event);
            lock(&self.1).push(DecisionRecord::from_event(event));
        }
    }

    /// Every part of the encoding (model version and probabilities of a bandit, the name of
    /// an unknown slot, every feature type, an empty user, a config swap) decodes to the same
    /// record as `DecisionRecord::from_event`, apart from the coarser timestamp.
    #[test]
    fn every_kind_of_record_decodes_to_the_same_decision_record() {
        let (queue, out, writer) = start(1_000);
        let sink = Arc::new(BothWays(Arc::clone(&queue), Mutex::new(Vec::new())));
        let engine = Engine::builder().sink(Arc::clone(&sink)).build();
        let config = |v: &str| {
            serde_json::json!({"version": v, "slots": [
                {"id": "typed", "variants": [{"id": "a"}, {"id": "b"}], "default": "a",
                 "rules": [{"when": {"all": [
                    {"feature": "flag", "op": "eq", "value": true},
                    {"feature": "n", "op": "gt", "value": 1},
                    {"feature": "x", "op": "lt", "value": 10.5},
                    {"feature": "country", "op": "in", "value": ["KR", "US"]},
                    {"feature": "tags", "op": "in", "value": ["vip"]}]}, "serve": "b"}]},
                {"id": "arms", "variants": [{"id": "p"}, {"id": "q"}, {"id": "r"}], "default": "p",
                 "rules": [{"bandit": {"policy": "thompson", "arms": ["p", "q", "r"]}}]}]})
            .to_string()
        };
        engine.load_config_json(&config("v1")).unwrap();
        let full = Features::new()
            .with("flag", true)
            .with("n", -7)
            .with("x", 2.25)
            .with("country", "KR")
            .with("tags", vec!["vip".to_owned(), String::new(), "é".repeat(9)])
            .with("unused", 1);
        let long_slot = "s".repeat(1_000);
        for (i, (slot, user)) in [
            ("typed", "u1"),
            ("typed", ""),
            ("arms", "u2"),
            ("nope", "u3"),
            (long_slot.as_str(), "u4"),
            ("arms", "u5-with-a-longer-id"),
        ]
        .into_iter()
        .enumerate()
        {
            if i == 3 {
                engine.load_config_json(&config("v2")).unwrap();
            }
            let _ = engine.decide(slot, user, &full);
            let _ = engine.decide(slot, user, &Features::new().with("n", 3));
        }
        flush(&queue);
        let expected = lock(&sink.1).clone();
        let got = lock(&out).clone();
        assert_eq!(got.len(), expected.len(), "{:?}", queue.stats());
        for (mut g, e) in got.into_iter().zip(expected) {
            // Coarse clock: at most a few ticks behind the precise one.
            assert!(
                g.timestamp_ms <= e.timestamp_ms + 1 && g.timestamp_ms + 1_000 > e.timestamp_ms,
                "{} vs {}",
                g.timestamp_ms,
                e.timestamp_ms
            );
            g.timestamp_ms = e.timestamp_ms;
            assert_eq!(g, e);
        }
        let bandit = lock(&out)
            .iter()
            .filter(|r| r.probabilities.as_ref().is_some_and(|p| p.len() == 3))
            .filter(|r| r.model_version.is_some())
            .count();
        assert_eq!(
            bandit, 4,
            "bandit records carry probabilities and model version"
        );
        queue.close();
        writer.join().unwrap();
    }
}
