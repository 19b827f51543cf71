//! The fleet's learning loop on Kafka: one log of learner increments, and rewards routed to
//! the instance that made the decision.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError as RdKafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

use super::{set_property, KafkaError};
use crate::engine::Engine;
use crate::learn::{combine_deltas, LearnerState};
use crate::RewardOutcome;

/// Settings of a [`FleetSync`]: the cluster, the learner topic every instance shares, the
/// reward topic, and librdkafka settings.
///
/// ```
/// use std::time::Duration;
/// let options = elvon::kafka::FleetOptions::new("kafka-1:9092", "elvon-learner", "elvon-rewards")
///     .interval(Duration::from_millis(50))
///     .set("security.protocol", "SSL");
/// # drop(options);
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct FleetOptions {
    brokers: String,
    learner_topic: String,
    reward_topic: String,
    interval: Duration,
    settings: Vec<(String, String)>,
}

impl FleetOptions {
    /// The fleet on the cluster reached through `brokers`: learner increments on
    /// `learner_topic` (one partition: its order is the fleet's merge order; keep it as long
    /// as a new instance should be able to rebuild the state from it), rewards
    /// (`{"decision_id": "<32 hex digits>", "reward": 1.0}`) on `reward_topic`, any number of
    /// partitions.
    pub fn new(
        brokers: impl Into<String>,
        learner_topic: impl Into<String>,
        reward_topic: impl Into<String>,
    ) -> Self {
        FleetOptions {
            brokers: brokers.into(),
            learner_topic: learner_topic.into(),
            reward_topic: reward_topic.into(),
            interval: Duration::from_millis(100),
            settings: Vec::new(),
        }
    }

    /// How often the instance publishes its increments (default 100 ms, at least 1 ms): the
    /// delay before a reward counts on every instance is about this plus one round trip.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Sets any librdkafka property for the instance's producer and consumer (TLS, SASL,
    /// `client.id`, …), replacing an earlier value. The properties the fleet relies on are
    /// applied after these and cannot be overridden: the producer's `acks=all`,
    /// `enable.idempotence=true` and `message.timeout.ms=0` (retry until delivered), the
    /// consumer's `group.id`, `enable.auto.commit=false` and `enable.partition.eof=true`.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        set_property(&mut self.settings, key.into(), value.into());
        self
    }

    fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        for (k, v) in &self.settings {
            c.set(k, v);
        }
        c.set("bootstrap.servers", &self.brokers);
        c
    }
}

/// Counters of a [`FleetSync`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FleetStats {
    /// Entries this instance appended to the learner topic (confirmed by the broker).
    pub published: u64,
    /// Learner-topic entries merged (every instance's, this one's included).
    pub merged: u64,
    /// Learner-topic entries that could not be read as increments (counted, skipped).
    pub bad_entries: u64,
    /// The learner-topic position merged last (offset + 1): the fleet's model version.
    pub position: u64,
    /// Rewards for this instance's decisions, by what the engine did with them.
    pub rewards_applied: u64,
    /// Rewards for this instance's decisions that the engine did not apply (unknown,
    /// expired, already rewarded, out of range; see [`RewardStats`](crate::RewardStats)).
    pub rewards_not_applied: u64,
    /// Rewards for decisions of other instances (each is applied by its own instance).
    pub rewards_foreign: u64,
    /// Reward messages that are not a valid reward (counted, skipped).
    pub rewards_invalid: u64,
    /// Errors reaching the cluster (retried).
    pub errors: u64,
    /// The last error, with its context.
    pub last_error: Option<String>,
}

#[derive(Default)]
struct Counters {
    published: AtomicU64,
    merged: AtomicU64,
    bad_entries: AtomicU64,
    position: AtomicU64,
    rewards_applied: AtomicU64,
    rewards_not_applied: AtomicU64,
    rewards_foreign: AtomicU64,
    rewards_invalid: AtomicU64,
    errors: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// Increments handed to librdkafka and not confirmed yet, with their sequence numbers;
    /// a failed one goes back to be sent again.
    unsent: Mutex<Vec<(u64, LearnerState)>>,
}

