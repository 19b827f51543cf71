//! Kafka adapters (cargo feature `kafka`): the decision-log sink and config broadcast.
//!
//! [`KafkaDecisionSink`] sends every decision to a topic as the versioned
//! [`DecisionRecord`](crate::DecisionRecord) in JSON (the same object as a line of the
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

use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::BaseProducer;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

use crate::config::Config;
use crate::engine::Engine;
use crate::watch::WatchEvent;

use crate::sink::{
    spawn_writer, Backend, Captured, Counters, DecisionEvent, DecisionSink, FlushError, Overflow,
    Queue, SinkStats,
};

/// What went wrong setting up a Kafka client, flushing, or publishing a config.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The config given to [`publish_config`] is not valid; nothing was published.
    #[error("config not published: {0}")]
    InvalidConfig(#[from] crate::config::ConfigError),
    /// librdkafka refused the configuration or failed to create the client.
    #[error("kafka producer: {0}")]
    Client(String),
}

/// Settings of a [`KafkaDecisionSink`].
#[derive(Debug, Clone)]
#[must_use]
pub struct KafkaSinkOptions {
    brokers: String,
    topic: String,
    settings: Vec<(String, String)>,
    queue: usize,
    overflow: Overflow,
    drain_timeout: Duration,
}

/// How long dropping the last handle of a [`KafkaDecisionSink`] waits for queued records to
/// be delivered, by default.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

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
            queue: 8_192,
            overflow: Overflow::Drop,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        }
    }

    /// Records the sink holds for the writer thread at most, per deciding thread (default
    /// 8,192); `record` drops and counts when its thread's queue is full. Each thread that
    /// records gets its own queue on its first record, sized at 128 bytes per record (at least
    /// 32 KiB): 1 MiB for the default.
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.queue = n.max(1);
        self
    }

    /// What `record` does when its thread's queue is full (default [`Overflow::Drop`]).
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = overflow;
        self
    }

    /// How long dropping the last handle waits for every accepted record to be delivered
    /// (default [`DEFAULT_DRAIN_TIMEOUT`]). Records still undelivered then are purged and
    /// counted as failed (`elvon_sink_records_total{outcome="failed"}`), never lost silently.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Sets any librdkafka producer property (`acks`, `linger.ms`, `batch.size`,
    /// `compression.type`, `message.timeout.ms`, …), replacing the default if there is one.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        set_property(&mut self.settings, key.into(), value.into());
        self
    }
}

/// Sets `key` in a property list, replacing an earlier value.
fn set_property(settings: &mut Vec<(String, String)>, key: String, value: String) {
    match settings.iter_mut().find(|(k, _)| *k == key) {
        Some(kv) => kv.1 = value,
        None => settings.push((key, value)),
    }
}

/// Records handed to librdkafka and not yet reported: sequence numbers `lo..lo + done.len()`
/// in the order the writer handed them over, with a flag per record once it is reported.
#[derive(Default)]
struct InFlight {
    lo: u64,
    done: std::collections::VecDeque<bool>,
}

impl InFlight {
    fn next(&mut self) -> u64 {
        self.done.push_back(false);
        self.lo + self.done.len() as u64 - 1
    }

    fn complete(&mut self, seq: u64) {
        if let Some(d) = seq
            .checked_sub(self.lo)
            .and_then(|i| self.done.get_mut(usize::try_from(i).ok()?))
        {
            *d = true;
        }
        while self.done.front() == Some(&true) {
            self.done.pop_front();
            self.lo += 1;
        }
    }
}

/// What the sink handles, the writer and the delivery callback share.
#[derive(Default)]
struct Shared {
    in_flight: std::sync::Mutex<InFlight>,
    /// The next sequence number as of the writer's last flush pass: every record offered
    /// before that flush was asked has a lower one.
    handed: std::sync::atomic::AtomicU64,
    /// Unix ms after which the writer stops waiting for room in librdkafka's queue and counts
    /// records as failed (0: no limit); set when the last handle is dropped.
    give_up_at_ms: std::sync::atomic::AtomicU64,
}

