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
//! an id to join outcomes to later. Every decision can go to a [`DecisionSink`](sink::DecisionSink).
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
//! ## Where to read on
//!
//! The reference lives in [`docs`]: the [config format](docs::config_format), the
//! [bucketing specification](docs::bucketing), [decisions and the decision
//! log](docs::decision_log), the [learning loop](docs::learning), the [Redis feature
//! store](docs::redis_features), the [Kafka adapters](docs::kafka_adapters) and
//! [operations](docs::operations).
//!
//! ## Modules
//!
//! Every item has one path. The root holds the core types, what a caller of `decide` names;
//! each other module holds one concern, and an extension point's trait together with
//! everything implementing it needs (beside the root's core types): a
//! [`FeatureSource`](features::FeatureSource) needs only [`features`], a
//! [`DecisionSink`](sink::DecisionSink) only [`sink`].
//!
//! | module | what |
//! |---|---|
//! | the crate root | [`Engine`] and its builder, [`Decision`], [`Reason`], [`Features`] and [`Value`], [`Config`] and its errors, config watching, rewards and learner state: the core types |
//! | [`features`] | feature sources ([`FeatureSource`](features::FeatureSource) and its request, future and error), the in-memory store, behaviour aggregates |
//! | [`sink`] | decision sinks ([`DecisionSink`](sink::DecisionSink) and its event, stats and errors), the built-in sinks, the decision record |
//! | [`ope`] | off-policy evaluation of logged decisions |
//! | [`clock`] | the injectable clock reward windows and refreshes run on |
//! | [`metrics`] | every metric elvon records |
//! | `redis` | the Redis feature store (feature `redis`) |
//! | `kafka` | Kafka decision log, behaviour events, config broadcast and the fleet's learning loop (feature `kafka`) |
//! | `http` | the decide service's routes, OFREP and the native API, as an axum `Router` (feature `http`) |
//! | [`docs`] | reference pages, no code |
//!
//! ## Cargo features
//!
//! | feature | adds | needs |
//! |---|---|---|
//! | (none) | everything above except the two below | Rust 1.88 |
//! | `redis` | `elvon::redis`: `RedisFeatureSource`, `AggregatesWriter` | a Redis server or cluster |
//! | `kafka` | `elvon::kafka`: `KafkaDecisionSink`, `FeatureUpdater`, `KafkaConfigWatcher`, `FleetSync` | gcc, g++ and make (librdkafka is built from source) |
//! | `http` | `elvon::http`: `router` (OFREP and the native API) | |
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    rust_2018_idioms
)]

mod background;
mod bucketing;
pub mod clock;
mod config;
mod decision;
pub mod docs;
mod engine;
pub mod features;
mod kinds;
mod learn;
pub mod metrics;
pub mod ope;
mod policy;
pub mod sink;
mod snapshot;
pub mod sticky;
mod watch;

pub use config::{Config, ConfigError, ConfigProblem};
pub use decision::{
    Decision, DecisionId, FallbackCause, FeatureStatus, Guarded, OwnedDecision,
    ParseDecisionIdError, Reason, RuleRef, Shared, SnapshotHold,
};
pub use engine::{
    Engine, EngineBuilder, Explanation, LearnerThread, LoadOutcome, RollbackError, RuleChange,
    ShadowReport, SlotShadow, DEFAULT_FETCH_DEADLINE, DEFAULT_KEEP_PREVIOUS,
    DEFAULT_PENDING_REWARDS, SHADOW_PENDING,
};
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http;
#[cfg(feature = "kafka")]
#[cfg_attr(docsrs, doc(cfg(feature = "kafka")))]
pub mod kafka;
#[cfg(feature = "openfeature")]
#[cfg_attr(docsrs, doc(cfg(feature = "openfeature")))]
pub mod openfeature;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub mod postgres;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;
pub use bucketing::{bucket, bucket_with_seed, salt_seed, BUCKETS};
pub use features::set::Features;
pub use features::value::{Text, Value};
pub use kinds::{FallbackKind, ReasonKind, UnknownCodeError};

pub use learn::{
    ArmState, BanditState, LearnerState, MergeOutcome, RewardOutcome, RewardStats,
    DEFAULT_REWARD_BOUND, MAX_ARMS, MAX_CONTEXT, MAX_CONTEXT_VALUE,
};
pub use snapshot::Snapshot;
pub use watch::{ConfigSourceError, ConfigWatcher, WatchEvent};

/// The README's Rust examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
