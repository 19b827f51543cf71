//! The JSON-lines file sink: a bounded queue and a background writer thread.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

use super::record::{now_ms, status_name, ArmProbability, RecordReason, RECORD_SCHEMA};
use super::{Counters, DecisionEvent, DecisionSink, SinkStats};
use crate::decision::{DecisionId, FeatureStatus};
use crate::snapshot::{RawReason, Snapshot};

/// Options of a [`JsonlSink`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct JsonlOptions {
    /// Records queued for the writer at most; beyond that `record` drops and counts. The
    /// queue is allocated up front, about 100 bytes per entry.
    pub queue_capacity: usize,
    /// The writer writes out its batch at the latest when it holds this many bytes.
    pub batch_bytes: usize,
}

impl Default for JsonlOptions {
    fn default() -> Self {
        JsonlOptions {
            queue_capacity: 65_536,
            batch_bytes: 256 * 1024,
        }
    }
}

impl JsonlOptions {
    /// Sets [`JsonlOptions::queue_capacity`] (at least 1).
    #[must_use]
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n.max(1);
        self
    }
}

/// Why a flush did not complete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FlushError {
    /// The writer did not confirm within the timeout.
    #[error("the decision-log writer did not flush within {0:?}")]
    Timeout(Duration),
    /// The writer thread is gone (it stopped after an unrecoverable error).
    #[error("the decision-log writer has stopped")]
    WriterGone,
}

/// A decision on its way to the writer: fixed-size fields plus one buffer holding the user,
/// the requested slot and the used features as a JSON object. Building one costs a single
/// allocation (the buffer); names are resolved and the line is written on the writer thread.
/// Shared with the Kafka sink, which sends the same JSON object.
pub(crate) struct Pending {
    snap: Arc<Snapshot>,
    slot: u32,
    variant: u32,
    reason: RawReason,
    propensity: f64,
    model_version: Option<u64>,
    id: DecisionId,
    status: FeatureStatus,
    timestamp_ms: u64,
    /// `user ++ slot ++ features_json ++ probabilities` (the bandit probability vector as
    /// little-endian `f64`s, `probs_len` of them).
    text: Box<[u8]>,
    user_len: u32,
    slot_len: u32,
    probs_len: u8,
}

/// Scratch capacity kept between records; larger buffers are shrunk back after use.
const SCRATCH_KEEP: usize = 16 * 1024;

thread_local! {
    /// Per-thread scratch for building [`Pending::text`] without growing a fresh buffer.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
}

/// Serializes the features an event's slot reads as a JSON object.
struct UsedFeatures<'e, 'a>(&'e DecisionEvent<'a>);

impl Serialize for UsedFeatures<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for (name, value) in self.0.features_used() {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

impl Pending {
    /// The user id (the Kafka message key).
    #[cfg(feature = "kafka")]
    pub(crate) fn user(&self) -> &[u8] {
        self.text.get(..self.user_len as usize).unwrap_or_default()
    }

    pub(crate) fn new(event: &DecisionEvent<'_>) -> Option<Self> {
        let d = event.decision;
        let text = SCRATCH.with(|scratch| {
            let mut buf = scratch.try_borrow_mut().ok()?;
            buf.clear();
            buf.extend_from_slice(event.user.as_bytes());
            buf.extend_from_slice(event.slot.as_bytes());
            serde_json::to_writer(&mut *buf, &UsedFeatures(event)).ok()?;
            if let Some(b) = &d.outcome.bandit {
                for p in b.probs() {
                    buf.extend_from_slice(&p.to_le_bytes());
                }
            }
            let text = Some(Box::<[u8]>::from(&buf[..]));
            // One huge record must not pin its buffer on this thread for good.
            if buf.capacity() > SCRATCH_KEEP {
                buf.clear();
                buf.shrink_to(SCRATCH_KEEP);
            }
            text
        })?;
        let o = &d.outcome;
        Some(Pending {
            snap: Arc::clone(&d.snap),
            slot: d.slot,
            variant: o.variant,
            reason: o.reason,
            propensity: o.propensity,
            model_version: o.bandit.as_ref().map(|b| b.model_version),
            id: d.id,
            status: d.features,
            timestamp_ms: now_ms(),
            text,
            user_len: u32::try_from(event.user.len()).ok()?,
            slot_len: u32::try_from(event.slot.len()).ok()?,
            probs_len: o.bandit.as_ref().map_or(0, |b| b.probs().len() as u8),
        })
    }
}

/// The JSON line of a [`Pending`]: the same fields, names and order as [`DecisionRecord`](super::DecisionRecord)
/// (the sink tests decode every line as one).
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
    features: &'a RawValue,
    feature_status: &'a str,
    config_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    model_version: Option<u64>,
}