impl Counters {
    fn error(&self, what: &str, e: &dyn std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut g) = self.last_error.lock() {
            *g = Some(format!("{what}: {e}"));
        }
        metrics::counter!("elvon_fleet_errors_total").increment(1);
    }
}

/// Delivery reports of the learner-topic producer.
struct Reports {
    counters: Arc<Counters>,
    /// Increments in flight by sequence number, kept until confirmed.
    in_flight: Arc<Mutex<Vec<(u64, LearnerState)>>>,
}

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = Box<u64>;

    fn delivery(&self, result: &DeliveryResult<'_>, seq: Box<u64>) {
        match result {
            Ok(_) => {
                let _ = take_in_flight(&self.in_flight, *seq);
                self.counters.published.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.counters.error("learner topic delivery", e);
                give_back(&self.in_flight, &self.counters, *seq);
            }
        }
    }
}

/// Removes the increments sent as `seq` from those in flight.
fn take_in_flight(
    in_flight: &Mutex<Vec<(u64, LearnerState)>>,
    seq: u64,
) -> Option<(u64, LearnerState)> {
    let mut g = in_flight.lock().ok()?;
    let i = g.iter().position(|(s, _)| *s == seq)?;
    Some(g.swap_remove(i))
}

/// The increments sent as `seq` did not arrive: back to the unsent pile, sent again with
/// the next batch, so increments are never dropped.
fn give_back(in_flight: &Mutex<Vec<(u64, LearnerState)>>, counters: &Counters, seq: u64) {
    if let (Some(entry), Ok(mut g)) = (take_in_flight(in_flight, seq), counters.unsent.lock()) {
        g.push(entry);
    }
}

/// One instance's part of a fleet's learning loop on Kafka (see
/// [`docs::learning`](crate::docs::learning), "Running several instances").
///
/// It makes the engine [join the fleet](Engine::join_fleet), then, on its own thread:
/// - every [interval](FleetOptions::interval), appends the engine's reward increments to the
///   learner topic (JSON [`LearnerState`] of increments, keyed by the engine's id prefix);
///   an increment the broker does not confirm is sent again, never dropped;
/// - reads the learner topic from its beginning and merges every entry, in order, at its
///   position (offset + 1), so every instance holds the fleet's statistics and serves its
///   models under the same version; a new instance is [ready](FleetSync::is_ready) once it
///   has merged the entries that were there when it started;
/// - reads every partition of the reward topic, outside any consumer group, from the end it
///   had at the start: a reward whose decision id carries this engine's prefix goes to
///   [`Engine::reward`], the others are counted as foreign (their own instance applies
///   them). So each reward is applied once in the fleet, by the instance that holds its
///   decision, or counted with the reason it was not.
///
/// An instance cut off from the cluster keeps deciding on its last models; its increments
/// wait in librdkafka's queue and its merges resume where they stopped. Stops when dropped,
/// after handing its last increments to the broker (waiting up to one second).
///
/// ```compile_fail
/// #![deny(unused_must_use)]
/// fn start(engine: elvon::Engine) -> Result<(), elvon::kafka::KafkaError> {
///     let options = elvon::kafka::FleetOptions::new("localhost:9092", "learner", "rewards");
///     elvon::kafka::FleetSync::spawn(engine, &options)?;
///     Ok(())
/// }
/// ```
#[must_use = "dropping the handle stops the fleet thread"]
pub struct FleetSync {
    ready: Arc<AtomicBool>,
    counters: Arc<Counters>,
    _thread: crate::background::Background,
}

impl std::fmt::Debug for FleetSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetSync")
            .field("ready", &self.is_ready())
            .finish_non_exhaustive()
    }
}

