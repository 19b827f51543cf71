//! Decisions out: the [`DecisionSink`] trait, the versioned [`DecisionRecord`], and the
//! built-in sinks ([`NoopSink`], [`MemorySink`], [`JsonlSink`]).
//!
//! Every sink keeps the accounting invariant
//! `offered = written + dropped + failed (+ pending, until flushed)`, see [`SinkStats`]; a
//! [`DedupeSink`] in front adds `deduped` to it.

mod capture;
mod dedupe;
mod jsonl;
mod memory;
mod record;
mod sample;
mod stage;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[cfg(feature = "kafka")]
pub(crate) use capture::{spawn_writer, Backend, Captured, Queue};
pub use dedupe::{
    DedupeKey, DedupeOptions, DedupeSink, SinkStatsSource, DEFAULT_DEDUPE_CAPACITY,
    DEFAULT_DEDUPE_WINDOW,
};
pub use jsonl::{JsonlOptions, JsonlSink};
pub use memory::MemorySink;
pub use record::{ArmProbability, DecisionRecord, RecordReason, RECORD_SCHEMA};
pub use sample::{SampleOptions, SampleRateError, SampleSink};

use crate::features::Features;
use crate::Decision;

/// One decision as offered to a sink: the decision plus what it was made from.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct DecisionEvent<'a> {
    /// The decision.
    pub decision: &'a Decision,
    /// The slot as the caller named it (also for unknown slots).
    pub slot: &'a str,
    /// The user the decision was made for.
    pub user: &'a str,
    /// The features the decision was made with.
    pub features: &'a Features,
    /// The engine's clock (see [`DecisionEvent::timestamp_ms`]).
    pub(crate) clock: &'a crate::clock::Clock,
    /// The probability the record of this event was kept by sampling stages before this
    /// sink (1 from the engine; see [`DecisionEvent::pass_probability`]).
    pub(crate) pass: f64,
}

impl<'a> DecisionEvent<'a> {
    /// When the decision was made, as unix milliseconds on the engine's
    /// [clock](crate::EngineBuilder::clock): what a record's `timestamp_ms` holds. Read from
    /// the coarse system clock (a few milliseconds of resolution, a few nanoseconds to read)
    /// unless the engine has a fake clock.
    #[must_use]
    pub fn timestamp_ms(&self) -> u64 {
        self.clock.coarse_now_ms()
    }

    /// The probability that sampling stages in front of this sink kept this record
    /// ([`SampleSink`]); 1 when the log is not sampled. Sinks write it as the record's
    /// `pass_probability`.
    #[must_use]
    pub fn pass_probability(&self) -> f64 {
        self.pass
    }

    /// The features the slot's config reads, as present in this event (the "features used").
    pub fn features_used(&self) -> impl Iterator<Item = (&'a str, &'a crate::Value)> + 'a {
        self.features_used_at().map(|(_, name, v)| (name, v))
    }

    /// [`DecisionEvent::features_used`] with each feature's position in the slot's feature
    /// list (what the capture queues record instead of the name).
    pub(crate) fn features_used_at(
        &self,
    ) -> impl Iterator<Item = (usize, &'a str, &'a crate::Value)> + 'a {
        let features = self.features;
        let (names, hashes): (&'a [Box<str>], &'a [u64]) =
            match self.decision.snap.slots.get(self.decision.slot as usize) {
                Some(s) => (&s.features, &s.feature_hashes),
                None => (&[], &[]),
            };
        names
            .iter()
            .zip(hashes)
            .enumerate()
            .filter_map(move |(i, (n, &h))| features.get_hashed(h, n).map(|v| (i, &**n, v)))
    }
}

/// Why a flush did not complete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FlushError {
    /// Records offered before the call were still pending when the timeout passed.
    #[error(
        "the decision sink did not flush within {timeout:?} ({pending} record(s) still pending)"
    )]
    Timeout {
        /// The timeout given.
        timeout: Duration,
        /// Records still pending at the timeout (accepted, neither written nor failed yet).
        pending: u64,
    },
    /// The writer thread is gone (it stopped after an unrecoverable error).
    #[error("the decision-log writer has stopped")]
    WriterGone,
}

impl FlushError {
    /// The timeout passed with records still pending ([`FlushError::Timeout`]); flushing
    /// again may finish them. The other errors do not go away by waiting.
    #[must_use]
    pub fn is_timeout(&self) -> bool {
        matches!(self, FlushError::Timeout { .. })
    }
}

/// What a sink does with a record when its queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Overflow {
    /// Drop the record and count it (`SinkStats::dropped`): `record` never waits. The
    /// default, and the right choice on a request path.
    #[default]
    Drop,
    /// Wait up to this long for room (the writer is woken), then drop and count. For batch
    /// jobs, backfills and examples that must not lose records to a burst; `record` may then
    /// block the deciding thread for up to the bound.
    Block(Duration),
}