impl Pending {
    /// Appends the record's JSON object (no newline) to `out`.
    pub(crate) fn write(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        use serde::de::Error as _;
        let (u, sl) = (self.user_len as usize, self.slot_len as usize);
        let text = &*self.text;
        let probs_bytes = 8 * usize::from(self.probs_len);
        let (head, probs) = text.split_at(text.len().saturating_sub(probs_bytes));
        let head = std::str::from_utf8(head).map_err(serde_json::Error::custom)?;
        let (user, rest) = head.split_at(u.min(head.len()));
        let (slot, features) = rest.split_at(sl.min(rest.len()));
        let features: &RawValue = serde_json::from_str(features)?;
        let probabilities = (self.probs_len > 0)
            .then(|| self.snap.bandit_spec(self.slot, self.reason))
            .flatten()
            .map(|spec| {
                spec.arm_ids
                    .iter()
                    .zip(probs.chunks_exact(8))
                    .map(|(v, b)| {
                        let mut a = [0u8; 8];
                        a.copy_from_slice(b);
                        ArmProbability::new(v, f64::from_le_bytes(a))
                    })
                    .collect()
            });
        let line = Line {
            schema: RECORD_SCHEMA,
            id: self.id,
            timestamp_ms: self.timestamp_ms,
            slot,
            user,
            variant: self.snap.variant(self.slot, self.variant).map(|v| &*v.id),
            reason: self.snap.resolve_reason(self.slot, self.reason).into(),
            propensity: self.propensity,
            probabilities,
            features,
            feature_status: status_name(self.status),
            config_version: self.snap.version(),
            model_version: self.model_version,
        };
        serde_json::to_writer(out, &line)
    }
}

// Records are the common message; boxing them would cost the caller a second allocation.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Record(Pending),
    Flush(SyncSender<()>),
    Stop,
}

/// Appends one JSON object per decision to a file ([`DecisionRecord`](super::DecisionRecord), one per line).
///
/// `record` does little on the caller's thread: it copies the user, the slot name and the used
/// features into one buffer (the only allocation) and offers that to a bounded queue
/// (`try_send`), dropping and counting when the queue is full, so the caller never waits on
/// disk. A background thread writes batches and counts every record as written or failed.
/// Cheap to clone; the writer stops, after writing everything queued, when the last clone is
/// dropped.
///
/// ```no_run
/// # fn main() -> std::io::Result<()> {
/// let sink = elvon::JsonlSink::create("decisions.jsonl", Default::default())?;
/// let engine = elvon::Engine::builder().sink(sink.clone()).build();
/// // ... decide ...
/// sink.flush(std::time::Duration::from_secs(5)).ok();
/// let s = sink.stats();
/// assert_eq!(s.offered, s.written + s.dropped + s.failed);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct JsonlSink {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    tx: SyncSender<Msg>,
    counters: Arc<Counters>,
    writer: Option<JoinHandle<()>>,
    path: PathBuf,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Everything queued before Stop is written first (FIFO).
        if self.tx.send(Msg::Stop).is_ok() {
            if let Some(h) = self.writer.take() {
                let _ = h.join();
            }
        }
    }
}