impl FleetSync {
    /// Joins the engine to the fleet and starts the instance's thread.
    ///
    /// # Errors
    /// A [`KafkaError::Client`] when the producer or consumer cannot be made (a refused
    /// setting), the reward topic's partitions cannot be listed, or the thread cannot be
    /// started.
    pub fn spawn(engine: Engine, options: &FleetOptions) -> Result<Self, KafkaError> {
        let counters = Arc::new(Counters::default());
        let in_flight = Arc::new(Mutex::new(Vec::new()));
        let producer: BaseProducer<Reports> = options
            .client()
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", "0")
            .create_with_context(Reports {
                counters: Arc::clone(&counters),
                in_flight: Arc::clone(&in_flight),
            })
            .map_err(|e| KafkaError::rdkafka("fleet producer", &e))?;
        let consumer: BaseConsumer = options
            .client()
            .set("group.id", "elvon-fleet")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("fetch.wait.max.ms", "20")
            .create()
            .map_err(|e| KafkaError::rdkafka("fleet consumer", &e))?;
        let end = watermark(&consumer, &options.learner_topic)?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&options.learner_topic, 0, Offset::Beginning)
            .map_err(|e| KafkaError::rdkafka("", &e))?;
        let meta = consumer
            .fetch_metadata(Some(&options.reward_topic), Duration::from_secs(5))
            .map_err(|e| KafkaError::rdkafka("reward topic partitions", &e))?;
        for t in meta.topics() {
            for p in t.partitions() {
                tpl.add_partition_offset(&options.reward_topic, p.id(), Offset::End)
                    .map_err(|e| KafkaError::rdkafka("", &e))?;
            }
        }
        consumer
            .assign(&tpl)
            .map_err(|e| KafkaError::rdkafka("", &e))?;
        engine.join_fleet();
        let ready = Arc::new(AtomicBool::new(end == 0));
        let run = Run {
            engine,
            producer,
            consumer,
            in_flight,
            counters: Arc::clone(&counters),
            ready: Arc::clone(&ready),
            end,
            learner_topic: options.learner_topic.clone(),
            interval: options.interval,
            seq: 0,
        };
        let thread = crate::background::Background::spawn("elvon-fleet", move |stop| run.run(stop))
            .map_err(|e| KafkaError::client(format!("cannot start the fleet thread: {e}")))?;
        Ok(FleetSync {
            ready,
            counters,
            _thread: thread,
        })
    }

    /// Whether the instance has merged every learner-topic entry that was there when it
    /// started (so it serves the fleet's models).
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Waits until [ready](Self::is_ready), at most `timeout`; returns whether it is.
    pub fn wait_ready(&self, timeout: Duration) -> bool {
        super::wait_until(&self.ready, timeout)
    }

    /// The instance's counters.
    #[must_use]
    pub fn stats(&self) -> FleetStats {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        FleetStats {
            published: l(&c.published),
            merged: l(&c.merged),
            bad_entries: l(&c.bad_entries),
            position: l(&c.position),
            rewards_applied: l(&c.rewards_applied),
            rewards_not_applied: l(&c.rewards_not_applied),
            rewards_foreign: l(&c.rewards_foreign),
            rewards_invalid: l(&c.rewards_invalid),
            errors: l(&c.errors),
            last_error: c.last_error.lock().ok().and_then(|g| g.clone()),
        }
    }
}

/// The learner topic's end (its high watermark; 0 when it does not exist yet).
fn watermark(consumer: &BaseConsumer, topic: &str) -> Result<i64, KafkaError> {
    match consumer.fetch_watermarks(topic, 0, Duration::from_secs(5)) {
        Ok((_, high)) => Ok(high),
        Err(e) if super::is_unknown_topic(&e) => Ok(0),
        Err(e) => Err(KafkaError::rdkafka("learner topic end", &e)),
    }
}

/// Learner-topic entries are cut at about this size (librdkafka's default
/// `message.max.bytes` is 1,000,000).
const MAX_ENTRY_BYTES: usize = 256 * 1024;

/// A reward message: `{"decision_id": "<32 hex digits>", "reward": 1.0}`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RewardMessage {
    decision_id: crate::DecisionId,
    reward: f64,
}

struct Run {
    engine: Engine,
    producer: BaseProducer<Reports>,
    consumer: BaseConsumer,
    in_flight: Arc<Mutex<Vec<(u64, LearnerState)>>>,
    counters: Arc<Counters>,
    ready: Arc<AtomicBool>,
    /// The learner topic's end at the start: ready once merged up to it.
    end: i64,
    learner_topic: String,
    interval: Duration,
    seq: u64,
}

