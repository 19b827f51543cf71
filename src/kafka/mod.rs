//! Kafka adapters (cargo feature `kafka`): the decision-log sink and config broadcast.
//!
//! [`KafkaDecisionSink`] sends every decision to a topic as the versioned
//! [`DecisionRecord`](crate::sink::DecisionRecord) in JSON (the same object as a line of the
//! JSON-lines sink, schema [`RECORD_SCHEMA`](crate::sink::RECORD_SCHEMA)), keyed by the user
//! id so that one user's decisions land on one partition in order.
//!
//! `record` never blocks: as in the JSON-lines sink, it encodes the decision into the calling
//! thread's own bounded queue, with no allocation, lock or system call. A writer thread
//! serializes the record and passes it to librdkafka's queue, waiting there while that queue
//! is full. When the sink's queue is full too (overload, or a broker down for long enough)
//! `record` drops the record and counts it; librdkafka's delivery reports count what was
//! stored and what failed. Memory is bounded by the queues. At every moment
//! `offered = written + dropped + failed + pending`, where pending records are in one of the
//! queues or in flight; [`KafkaDecisionSink::flush`] waits for them.

mod config;
mod dead_letter;
mod sink;
mod target;
mod updater;

use std::time::Duration;

pub use config::{publish_config, KafkaConfigWatcher, CONFIG_KEY};
pub use sink::{KafkaDecisionSink, KafkaSinkOptions, DEFAULT_DRAIN_TIMEOUT};
pub use target::{ApplyError, EventTarget, MemoryTarget};
pub use updater::{FeatureUpdater, UpdaterError, UpdaterOptions, UpdaterStats};

/// What went wrong setting up a Kafka client, flushing, or publishing a config.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KafkaError {
    /// The config given to [`publish_config`] is not valid; nothing was published.
    #[error("config not published: {0}")]
    InvalidConfig(#[from] crate::config::ConfigError),
    /// librdkafka refused the configuration or failed to create the client or its thread,
    /// or the broker did not confirm a published config.
    #[error("kafka client: {0}")]
    Client(ClientError),
}

impl KafkaError {
    pub(crate) fn client(message: impl std::fmt::Display) -> Self {
        KafkaError::Client(ClientError::from_display(message))
    }
}

/// What librdkafka or the broker reported, as text (rdkafka's own error type is not part of
/// elvon's API).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ClientError(String);

impl ClientError {
    pub(crate) fn from_display(message: impl std::fmt::Display) -> Self {
        ClientError(message.to_string())
    }

    /// The message.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.0
    }
}

/// A duration in librdkafka's milliseconds (an `i32`), saturating.
pub(crate) fn kafka_ms(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

/// A duration as an rdkafka timeout: beyond what librdkafka can express, no timeout
/// (rdkafka itself would wrap it around to an arbitrary value).
pub(crate) fn kafka_timeout(d: Duration) -> rdkafka::util::Timeout {
    if d.as_millis() > i32::MAX as u128 {
        rdkafka::util::Timeout::Never
    } else {
        rdkafka::util::Timeout::After(d)
    }
}

/// Sets `key` in a property list, replacing an earlier value.
pub(crate) fn set_property(settings: &mut Vec<(String, String)>, key: String, value: String) {
    match settings.iter_mut().find(|(k, _)| *k == key) {
        Some(kv) => kv.1 = value,
        None => settings.push((key, value)),
    }
}
