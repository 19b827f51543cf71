//! Sticky assignment: a slot with a `sticky` option keeps the variant a split or rollout
//! gave a unit, through later weight and targeting changes, in an [`AssignmentStore`].
//!
//! How a sticky slot decides, what a bucket version does and when targeting is re-checked
//! is in the [config format](crate::docs::config_format#sticky-assignment). This module has
//! the store side:
//!
//! - [`AssignmentStore`], the trait: [`MemoryAssignments`] keeps assignments in the process;
//!   `RedisAssignments` (feature `redis`, from `RedisFeatureSource::assignments`) keeps them
//!   in each user's feature hash, so `decide_for` reads a user's features and stored
//!   assignment with one command.
//! - New assignments are written by a background thread of the engine: `decide` puts them
//!   in a bounded queue ([`EngineBuilder::assignment_queue`](crate::EngineBuilder::assignment_queue))
//!   and never waits for the store; a full queue drops the write and counts it
//!   ([`AssignmentStats`], metric `elvon_sticky_writes_total`).
//!
//! ```
//! use elvon::sticky::MemoryAssignments;
//! use elvon::{Engine, Features, Reason};
//!
//! let engine = Engine::builder().assignments(MemoryAssignments::new(10_000)).build();
//! let config = |weight: u32| format!(r#"{{"version": "{weight}", "slots": [{{"id": "banner",
//!     "variants": [{{"id": "a"}}, {{"id": "b"}}], "default": "a", "sticky": {{}},
//!     "rules": [{{"split": {{"variants": [{{"variant": "a", "weight": {weight}}},
//!                                        {{"variant": "b", "weight": {}}}]}}}}]}}]}}"#, 100 - weight);
//! engine.load_config_json(&config(50)).expect("valid");
//! let first = engine.decide("banner", "u1", &Features::new()).variant().map(str::to_owned);
//! engine.flush_assignments(std::time::Duration::from_secs(5)).expect("written");
//!
//! engine.load_config_json(&config(0)).expect("valid"); // everyone new gets "b" now
//! let again = engine.decide("banner", "u1", &Features::new());
//! assert_eq!(again.variant(), first.as_deref());
//! assert_eq!(again.reason(), Reason::Sticky { version: 0 });
//! assert_eq!(again.propensity(), 0.5, "the propensity of the original assignment");
//! ```

mod memory;
pub(crate) mod queue;

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

pub use memory::MemoryAssignments;
pub use queue::DEFAULT_ASSIGNMENT_QUEUE;

/// The feature-name prefix of the field a store that reads with the features
/// ([`AssignmentStore::reads_with_features`]) keeps a slot's assignment in: the field is
/// this prefix followed by the slot id (see [`field_name`]). Config feature names should not
/// start with it.
pub const FIELD_PREFIX: &str = "elvon.sticky:";

/// The field holding slot `slot`'s assignment in a store that reads with the features:
/// [`FIELD_PREFIX`] followed by the slot id.
///
/// ```
/// assert_eq!(elvon::sticky::field_name("banner"), "elvon.sticky:banner");
/// ```
#[must_use]
pub fn field_name(slot: &str) -> String {
    format!("{FIELD_PREFIX}{slot}")
}

/// A unit's stored assignment in one slot.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Assignment {
    /// The variant's id (an assignment to a variant the config no longer has is never
    /// served). Shared, so reading an assignment from a store copies no string.
    pub variant: Arc<str>,
    /// The probability the assignment was made with (the decision's
    /// [`propensity`](crate::Decision::propensity)); a sticky decision logs it.
    pub propensity: f64,
    /// The slot's bucket version when it was made.
    pub version: u32,
    /// A hash of the unit's value for a slot stuck `by` a feature (the assignment holds
    /// while the value is unchanged); 0 for the user unit.
    pub unit: u64,
}

/// Assignment text starts with this, so a later format can be told apart.
const TEXT_TAG: &str = "a1";

impl Assignment {
    /// An assignment of `variant` made with probability `propensity` under bucket version
    /// `version`, for unit value hash `unit` (0 for the user unit).
    #[must_use]
    pub fn new(variant: impl Into<Arc<str>>, propensity: f64, version: u32, unit: u64) -> Self {
        Assignment {
            variant: variant.into(),
            propensity,
            version,
            unit,
        }
    }

    /// The assignment as text, the form stores that hold strings keep it in:
    /// `a1;<version>;<propensity>;<unit as 16 hex digits>;<variant>` (the variant last, so
    /// it may contain `;`).
    ///
    /// ```
    /// use elvon::sticky::Assignment;
    /// let a = Assignment::new("blue", 0.5, 3, 0xabc);
    /// assert_eq!(a.to_text(), "a1;3;0.5;0000000000000abc;blue");
    /// assert_eq!(Assignment::from_text(&a.to_text()).expect("decodes"), a);
    /// assert!(Assignment::from_text("a1;3;0.5;abc").is_err(), "no variant");
    /// ```
    #[must_use]
    pub fn to_text(&self) -> String {
        format!(
            "{TEXT_TAG};{};{};{:016x};{}",
            self.version, self.propensity, self.unit, self.variant
        )
    }

