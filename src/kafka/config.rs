//! Config broadcast: publishing configs to a compacted topic and following it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError as RdKafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

use super::{kafka_ms, kafka_timeout, ClientError, KafkaError};
use crate::config::Config;
use crate::engine::Engine;
use crate::watch::{ConfigSourceError, WatchEvent};

/// The message key configs are published under. The config topic should have one partition
/// (it is compacted, so it keeps the latest config per key); the watcher loads configs in
/// the order the partition holds them.
pub const CONFIG_KEY: &str = "config";

/// Where configs are broadcast: a config topic on a cluster, and the librdkafka settings
/// (TLS, SASL, …) for reaching it. Used by [`publish_config`] and [`KafkaConfigWatcher`].
///
/// ```
/// let topic = elvon::kafka::ConfigTopicOptions::new("kafka-1:9093", "elvon-config")
///     .set("security.protocol", "SASL_SSL")
///     .set("sasl.mechanism", "SCRAM-SHA-512");
/// # drop(topic);
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct ConfigTopicOptions {
    brokers: String,
    topic: String,
    settings: Vec<(String, String)>,
}

impl ConfigTopicOptions {
    /// The config topic `topic` on the cluster reached through `brokers` (`host:port,...`).
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>) -> Self {
        ConfigTopicOptions {
            brokers: brokers.into(),
            topic: topic.into(),
            settings: Vec::new(),
        }
    }

    /// Sets any librdkafka property for both the publisher's producer and the watcher's
    /// consumer (`security.protocol`, `sasl.*`, `ssl.*`, `client.id`, …), replacing an
    /// earlier value. The properties that make the watcher and the publisher work are
    /// applied after these and cannot be overridden: the publisher's `acks=all` and
    /// `message.timeout.ms` (from its timeout), the watcher's `group.id`,
    /// `enable.auto.commit=false`, `enable.partition.eof=true` and `fetch.wait.max.ms=50`.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        super::set_property(&mut self.settings, key.into(), value.into());
        self
    }

    /// The topic.
    #[must_use]
    pub fn topic(&self) -> &str {
        &self.topic
    }

    fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        // The user's settings first, so the watcher's own (set after) always win.
        for (k, v) in &self.settings {
            c.set(k, v);
        }
        c.set("bootstrap.servers", &self.brokers);
        c
    }
}

/// Validates `config_json` as an elvon config and publishes it to the config topic (key
/// [`CONFIG_KEY`]), waiting at most `timeout` for the broker to store it. An invalid config
/// is not published: the error lists every problem with its path.
///
/// # Errors
/// [`KafkaError::InvalidConfig`] for a config that does not validate; a
/// [`KafkaError::Client`] when the producer cannot be made or the broker does not confirm
/// the config in time ([`KafkaError::is_transient`] tells the two apart).
pub fn publish_config(
    topic: &ConfigTopicOptions,
    config_json: &str,
    timeout: Duration,
) -> Result<(), KafkaError> {
    Config::from_json(config_json).and_then(|c| c.validate())?;
    let producer: BaseProducer<Confirm> = topic
        .client()
        .set("acks", "all")
        .set("message.timeout.ms", kafka_ms(timeout).max(1).to_string())
        .create_with_context(Confirm::default())
        .map_err(|e| KafkaError::rdkafka("", &e))?;
    producer
        .send(
            BaseRecord::to(&topic.topic)
                .key(CONFIG_KEY)
                .payload(config_json),
        )
        .map_err(|(e, _)| KafkaError::rdkafka("config not sent", &e))?;
    producer
        .flush(kafka_timeout(timeout))
        .map_err(|e| KafkaError::rdkafka("config not confirmed", &e))?;
    let outcome = producer.context().0.lock().map_or(None, |mut g| g.take());
    match outcome {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => Err(KafkaError::Client(e)),
        None => Err(KafkaError::Client(ClientError::transient(
            "config not confirmed in time",
        ))),
    }
}

/// Keeps the delivery result of the one config message.
#[derive(Default)]
struct Confirm(std::sync::Mutex<Option<Result<(), ClientError>>>);

impl ClientContext for Confirm {}

impl ProducerContext for Confirm {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, (): ()) {
        if let Ok(mut g) = self.0.lock() {
            *g = Some(
                result
                    .as_ref()
                    .map(|_| ())
                    .map_err(|(e, _)| ClientError::from_rdkafka("config not stored", e)),
            );
        }
    }
}

/// Follows a compacted config topic and swaps the newest valid config into the engine.
///
/// On start it reads the topic to its end and loads only the newest valid config there
/// (newer invalid ones are reported as [`WatchEvent::Rejected`]; older ones are not loaded
/// at all), then it is [ready](KafkaConfigWatcher::is_ready) and follows the topic: every
/// valid config published later is swapped in, an invalid one is reported (`on_event` with
/// [`WatchEvent::Rejected`], and `elvon_config_rejections_total`) and the current config
/// keeps serving. Errors reaching the broker are reported as [`WatchEvent::SourceError`]
/// (and `elvon_config_watch_errors_total`). Every instance reads the whole topic (no
/// consumer group offsets), so all instances end on the same newest valid config. Stops when
/// dropped, so the handle must be kept:
///
/// ```compile_fail
/// #![deny(unused_must_use)]
/// fn start(engine: elvon::Engine) -> Result<(), elvon::kafka::KafkaError> {
///     let topic = elvon::kafka::ConfigTopicOptions::new("localhost:9092", "configs");
///     elvon::kafka::KafkaConfigWatcher::spawn(engine, &topic, |_| {})?;
///     Ok(())
/// }
/// ```
#[derive(Debug)]
#[must_use = "dropping the handle stops the watcher thread"]
pub struct KafkaConfigWatcher {
    ready: Arc<AtomicBool>,
    /// Stopped and joined when dropped.
    _thread: crate::background::Background,
}