impl JsonlSink {
    /// Opens (creating or appending to) `path` and starts the writer thread.
    ///
    /// # Errors
    /// The file cannot be opened, or the thread cannot be started.
    pub fn create(path: impl AsRef<Path>, options: JsonlOptions) -> io::Result<Self> {
        let path = path.as_ref().to_owned();
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let (tx, rx) = mpsc::sync_channel(options.queue_capacity.max(1));
        let counters = Arc::new(Counters::new("jsonl"));
        let c = Arc::clone(&counters);
        let batch = options.batch_bytes.max(1);
        let writer = thread::Builder::new()
            .name("elvon-jsonl".into())
            .spawn(move || write_loop(file, &rx, &c, batch))?;
        Ok(JsonlSink {
            inner: Arc::new(Inner {
                tx,
                counters,
                writer: Some(writer),
                path,
            }),
        })
    }

    /// The file written to.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The sink's counters.
    #[must_use]
    pub fn stats(&self) -> SinkStats {
        self.inner.counters.stats()
    }

    /// Waits until every record offered before this call is written (or failed) and the file
    /// is flushed. Blocks the calling thread: call it on shutdown or in tests, not per
    /// decision.
    ///
    /// # Errors
    /// [`FlushError::Timeout`] when the writer does not confirm in time.
    pub fn flush(&self, timeout: Duration) -> Result<(), FlushError> {
        let deadline = Instant::now() + timeout;
        let (reply, done) = mpsc::sync_channel(1);
        let mut msg = Msg::Flush(reply);
        loop {
            match self.inner.tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return Err(FlushError::WriterGone),
                Err(TrySendError::Full(m)) => {
                    if Instant::now() >= deadline {
                        return Err(FlushError::Timeout(timeout));
                    }
                    msg = m;
                    thread::sleep(Duration::from_micros(200));
                }
            }
        }
        match done.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(()) => Ok(()),
            Err(RecvTimeoutError::Timeout) => Err(FlushError::Timeout(timeout)),
            Err(RecvTimeoutError::Disconnected) => Err(FlushError::WriterGone),
        }
    }
}

impl DecisionSink for JsonlSink {
    fn record(&self, event: &DecisionEvent<'_>) {
        let c = &self.inner.counters;
        c.offered();
        let Some(pending) = Pending::new(event) else {
            c.failed(1);
            return;
        };
        match self.inner.tx.try_send(Msg::Record(pending)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => c.dropped(),
            Err(TrySendError::Disconnected(_)) => c.failed(1),
        }
    }
}

/// A batch of serialized lines and how many records it holds.
struct Batch {
    buf: Vec<u8>,
    n: u64,
}

impl Batch {
    fn write_out(&mut self, file: &mut File, c: &Counters) {
        if self.n == 0 {
            return;
        }
        match file.write_all(&self.buf) {
            Ok(()) => c.written(self.n),
            Err(_) => c.failed(self.n),
        }
        self.buf.clear();
        self.n = 0;
    }
}

fn write_loop(mut file: File, rx: &Receiver<Msg>, c: &Counters, batch_bytes: usize) {
    let mut batch = Batch {
        buf: Vec::with_capacity(batch_bytes.min(1 << 20)),
        n: 0,
    };
    // Blocks for the first message, then takes whatever is queued without waiting.
    while let Ok(mut msg) = rx.recv() {
        let mut depth = 0usize;
        loop {
            match msg {
                Msg::Record(rec) => {
                    match rec.write(&mut batch.buf) {
                        Ok(()) => {
                            batch.buf.push(b'\n');
                            batch.n += 1;
                        }
                        Err(_) => c.failed(1),
                    }
                    if batch.buf.len() >= batch_bytes {
                        batch.write_out(&mut file, c);
                    }
                }
                Msg::Flush(reply) => {
                    batch.write_out(&mut file, c);
                    let _ = file.flush();
                    let _ = reply.try_send(());
                }
                Msg::Stop => {
                    batch.write_out(&mut file, c);
                    let _ = file.flush();
                    return;
                }
            }
            depth += 1;
            match rx.try_recv() {
                Ok(m) => msg = m,
                Err(_) => break,
            }
        }
        c.depth(depth);
        batch.write_out(&mut file, c);
    }
    batch.write_out(&mut file, c);
}