impl Shared {
    fn in_flight(&self) -> std::sync::MutexGuard<'_, InFlight> {
        self.in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Counts delivery reports.
struct Reports {
    counters: Arc<Counters>,
    shared: Arc<Shared>,
}

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, seq: usize) {
        match result {
            Ok(_) => self.counters.written(1),
            Err((e, _)) => {
                self.counters.failed(1);
                self.counters.error(format_args!("kafka delivery: {e}"));
            }
        }
        self.shared.in_flight().complete(seq as u64);
    }
}

/// The decision log on Kafka. See the [module docs](self).
#[derive(Clone)]
pub struct KafkaDecisionSink {
    handle: Arc<Handle>,
}

/// Shared by the sink's clones; dropping the last one drains the sink (see
/// [`KafkaSinkOptions::drain_timeout`]).
struct Handle {
    queue: Arc<Queue>,
    writer: Option<std::thread::JoinHandle<()>>,
    producer: Arc<ThreadedProducer<Reports>>,
    shared: Arc<Shared>,
    topic: Arc<str>,
    drain_timeout: Duration,
}

impl Drop for Handle {
    fn drop(&mut self) {
        let deadline = crate::clock::deadline(self.drain_timeout);
        let give_up = crate::sink::now_ms()
            .saturating_add(u64::try_from(self.drain_timeout.as_millis()).unwrap_or(u64::MAX));
        self.shared
            .give_up_at_ms
            .store(give_up.max(1), std::sync::atomic::Ordering::Release);
        // The writer hands every queued record to librdkafka (or, past the deadline, counts
        // it failed), then returns.
        self.queue.close();
        if let Some(h) = self.writer.take() {
            let _ = h.join();
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let _ = self.producer.flush(kafka_timeout(left));
        if self.shared.in_flight().done.is_empty() {
            return;
        }
        // Past the drain timeout: purge what librdkafka still holds; the purged records
        // come back as failed delivery reports. Whatever is not reported even then is
        // counted failed here.
        self.producer
            .purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
        let _ = self.producer.flush(Duration::from_millis(500));
        let mut f = self.shared.in_flight();
        let unreported = f.done.iter().filter(|d| !**d).count() as u64;
        if unreported > 0 {
            self.queue.counters.failed(unreported);
            self.queue.counters.error(format_args!(
                "kafka sink dropped with {unreported} record(s) unreported after {:?}",
                self.drain_timeout
            ));
        }
        f.done.clear();
    }
}

impl std::fmt::Debug for KafkaDecisionSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaDecisionSink")
            .field("topic", &self.handle.topic)
            .field("stats", &self.stats())
            .finish()
    }
}

