//! The JSON-lines file sink: per-thread capture rings and a background writer thread.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::capture::{self, Backend, Captured, Queue};
use super::{Counters, DecisionEvent, DecisionSink, FlushError, Overflow, SinkStats};
use crate::clock::Clock;

/// Options of a [`JsonlSink`]: the defaults, changed with the setters.
///
/// ```
/// use elvon::sink::{JsonlOptions, Overflow};
/// let options = JsonlOptions::default()
///     .overflow(Overflow::Block(std::time::Duration::from_millis(5)))
///     .rotate_bytes(Some(64 << 20))
///     .keep_files(8);
/// # drop(options);
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct JsonlOptions {
    queue_capacity: usize,
    batch_bytes: usize,
    overflow: Overflow,
    rotate_bytes: Option<u64>,
    keep_files: u32,
    clock: Clock,
}

impl Default for JsonlOptions {
    fn default() -> Self {
        JsonlOptions {
            queue_capacity: 8_192,
            batch_bytes: 256 * 1024,
            overflow: Overflow::Drop,
            rotate_bytes: None,
            keep_files: 4,
            clock: Clock::system(),
        }
    }
}

impl JsonlOptions {
    /// Records queued for the writer at most, per deciding thread (default 8,192, at least
    /// 1); beyond that `record` drops and counts. Each thread that records gets its own
    /// queue on its first record, sized at 128 bytes per record (at least 32 KiB): 1 MiB for
    /// the default.
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n.max(1);
        self
    }

    /// The writer writes out its batch at the latest when it holds this many bytes (default
    /// 256 KiB, at least 1).
    pub fn batch_bytes(mut self, n: usize) -> Self {
        self.batch_bytes = n.max(1);
        self
    }

    /// What `record` does when its thread's queue is full (default [`Overflow::Drop`]).
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = overflow;
        self
    }

    /// Rotate the file once it holds at least this many bytes (default `None`: never). The
    /// file is renamed to `<path>.1` (an older `<path>.1` to `<path>.2`, and so on, up to
    /// [`keep_files`](Self::keep_files)) and a new file is started, always at a line
    /// boundary.
    pub fn rotate_bytes(mut self, bytes: Option<u64>) -> Self {
        self.rotate_bytes = bytes.map(|b| b.max(1));
        self
    }

    /// Rotated files kept (`<path>.1` … `<path>.N`, default 4, at least 1); the oldest is
    /// removed.
    pub fn keep_files(mut self, n: u32) -> Self {
        self.keep_files = n.max(1);
        self
    }

    /// The clock the writer's once-a-second check for a moved or deleted file runs on
    /// (default: the system clock). Record timestamps come from the engine's clock, not
    /// this one.
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }
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
/// **Durability and errors.** A record counts as `written` once its line is in the file (in
/// the page cache); [`JsonlSink::flush`] also `fsync`s the file's data, so after a
/// successful flush the records offered before it survive a crash of the machine. A write
/// that fails part-way is cut back to the last complete line (or, when that is not possible,
/// the next batch starts on a new line), its records count as `failed`, and the error is kept
/// in [`SinkStats::last_error`]: the file never holds a torn line counted as written.
///
/// **Rotation.** [`JsonlSink::reopen`] makes the writer reopen the path (for `logrotate`'s
/// `postrotate`); the writer also notices by itself, within a second, that the file was moved
/// or deleted and starts a new one at the path. [`JsonlOptions::rotate_bytes`] rotates by
/// size. Records written before a move stay in the moved file: none is lost.
///
/// ```no_run
/// # fn main() -> std::io::Result<()> {
/// let sink = elvon::sink::JsonlSink::create("decisions.jsonl", Default::default())?;
/// let engine = elvon::Engine::builder().sink(sink.clone()).build();
/// let _ = engine.decide("banner", "u42", &elvon::Features::new());
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
    control: Arc<Control>,
}

