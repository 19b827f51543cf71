//! Redis online feature store (cargo feature `redis`): a [`FeatureSource`] with a deadline,
//! a circuit breaker and an optional local cache, and an [`AggregatesWriter`] that applies
//! behaviour events to Redis atomically and idempotently.
//!
//! # Layout and encoding
//!
//! Each user has one hash, `{prefix}{<user>}` (default prefix `elvon:f:`, so
//! `elvon:f:{u42}`); the braces make it a Redis Cluster hash tag, so everything of one user
//! lives in one slot. Its fields:
//!
//! | field | holds | written by |
//! |---|---|---|
//! | `<name>` | a plain feature or a `last` aggregate, as JSON: `42`, `0.5`, `true`, `"KR"`, `["a","b"]` | [`RedisFeatureSource::set_features`], `HSET`, the writer |
//! | `<name>` | an all-time counter (integer text) or sum (float text) | the writer (`HINCRBY`, `HINCRBYFLOAT`) |
//! | `<name>\|<bucket>` | one bucket of a windowed counter or sum; `<bucket>` is `time_ms / bucket_ms` | the writer |
//! | `<name>\|lo` | the oldest bucket of `<name>` not yet pruned | the writer |
//!
//! A field that is not valid JSON is read as a string, so `HSET elvon:f:{u1} country KR`
//! works too. A windowed counter or sum reads as the total of its live buckets (0 when
//! none); an all-time one reads 0 when absent.
//!
//! Event ids are remembered in `{prefix}{<user>}:e:<event id>` keys (same slot) with a TTL,
//! so a redelivered event is not applied twice while its id is remembered.
//!
//! # Deadline, breaker, cache
//!
//! Every fetch is bounded by the request's deadline (the engine's fetch deadline); on timeout
//! or error the engine decides on defaults with a `source_timeout` or `source_error`
//! fallback. After `breaker_failures` consecutive failures the breaker opens: fetches fail at
//! once with [`SourceError::Unavailable`] (a `source_unavailable` fallback) until the
//! cool-down passes; then one probe is let through, and the breaker closes when it succeeds.
//! Gauge `elvon_redis_breaker_state` (0 closed, 1 open, 2 probing). With a cache, answers
//! are kept per (user, requested names) for the TTL; counters
//! `elvon_feature_cache_total{result="hit"|"miss"}`.

mod breaker;
mod cache;
mod codec;
mod conn;
mod source;
mod writer;

use std::sync::Arc;
use std::time::Duration;

pub use breaker::BreakerState;
pub use source::{RedisFeatureSource, RedisFeatureSourceBuilder};
pub use writer::{AggregatesWriter, WriteReport};

use breaker::{Breaker, CLOSED, OPEN};
use cache::Cache;
use codec::{decode, encode};
use conn::{hmget, run_on, Conn, OwnedRuntime};
use source::Shared;

/// Default deadline-independent limit on one Redis command (writes, batch fetches).
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(1);

/// A clock: unix milliseconds.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// What went wrong talking to Redis, outside of `decide_for` (which never fails).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisError {
    /// The builder's settings are unusable.
    #[error("redis source config: {0}")]
    Config(String),
    /// Connecting failed.
    #[error("redis connect to {target}: {source}")]
    Connect {
        /// The URL(s).
        target: String,
        /// The client's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A command failed.
    #[error("redis {what}: {source}")]
    Command {
        /// The command.
        what: String,
        /// The client's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A command did not finish in time.
    #[error("redis {0}: timed out")]
    Timeout(String),
    /// An event was rejected by the aggregate definitions.
    #[error(transparent)]
    Event(#[from] crate::aggregate::AggregateError),
}

pub(crate) fn command_error(what: &str, e: redis::RedisError) -> RedisError {
    RedisError::Command {
        what: what.to_owned(),
        source: Box::new(e),
    }
}