impl KafkaDecisionSink {
    /// A producer for `options`, and its writer thread (which ends when the last clone of the
    /// sink is dropped, after handing every queued record to librdkafka). Connects in the
    /// background: a broker that is down now only delays delivery (records wait in the queues
    /// up to `message.timeout.ms`).
    ///
    /// Dropping the last clone drains the sink: it waits up to
    /// [`KafkaSinkOptions::drain_timeout`] for every accepted record to be delivered and
    /// counts the rest as failed.
    pub fn new(options: KafkaSinkOptions) -> Result<Self, Error> {
        let queue = Arc::new(Queue::new(options.queue, "kafka", options.overflow));
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &options.brokers);
        for (k, v) in &options.settings {
            config.set(k, v);
        }
        let shared = Arc::new(Shared::default());
        let producer: Arc<ThreadedProducer<Reports>> = Arc::new(
            config
                .create_with_context(Reports {
                    counters: Arc::clone(&queue.counters),
                    shared: Arc::clone(&shared),
                })
                .map_err(|e| Error::Client(e.to_string()))?,
        );
        let topic: Arc<str> = options.topic.into();
        let backend = KafkaBackend {
            producer: Arc::clone(&producer),
            topic: Arc::clone(&topic),
            shared: Arc::clone(&shared),
            buf: Vec::with_capacity(1024),
        };
        let writer = spawn_writer(&queue, "elvon-kafka-sink", backend)
            .map_err(|e| Error::Client(format!("cannot start the writer thread: {e}")))?;
        Ok(KafkaDecisionSink {
            handle: Arc::new(Handle {
                queue,
                writer: Some(writer),
                producer,
                shared,
                topic,
                drain_timeout: options.drain_timeout,
            }),
        })
    }

    /// The sink's counters; `offered == written + dropped + failed + pending`.
    #[must_use]
    pub fn stats(&self) -> SinkStats {
        self.handle.queue.stats()
    }

    /// Waits until every record offered before this call is delivered or failed, at most
    /// `timeout`. Records offered afterwards (by other threads) do not extend the wait.
    ///
    /// # Errors
    /// [`FlushError::Timeout`] with the records still pending, or [`FlushError::WriterGone`].
    pub fn flush(&self, timeout: Duration) -> Result<(), FlushError> {
        let h = &*self.handle;
        let deadline = crate::clock::deadline(timeout);
        let writer = h.writer.as_ref();
        // First every record offered before now reaches librdkafka …
        h.queue
            .wait_flushed(timeout, || writer.is_some_and(|w| !w.is_finished()))?;
        let upto = h.shared.handed.load(std::sync::atomic::Ordering::Acquire);
        // … then each of those is reported.
        loop {
            if h.shared.in_flight().lo >= upto {
                return Ok(());
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return Err(FlushError::Timeout {
                    timeout,
                    pending: self.stats().pending(),
                });
            }
            // Sends what librdkafka holds back for batching; returns at once when empty.
            let _ = h
                .producer
                .flush((deadline - now).min(Duration::from_millis(10)));
        }
    }
}

/// Serializes records and hands them to librdkafka, waiting while its queue is full.
struct KafkaBackend {
    producer: Arc<ThreadedProducer<Reports>>,
    topic: Arc<str>,
    shared: Arc<Shared>,
    buf: Vec<u8>,
}

impl Backend for KafkaBackend {
    fn record(&mut self, r: &Captured<'_>, counters: &Counters) {
        self.buf.clear();
        if r.write_json(&mut self.buf).is_err() {
            counters.failed(1);
            return;
        }
        let seq = self.shared.in_flight().next();
        let mut record = BaseRecord::with_opaque_to(&self.topic, seq as usize)
            .key(r.user.as_bytes())
            .payload(&self.buf[..]);
        loop {
            match self.producer.send(record) {
                Ok(()) => return,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), rec)) => {
                    let give_up = self
                        .shared
                        .give_up_at_ms
                        .load(std::sync::atomic::Ordering::Acquire);
                    if give_up != 0 && crate::sink::now_ms() >= give_up {
                        counters.failed(1);
                        self.shared.in_flight().complete(seq);
                        return;
                    }
                    // The polling thread frees room as deliveries complete or time out.
                    std::thread::sleep(Duration::from_millis(1));
                    record = rec;
                }
                Err((e, _)) => {
                    counters.failed(1);
                    counters.error(format_args!("kafka send: {e}"));
                    self.shared.in_flight().complete(seq);
                    return;
                }
            }
        }
    }

    // Delivery reports count written and failed; librdkafka batches on its own.
    fn pass_done(&mut self, _: &Counters) {}

    fn flush(&mut self, _: &Counters) {
        let next = {
            let f = self.shared.in_flight();
            f.lo + f.done.len() as u64
        };
        self.shared
            .handed
            .store(next, std::sync::atomic::Ordering::Release);
    }
}

impl DecisionSink for KafkaDecisionSink {
    fn record(&self, event: &DecisionEvent<'_>) {
        self.handle.queue.offer(event);
    }

    fn flush(&self, timeout: Duration) -> Result<(), FlushError> {
        KafkaDecisionSink::flush(self, timeout)
    }
}

