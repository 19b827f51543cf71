//! [`Engine`]: load configs, decide, explain.

mod builder;
mod explain;
mod history;
mod learning;
mod shadow;
mod sticky;

pub use builder::EngineBuilder;
pub use history::{RollbackError, DEFAULT_KEEP_PREVIOUS};
pub use learning::LearnerThread;
pub use shadow::{RuleChange, ShadowReport, SlotShadow, SHADOW_PENDING};

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, Guard};

use crate::config::{compile, Config, ConfigError, ConfigProblem};
use crate::decision::{next_id, Decision, DecisionId, FeatureStatus};
use crate::features::{block_on, FeatureSource, Features, FetchRequest, SourceError};
use crate::kinds::ReasonKind;
use crate::learn::Learner;
use crate::sink::{DecisionEvent, DecisionSink};
use crate::snapshot::trace::NoTrace;
use crate::snapshot::{BanditId, RawCause, RawReason, Snapshot, NO_VARIANT};

/// Default deadline for feature fetches in [`Engine::decide_for`].
pub const DEFAULT_FETCH_DEADLINE: Duration = Duration::from_millis(5);

/// Default number of bandit decisions the engine remembers for joining rewards by id.
pub const DEFAULT_PENDING_REWARDS: usize = 131_072;

/// The decision engine: a cheap-to-clone handle on a lock-free, hot-swappable config snapshot,
/// a feature source and a decision sink.
///
/// `decide` loads the current snapshot once (no lock, no allocation with the no-op sink),
/// evaluates the slot and returns a [`Decision`]. `load_config` validates and compiles a new
/// config off to the side and swaps it in atomically; a bad config changes nothing.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    snapshot: ArcSwap<Snapshot>,
    learner: Learner,
    /// Serializes config loads and rollbacks, so the learner's view and the serving
    /// snapshot agree; holds the replaced snapshots kept for rollback.
    loading: Mutex<history::History>,
    /// `None` for the default no-op sink: `decide` then skips building the event.
    sink: Option<Arc<dyn DecisionSink>>,
    source: Option<Arc<dyn FeatureSource>>,
    deadline: Duration,
    prefix: u64,
    /// Decision-id sequence blocks handed to threads.
    blocks: std::sync::atomic::AtomicU64,
    serial: u64,
    /// Decision timestamps (what sinks record) are read from it.
    clock: crate::clock::Clock,
    /// The running shadow evaluation ([`Engine::shadow`]), and whether there is one (the
    /// decide path reads only the flag when there is none).
    shadow: arc_swap::ArcSwapOption<shadow::Shadow>,
    shadow_on: std::sync::atomic::AtomicBool,
    /// Sticky slots' assignment store and its writer.
    assign: Option<crate::sticky::queue::Writer>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("config_version", &self.inner.snapshot.load().version())
            .field("has_source", &self.inner.source.is_some())
            .field("fetch_deadline", &self.inner.deadline)
            .finish()
    }
}

/// What a successful config load reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoadOutcome {
    /// The `version` of the config now serving.
    pub version: String,
    /// Non-fatal findings (for example unreachable rules that were dropped).
    pub warnings: Vec<ConfigProblem>,
}

/// A decision together with the trace of how it was reached.
#[derive(Debug)]
#[non_exhaustive]
pub struct Explanation {
    /// The decision (not sent to the sink, not counted in metrics).
    pub decision: Decision,
    /// One line per evaluation step, in order.
    pub steps: Vec<String>,
}

impl Default for Engine {
    fn default() -> Self {
        Engine::builder().build()
    }
}

