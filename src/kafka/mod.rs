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
mod fleet;
mod sink;
mod target;
mod updater;

use std::time::Duration;

pub use config::{publish_config, ConfigTopicOptions, KafkaConfigWatcher, CONFIG_KEY};
pub use fleet::{FleetOptions, FleetStats, FleetSync};
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
    /// A permanent client error (a refused setting, a thread that did not start).
    pub(crate) fn client(message: impl std::fmt::Display) -> Self {
        KafkaError::Client(ClientError::from_display(message))
    }

    /// librdkafka's error, classified.
    pub(crate) fn rdkafka(context: &str, e: &rdkafka::error::KafkaError) -> Self {
        KafkaError::Client(ClientError::from_rdkafka(context, e))
    }

    /// Whether trying again later may succeed: the broker could not be reached or did not
    /// answer in time, or a queue was full. `false` for an invalid config and for settings
    /// librdkafka refuses, which fail the same way every time.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        match self {
            KafkaError::InvalidConfig(_) => false,
            KafkaError::Client(c) => c.is_transient(),
        }
    }
}

/// What librdkafka or the broker reported, as text (rdkafka's own error type is not part of
/// elvon's API), and whether it may pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ClientError {
    message: String,
    transient: bool,
}

impl ClientError {
    /// A permanent error with this message.
    pub(crate) fn from_display(message: impl std::fmt::Display) -> Self {
        ClientError {
            message: message.to_string(),
            transient: false,
        }
    }

    /// A transient error with this message (a timeout, no broker reachable).
    pub(crate) fn transient(message: impl std::fmt::Display) -> Self {
        ClientError {
            message: message.to_string(),
            transient: true,
        }
    }

    /// librdkafka's error, transient when its code says the broker was unreachable, slow or
    /// busy (see [`is_transient`](Self::is_transient)).
    pub(crate) fn from_rdkafka(context: &str, e: &rdkafka::error::KafkaError) -> Self {
        let message = if context.is_empty() {
            e.to_string()
        } else {
            format!("{context}: {e}")
        };
        ClientError {
            message,
            transient: retriable(e),
        }
    }

    /// The message.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether trying again later may succeed (the broker was unreachable, did not answer in
    /// time, or a queue was full), as opposed to a refused setting or a rejected request.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        self.transient
    }
}

/// Whether librdkafka's error is one that passes: unreachable or slow brokers, leadership
/// moving, full queues.
fn retriable(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    if matches!(e, rdkafka::error::KafkaError::Flush(_)) {
        return true;
    }
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::MessageTimedOut
                | C::QueueFull
                | C::BrokerTransportFailure
                | C::AllBrokersDown
                | C::RequestTimedOut
                | C::OperationTimedOut
                | C::NetworkException
                | C::NotLeaderForPartition
                | C::LeaderNotAvailable
                | C::NotEnoughReplicas
                | C::NotEnoughReplicasAfterAppend
                | C::CoordinatorNotAvailable
                | C::NotCoordinator
                | C::CoordinatorLoadInProgress
        )
    )
}

/// Whether librdkafka says the topic or partition does not exist (yet).
pub(crate) fn is_unknown_topic(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(C::UnknownTopicOrPartition | C::UnknownPartition | C::UnknownTopic)
    )
}

/// Waits until `flag` is set, at most `timeout` (checking every 5 ms); returns whether it is.
pub(crate) fn wait_until(flag: &std::sync::atomic::AtomicBool, timeout: Duration) -> bool {
    let ready = || flag.load(std::sync::atomic::Ordering::Acquire);
    let deadline = crate::clock::deadline(timeout);
    while !ready() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    ready()
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