/// The message key configs are published under. The config topic should have one partition
/// (it is compacted, so it keeps the latest config per key); the watcher loads configs in
/// the order the partition holds them.
pub const CONFIG_KEY: &str = "config";

/// Validates `config_json` as an elvon config and publishes it to `topic` (key
/// [`CONFIG_KEY`]), waiting at most `timeout` for the broker to store it. An invalid config
/// is not published: the error lists every problem with its path.
pub fn publish_config(
    brokers: &str,
    topic: &str,
    config_json: &str,
    timeout: Duration,
) -> Result<(), Error> {
    Config::from_json(config_json).and_then(|c| c.validate())?;
    let producer: BaseProducer<Confirm> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("message.timeout.ms", kafka_ms(timeout).max(1).to_string())
        .create_with_context(Confirm::default())
        .map_err(|e| Error::Client(e.to_string()))?;
    producer
        .send(BaseRecord::to(topic).key(CONFIG_KEY).payload(config_json))
        .map_err(|(e, _)| Error::Client(e.to_string()))?;
    producer
        .flush(kafka_timeout(timeout))
        .map_err(|e| Error::Client(format!("config not confirmed: {e}")))?;
    let outcome = producer.context().0.lock().map_or(None, |mut g| g.take());
    match outcome {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => Err(Error::Client(format!("config not stored: {e}"))),
        None => Err(Error::Client("config not confirmed in time".into())),
    }
}

/// A duration in librdkafka's milliseconds (an `i32`), saturating.
fn kafka_ms(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

/// A duration as an rdkafka timeout: beyond what librdkafka can express, no timeout
/// (rdkafka itself would wrap it around to an arbitrary value).
fn kafka_timeout(d: Duration) -> rdkafka::util::Timeout {
    if d.as_millis() > i32::MAX as u128 {
        rdkafka::util::Timeout::Never
    } else {
        rdkafka::util::Timeout::After(d)
    }
}

/// Keeps the delivery result of the one config message.
#[derive(Default)]
struct Confirm(std::sync::Mutex<Option<Result<(), String>>>);

impl ClientContext for Confirm {}

impl ProducerContext for Confirm {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, (): ()) {
        if let Ok(mut g) = self.0.lock() {
            *g = Some(result.as_ref().map(|_| ()).map_err(|(e, _)| e.to_string()));
        }
    }
}

/// Follows a compacted config topic and swaps every valid config into the engine; an invalid
/// one is reported (`on_event` with [`WatchEvent::Rejected`], and
/// `elvon_config_rejections_total`) and the current config keeps serving. Every instance
/// reads the whole topic from the start (no consumer group offsets), so all instances end on
/// the same newest valid config. Stops when dropped.
#[derive(Debug)]
#[must_use = "dropping the handle stops the watcher thread"]
pub struct KafkaConfigWatcher {
    stop: Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl KafkaConfigWatcher {
    /// Starts following partition 0 of `topic` on `brokers`.
    pub fn spawn(
        engine: Engine,
        brokers: &str,
        topic: &str,
        on_event: impl Fn(&WatchEvent) + Send + 'static,
    ) -> Result<Self, Error> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", "elvon-config-watcher")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            // Configs are rare and small: ask the broker not to hold fetches back for long,
            // so a new config is seen within tens of milliseconds.
            .set("fetch.wait.max.ms", "50")
            .create()
            .map_err(|e| Error::Client(e.to_string()))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Beginning)
            .map_err(|e| Error::Client(e.to_string()))?;
        consumer
            .assign(&tpl)
            .map_err(|e| Error::Client(e.to_string()))?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("elvon-kafka-config".into())
            .spawn(move || {
                while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                    let Some(msg) = consumer.poll(Duration::from_millis(100)) else {
                        continue;
                    };
                    let Ok(msg) = msg else { continue };
                    let Some(payload) = msg.payload() else {
                        continue;
                    };
                    on_event(&crate::watch::load_bytes(&engine, payload));
                }
            })
            .map_err(|e| Error::Client(format!("cannot start the watcher: {e}")))?;
        Ok(KafkaConfigWatcher {
            stop,
            handle: Some(handle),
        })
    }
}

