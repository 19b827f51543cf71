//! [`DedupeSink`]: an opt-in stage in front of any sink that passes the first record of each
//! exposure key per time window and counts the repeats, in fixed memory.

use std::sync::atomic::{AtomicU64, Ordering};

use super::stage::StageCounts;
use std::time::Duration;

use super::{DecisionEvent, DecisionSink, FlushError, SinkStats};

/// Default window of a [`DedupeSink`]: a key is passed once per minute.
pub const DEFAULT_DEDUPE_WINDOW: Duration = Duration::from_secs(60);

/// Default number of distinct keys a [`DedupeSink`] remembers per window.
pub const DEFAULT_DEDUPE_CAPACITY: usize = 100_000;

/// Slots a key may be stored in, from its home slot on.
const PROBE: usize = 8;

/// What makes two records the same exposure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DedupeKey {
    /// Slot, user, variant and config version (the default): a new config version logs
    /// every user's exposure again.
    #[default]
    Exposure,
    /// Slot, user and variant, whatever the config version.
    SlotUserVariant,
}

/// Settings of a [`DedupeSink`].
#[derive(Debug, Clone, Copy)]
#[must_use]
pub struct DedupeOptions {
    key: DedupeKey,
    window: Duration,
    capacity: usize,
}

impl Default for DedupeOptions {
    fn default() -> Self {
        DedupeOptions {
            key: DedupeKey::Exposure,
            window: DEFAULT_DEDUPE_WINDOW,
            capacity: DEFAULT_DEDUPE_CAPACITY,
        }
    }
}

impl DedupeOptions {
    /// What identifies an exposure (default [`DedupeKey::Exposure`]).
    pub fn key(mut self, key: DedupeKey) -> Self {
        self.key = key;
        self
    }

    /// How long a key is remembered (default [`DEFAULT_DEDUPE_WINDOW`], at least 1 ms).
    /// Windows are aligned on the engine clock (`timestamp_ms / window`): a key seen in one
    /// window is passed again in the next.
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window.max(Duration::from_millis(1));
        self
    }

    /// How many distinct keys per window it remembers (default
    /// [`DEFAULT_DEDUPE_CAPACITY`], 16 to 2^26). Memory is fixed at 16 bytes per key of
    /// capacity (rounded up to a power of two), whatever the number of users; beyond the
    /// capacity, some repeats are passed rather than remembered, never dropped.
    pub fn capacity(mut self, keys: usize) -> Self {
        self.capacity = keys.clamp(16, 1 << 26);
        self
    }
}

/// Passes the first record of each key per window to the sink behind it, and counts the
/// others as deduped (`elvon_sink_records_total{sink="dedupe", outcome="deduped"}`, and
/// [`SinkStats::deduped`]), never as drops. Bandit decisions always pass: each has its own
/// id and reward join.
///
/// Keys are remembered as 64-bit hashes in a fixed table (no allocation after
/// construction, no lock: one compare-and-swap for a new key), tagged with their window, so
/// a new window forgets the old one without a sweep. Two keys are confused only when their
/// hashes agree in 48 bits within one window.
///
/// ```
/// use elvon::sink::{DedupeOptions, DedupeSink, MemorySink};
/// let log = MemorySink::new(1_000);
/// let sink = DedupeSink::new(log.clone(), DedupeOptions::default());
/// let engine = elvon::Engine::builder().sink(sink.clone()).build();
/// engine.load_config_json(r#"{"version": "1", "slots": [{"id": "s",
///     "variants": [{"id": "a"}], "default": "a"}]}"#).unwrap();
/// for _ in 0..10 {
///     let _ = engine.decide("s", "u", &elvon::Features::new());
/// }
/// let stats = sink.stats();
/// assert_eq!((stats.offered, stats.deduped, log.stats().offered), (10, 9, 1));
/// ```
#[derive(Clone)]
pub struct DedupeSink<S> {
    inner: S,
    state: std::sync::Arc<State>,
}

struct State {
    key: DedupeKey,
    window_ms: u64,
    mask: usize,
    slots: Box<[AtomicU64]>,
    counts: StageCounts,
}

impl<S: std::fmt::Debug> std::fmt::Debug for DedupeSink<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DedupeSink")
            .field("inner", &self.inner)
            .field("key", &self.state.key)
            .field("window_ms", &self.state.window_ms)
            .field("slots", &self.state.slots.len())
            .finish_non_exhaustive()
    }
}