impl Run {
    fn run(mut self, stop: &crate::background::Stop) {
        let mut last = Instant::now();
        while !stop.is_set() {
            if last.elapsed() >= self.interval {
                self.publish();
                last = Instant::now();
            }
            self.producer.poll(Duration::ZERO);
            let wait = self.interval.saturating_sub(last.elapsed());
            match self.consumer.poll(wait.min(Duration::from_millis(20))) {
                None | Some(Err(RdKafkaError::PartitionEOF(_))) => {}
                Some(Err(e)) => self.counters.error("fleet poll", &e),
                Some(Ok(m)) => self.receive(&m),
            }
        }
        self.publish();
        let _ = self.producer.flush(Duration::from_secs(1));
    }

    /// Appends this instance's increments (with any a failed delivery gave back).
    fn publish(&mut self) {
        let mut batch = self.engine.take_learner_deltas();
        let unsent = self
            .counters
            .unsent
            .lock()
            .map(|mut g| std::mem::take(&mut *g))
            .unwrap_or_default();
        for (_, d) in unsent {
            match &mut batch {
                Some(b) => combine_deltas(b, d),
                None => batch = Some(d),
            }
        }
        let Some(batch) = batch else { return };
        // Entries of at most about MAX_ENTRY_BYTES (whole bandits), so many rules rewarded
        // in one interval never make a message the broker refuses.
        let mut chunk = LearnerState {
            format: batch.format,
            bandits: Vec::new(),
        };
        let mut bytes = 0;
        for b in batch.bandits {
            let size = serde_json::to_vec(&b).map_or(0, |v| v.len());
            if !chunk.bandits.is_empty() && bytes + size > MAX_ENTRY_BYTES {
                let full = LearnerState {
                    format: chunk.format,
                    bandits: std::mem::take(&mut chunk.bandits),
                };
                self.send(full);
                bytes = 0;
            }
            bytes += size;
            chunk.bandits.push(b);
        }
        if !chunk.bandits.is_empty() {
            self.send(chunk);
        }
    }

    /// Appends one entry; on a refused send it goes back to the unsent pile.
    fn send(&mut self, entry: LearnerState) {
        let payload = match serde_json::to_vec(&entry) {
            Ok(p) => p,
            Err(e) => {
                self.counters.error("learner increments not serialized", &e);
                return;
            }
        };
        self.seq += 1;
        let key = format!("{:016x}", self.engine.id_prefix());
        if let Ok(mut g) = self.in_flight.lock() {
            g.push((self.seq, entry));
        }
        let record = BaseRecord::with_opaque_to(&self.learner_topic, Box::new(self.seq))
            .partition(0)
            .key(&key)
            .payload(&payload);
        if let Err((e, _)) = self.producer.send(record) {
            self.counters.error("learner topic send", &e);
            give_back(&self.in_flight, &self.counters, self.seq);
        }
    }

    fn receive(&self, m: &rdkafka::message::BorrowedMessage<'_>) {
        let c = &self.counters;
        if m.topic() == self.learner_topic {
            let position = u64::try_from(m.offset()).map_or(0, |o| o + 1);
            match m.payload().map(serde_json::from_slice::<LearnerState>) {
                Some(Ok(d)) => {
                    let out = self.engine.merge_learner_deltas(&d, position);
                    if out.rejected > 0 {
                        metrics::counter!("elvon_fleet_rejected_total").increment(out.rejected);
                    }
                    c.merged.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("elvon_fleet_merged_total").increment(1);
                }
                _ => {
                    c.bad_entries.fetch_add(1, Ordering::Relaxed);
                    c.error(
                        "learner topic",
                        &format_args!("entry at offset {} is not increments", m.offset()),
                    );
                }
            }
            c.position.store(position, Ordering::Relaxed);
            if i64::try_from(position).is_ok_and(|p| p >= self.end) {
                self.ready.store(true, Ordering::Release);
            }
            return;
        }
        let Some(r) = m
            .payload()
            .and_then(|p| serde_json::from_slice::<RewardMessage>(p).ok())
            .filter(|r| r.reward.is_finite())
        else {
            c.rewards_invalid.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if r.decision_id.prefix() != self.engine.id_prefix() {
            c.rewards_foreign.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match self.engine.reward(r.decision_id, r.reward) {
            RewardOutcome::Applied => c.rewards_applied.fetch_add(1, Ordering::Relaxed),
            _ => c.rewards_not_applied.fetch_add(1, Ordering::Relaxed),
        };
    }
}