impl Drop for KafkaConfigWatcher {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Where a [`FeatureUpdater`] applies behaviour events. Application must be idempotent by
/// event id: after a crash or a rebalance, events since the last commit are delivered again.
pub trait EventTarget: Send + Sync {
    /// Applies a batch of valid events. An error means nothing may be assumed applied; the
    /// updater retries the batch (and does not commit) until it succeeds or is stopped.
    fn apply(&self, events: &[crate::aggregate::Event]) -> Result<(), String>;
}

/// Applies events to a [`MemoryStore`](crate::MemoryStore) with these aggregates, at the
/// system clock's now.
#[derive(Debug, Clone)]
pub struct MemoryTarget {
    /// The store.
    pub store: crate::MemoryStore,
    /// The aggregates events feed.
    pub aggregates: Arc<crate::aggregate::Aggregates>,
}

impl EventTarget for MemoryTarget {
    fn apply(&self, events: &[crate::aggregate::Event]) -> Result<(), String> {
        let now = crate::sink::now_ms();
        for e in events {
            // Events were validated when parsed; an error here is a definition mismatch.
            self.store
                .apply(&self.aggregates, e, now)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

#[cfg(feature = "redis")]
impl EventTarget for crate::redis::AggregatesWriter {
    fn apply(&self, events: &[crate::aggregate::Event]) -> Result<(), String> {
        crate::redis::AggregatesWriter::apply(self, events)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// A reward on the events topic: `{"decision_id": "<32 hex digits>", "reward": 1.0}`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RewardMessage {
    decision_id: crate::DecisionId,
    reward: f64,
}

/// Settings of a [`FeatureUpdater`].
#[derive(Debug, Clone)]
#[must_use]
pub struct UpdaterOptions {
    brokers: String,
    group: String,
    topics: Vec<String>,
    dead_letter: String,
    batch: usize,
    aggregates: Arc<crate::aggregate::Aggregates>,
    settings: Vec<(String, String)>,
}

impl UpdaterOptions {
    /// Consumer group `group` on `brokers`, reading `topics`; events that cannot be parsed
    /// or validated against `aggregates` go to `dead_letter`.
    pub fn new<S: Into<String>>(
        brokers: impl Into<String>,
        group: impl Into<String>,
        topics: impl IntoIterator<Item = S>,
        dead_letter: impl Into<String>,
        aggregates: Arc<crate::aggregate::Aggregates>,
    ) -> Self {
        UpdaterOptions {
            brokers: brokers.into(),
            group: group.into(),
            topics: topics.into_iter().map(Into::into).collect(),
            dead_letter: dead_letter.into(),
            batch: 500,
            aggregates,
            settings: Vec::new(),
        }
    }

    /// Sets any librdkafka consumer property (`session.timeout.ms`, `fetch.min.bytes`, …).
    /// The updater's own `enable.auto.commit=false` cannot be overridden.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((key.into(), value.into()));
        self
    }

    /// Most events applied (and committed) at once (default 500).
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch = n.max(1);
        self
    }
}

/// Counters of a [`FeatureUpdater`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UpdaterStats {
    /// Events handed to the target (including redeliveries the target recognised).
    pub applied: u64,
    /// Messages sent to the dead-letter topic.
    pub dead_lettered: u64,
    /// Rewards routed to the engine.
    pub rewards: u64,
    /// Batches committed.
    pub commits: u64,
    /// Messages behind the end of the assigned partitions, as of the last check (once a
    /// second; `None` before the first); also gauge `elvon_updater_lag`.
    pub lag: Option<u64>,
}

#[derive(Default)]
struct UpdaterCounters {
    applied: std::sync::atomic::AtomicU64,
    dead_lettered: std::sync::atomic::AtomicU64,
    rewards: std::sync::atomic::AtomicU64,
    commits: std::sync::atomic::AtomicU64,
    lag: std::sync::atomic::AtomicU64,
}

/// Consumes behaviour events (and rewards) from Kafka in a consumer group, applies them to an
/// [`EventTarget`] in batches and commits after each applied batch: at-least-once, made
/// exactly-once in effect by the target's deduplication by event id. A message that is not
/// a valid event or reward goes to the dead-letter topic with the error in the header
/// `elvon-error`, and consumption carries on. Rewards (`{"decision_id", "reward"}`) go to
/// `Engine::reward` when an engine is given. Stops (after committing what it applied) when
/// dropped or [`stop`](FeatureUpdater::stop)ped.
///
/// Metrics: `elvon_updater_events_total{outcome="applied"|"dead_letter"|"reward"}` (its rate
/// is the throughput) and gauge `elvon_updater_lag`.
///
/// ```compile_fail
/// #![deny(unused_must_use)]
/// use elvon::kafka::{FeatureUpdater, MemoryTarget, UpdaterOptions};
/// fn start(o: UpdaterOptions, t: MemoryTarget) -> Result<(), elvon::kafka::Error> {
///     FeatureUpdater::spawn(o, t, None)?; // dropped at once: the updater stops
///     Ok(())
/// }
/// ```
#[must_use = "dropping the handle stops the updater thread"]
pub struct FeatureUpdater {
    stop: Arc<std::sync::atomic::AtomicBool>,
    counters: Arc<UpdaterCounters>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for FeatureUpdater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeatureUpdater")
            .field("stats", &self.stats())
            .finish()
    }
}

impl FeatureUpdater {
    /// Joins the group and starts consuming on a thread of its own.
    pub fn spawn(
        options: UpdaterOptions,
        target: impl EventTarget + 'static,
        engine: Option<Engine>,
    ) -> Result<Self, Error> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &options.brokers)
            .set("group.id", &options.group)
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "50");
        for (k, v) in &options.settings {
            config.set(k, v);
        }
        let consumer: BaseConsumer = config
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|e| Error::Client(e.to_string()))?;
        let topics: Vec<&str> = options.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| Error::Client(e.to_string()))?;
        let dlq: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &options.brokers)
            .set("acks", "all")
            .create()
            .map_err(|e| Error::Client(e.to_string()))?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let counters = Arc::new(UpdaterCounters::default());
        let (s, c) = (Arc::clone(&stop), Arc::clone(&counters));
        let handle = std::thread::Builder::new()
            .name("elvon-feature-updater".into())
            .spawn(move || {
                consume_loop(&consumer, &dlq, &options, &target, engine.as_ref(), &s, &c);
            })
            .map_err(|e| Error::Client(format!("cannot start the updater: {e}")))?;
        Ok(FeatureUpdater {
            stop,
            counters,
            handle: Some(handle),
        })
    }

    /// The counters so far.
    #[must_use]
    pub fn stats(&self) -> UpdaterStats {
        let c = &self.counters;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        UpdaterStats {
            applied: get(&c.applied),
            dead_lettered: get(&c.dead_lettered),
            rewards: get(&c.rewards),
            commits: get(&c.commits),
            lag: get(&c.lag).checked_sub(1),
        }
    }

    /// Stops after the current batch is applied and committed, and waits for that.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for FeatureUpdater {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Messages behind the end of the assigned partitions: Σ (high watermark − position). One