impl Engine {
    /// Validates, compiles and swaps in `config`. On error nothing changes and the error lists
    /// every problem with its path.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] with all problems found.
    pub fn load_config(&self, config: &Config) -> Result<LoadOutcome, ConfigError> {
        let mut history = self.lock_loading();
        match compile(config) {
            Ok(c) => {
                let mut snapshot = c.snapshot;
                let mut warnings = c.warnings;
                if self.inner.assign.is_none() {
                    warnings.extend(sticky_without_store(&snapshot));
                }
                let version = snapshot.version.to_string();
                self.inner.learner.attach(&mut snapshot);
                // The old snapshot is freed here or by the reclaimer, never by the request
                // thread that happens to drop its last decision.
                let old = self.inner.snapshot.swap(Arc::new(snapshot));
                if let Some(old) = history.replaced(old) {
                    crate::snapshot::reclaim::retire(old);
                }
                crate::config::prune_regexes();
                crate::metrics::config_swapped();
                Ok(LoadOutcome { version, warnings })
            }
            Err(problems) => {
                crate::config::prune_regexes();
                crate::metrics::config_rejected();
                Err(ConfigError::Invalid(problems))
            }
        }
    }

    /// The loading lock (a panic while it was held leaves nothing half-done: the swap is
    /// the last step).
    fn lock_loading(&self) -> std::sync::MutexGuard<'_, history::History> {
        self.inner
            .loading
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Parses JSON text and loads it; see [`Engine::load_config`].
    ///
    /// # Errors
    /// [`ConfigError::Parse`] or [`ConfigError::Invalid`].
    pub fn load_config_json(&self, json: &str) -> Result<LoadOutcome, ConfigError> {
        let config = Config::from_json(json).inspect_err(|_| crate::metrics::config_rejected())?;
        self.load_config(&config)
    }

