//! The decision-log sink.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use super::{kafka_timeout, set_property, KafkaError};
use crate::sink::{
    spawn_writer, Backend, Captured, Counters, DecisionEvent, DecisionSink, FlushError, Overflow,
    Queue, SinkStats,
};

/// Settings of a [`KafkaDecisionSink`].
#[derive(Clone)]
#[must_use]
pub struct KafkaSinkOptions {
    brokers: String,
    topic: String,
    settings: Vec<(String, String)>,
    queue: usize,
    overflow: Overflow,
    drain_timeout: Duration,
    on_fatal: Option<OnFatal>,
}

type OnFatal = Arc<dyn Fn(&str) + Send + Sync>;

impl std::fmt::Debug for KafkaSinkOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSinkOptions")
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .field("settings", &self.settings)
            .field("queue", &self.queue)
            .field("overflow", &self.overflow)
            .field("drain_timeout", &self.drain_timeout)
            .field("on_fatal", &self.on_fatal.is_some())
            .finish()
    }
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
            on_fatal: None,
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

    /// Called (on the writer thread) when librdkafka's producer hits a fatal error, with its
    /// description, after the sink has replaced the producer with a new one. The sink also
    /// keeps the error in [`SinkStats::last_error`] and counts
    /// `elvon_kafka_producer_restarts_total`.
    pub fn on_fatal(mut self, f: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.on_fatal = Some(Arc::new(f));
        self
    }

    /// Sets any librdkafka producer property (`acks`, `linger.ms`, `batch.size`,
    /// `compression.type`, `message.timeout.ms`, …), replacing the default if there is one.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        set_property(&mut self.settings, key.into(), value.into());
        self
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

    /// Completes every record below `upto` not reported yet; returns how many.
    fn abandon(&mut self, upto: u64) -> u64 {
        let mut n = 0;
        while self.lo < upto {
            match self.done.pop_front() {
                Some(done) => n += u64::from(!done),
                None => break,
            }
            self.lo += 1;
        }
        n
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
    /// librdkafka reported a fatal error: the producer must be replaced.
    fatal: std::sync::Mutex<Option<String>>,
    /// Producers replaced after fatal errors.
    restarts: std::sync::atomic::AtomicU64,
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

impl Reports {
    fn fatal(&self, why: String) {
        if let Ok(mut f) = self.shared.fatal.lock() {
            f.get_or_insert(why);
        }
    }
}

impl ClientContext for Reports {
    fn error(&self, error: RdKafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
            self.fatal(format!("{error}: {reason}"));
        }
    }
}

impl ProducerContext for Reports {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, seq: usize) {
        match result {
            Ok(_) => self.counters.written(1),
            Err((e, _)) => {
                self.counters.failed(1);
                self.counters.error(format_args!("kafka delivery: {e}"));
                if e.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
                    self.fatal(e.to_string());
                }
            }
        }
        self.shared.in_flight().complete(seq as u64);
    }
}

/// The producer in use, replaced after a fatal error.
type Cell = Arc<arc_swap::ArcSwap<ThreadedProducer<Reports>>>;

/// The decision log on Kafka. See the [module docs](crate::kafka).
#[derive(Clone)]
pub struct KafkaDecisionSink {
    handle: Arc<Handle>,
}

/// Shared by the sink's clones; dropping the last one drains the sink (see
/// [`KafkaSinkOptions::drain_timeout`]).
struct Handle {
    queue: Arc<Queue>,
    writer: Option<std::thread::JoinHandle<()>>,
    producer: Cell,
    shared: Arc<Shared>,
    topic: Arc<str>,
    drain_timeout: Duration,
}

impl Drop for Handle {
    fn drop(&mut self) {
        let deadline = crate::clock::deadline(self.drain_timeout);
        let give_up = crate::clock::unix_now_ms()
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
        let producer = self.producer.load_full();
        let _ = producer.flush(kafka_timeout(left));
        if self.shared.in_flight().done.is_empty() {
            return;
        }
        // Past the drain timeout: purge what librdkafka still holds; the purged records
        // come back as failed delivery reports. Whatever is not reported even then is
        // counted failed here.
        let unreported = retire(&producer, &self.shared, u64::MAX);
        if unreported > 0 {
            self.queue.counters.failed(unreported);
            self.queue.counters.error(format_args!(
                "kafka sink dropped with {unreported} record(s) unreported after {:?}",
                self.drain_timeout
            ));
        }
    }
}

