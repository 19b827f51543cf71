//! Redis online feature store (cargo feature `redis`): a [`FeatureSource`](crate::features::FeatureSource) with a deadline,
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
//! | `elvon.sticky:<slot>` | a sticky slot's stored assignment ([`Assignment::to_text`](crate::sticky::Assignment::to_text)) | [`RedisAssignments`] |
//!
//! Event ids are remembered in `{prefix}{<user>}:e:<event id>` keys (same slot) with a TTL,
//! so a redelivered event is not applied twice while its id is remembered.
//!
//! # Deadline, breaker, cache
//!
//! Every fetch is bounded by the request's deadline (the engine's fetch deadline); on timeout
//! or error the engine decides on defaults with a `source_timeout` or `source_error`
//! fallback. The breaker opens when, within its sliding window (default 1 s), at least
//! `breaker_failures` fetches failed and they were at least `breaker_failure_rate` (default
//! half) of the window's fetches: then fetches fail at once with
//! [`SourceError::Unavailable`](crate::features::SourceError::Unavailable) (a `source_unavailable`
//! fallback) until the cool-down passes; then one probe is let through, and the breaker
//! closes when it succeeds. A failed probe is followed by one more 50 ms later (the first
//! probe after Redis comes back often races the reconnect), then by the next cool-down.
//!
//! Errors about one user's data are not failures of Redis and never count: a key of the
//! wrong type (`WRONGTYPE`), a field that is not UTF-8 or an aggregate that is not a number,
//! or a reply whose values add up to more than
//! [`max_reply_bytes`](RedisFeatureSourceBuilder::max_reply_bytes) (default 1 MiB; Redis
//! checks the sizes with `HSTRLEN` in the fetch script before it sends any value). That user
//! gets [`SourceError::Data`](crate::features::SourceError::Data) (a `source_error` fallback), everyone
//! else keeps their features. The [`AggregatesWriter`] writes over a connection of its own,
//! so its batches never queue in front of the deciding reads.
//! Gauge `elvon_redis_breaker_state` (0 closed, 1 open, 2 probing). With a cache, answers
//! are kept per (user, requested names) for the TTL; counters
//! `elvon_feature_cache_total{result="hit"|"miss"}`.

mod assign;
mod breaker;
mod cache;
mod codec;
mod conn;
mod source;
mod writer;

use std::time::Duration;

pub use assign::RedisAssignments;
pub use breaker::BreakerState;
pub use source::{RedisFeatureSource, RedisFeatureSourceBuilder};
pub use writer::{AggregatesWriter, WriteReport};

use breaker::{Breaker, CLOSED, OPEN};
use cache::Cache;
use codec::{decode, encode};
use conn::{data_message, hmget, is_per_key, query_each, run_on, Conn, OwnedRuntime, FETCH_SCRIPT};
use source::Shared;

/// Default deadline-independent limit on one Redis command (writes, batch fetches).
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(1);

/// Default cap on the bytes of field values one fetch reads for one user (1 MiB).
pub const DEFAULT_MAX_REPLY_BYTES: u64 = 1 << 20;

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
    /// A user's stored data could not be used (a key of the wrong type, a value that does
    /// not decode).
    #[error("redis data of user {user:?}: {message}")]
    Data {
        /// The user.
        user: String,
        /// What is wrong.
        message: String,
    },
    /// An event was rejected by the aggregate definitions.
    #[error(transparent)]
    Event(#[from] crate::features::aggregate::AggregateError),
}

impl RedisError {
    /// Whether the connection to Redis broke (the server went away or restarted); a retry
    /// on the reconnected connection may succeed.
    #[must_use]
    pub fn is_connection_dropped(&self) -> bool {
        match self {
            RedisError::Command { source, .. } => source
                .downcast_ref::<redis::RedisError>()
                .is_some_and(|e| e.is_connection_dropped() || e.is_io_error()),
            _ => false,
        }
    }

    /// Whether retrying may help: timeouts and broken connections, not bad settings or
    /// bad data.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(self, RedisError::Timeout(_) | RedisError::Connect { .. })
            || self.is_connection_dropped()
    }
}

pub(crate) fn command_error(what: &str, e: redis::RedisError) -> RedisError {
    RedisError::Command {
        what: what.to_owned(),
        source: Box::new(e),
    }
}
