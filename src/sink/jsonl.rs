//! The JSON-lines file sink: a bounded queue and a background writer thread.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::{Counters, DecisionEvent, DecisionRecord, DecisionSink, SinkStats};

/// Options of a [`JsonlSink`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct JsonlOptions {
    /// Records queued for the writer at most; beyond that `record` drops and counts.
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

enum Msg {
    Record(Box<DecisionRecord>),
    Flush(SyncSender<()>),
    Stop,
}

/// Appends one JSON object per decision to a file ([`DecisionRecord`], one per line).
///
/// `record` serializes nothing itself: it builds the record and offers it to a bounded queue
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
        let rec = Box::new(DecisionRecord::from_event(event));
        match self.inner.tx.try_send(Msg::Record(rec)) {
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
                    match serde_json::to_writer(&mut batch.buf, &*rec) {
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
