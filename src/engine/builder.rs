//! [`EngineBuilder`]: the engine's sink, source, stores and limits.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;

use super::{history, Engine, Inner, DEFAULT_FETCH_DEADLINE, DEFAULT_PENDING_REWARDS};
use crate::decision::random_prefix;
use crate::features::FeatureSource;
use crate::learn::Learner;
use crate::sink::DecisionSink;
use crate::snapshot::Snapshot;

/// Builds an [`Engine`].
///
/// ```
/// use elvon::Engine;
/// use elvon::features::MemoryStore;
/// use elvon::sink::MemorySink;
/// let engine = Engine::builder()
///     .source(MemoryStore::new())
///     .sink(MemorySink::new(1_000))
///     .fetch_deadline(std::time::Duration::from_millis(2))
///     .build();
/// assert_eq!(engine.config_version(), "");
/// ```
#[must_use]
pub struct EngineBuilder {
    sink: Option<Arc<dyn DecisionSink>>,
    source: Option<Arc<dyn FeatureSource>>,
    deadline: Duration,
    pending: usize,
    prefix: Option<u64>,
    clock: crate::clock::Clock,
    keep_previous: usize,
    assignments: Option<Arc<dyn crate::sticky::AssignmentStore>>,
    assignment_queue: usize,
}

impl fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EngineBuilder")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl EngineBuilder {
    /// Where decisions go (default: none, like [`NoopSink`](crate::sink::NoopSink)).
    pub fn sink(mut self, sink: impl DecisionSink + 'static) -> Self {
        self.sink = Some(Arc::new(sink));
        self
    }

    /// Where [`Engine::decide_for`] fetches features (default: none, decisions get no features).
    pub fn source(mut self, source: impl FeatureSource + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// How long `decide_for` waits for features (default [`DEFAULT_FETCH_DEADLINE`]).
    pub fn fetch_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// How many bandit decisions the engine remembers for joining rewards by decision id
    /// (default [`DEFAULT_PENDING_REWARDS`]; `n` is clamped to 16..=2^24 and rounded up to a
    /// power of two). The pending-reward store is one lock-free ring for the whole engine:
    /// bandit decisions number from a sequence of their own, a decision sits at its number
    /// modulo the size, so a reward finds it with one lookup, and each new decision takes the
    /// place of the one `n` bandit decisions before it. A decision replaced before its reward
    /// window passed is evicted (counted in
    /// [`RewardStats::evicted`](crate::RewardStats::evicted), and given the rule's default
    /// reward). Size it above the engine's bandit decisions per second × the longest reward
    /// window. Threads take numbers in blocks of up to 256, so a thread that stops deciding
    /// part-way through a block leaves up to 255 places unused. The store takes 32 bytes per
    /// entry (160 once a contextual rule uses it), allocated on the first bandit decision.
    pub fn pending_rewards(mut self, n: usize) -> Self {
        self.pending = n;
        self
    }

    /// Fixes the high 64 bits of decision ids (default: random per engine). Bandit draws are
    /// a function of the decision id, so two engines with the same prefix, config and learner
    /// state make the same sequence of choices: for reproducible simulations and tests. Two
    /// live engines writing to one log must not share a prefix.
    pub fn id_prefix(mut self, prefix: u64) -> Self {
        self.prefix = Some(prefix);
        self
    }

    /// The clock reward windows (`reward.window_ms`) and model refresh intervals
    /// (`refresh.ms`) are measured on and decision timestamps
    /// ([`DecisionEvent::timestamp_ms`](crate::sink::DecisionEvent::timestamp_ms)) are read
    /// from (default: the system clock). A [`Clock::fake`](crate::clock::Clock::fake) lets
    /// tests and simulations move time instead of sleeping.
    pub fn clock(mut self, clock: crate::clock::Clock) -> Self {
        self.clock = clock;
        self
    }

    /// How many snapshots replaced by loads the engine keeps for [`Engine::rollback`]
    /// (default [`DEFAULT_KEEP_PREVIOUS`](crate::DEFAULT_KEEP_PREVIOUS); 0 keeps none). Each
    /// kept snapshot holds its compiled config in memory (about what the config took to
    /// load), and is freed when a later load pushes it out or a rollback passes it.
    pub fn keep_previous(mut self, n: usize) -> Self {
        self.keep_previous = n;
        self
    }

    /// Where `sticky` slots keep their assignments (default: none; a sticky slot then
    /// decides from the config alone, and loading a config with one warns). The engine
    /// starts a writer thread (`elvon-sticky`) for the store.
    pub fn assignments(mut self, store: impl crate::sticky::AssignmentStore + 'static) -> Self {
        self.assignments = Some(Arc::new(store));
        self
    }

    /// New assignments queued for the store's writer at most (default
    /// [`DEFAULT_ASSIGNMENT_QUEUE`](crate::sticky::DEFAULT_ASSIGNMENT_QUEUE), at least 1):
    /// beyond that a new assignment is dropped and counted
    /// ([`AssignmentStats::dropped`](crate::sticky::AssignmentStats::dropped)); the
    /// decision is still served, and the next decision of that unit assigns again.
    pub fn assignment_queue(mut self, n: usize) -> Self {
        self.assignment_queue = n;
        self
    }

    /// The engine, serving an empty config (every slot unknown) until one is loaded.
    pub fn build(self) -> Engine {
        let prefix = self.prefix.unwrap_or_else(random_prefix);
        Engine {
            inner: Arc::new(Inner {
                snapshot: ArcSwap::from_pointee(Snapshot::empty()),
                learner: Learner::new(self.pending, prefix, self.clock.clone()),
                loading: Mutex::new(history::History::new(self.keep_previous)),
                sink: self.sink,
                source: self.source,
                deadline: self.deadline,
                prefix,
                blocks: std::sync::atomic::AtomicU64::new(0),
                serial: crate::decision::engine_serial(),
                clock: self.clock,
                shadow: arc_swap::ArcSwapOption::empty(),
                shadow_on: std::sync::atomic::AtomicBool::new(false),
                assign: self
                    .assignments
                    .map(|s| crate::sticky::queue::Writer::new(s, self.assignment_queue)),
            }),
        }
    }
}

impl Engine {
    /// Starts building an engine.
    pub fn builder() -> EngineBuilder {
        EngineBuilder {
            sink: None,
            pending: DEFAULT_PENDING_REWARDS,
            prefix: None,
            source: None,
            deadline: DEFAULT_FETCH_DEADLINE,
            clock: crate::clock::Clock::system(),
            keep_previous: history::DEFAULT_KEEP_PREVIOUS,
            assignments: None,
            assignment_queue: crate::sticky::DEFAULT_ASSIGNMENT_QUEUE,
        }
    }
}