/// A sink whose counters a [`DedupeSink`] can add its own to.
pub trait SinkStatsSource {
    /// The sink's counters.
    fn stats(&self) -> SinkStats;
}

impl SinkStatsSource for super::MemorySink {
    fn stats(&self) -> SinkStats {
        super::MemorySink::stats(self)
    }
}

impl SinkStatsSource for super::JsonlSink {
    fn stats(&self) -> SinkStats {
        super::JsonlSink::stats(self)
    }
}

impl<S: SinkStatsSource + ?Sized> SinkStatsSource for std::sync::Arc<S> {
    fn stats(&self) -> SinkStats {
        (**self).stats()
    }
}

impl<S> DedupeSink<S> {
    /// A dedupe stage in front of `inner`.
    pub fn new(inner: S, options: DedupeOptions) -> Self {
        let n = (options.capacity * 2).next_power_of_two();
        let slots: Box<[AtomicU64]> = (0..n).map(|_| AtomicU64::new(0)).collect();
        DedupeSink {
            inner,
            state: std::sync::Arc::new(State {
                key: options.key,
                window_ms: u64::try_from(options.window.as_millis()).unwrap_or(u64::MAX),
                mask: n - 1,
                slots,
                counts: StageCounts::new("dedupe", "deduped"),
            }),
        }
    }

    /// The sink behind the stage.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Records offered to the stage.
    #[must_use]
    pub fn offered(&self) -> u64 {
        self.state.counts.offered()
    }

    /// Records not passed on because their key was seen in the window.
    #[must_use]
    pub fn deduped(&self) -> u64 {
        self.state.counts.held()
    }

    /// Bytes of the key table (fixed at construction).
    #[must_use]
    pub fn table_bytes(&self) -> usize {
        self.state.slots.len() * std::mem::size_of::<AtomicU64>()
    }
}

impl<S: SinkStatsSource> DedupeSink<S> {
    /// The stage's counters over the sink behind it: `offered` is what reached the stage,
    /// `deduped` what it held back, the rest the inner sink's, so `offered == written +
    /// dropped + failed + deduped + pending`.
    #[must_use]
    pub fn stats(&self) -> SinkStats {
        let deduped = self.deduped();
        let inner = self.inner.stats();
        self.state.counts.over(deduped, inner, |s| &mut s.deduped)
    }
}

impl<S: SinkStatsSource> SinkStatsSource for DedupeSink<S> {
    fn stats(&self) -> SinkStats {
        DedupeSink::stats(self)
    }
}

impl State {
    fn hash(&self, event: &DecisionEvent<'_>) -> u64 {
        use xxhash_rust::xxh3::Xxh3;
        let d = event.decision;
        let mut h = Xxh3::new();
        for part in [event.slot, event.user, d.variant().unwrap_or("")] {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        if self.key == DedupeKey::Exposure {
            h.update(d.config_version().as_bytes());
        }
        h.digest()
    }

    /// `true` when `hash` was already seen in `window` (and records it otherwise).
    fn seen(&self, hash: u64, window: u64) -> bool {
        // 16 bits of window, 48 of hash; never 0, which marks an empty slot.
        let tag = ((window & 0xffff) << 48) | (hash >> 16) | 1;
        let home = (hash as usize) & self.mask;
        for i in 0..PROBE {
            let slot = &self.slots[(home + i) & self.mask];
            let mut current = slot.load(Ordering::Acquire);
            loop {
                if current == tag {
                    return true;
                }
                let stale = current == 0 || current >> 48 != tag >> 48;
                if !stale {
                    break; // another key of this window: probe the next slot
                }
                match slot.compare_exchange(current, tag, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => return false,
                    Err(now) => current = now,
                }
            }
        }
        // The neighbourhood is full of this window's keys: pass the record (a repeat may
        // then be logged twice; nothing is lost).
        false
    }
}

impl<S: DecisionSink> DecisionSink for DedupeSink<S> {
    fn record(&self, event: &DecisionEvent<'_>) {
        let st = &self.state;
        st.counts.offer();
        if event.decision.outcome.bandit.is_none() {
            let window = event.timestamp_ms() / st.window_ms;
            if st.seen(st.hash(event), window) {
                st.counts.hold();
                return;
            }
        }
        self.inner.record(event);
    }

    fn flush(&self, timeout: Duration) -> Result<(), FlushError> {
        self.inner.flush(timeout)
    }
}