    /// Parses [`Assignment::to_text`]'s form.
    ///
    /// # Errors
    /// [`AssignmentError::Decode`] naming what is wrong (a stored value that is not an
    /// assignment is discarded by the engine and replaced by the next assignment).
    pub fn from_text(text: &str) -> Result<Assignment, AssignmentError> {
        let bad = |what: &str| AssignmentError::Decode(format!("{what} in {text:.60?}"));
        let mut parts = text.splitn(5, ';');
        if parts.next() != Some(TEXT_TAG) {
            return Err(bad("not an assignment (no \"a1;\" tag)"));
        }
        let version = parts
            .next()
            .and_then(|v| v.parse::<u32>().ok())
            .ok_or_else(|| bad("bad bucket version"))?;
        let propensity = parts
            .next()
            .and_then(|p| p.parse::<f64>().ok())
            .filter(|p| *p > 0.0 && *p <= 1.0)
            .ok_or_else(|| bad("propensity not in (0, 1]"))?;
        let unit = parts
            .next()
            .and_then(|u| u64::from_str_radix(u, 16).ok())
            .ok_or_else(|| bad("bad unit hash"))?;
        let variant = parts
            .next()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| bad("no variant"))?;
        Ok(Assignment::new(variant, propensity, version, unit))
    }
}

/// A new assignment to store: what the engine queues for the writer thread.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct AssignmentWrite {
    /// The user (the `user` of the decision).
    pub user: String,
    /// The slot id.
    pub slot: String,
    /// The assignment.
    pub assignment: Assignment,
}

/// Why an assignment could not be read or stored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AssignmentError {
    /// The store is at its capacity; `rejected` writes of new units were refused (updates of
    /// units it holds were made).
    #[error(
        "assignment store full ({capacity} assignments): {rejected} new assignment(s) refused"
    )]
    Full {
        /// The store's capacity.
        capacity: usize,
        /// Writes refused.
        rejected: usize,
    },
    /// A stored value is not an assignment.
    #[error("stored assignment unusable: {0}")]
    Decode(String),
    /// The writes queued before a flush were still pending when its timeout passed.
    #[error("assignment writes did not finish within {timeout:?} ({pending} still pending)")]
    Timeout {
        /// The timeout given.
        timeout: Duration,
        /// Writes still pending.
        pending: u64,
    },
    /// The backend failed; the underlying error is available through `source()`.
    #[error("assignment store failed: {message}")]
    Backend {
        /// What was being done.
        message: String,
        /// The backend's own error.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
}

/// Where a sticky slot's assignments are kept.
///
/// The engine calls [`get`](Self::get) on the deciding thread (unless the store
/// [reads with the features](Self::reads_with_features)), so it must not do I/O; it calls
/// [`put`](Self::put) on its writer thread, where I/O is fine.
pub trait AssignmentStore: Send + Sync {
    /// The stored assignment of `user` in `slot`, if any. Called by `decide` and
    /// `decide_for` for stores that do not read with the features; it must answer from
    /// memory. An error is counted (`elvon_sticky_decisions_total{outcome="unread"}`) and the
    /// decision is made from the config, writing nothing.
    ///
    /// # Errors
    /// The store's, when it cannot answer.
    fn get(&self, user: &str, slot: &str) -> Result<Option<Assignment>, AssignmentError>;

    /// Stores `batch` (later writes of the same user and slot replace earlier ones). Called
    /// on the engine's writer thread.
    ///
    /// # Errors
    /// [`AssignmentError::Full`] when some writes were refused (the rest were made); any
    /// other error means none of the batch is known to be stored.
    fn put(&self, batch: &[AssignmentWrite]) -> Result<(), AssignmentError>;

    /// Whether the store's assignments come with the user's features: `decide_for` then asks
    /// the engine's feature source for the field [`field_name`]`(slot)` along with the
    /// slot's features and reads the assignment from the answer (one round trip), and
    /// `decide` reads it from the given features. The engine's source must then be the one
    /// the store writes to (`RedisFeatureSource::assignments`). Default `false`.
    fn reads_with_features(&self) -> bool {
        false
    }
}

impl<S: AssignmentStore + ?Sized> AssignmentStore for Arc<S> {
    fn get(&self, user: &str, slot: &str) -> Result<Option<Assignment>, AssignmentError> {
        (**self).get(user, slot)
    }
    fn put(&self, batch: &[AssignmentWrite]) -> Result<(), AssignmentError> {
        (**self).put(batch)
    }
    fn reads_with_features(&self) -> bool {
        (**self).reads_with_features()
    }
}

/// Counts of the engine's assignment writes ([`Engine::assignment_stats`](crate::Engine::assignment_stats)).
///
/// `offered = written + dropped + failed + pending()` at every moment a flush has finished.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AssignmentStats {
    /// New assignments the deciding threads queued.
    pub offered: u64,
    /// Stored.
    pub written: u64,
    /// Not queued: the queue was full (the decision was still made and served).
    pub dropped: u64,
    /// Refused or lost by the store.
    pub failed: u64,
    /// The store's last error, if any.
    pub last_error: Option<String>,
}

impl AssignmentStats {
    /// Writes queued and not yet written or failed.
    #[must_use]
    pub fn pending(&self) -> u64 {
        self.offered
            .saturating_sub(self.written + self.dropped + self.failed)
    }
}
