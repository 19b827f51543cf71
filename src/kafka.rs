//! Kafka adapters (cargo feature `kafka`): the decision-log sink.
//!
//! [`KafkaDecisionSink`] sends every decision to a topic as the versioned
//! [`DecisionRecord`] in JSON (the same object as a line of the
//! JSON-lines sink, schema [`RECORD_SCHEMA`](crate::sink::RECORD_SCHEMA)), keyed by the user
//! id so that one user's decisions land on one partition in order.
//!
//! `record` never blocks: it serializes the record and hands it to librdkafka's internal
//! queue. When that queue is full (overload, or a broker that is down long enough) the record
//! is dropped and counted; librdkafka's delivery reports count what was stored and what
//! failed. At every moment `offered = written + dropped + failed + pending`, where pending
//! records are still in librdkafka's queue; [`KafkaDecisionSink::flush`] waits for them.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use crate::sink::{Counters, DecisionEvent, DecisionRecord, DecisionSink, SinkStats};

/// What went wrong setting up or flushing a Kafka client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KafkaSinkError {
    /// librdkafka refused the configuration or failed to create the client.
    #[error("kafka producer: {0}")]
    Client(String),
    /// Records were still queued when the flush timeout passed.
    #[error("kafka flush: {pending} record(s) still pending after {timeout:?}")]
    FlushTimeout {
        /// Records not yet delivered or failed.
        pending: u64,
        /// The timeout given.
        timeout: Duration,
    },
}

/// Settings of a [`KafkaDecisionSink`].
#[derive(Debug, Clone)]
#[must_use]
pub struct KafkaSinkOptions {
    brokers: String,
    topic: String,
    settings: Vec<(String, String)>,
}

impl KafkaSinkOptions {
    /// Records go to `topic` on the cluster reached through `brokers` (`host:port,...`).
    ///
    /// Defaults: `compression.type=lz4`, `linger.ms=5`, `acks=all`, `enable.idempotence=true`
    /// (no duplicates from retries, order kept per partition),
    /// `queue.buffering.max.messages=100000` (the bound on memory: beyond it records are
    /// dropped and counted).
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>) -> Self {
        KafkaSinkOptions {
            brokers: brokers.into(),
            topic: topic.into(),
            settings: [
                ("compression.type", "lz4"),
                ("linger.ms", "5"),
                ("acks", "all"),
                ("enable.idempotence", "true"),
                ("queue.buffering.max.messages", "100000"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        }
    }

    /// Sets any librdkafka producer property (`acks`, `linger.ms`, `batch.size`,
    /// `compression.type`, `message.timeout.ms`, …), replacing the default if there is one.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let key = key.into();
        let value = value.into();
        match self.settings.iter_mut().find(|(k, _)| *k == key) {
            Some(kv) => kv.1 = value,
            None => self.settings.push((key, value)),
        }
        self
    }
}

/// Counts delivery reports.
struct Reports {
    counters: Arc<Counters>,
}

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, (): ()) {
        match result {
            Ok(_) => self.counters.written(1),
            Err(_) => self.counters.failed(1),
        }
    }
}

/// The decision log on Kafka. See the [module docs](self).
#[derive(Clone)]
pub struct KafkaDecisionSink {
    producer: Arc<ThreadedProducer<Reports>>,
    counters: Arc<Counters>,
    topic: Arc<str>,
}

impl std::fmt::Debug for KafkaDecisionSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaDecisionSink")
            .field("topic", &self.topic)
            .field("stats", &self.stats())
            .finish()
    }
}

impl KafkaDecisionSink {
    /// A producer for `options`. Connects in the background: a broker that is down now only
    /// delays delivery (records wait in the queue up to `message.timeout.ms`).
    pub fn new(options: KafkaSinkOptions) -> Result<Self, KafkaSinkError> {
        let counters = Arc::new(Counters::new("kafka"));
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &options.brokers);
        for (k, v) in &options.settings {
            config.set(k, v);
        }
        let producer: ThreadedProducer<Reports> = config
            .create_with_context(Reports {
                counters: Arc::clone(&counters),
            })
            .map_err(|e| KafkaSinkError::Client(e.to_string()))?;
        Ok(KafkaDecisionSink {
            producer: Arc::new(producer),
            counters,
            topic: options.topic.into(),
        })
    }

    /// The sink's counters; `offered == written + dropped + failed + pending`.
    #[must_use]
    pub fn stats(&self) -> SinkStats {
        self.counters.stats()
    }

    /// Waits until every queued record is delivered or failed, at most `timeout`.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaSinkError> {
        // The delivery callbacks of the last records run on the polling thread right after
        // librdkafka's flush returns; give them a moment to be counted.
        let _ = self.producer.flush(timeout);
        let deadline = std::time::Instant::now() + Duration::from_millis(200);
        loop {
            let pending = self.stats().pending();
            if pending == 0 {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(KafkaSinkError::FlushTimeout { pending, timeout });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl DecisionSink for KafkaDecisionSink {
    fn record(&self, event: &DecisionEvent<'_>) {
        let c = &self.counters;
        c.offered();
        let Ok(payload) = serde_json::to_vec(&DecisionRecord::from_event(event)) else {
            c.failed(1);
            return;
        };
        let record = BaseRecord::to(&self.topic)
            .key(event.user)
            .payload(&payload);
        match self.producer.send(record) {
            Ok(()) => {}
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => c.dropped(),
            Err(_) => c.failed(1),
        }
    }
}