/// watermark request per assigned partition (at most 200 ms each), made once a second.
fn lag(consumer: &BaseConsumer) -> Option<u64> {
    let positions = consumer.position().ok()?;
    let mut total = 0u64;
    for p in positions.elements() {
        let (_, high) = consumer
            .fetch_watermarks(p.topic(), p.partition(), Duration::from_millis(200))
            .ok()?;
        let pos = match p.offset() {
            Offset::Offset(o) => o,
            _ => continue,
        };
        total += u64::try_from(high - pos).unwrap_or(0);
    }
    Some(total)
}

enum Parsed {
    Event(crate::aggregate::Event),
    Reward(RewardMessage),
}

fn parse(payload: Option<&[u8]>, aggs: &crate::aggregate::Aggregates) -> Result<Parsed, String> {
    let bytes = payload.ok_or("empty message")?;
    let json: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    if json.get("decision_id").is_some() {
        let r: RewardMessage =
            serde_json::from_value(json).map_err(|e| format!("not a reward: {e}"))?;
        if !r.reward.is_finite() {
            return Err("reward is not a finite number".into());
        }
        return Ok(Parsed::Reward(r));
    }
    let e: crate::aggregate::Event =
        serde_json::from_value(json).map_err(|e| format!("not an event: {e}"))?;
    aggs.updates(&e, e.time_ms).map_err(|e| e.to_string())?;
    Ok(Parsed::Event(e))
}

