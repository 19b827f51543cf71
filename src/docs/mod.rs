//! Reference documentation, as modules with no code (in the manner of arc-swap's `docs`).
//!
//! - [`config_format`]: the JSON config: slots, variants, rules, segments, layers, holdouts,
//!   conditions and their operators.
//! - [`bucketing`]: the bucketing specification, for reproducing assignments elsewhere.
//! - [`decision_log`]: decisions, reasons, propensities, ids, sinks and the decision-record
//!   schema.
//! - [`learning`]: bandit rules and policies, rewards, refresh, learner state, off-policy
//!   evaluation.
//! - [`redis_features`]: the Redis online feature store (feature `redis`).
//! - [`kafka_adapters`]: Kafka decision log, behaviour events and config broadcast (feature
//!   `kafka`).
//! - [`operations`]: running elvon in a service: shutdown, background threads, metrics,
//!   benchmarks, testing.
//!
//! The metrics are listed once, in [`crate::metrics`].

pub mod bucketing;
pub mod config_format;
pub mod decision_log;
pub mod kafka_adapters;
pub mod learning;
pub mod operations;
pub mod redis_features;
