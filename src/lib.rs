//! # elvon
//!
//! Real-time personalization decisions, in process: *which variant should this user see in
//! this slot, right now?* — answered from memory in nanoseconds, lock-free, while configs are
//! hot-swapped under load.
//!
//! A *slot* is a place in a product (a banner, a ranking strategy); a *variant* is one thing
//! that can fill it, with an opaque payload. A JSON config gives every slot its variants, a
//! default, a kill switch, and ordered rules: targeting conditions, deterministic weighted
//! splits, percentage rollouts and linear scoring, inside mutually exclusive layers and
//! holdouts. [`Engine::decide`] evaluates it for one user and returns a [`Decision`] that says
//! what was chosen, why ([`Reason`]), with what probability, under which config version, with
//! an id to join outcomes to later. Every decision can go to a [`DecisionSink`].
//!
//! ```
//! use elvon::{Engine, Features, Reason};
//!
//! let engine = Engine::default();
//! engine.load_config_json(r##"{
//!     "version": "1",
//!     "slots": [{
//!         "id": "banner",
//!         "variants": [{"id": "off"}, {"id": "blue", "payload": {"color": "#00f"}}, {"id": "red"}],
//!         "default": "off",
//!         "rules": [{
//!             "id": "kr-test",
//!             "when": {"feature": "country", "op": "in", "value": ["KR", "JP"]},
//!             "split": {"variants": [{"variant": "blue", "weight": 50}, {"variant": "red", "weight": 50}]}
//!         }]
//!     }]
//! }"##).expect("valid config");
//!
//! let d = engine.decide("banner", "user-42", &Features::new().with("country", "KR"));
//! assert!(matches!(d.variant(), Some("blue" | "red")));
//! assert!(matches!(d.reason(), Reason::Split { .. }));
//! assert_eq!(d.propensity(), 0.5);
//!
//! let d = engine.decide("banner", "user-42", &Features::new().with("country", "US"));
//! assert_eq!(d.variant(), Some("off"));
//! assert_eq!(d.reason(), Reason::Default);
//! ```
//!
//! Bucketing is deterministic and portable: see [`bucket`] and the README.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    rust_2018_idioms
)]

pub mod clock;
pub mod config;
mod decision;
mod engine;
pub mod features;
mod hash;
mod learn;
pub mod metrics;
pub mod sink;
mod snapshot;
mod watch;

pub use config::{Config, ConfigError, ConfigProblem};
pub use decision::{
    Decision, DecisionId, FallbackCause, FeatureStatus, Guarded, OwnedDecision,
    ParseDecisionIdError, Reason, RuleRef, Shared, SnapshotHold, UnknownCodeError,
};
pub use engine::{
    Engine, EngineBuilder, Explanation, LearnerThread, LoadOutcome, DEFAULT_FETCH_DEADLINE,
    DEFAULT_PENDING_REWARDS,
};
pub use features::aggregate;
#[cfg(feature = "kafka")]
#[cfg_attr(docsrs, doc(cfg(feature = "kafka")))]
pub mod kafka;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;
pub use features::{FeatureSource, Features, MemoryStore, SourceError, Value};
pub use hash::{bucket, bucket_with_seed, salt_seed, BUCKETS};
pub use learn::ope;
pub use learn::{
    ArmState, BanditState, LearnerState, RewardOutcome, RewardStats, DEFAULT_REWARD_BOUND,
    MAX_ARMS, MAX_CONTEXT, MAX_CONTEXT_VALUE,
};
pub use sink::{DecisionRecord, DecisionSink, JsonlSink, MemorySink, NoopSink, SinkStats};
pub use snapshot::Snapshot;
pub use watch::{ConfigWatcher, WatchEvent};

/// The README's Rust examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