fn consume_loop(
    consumer: &BaseConsumer,
    dlq: &BaseProducer,
    o: &UpdaterOptions,
    target: &dyn EventTarget,
    engine: Option<&Engine>,
    stop: &std::sync::atomic::AtomicBool,
    c: &UpdaterCounters,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut batch = Vec::with_capacity(o.batch);
    let mut uncommitted = false;
    let mut last_lag = std::time::Instant::now();
    loop {
        let stopping = stop.load(Relaxed);
        let started = std::time::Instant::now();
        while !stopping && batch.len() < o.batch && started.elapsed() < Duration::from_millis(100) {
            let Some(m) = consumer.poll(Duration::from_millis(20)) else {
                continue;
            };
            let Ok(m) = m else { continue };
            uncommitted = true;
            match parse(m.payload(), &o.aggregates) {
                Ok(Parsed::Event(e)) => batch.push(e),
                Ok(Parsed::Reward(r)) => {
                    if let Some(engine) = engine {
                        engine.reward(r.decision_id, r.reward);
                    }
                    c.rewards.fetch_add(1, Relaxed);
                    metrics::counter!("elvon_updater_events_total", "outcome" => "reward")
                        .increment(1);
                }
                Err(why) => {
                    let headers =
                        rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
                            key: "elvon-error",
                            value: Some(why.as_bytes()),
                        });
                    let mut rec = BaseRecord::to(&o.dead_letter)
                        .payload(m.payload().unwrap_or_default())
                        .headers(headers);
                    if let Some(k) = m.key() {
                        rec = rec.key(k);
                    }
                    let _ = dlq.send(rec);
                    // Stored before the offset that skips it is committed.
                    let _ = dlq.flush(Duration::from_secs(5));
                    c.dead_lettered.fetch_add(1, Relaxed);
                    metrics::counter!("elvon_updater_events_total", "outcome" => "dead_letter")
                        .increment(1);
                }
            }
        }
        if !batch.is_empty() {
            // At-least-once: retry until applied (or told to stop; then nothing is committed
            // and the batch is delivered again to whoever takes the partitions).
            loop {
                match target.apply(&batch) {
                    Ok(()) => break,
                    Err(_) if stop.load(Relaxed) => return,
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
            c.applied.fetch_add(batch.len() as u64, Relaxed);
            metrics::counter!("elvon_updater_events_total", "outcome" => "applied")
                .increment(batch.len() as u64);
            batch.clear();
        }
        if uncommitted
            && consumer
                .commit_consumer_state(rdkafka::consumer::CommitMode::Sync)
                .is_ok()
        {
            uncommitted = false;
            c.commits.fetch_add(1, Relaxed);
        }
        if last_lag.elapsed() >= Duration::from_secs(1) {
            last_lag = std::time::Instant::now();
            if let Some(lag) = lag(consumer) {
                // Stored + 1, so 0 means "not measured yet".
                c.lag.store(lag.saturating_add(1), Relaxed);
                metrics::gauge!("elvon_updater_lag").set(lag as f64);
            }
        }
        if stopping {
            return;
        }
    }
}