    /// Reads a JSON config file and loads it; see [`Engine::load_config`].
    ///
    /// # Errors
    /// [`ConfigError::Io`], [`ConfigError::Parse`] or [`ConfigError::Invalid`].
    pub fn load_config_file(&self, path: impl AsRef<Path>) -> Result<LoadOutcome, ConfigError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| {
            crate::metrics::config_rejected();
            ConfigError::Io {
                path: path.to_owned(),
                source,
            }
        })?;
        let config =
            Config::from_slice(&bytes).inspect_err(|_| crate::metrics::config_rejected())?;
        self.load_config(&config)
    }

    /// The engine's id prefix: the high 64 bits of every decision id it makes (see
    /// [`EngineBuilder::id_prefix`]); in a fleet, what routes a reward to its instance.
    #[must_use]
    pub fn id_prefix(&self) -> u64 {
        self.inner.prefix
    }

    /// The `version` of the config currently serving (`""` before the first load).
    #[must_use]
    pub fn config_version(&self) -> String {
        self.inner.snapshot.load().version.to_string()
    }

    /// The snapshot currently serving.
    #[must_use]
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.snapshot.load_full()
    }

    /// Decides which variant `user` sees in `slot`, given their `features`.
    ///
    /// Synchronous and pure: no I/O, no allocation with the no-op sink, and no locks (a
    /// decision of a `bandit` rule is remembered for its reward in a lock-free store, see
    /// [`EngineBuilder::pending_rewards`]). A `sticky` slot also reads the engine's
    /// assignment store (no I/O; [`MemoryAssignments`](crate::sticky::MemoryAssignments)
    /// takes a shard read lock) and allocates to queue a new assignment, see
    /// [sticky assignment](crate::docs::config_format#sticky-assignment). Never fails: an
    /// unknown slot, a missing feature or a type mismatch is a [`Reason`](crate::Reason).
    #[inline]
    pub fn decide(&self, slot: &str, user: &str, features: &Features) -> Decision {
        let snap = self.inner.snapshot.load();
        self.finish(snap, slot, user, features, FeatureStatus::Provided, None)
    }

    /// Fetches the features `slot` reads from the engine's source, then decides.
    ///
    /// Waits at most the fetch deadline; on timeout or source error it decides without
    /// features (the default for rules that needed them) and says so in the decision's
    /// [`feature_status`](Decision::feature_status) and, when the default is served, in a
    /// [`Reason::Fallback`](crate::Reason::Fallback). Slots that read no features, and
    /// engines built without a source, decide without fetching, on no features
    /// ([`FeatureStatus::NotFetched`]).
    pub fn decide_for(&self, slot: &str, user: &str) -> Decision {
        let (snap, started) = (self.inner.snapshot.load_full(), Instant::now());
        let deadline = crate::clock::deadline_after(started, self.inner.deadline);
        let result = self.fetch_request(&snap, slot).map(|(source, names)| {
            let fut = source.fetch(FetchRequest::new(user, names, deadline));
            block_on(fut, deadline).unwrap_or(Err(SourceError::Timeout))
        });
        self.after_fetch(snap, slot, user, result, started)
    }

    /// Like [`Engine::decide_for`], awaiting the source instead of blocking. The deadline is
    /// passed to the source, which is responsible for honouring it (the Redis source does);
    /// this method adds no timer of its own, so it needs no particular async runtime. It
    /// returns an [`OwnedDecision`](crate::OwnedDecision), which async code may hold across
    /// later `.await`s and send between threads; the future is `Send` when the source's is.
    pub async fn decide_for_async(&self, slot: &str, user: &str) -> crate::OwnedDecision {
        let (snap, started) = (self.inner.snapshot.load_full(), Instant::now());
        let deadline = crate::clock::deadline_after(started, self.inner.deadline);
        let result = match self.fetch_request(&snap, slot) {
            None => None,
            Some((source, names)) => {
                Some(source.fetch(FetchRequest::new(user, names, deadline)).await)
            }
        };
        self.after_fetch(snap, slot, user, result, started)
            .into_owned()
    }

    /// The source and feature names to fetch, or `None` when there is nothing to fetch.
    fn fetch_request<'s>(
        &'s self,
        snap: &'s Snapshot,
        slot: &str,
    ) -> Option<(&'s dyn FeatureSource, &'s [Box<str>])> {
        let source = self.inner.source.as_deref()?;
        let slot = snap.slot(slot)?;
        let names = match (&slot.sticky, &self.inner.assign) {
            (Some(st), Some(w)) if w.store.reads_with_features() => &st.fetch,
            _ => &slot.features,
        };
        (!names.is_empty()).then_some((source, &**names))
    }

    /// Decides on the fetch result; `None` means nothing needed fetching (no latency is
    /// recorded for it).
    fn after_fetch(
        &self,
        snap: Arc<Snapshot>,
        slot: &str,
        user: &str,
        result: Option<Result<Features, SourceError>>,
        started: Instant,
    ) -> Decision {
        let secs = started.elapsed().as_secs_f64();
        let (features, status, degraded) = match result {
            None => (Features::new(), FeatureStatus::NotFetched, None),
            Some(Ok(f)) => {
                crate::metrics::feature_fetch(secs, "ok");
                (f, FeatureStatus::Fetched, None)
            }
            Some(Err(e)) => {
                let (outcome, status, cause) = match e {
                    SourceError::Timeout => {
                        ("timeout", FeatureStatus::TimedOut, RawCause::SourceTimeout)
                    }
                    SourceError::Unavailable(_) => (
                        "unavailable",
                        FeatureStatus::Unavailable,
                        RawCause::SourceUnavailable,
                    ),
                    SourceError::Data(_) => {
                        ("data_error", FeatureStatus::Failed, RawCause::SourceError)
                    }
                    _ => ("error", FeatureStatus::Failed, RawCause::SourceError),
                };
                crate::metrics::feature_fetch(secs, outcome);
                (Features::new(), status, Some(cause))
            }
        };
        self.finish(
            Guard::from_inner(snap),
            slot,
            user,
            &features,
            status,
            degraded,
        )
    }

    // Always inlined (with the non-sticky path inside it) into `decide`, as it was before
    // the sticky dispatch made it big enough for the inliner to leave it out of line.
    #[inline(always)]
    fn finish(
        &self,
        snap: Guard<Arc<Snapshot>>,
        slot: &str,
        user: &str,
        features: &Features,
        status: FeatureStatus,
        degraded: Option<RawCause>,
    ) -> Decision {
        // One flag for configs without sticky slots: they take the path they took before
        // sticky slots existed (W1: 548 instructions per decide against 539, BENCHMARKS.md).
        if snap.any_sticky {
            return self.finish_sticky(snap, slot, user, features, status, degraded);
        }
        self.finish_as::<false>(snap, slot, user, features, status, degraded)
    }

    /// [`Engine::finish`] for a snapshot with sticky slots (out of line).
    #[inline(never)]
    fn finish_sticky(
        &self,
        snap: Guard<Arc<Snapshot>>,
        slot: &str,
        user: &str,
        features: &Features,
        status: FeatureStatus,
        degraded: Option<RawCause>,
    ) -> Decision {
        self.finish_as::<true>(snap, slot, user, features, status, degraded)
    }

    #[inline(always)]
    fn finish_as<const STICKY: bool>(
        &self,
        snap: Guard<Arc<Snapshot>>,
        slot: &str,
        user: &str,
        features: &Features,
        status: FeatureStatus,
        degraded: Option<RawCause>,
    ) -> Decision {
        let idx = snap.slot_idx(slot).unwrap_or(NO_VARIANT);
        let mut ids = Ids::new(&self.inner);
        // Evaluated straight into the decision (no copy of the outcome).
        let decision = Decision {
            outcome: if STICKY {
                let fetched = status == FeatureStatus::Fetched;
                self.sticky_outcome(
                    &snap,
                    idx,
                    user,
                    features,
                    fetched,
                    degraded,
                    &mut ids,
                    &mut NoTrace,
                    true,
                )
            } else {
                snap.evaluate(idx, user, features, degraded, &mut ids, NoTrace)
            },
            snap: crate::decision::Guarded(snap),
            slot: idx,
            id: ids.id(),
            features: status,
        };
        count(&decision.snap, idx, decision.outcome.reason);
        if self
            .inner
            .shadow_on
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            self.shadow_observe(&decision, &decision.snap, slot, user, features);
        }
        if let Some(b) = &decision.outcome.bandit {
            if let Some((spec, binding)) = decision.bandit_binding() {
                self.inner.learner.remember(
                    decision.id.as_u128(),
                    spec,
                    binding,
                    usize::from(b.chosen),
                    b.probs.context(),
                );
            }
        }
        if let Some(sink) = &self.inner.sink {
            sink.record(&DecisionEvent {
                decision: &decision,
                slot,
                user,
                features,
                clock: &self.inner.clock,
                pass: 1.0,
            });
        }
        decision
    }

    /// Flushes the engine's decision sink: waits until every decision made before this call
    /// is written or failed, at most `timeout` (see [`DecisionSink::flush`]). Call it on
    /// shutdown, after the last decision; an engine without a sink returns at once.
    ///
    /// # Errors
    /// The sink's [`FlushError`](crate::sink::FlushError).
    pub fn flush(&self, timeout: Duration) -> Result<(), crate::sink::FlushError> {
        match &self.inner.sink {
            Some(sink) => sink.flush(timeout),
            None => Ok(()),
        }
    }

    /// Waits until every new assignment queued before this call is written to the
    /// assignment store or failed, at most `timeout`. Dropping the last clone of the engine
    /// also writes what is queued (waiting for the store as long as it takes).
    ///
    /// # Errors
    /// [`AssignmentError::Timeout`](crate::sticky::AssignmentError::Timeout) with the writes
    /// still pending.
    pub fn flush_assignments(
        &self,
        timeout: Duration,
    ) -> Result<(), crate::sticky::AssignmentError> {
        match &self.inner.assign {
            Some(w) => w.flush(timeout),
            None => Ok(()),
        }
    }

    /// The counts of the assignment writes (`None` for an engine without an assignment
    /// store).
    #[must_use]
    pub fn assignment_stats(&self) -> Option<crate::sticky::AssignmentStats> {
        self.inner
            .assign
            .as_ref()
            .map(crate::sticky::queue::Writer::stats)
    }
}