impl KafkaConfigWatcher {
    /// Starts following partition 0 of the config topic.
    ///
    /// # Errors
    /// A [`KafkaError::Client`] when the consumer cannot be made (a refused setting) or the
    /// thread cannot be started.
    pub fn spawn(
        engine: Engine,
        topic: &ConfigTopicOptions,
        on_event: impl Fn(&WatchEvent) + Send + 'static,
    ) -> Result<Self, KafkaError> {
        let consumer: BaseConsumer = topic
            .client()
            .set("group.id", "elvon-config-watcher")
            .set("enable.auto.commit", "false")
            // The end of the partition tells the watcher it has caught up.
            .set("enable.partition.eof", "true")
            // Configs are rare and small: ask the broker not to hold fetches back for long,
            // so a new config is seen within tens of milliseconds.
            .set("fetch.wait.max.ms", "50")
            .create()
            .map_err(|e| KafkaError::rdkafka("", &e))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic.topic, 0, Offset::Beginning)
            .map_err(|e| KafkaError::rdkafka("", &e))?;
        consumer
            .assign(&tpl)
            .map_err(|e| KafkaError::rdkafka("", &e))?;
        let ready = Arc::new(AtomicBool::new(false));
        let (is_ready, topic) = (Arc::clone(&ready), topic.topic.clone());
        let thread = crate::background::Background::spawn("elvon-kafka-config", move |stop| {
            let w = Watch {
                consumer: &consumer,
                engine: &engine,
                topic: &topic,
                stop,
                on_event: &on_event,
            };
            if w.catch_up() {
                is_ready.store(true, Ordering::Release);
                w.follow();
            }
        })
        .map_err(|e| KafkaError::client(format!("cannot start the watcher: {e}")))?;
        Ok(KafkaConfigWatcher {
            ready,
            _thread: thread,
        })
    }

    /// Whether the watcher has read the topic to its end and loaded the newest valid config
    /// there (or found none): from then on the engine serves what the topic says.
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Waits at most `timeout` for [`is_ready`](Self::is_ready); returns it.
    pub fn wait_ready(&self, timeout: Duration) -> bool {
        super::wait_until(&self.ready, timeout)
    }
}

/// The watcher thread's state.
struct Watch<'a> {
    consumer: &'a BaseConsumer,
    engine: &'a Engine,
    topic: &'a str,
    stop: &'a crate::background::Stop,
    on_event: &'a (dyn Fn(&WatchEvent) + Send),
}

impl Watch<'_> {
    fn stopped(&self) -> bool {
        self.stop.is_set()
    }

    fn error(&self, what: &'static str, e: &RdKafkaError) {
        metrics::counter!("elvon_config_watch_errors_total").increment(1);
        (self.on_event)(&WatchEvent::SourceError(ConfigSourceError::Remote {
            system: "kafka",
            operation: what,
            error: Box::new(ClientError::from_rdkafka("", e)),
        }));
    }

    /// Reads the topic up to the end it had at the start, then loads the newest valid config
    /// read. `false` when stopped first.
    fn catch_up(&self) -> bool {
        let end = loop {
            if self.stopped() {
                return false;
            }
            match self
                .consumer
                .fetch_watermarks(self.topic, 0, Duration::from_secs(1))
            {
                Ok((_, high)) => break high,
                // No such topic (yet): nothing to catch up on.
                Err(e) if super::is_unknown_topic(&e) => break 0,
                Err(e) => {
                    self.error("watermarks", &e);
                    if self.stop.sleep(Duration::from_millis(200)) {
                        return false;
                    }
                }
            }
        };
        // Offsets below `end` that are still in the (compacted) topic, oldest first.
        let mut read: Vec<Vec<u8>> = Vec::new();
        let mut next = 0;
        while next < end {
            if self.stopped() {
                return false;
            }
            match self.consumer.poll(Duration::from_millis(100)) {
                None => {}
                // The end of the partition (compaction may leave `end` itself unused).
                Some(Err(RdKafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => self.error("poll", &e),
                Some(Ok(m)) => {
                    next = m.offset() + 1;
                    if let Some(p) = m.payload() {
                        read.push(p.to_vec());
                    }
                }
            }
        }
        for payload in read.iter().rev() {
            let event = crate::watch::load_bytes(self.engine, payload);
            let loaded = matches!(event, WatchEvent::Loaded(_));
            (self.on_event)(&event);
            if loaded {
                break;
            }
        }
        true
    }

    /// Loads every config published from now on.
    fn follow(&self) {
        while !self.stopped() {
            match self.consumer.poll(Duration::from_millis(100)) {
                None | Some(Err(RdKafkaError::PartitionEOF(_))) => {}
                Some(Err(e)) => self.error("poll", &e),
                Some(Ok(m)) => {
                    if let Some(payload) = m.payload() {
                        (self.on_event)(&crate::watch::load_bytes(self.engine, payload));
                    }
                }
            }
        }
    }
}