/// Purges what `producer` still holds, lets the purge reports through, and completes every
/// record below `upto` still unreported; returns how many that were.
fn retire(producer: &ThreadedProducer<Reports>, shared: &Shared, upto: u64) -> u64 {
    producer.purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
    let _ = producer.flush(Duration::from_millis(500));
    shared.in_flight().abandon(upto)
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
    pub fn new(options: KafkaSinkOptions) -> Result<Self, KafkaError> {
        let queue = Arc::new(Queue::new(options.queue, "kafka", options.overflow));
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &options.brokers);
        for (k, v) in &options.settings {
            config.set(k, v);
        }
        let shared = Arc::new(Shared::default());
        let make = {
            let (counters, shared) = (Arc::clone(&queue.counters), Arc::clone(&shared));
            move || -> Result<ThreadedProducer<Reports>, KafkaError> {
                config
                    .create_with_context(Reports {
                        counters: Arc::clone(&counters),
                        shared: Arc::clone(&shared),
                    })
                    .map_err(|e| KafkaError::rdkafka("", &e))
            }
        };
        let producer: Cell = Arc::new(arc_swap::ArcSwap::from_pointee(make()?));
        let topic: Arc<str> = options.topic.into();
        let backend = KafkaBackend {
            producer: Arc::clone(&producer),
            make: Box::new(make),
            on_fatal: options.on_fatal,
            topic: Arc::clone(&topic),
            shared: Arc::clone(&shared),
            buf: Vec::with_capacity(1024),
        };
        let writer = spawn_writer(&queue, "elvon-kafka-sink", backend)
            .map_err(|e| KafkaError::client(format!("cannot start the writer thread: {e}")))?;
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

    /// How often the producer was replaced after a fatal librdkafka error.
    #[must_use]
    pub fn producer_restarts(&self) -> u64 {
        self.handle
            .shared
            .restarts
            .load(std::sync::atomic::Ordering::Relaxed)
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
                .load()
                .flush((deadline - now).min(Duration::from_millis(10)));
        }
    }
}

/// Serializes records and hands them to librdkafka, waiting while its queue is full.
struct KafkaBackend {
    producer: Cell,
    /// Makes a new producer (after a fatal error).
    make: Box<dyn Fn() -> Result<ThreadedProducer<Reports>, KafkaError> + Send>,
    on_fatal: Option<OnFatal>,
    topic: Arc<str>,
    shared: Arc<Shared>,
    buf: Vec<u8>,
}

impl KafkaBackend {
    /// Replaces the producer after a fatal error: records the old one still held are purged
    /// and counted failed (they may or may not have been stored); new records go to a new
    /// producer.
    fn recover(&mut self, counters: &Counters) {
        let Some(why) = self.shared.fatal.lock().ok().and_then(|mut f| f.take()) else {
            return;
        };
        let fresh = match (self.make)() {
            Ok(p) => p,
            Err(e) => {
                counters.error(format_args!(
                    "kafka producer fatal error ({why}); replacing it failed: {e}"
                ));
                // Try again on the next record.
                if let Ok(mut f) = self.shared.fatal.lock() {
                    f.get_or_insert(why);
                }
                return;
            }
        };
        let upto = {
            let f = self.shared.in_flight();
            f.lo + f.done.len() as u64
        };
        let old = self.producer.swap(Arc::new(fresh));
        let lost = retire(&old, &self.shared, upto);
        counters.failed(lost);
        self.shared
            .restarts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        metrics::counter!("elvon_kafka_producer_restarts_total").increment(1);
        let message = format!("kafka producer fatal error ({why}); producer recreated");
        counters.error(&message);
        if let Some(f) = &self.on_fatal {
            f(&message);
        }
    }
}

impl Backend for KafkaBackend {
    fn record(&mut self, r: &Captured<'_>, counters: &Counters) {
        self.recover(counters);
        self.buf.clear();
        if r.write_json(&mut self.buf).is_err() {
            counters.failed(1);
            return;
        }
        let seq = self.shared.in_flight().next();
        let mut record = BaseRecord::with_opaque_to(&self.topic, seq as usize)
            .key(r.user.as_bytes())
            .payload(&self.buf[..]);
        let producer = self.producer.load_full();
        loop {
            match producer.send(record) {
                Ok(()) => return,
                Err((RdKafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), rec)) => {
                    let give_up = self
                        .shared
                        .give_up_at_ms
                        .load(std::sync::atomic::Ordering::Acquire);
                    if give_up != 0 && crate::clock::unix_now_ms() >= give_up {
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
                    if e.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
                        if let Ok(mut f) = self.shared.fatal.lock() {
                            f.get_or_insert(e.to_string());
                        }
                    }
                    return;
                }
            }
        }
    }

    // Delivery reports count written and failed; librdkafka batches on its own.
    fn pass_done(&mut self, counters: &Counters) {
        self.recover(counters);
    }

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

impl crate::sink::SinkStatsSource for KafkaDecisionSink {
    fn stats(&self) -> SinkStats {
        KafkaDecisionSink::stats(self)
    }
}