/// Requests from the sink handles to the writer.
#[derive(Debug, Default)]
struct Control {
    reopen_asked: AtomicU64,
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
        let log = LogFile::open(&path)?;
        let queue = Arc::new(Queue::new(
            options.queue_capacity,
            "jsonl",
            options.overflow,
        ));
        let batch_bytes = options.batch_bytes.max(1);
        let control = Arc::new(Control::default());
        let backend = FileBackend {
            log,
            path: path.clone(),
            batch: Vec::with_capacity(batch_bytes.min(1 << 20)),
            n: 0,
            batch_bytes,
            rotate_bytes: options.rotate_bytes,
            keep_files: options.keep_files.max(1),
            control: Arc::clone(&control),
            reopened: 0,
            checked_ms: options.clock.monotonic_ms(),
            clock: options.clock,
        };
        let writer = capture::spawn_writer(&queue, "elvon-jsonl", backend)?;
        Ok(JsonlSink {
            inner: Arc::new(Inner {
                queue,
                writer: Some(writer),
                path,
                control,
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

    /// Asks the writer to close the file and open the path again (creating it), for example
    /// after `logrotate` moved it. Returns at once; the writer reopens before its next write.
    /// Records written before that stay in the old (moved) file. A failure to open is kept in
    /// [`SinkStats::last_error`] and the writer keeps the old file.
    pub fn reopen(&self) {
        self.inner
            .control
            .reopen_asked
            .fetch_add(1, Ordering::Release);
        self.inner.queue.wake();
    }

    /// Waits until every record offered before this call is written (or failed) and the
    /// file's data is synced to disk (`fsync`), at most `timeout`. Blocks the calling thread:
    /// call it on shutdown or in tests, not per decision.
    ///
    /// # Errors
    /// [`FlushError::Timeout`] when the writer does not confirm in time,
    /// [`FlushError::WriterGone`] when the writer thread has stopped.
    pub fn flush(&self, timeout: Duration) -> Result<(), FlushError> {
        let writer = self.inner.writer.as_ref();
        self.inner
            .queue
            .wait_flushed(timeout, || writer.is_some_and(|h| !h.is_finished()))
    }
}

impl DecisionSink for JsonlSink {
    fn record(&self, event: &DecisionEvent<'_>) {
        self.inner.queue.offer(event);
    }

    fn flush(&self, timeout: Duration) -> Result<(), FlushError> {
        JsonlSink::flush(self, timeout)
    }
}

/// The open file and the length of its complete lines.
struct LogFile {
    file: File,
    /// Bytes of complete lines (what the file is cut back to after a failed write).
    len: u64,
    /// A write failed and could not be cut back: the file may end in a partial line.
    torn: bool,
}

impl LogFile {
    fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let len = file.metadata()?.len();
        // A file that does not end in a newline (a crash mid-line) gets one first.
        let torn = len > 0 && !ends_with_newline(&file, len);
        Ok(LogFile { file, len, torn })
    }

    /// Writes `batch` (complete lines). On error the file is cut back to its last complete
    /// line, or marked torn when that fails.
    fn write(&mut self, batch: &[u8]) -> io::Result<()> {
        if self.torn {
            self.file.write_all(b"\n")?;
            self.len += 1;
            self.torn = false;
        }
        match self.file.write_all(batch) {
            Ok(()) => {
                self.len += batch.len() as u64;
                Ok(())
            }
            Err(e) => {
                if self.file.set_len(self.len).is_err() {
                    self.torn = true;
                }
                Err(e)
            }
        }
    }

    /// Whether `path` still names this file (it was not moved or deleted).
    #[cfg(unix)]
    fn is_at(&self, path: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        match (std::fs::metadata(path), self.file.metadata()) {
            (Ok(p), Ok(f)) => p.ino() == f.ino() && p.dev() == f.dev(),
            (Err(_), _) => false,
            (_, Err(_)) => true,
        }
    }

    #[cfg(not(unix))]
    fn is_at(&self, path: &Path) -> bool {
        path.exists()
    }
}

fn ends_with_newline(file: &File, len: u64) -> bool {
    let mut last = [0u8; 1];
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt;
        file.read_exact_at(&mut last, len - 1).is_ok() && last[0] == b'\n'
    }
    #[cfg(not(unix))]
    {
        let _ = (file, len, &mut last);
        true
    }
}

/// The file and the batch of lines not yet written to it.
struct FileBackend {
    log: LogFile,
    path: PathBuf,
    batch: Vec<u8>,
    /// Records in `batch`.
    n: u64,
    batch_bytes: usize,
    rotate_bytes: Option<u64>,
    keep_files: u32,
    control: Arc<Control>,
    /// Reopen requests handled.
    reopened: u64,
    /// When the path was last checked for a moved or deleted file (`clock`'s monotonic ms).
    checked_ms: u64,
    clock: Clock,
}

impl FileBackend {
    fn write_out(&mut self, c: &Counters) {
        if self.n == 0 {
            return;
        }
        self.maintain(c);
        match self.log.write(&self.batch) {
            Ok(()) => c.written(self.n),
            Err(e) => {
                c.failed(self.n);
                c.error(format_args!("write {}: {e}", self.path.display()));
            }
        }
        self.batch.clear();
        self.n = 0;
        if self
            .rotate_bytes
            .is_some_and(|max| self.log.len >= max && !self.log.torn)
        {
            self.rotate(c);
        }
    }

    /// Reopens the path when asked to, or when the file was moved or deleted (checked at
    /// most once a second).
    fn maintain(&mut self, c: &Counters) {
        let asked = self.control.reopen_asked.load(Ordering::Acquire);
        let now = self.clock.monotonic_ms();
        let moved = now.saturating_sub(self.checked_ms) >= 1_000 && {
            self.checked_ms = now;
            !self.log.is_at(&self.path)
        };
        if asked != self.reopened || moved {
            self.reopened = asked;
            self.reopen(c);
        }
    }

    fn reopen(&mut self, c: &Counters) {
        match LogFile::open(&self.path) {
            Ok(log) => self.log = log,
            Err(e) => c.error(format_args!("reopen {}: {e}", self.path.display())),
        }
    }

    /// `<path>.N-1` → `<path>.N`, …, `<path>` → `<path>.1`, then a new `<path>`.
    fn rotate(&mut self, c: &Counters) {
        let numbered = |i: u32| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{i}"));
            PathBuf::from(p)
        };
        let _ = std::fs::remove_file(numbered(self.keep_files));
        for i in (1..self.keep_files).rev() {
            let _ = std::fs::rename(numbered(i), numbered(i + 1));
        }
        match std::fs::rename(&self.path, numbered(1)) {
            Ok(()) => self.reopen(c),
            Err(e) => c.error(format_args!("rotate {}: {e}", self.path.display())),
        }
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
        if self.n == 0 && self.control.reopen_asked.load(Ordering::Acquire) != self.reopened {
            self.maintain(c);
        }
    }

    fn flush(&mut self, c: &Counters) {
        self.write_out(c);
        if let Err(e) = self.log.file.sync_data() {
            c.error(format_args!("sync {}: {e}", self.path.display()));
        }
    }
}