/// A warning per sticky slot of `snap`, for an engine without an assignment store.
fn sticky_without_store(snap: &Snapshot) -> impl Iterator<Item = ConfigProblem> + '_ {
    // Compiled slots are in config order.
    snap.slots
        .iter()
        .enumerate()
        .filter(|(_, s)| s.sticky.is_some())
        .map(|(i, _)| {
            ConfigProblem::new(
                format!("slots[{i}].sticky"),
                "the engine has no assignment store (EngineBuilder::assignments): the slot decides from the config alone",
            )
        })
}

/// A decision's id, taken when needed: a bandit rule's draw asks for one from the engine's
/// bandit sequence (which indexes the pending-reward store); any other decision takes one
/// from the main sequence after evaluation.
pub(super) struct Ids<'a> {
    inner: &'a Inner,
    bandit: Option<u128>,
}

impl<'a> Ids<'a> {
    fn new(inner: &'a Inner) -> Self {
        Ids {
            inner,
            bandit: None,
        }
    }

    #[inline]
    fn id(self) -> DecisionId {
        match self.bandit {
            Some(id) => DecisionId::from_u128(id),
            None => next_id(self.inner.prefix, self.inner.serial, &self.inner.blocks),
        }
    }
}

impl BanditId for Ids<'_> {
    #[inline]
    fn bandit_id(&mut self) -> u128 {
        let inner = self.inner;
        *self
            .bandit
            .get_or_insert_with(|| inner.learner.next_id(inner.serial))
    }
}