/// Receives every decision. `record` must never block the caller: queue, drop and count
/// (unless the sink was configured to [`Overflow::Block`]).
pub trait DecisionSink: Send + Sync {
    /// Offers one decision.
    fn record(&self, event: &DecisionEvent<'_>);

    /// Waits until every record offered **before this call** is written or failed, at most
    /// `timeout` (`Duration::MAX`: no limit). Records offered by other threads after the
    /// call do not extend the wait. The default does nothing: for sinks that keep nothing
    /// pending.
    ///
    /// # Errors
    /// [`FlushError::Timeout`] with the records still pending, or
    /// [`FlushError::WriterGone`].
    fn flush(&self, timeout: Duration) -> Result<(), FlushError> {
        let _ = timeout;
        Ok(())
    }
}

impl<S: DecisionSink + ?Sized> DecisionSink for Arc<S> {
    fn record(&self, event: &DecisionEvent<'_>) {
        (**self).record(event);
    }
    fn flush(&self, timeout: Duration) -> Result<(), FlushError> {
        (**self).flush(timeout)
    }
}

impl<S: DecisionSink + ?Sized> DecisionSink for Box<S> {
    fn record(&self, event: &DecisionEvent<'_>) {
        (**self).record(event);
    }
    fn flush(&self, timeout: Duration) -> Result<(), FlushError> {
        (**self).flush(timeout)
    }
}

impl<S: DecisionSink + ?Sized> DecisionSink for &S {
    fn record(&self, event: &DecisionEvent<'_>) {
        (**self).record(event);
    }
    fn flush(&self, timeout: Duration) -> Result<(), FlushError> {
        (**self).flush(timeout)
    }
}

/// Discards everything; costs nothing. The engine's default sink.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopSink;

impl DecisionSink for NoopSink {
    #[inline(always)]
    fn record(&self, _: &DecisionEvent<'_>) {}
}

/// A sink's counters. `offered == written + dropped + failed + deduped + sampled_out +
/// pending`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SinkStats {
    /// Records handed to the sink.
    pub offered: u64,
    /// Records durably handed to the backend (file written, message stored).
    pub written: u64,
    /// Records dropped because the queue was full (never blocked the caller).
    pub dropped: u64,
    /// Records the backend failed to take (I/O errors, delivery failures, writer gone, or
    /// still undelivered when the last handle was dropped and its drain timeout passed).
    pub failed: u64,
    /// Records a [`DedupeSink`] in front held back as repeats of a key seen in its window
    /// (0 for a sink without one; never counted as drops).
    pub deduped: u64,
    /// Records a [`SampleSink`] in front did not keep (0 for a sink without one).
    pub sampled_out: u64,
    /// The backend's last error, with its context (`write decisions.jsonl: No space left on
    /// device (os error 28)`), if any occurred.
    pub last_error: Option<Arc<str>>,
}

impl SinkStats {
    /// Records accepted but not yet written or failed.
    #[must_use]
    pub fn pending(&self) -> u64 {
        self.offered.saturating_sub(
            self.written + self.dropped + self.failed + self.deduped + self.sampled_out,
        )
    }
}

/// Shared atomic counters behind [`SinkStats`], mirrored to metrics.
#[derive(Debug)]
pub(crate) struct Counters {
    offered: AtomicU64,
    written: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    last_error: Mutex<Option<Arc<str>>>,
    metrics: crate::metrics::SinkMetrics,
}

impl Counters {
    pub(crate) fn new(sink: &'static str) -> Self {
        Counters {
            offered: AtomicU64::new(0),
            written: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            last_error: Mutex::new(None),
            metrics: crate::metrics::SinkMetrics::register(sink),
        }
    }
    pub(crate) fn offered(&self) {
        self.offered.fetch_add(1, Ordering::Relaxed);
        self.metrics.offered.increment(1);
    }
    pub(crate) fn written(&self, n: u64) {
        self.written.fetch_add(n, Ordering::Relaxed);
        self.metrics.written.increment(n);
    }
    pub(crate) fn dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        self.metrics.dropped.increment(1);
    }
    pub(crate) fn failed(&self, n: u64) {
        self.failed.fetch_add(n, Ordering::Relaxed);
        self.metrics.failed.increment(n);
    }
    /// Keeps the backend's last error (never on the deciding path).
    pub(crate) fn error(&self, message: impl std::fmt::Display) {
        let msg: Arc<str> = message.to_string().into();
        *self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(msg);
    }
    /// Mirrors offered and dropped counts kept elsewhere (the capture rings) to metrics.
    pub(crate) fn mirror(&self, offered: u64, dropped: u64) {
        if offered > 0 {
            self.metrics.offered.increment(offered);
        }
        if dropped > 0 {
            self.metrics.dropped.increment(dropped);
        }
    }
    pub(crate) fn depth(&self, d: usize) {
        self.metrics.depth.set(d as f64);
    }
    pub(crate) fn stats(&self) -> SinkStats {
        // Read the outcomes before `offered`, so a concurrent record never makes the sum
        // exceed `offered`.
        let written = self.written.load(Ordering::Acquire);
        let dropped = self.dropped.load(Ordering::Acquire);
        let failed = self.failed.load(Ordering::Acquire);
        let offered = self.offered.load(Ordering::Acquire);
        let last_error = self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        SinkStats {
            offered,
            written,
            dropped,
            failed,
            deduped: 0,
            sampled_out: 0,
            last_error,
        }
    }
}
