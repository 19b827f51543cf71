//! The JSON-lines file sink: per-thread capture rings and a background writer thread.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::queue::{self, Backend, Captured, Queue};
use super::{Counters, DecisionEvent, DecisionSink, SinkStats};

/// Options of a [`JsonlSink`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct JsonlOptions {
    /// Records queued for the writer at most, per deciding thread; beyond that `record` drops
    /// and counts. Each thread that records gets its own queue on its first record, sized at
    /// 128 bytes per record (at least 32 KiB): 1 MiB for the default 8,192.
    pub queue_capacity: usize,
    /// The writer writes out its batch at the latest when it holds this many bytes.
    pub batch_bytes: usize,
}

impl Default for JsonlOptions {
    fn default() -> Self {
        JsonlOptions {
            queue_capacity: 8_192,
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

/// Appends one JSON object per decision to a file ([`DecisionRecord`](super::DecisionRecord), one per line).
///
/// `record` does little on the caller's thread and never blocks: it encodes the decision
/// (ids, the user, the slot name and the used features) into the calling thread's own
/// bounded queue, with no allocation, lock or system call, and counts it as dropped when that
/// queue is full. A background thread turns the records into JSON lines, writes them in
/// batches and counts every record as written or failed. Cheap to clone; the writer stops,
/// after writing everything queued, when the last clone is dropped.
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
    queue: Arc<Queue>,
    writer: Option<JoinHandle<()>>,
    path: PathBuf,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The writer drains every queue once more before it returns.
        self.queue.close();
        if let Some(h) = self.writer.take() {
            let _ = h.join();
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
        let queue = Arc::new(Queue::new(options.queue_capacity, "jsonl"));
        let batch_bytes = options.batch_bytes.max(1);
        let backend = FileBackend {
            file,
            batch: Vec::with_capacity(batch_bytes.min(1 << 20)),
            n: 0,
            batch_bytes,
        };
        let writer = queue::spawn_writer(&queue, "elvon-jsonl", backend)?;
        Ok(JsonlSink {
            inner: Arc::new(Inner {
                queue,
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
        self.inner.queue.stats()
    }

    /// Waits until every record offered before this call is written (or failed) and the file
    /// is flushed. Blocks the calling thread: call it on shutdown or in tests, not per
    /// decision.
    ///
    /// # Errors
    /// [`FlushError::Timeout`] when the writer does not confirm in time,
    /// [`FlushError::WriterGone`] when the writer thread has stopped.
    pub fn flush(&self, timeout: Duration) -> Result<(), FlushError> {
        let deadline = crate::clock::deadline(timeout);
        let ticket = self.inner.queue.ask_flush();
        loop {
            if self.inner.queue.flushed(ticket) {
                return Ok(());
            }
            if self
                .inner
                .writer
                .as_ref()
                .is_none_or(JoinHandle::is_finished)
            {
                return Err(FlushError::WriterGone);
            }
            if Instant::now() >= deadline {
                return Err(FlushError::Timeout(timeout));
            }
            thread::sleep(Duration::from_micros(100));
        }
    }
}

impl DecisionSink for JsonlSink {
    fn record(&self, event: &DecisionEvent<'_>) {
        self.inner.queue.offer(event);
    }
}

/// The file and the batch of lines not yet written to it.
struct FileBackend {
    file: File,
    batch: Vec<u8>,
    /// Records in `batch`.
    n: u64,
    batch_bytes: usize,
}

impl FileBackend {
    fn write_out(&mut self, c: &Counters) {
        if self.n == 0 {
            return;
        }
        match self.file.write_all(&self.batch) {
            Ok(()) => c.written(self.n),
            Err(_) => c.failed(self.n),
        }
        self.batch.clear();
        self.n = 0;
    }
}

impl Backend for FileBackend {
    fn record(&mut self, record: &Captured<'_>, c: &Counters) {
        let at = self.batch.len();
        match record.write_json(&mut self.batch) {
            Ok(()) => {
                self.batch.push(b'\n');
                self.n += 1;
            }
            Err(_) => {
                self.batch.truncate(at);
                c.failed(1);
            }
        }
        if self.batch.len() >= self.batch_bytes {
            self.write_out(c);
        }
    }

    fn pass_done(&mut self, c: &Counters) {
        self.write_out(c);
    }

    fn flush(&mut self, c: &Counters) {
        self.write_out(c);
        let _ = self.file.flush();
    }
}