/// Counts the decision into this thread's cells of the snapshot (published to the per-slot counters
/// in batches, see `crate::metrics::publish`).
#[inline(always)]
fn count(snap: &Snapshot, idx: u32, raw: RawReason) {
    let Some(slot) = snap.slots.get(idx as usize) else {
        let row = snap.counts.unknown_row();
        snap.counts.add(row, ReasonKind::UnknownSlot, None);
        return;
    };
    let cause = match raw {
        RawReason::Fallback(cause) => Some(cause.kind()),
        _ => None,
    };
    snap.counts.add(idx as usize, raw.kind(slot), cause);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Reason;

    /// The decide path counts with `RawReason::kind`; it must name the same kind as the
    /// resolved reason, for every rule kind and reason in the fixture config.
    #[test]
    fn raw_reason_kinds_agree_with_resolved_reasons() {
        let engine = Engine::default();
        engine
            .load_config_json(include_str!("../../tests/data/kinds.json"))
            .expect("fixture config is valid");
        let snap = engine.snapshot();
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..2_000i64 {
            let f = Features::new()
                .with("country", ["KR", "JP", "US", "DE"][(i % 4) as usize])
                .with("plan", ["free", "pro", "vip"][(i % 3) as usize])
                .with("age", 18 + i % 50)
                .with("device_id", format!("dev-{i}"));
            for slot in snap.slots() {
                let d = engine.decide(slot, &format!("user-{i}"), &f);
                let idx = snap.slot_idx(slot).expect("slot exists");
                let s = &snap.slots[idx as usize];
                let resolved = d.reason();
                assert_eq!(d.outcome.reason.kind(s), resolved.kind());
                if let (RawReason::Fallback(c), Reason::Fallback(r)) = (d.outcome.reason, resolved)
                {
                    assert_eq!(c.kind(), r.kind());
                }
                seen.insert(resolved.kind());
            }
        }
        assert!(
            seen.len() >= 8,
            "fixture covers most reason kinds: {seen:?}"
        );
    }
}
