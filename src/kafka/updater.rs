//! The behaviour-event consumer.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset};

use super::dead_letter::{DeadLetters, Raw};
use super::{set_property, ApplyError, EventTarget, KafkaError};
use crate::engine::Engine;

/// A reward on the events topic: `{"decision_id": "<32 hex digits>", "reward": 1.0}`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RewardMessage {
    decision_id: crate::DecisionId,
    reward: f64,
}

/// A problem the updater met and carried on from, as given to
/// [`UpdaterOptions::on_error`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UpdaterError {
    /// Polling the consumer failed (the broker is unreachable, a rebalance error, …).
    #[error("kafka poll: {0}")]
    Poll(String),
    /// The target failed to apply a batch.
    #[error("event target: {0}")]
    Apply(ApplyError),
    /// The target rejected a batch for good; its messages go to the dead-letter topic.
    #[error("event target rejected {events} event(s), dead-lettering them: {error}")]
    Rejected {
        /// Events in the batch.
        events: usize,
        /// The target's error.
        error: ApplyError,
    },
    /// Writing to the dead-letter topic failed; the offsets stay uncommitted and the write
    /// is retried.
    #[error("{0}")]
    DeadLetter(String),
    /// Committing offsets failed (retried with the next batch).
    #[error("kafka commit: {0}")]
    Commit(String),
}

type OnError = Arc<dyn Fn(&UpdaterError) + Send + Sync>;

/// Settings of a [`FeatureUpdater`].
#[derive(Clone)]
#[must_use]
pub struct UpdaterOptions {
    brokers: String,
    group: String,
    topics: Vec<String>,
    dead_letter: String,
    batch: usize,
    aggregates: Arc<crate::features::aggregate::Aggregates>,
    settings: Vec<(String, String)>,
    dead_letter_settings: Vec<(String, String)>,
    on_error: Option<OnError>,
    permanent_retries: u32,
}

impl std::fmt::Debug for UpdaterOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpdaterOptions")
            .field("brokers", &self.brokers)
            .field("group", &self.group)
            .field("topics", &self.topics)
            .field("dead_letter", &self.dead_letter)
            .field("batch", &self.batch)
            .field("settings", &self.settings)
            .field("dead_letter_settings", &self.dead_letter_settings)
            .finish_non_exhaustive()
    }
}

impl UpdaterOptions {
    /// Consumer group `group` on `brokers`, reading `topics`; events that cannot be parsed
    /// or validated against `aggregates` go to `dead_letter`.
    pub fn new<S: Into<String>>(
        brokers: impl Into<String>,
        group: impl Into<String>,
        topics: impl IntoIterator<Item = S>,
        dead_letter: impl Into<String>,
        aggregates: Arc<crate::features::aggregate::Aggregates>,
    ) -> Self {
        UpdaterOptions {
            brokers: brokers.into(),
            group: group.into(),
            topics: topics.into_iter().map(Into::into).collect(),
            dead_letter: dead_letter.into(),
            batch: 500,
            aggregates,
            settings: Vec::new(),
            dead_letter_settings: Vec::new(),
            on_error: None,
            permanent_retries: 3,
        }
    }

    /// Sets any librdkafka consumer property (`session.timeout.ms`, `fetch.min.bytes`, …),
    /// replacing an earlier value. The updater's own `enable.auto.commit=false` cannot be
    /// overridden.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        set_property(&mut self.settings, key.into(), value.into());
        self
    }

    /// Sets any librdkafka producer property of the dead-letter producer (defaults
    /// `acks=all`, `message.timeout.ms=10000`), replacing an earlier value. Its
    /// `message.max.bytes` (librdkafka's default 1,000,000) decides which poison messages are
    /// dead-lettered whole: a larger one is sent as a 64 KiB prefix with the headers
    /// `elvon-truncated: true` and `elvon-original-size`, never dropped silently.
    pub fn dead_letter_set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        set_property(&mut self.dead_letter_settings, key.into(), value.into());
        self
    }

    /// Called on the updater thread with every problem it meets and carries on from (also
    /// counted in [`UpdaterStats`], kept in [`UpdaterStats::last_error`] and counted in
    /// `elvon_updater_errors_total{kind}`).
    pub fn on_error(mut self, f: impl Fn(&UpdaterError) + Send + Sync + 'static) -> Self {
        self.on_error = Some(Arc::new(f));
        self
    }

    /// How often a batch the target rejects permanently is tried before its messages go to
    /// the dead-letter topic (default 3, at least 1).
    pub fn permanent_retries(mut self, n: u32) -> Self {
        self.permanent_retries = n.max(1);
        self
    }

    /// Most events applied (and committed) at once (default 500).
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch = n.max(1);
        self
    }
}

/// Counters of a [`FeatureUpdater`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UpdaterStats {
    /// Events handed to the target (including redeliveries the target recognised).
    pub applied: u64,
    /// Messages written to the dead-letter topic (confirmed by the broker).
    pub dead_lettered: u64,
    /// Attempts to write a dead letter that failed (each is retried; its offset stays
    /// uncommitted until it is confirmed).
    pub dead_letter_failed: u64,
    /// Failed `EventTarget::apply` calls (each retried, or dead-lettered when permanent).
    pub apply_errors: u64,
    /// Events the target rejected permanently, sent to the dead-letter topic.
    pub rejected: u64,
    /// Failed consumer polls and commits.
    pub poll_errors: u64,
    /// The last problem met, if any.
    pub last_error: Option<Arc<str>>,
    /// Reward messages read (each also counted below when an engine is given).
    pub rewards: u64,
    /// Rewards the engine applied.
    pub rewards_applied: u64,
    /// Rewards for this engine's decisions that it did not apply (unknown, expired, already
    /// rewarded, out of range; see [`RewardStats`](crate::RewardStats)).
    pub rewards_not_applied: u64,
    /// Rewards for decisions of another engine (another id prefix): not given to this one.
    /// In a fleet the updater's consumer group hands each reward to one instance only, so
    /// send rewards to a [`FleetSync`](super::FleetSync) reward topic instead.
    pub rewards_foreign: u64,
    /// Batches committed.
    pub commits: u64,
    /// Messages behind the end of the assigned partitions, as of the last check (once a
    /// second; `None` before the first); also gauge `elvon_updater_lag`.
    pub lag: Option<u64>,
}

#[derive(Default)]
struct UpdaterCounters {
    applied: AtomicU64,
    dead_lettered: AtomicU64,
    dead_letter_failed: AtomicU64,
    apply_errors: AtomicU64,
    rejected: AtomicU64,
    poll_errors: AtomicU64,
    rewards: AtomicU64,
    rewards_applied: AtomicU64,
    rewards_not_applied: AtomicU64,
    rewards_foreign: AtomicU64,
    commits: AtomicU64,
    lag: AtomicU64,
    last_error: std::sync::Mutex<Option<Arc<str>>>,
}

impl UpdaterCounters {
    /// Counts, keeps and reports a problem.
    fn problem(&self, o: &UpdaterOptions, e: &UpdaterError) {
        let (counter, kind) = match e {
            UpdaterError::Poll(_) | UpdaterError::Commit(_) => (&self.poll_errors, "poll"),
            UpdaterError::Apply(_) => (&self.apply_errors, "apply"),
            UpdaterError::Rejected { .. } => (&self.apply_errors, "rejected"),
            UpdaterError::DeadLetter(_) => (&self.dead_letter_failed, "dead_letter"),
        };
        counter.fetch_add(1, Relaxed);
        metrics::counter!("elvon_updater_errors_total", "kind" => kind).increment(1);
        if let Ok(mut g) = self.last_error.lock() {
            *g = Some(e.to_string().into());
        }
        if let Some(f) = &o.on_error {
            f(e);
        }
    }
}

/// Consumes behaviour events (and rewards) from Kafka in a consumer group, applies them to an
/// [`EventTarget`] in batches and commits after each applied batch: at-least-once, made
/// exactly-once in effect by the target's deduplication by event id. A message that is not
/// a valid event or reward goes to the dead-letter topic with the error in the header
/// `elvon-error` (and `elvon-topic`, `elvon-partition`, `elvon-offset`), and consumption
/// carries on. Offsets are committed only once every dead letter of the batch is confirmed
/// by the broker; a dead-letter write that fails is retried, counted in
/// [`UpdaterStats::dead_letter_failed`], and holds the commit (and further consumption)
/// until it succeeds. Target failures and poll errors are counted, kept as
/// [`UpdaterStats::last_error`] and given to [`UpdaterOptions::on_error`]. Rewards (`{"decision_id", "reward"}`) go to
/// `Engine::reward` when an engine is given. Stops (after committing what it applied) when
/// dropped or [`stop`](FeatureUpdater::stop)ped.
///
/// Metrics: `elvon_updater_events_total{outcome="applied"|"dead_letter"|"reward"}` (its rate
/// is the throughput) and gauge `elvon_updater_lag`.
///
/// ```compile_fail
/// #![deny(unused_must_use)]
/// use elvon::kafka::{FeatureUpdater, MemoryTarget, UpdaterOptions};
/// fn start(o: UpdaterOptions, t: MemoryTarget) -> Result<(), elvon::kafka::KafkaError> {
///     FeatureUpdater::spawn(o, t, None)?; // dropped at once: the updater stops
///     Ok(())
/// }
/// ```
#[must_use = "dropping the handle stops the updater thread"]
pub struct FeatureUpdater {
    counters: Arc<UpdaterCounters>,
    thread: crate::background::Background,
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
    ) -> Result<Self, KafkaError> {
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
            .map_err(|e| KafkaError::rdkafka("", &e))?;
        let topics: Vec<&str> = options.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| KafkaError::rdkafka("", &e))?;
        let mut dlq = DeadLetters::new(
            &options.brokers,
            &options.dead_letter,
            &options.dead_letter_settings,
        )?;
        let counters = Arc::new(UpdaterCounters::default());
        let c = Arc::clone(&counters);
        let thread = crate::background::Background::spawn("elvon-feature-updater", move |stop| {
            consume_loop(
                &consumer,
                &mut dlq,
                &options,
                &target,
                engine.as_ref(),
                stop,
                &c,
            );
        })
        .map_err(|e| KafkaError::client(format!("cannot start the updater: {e}")))?;
        Ok(FeatureUpdater { counters, thread })
    }

    /// The counters so far.
    #[must_use]
    pub fn stats(&self) -> UpdaterStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Relaxed);
        UpdaterStats {
            applied: get(&c.applied),
            dead_lettered: get(&c.dead_lettered),
            dead_letter_failed: get(&c.dead_letter_failed),
            apply_errors: get(&c.apply_errors),
            rejected: get(&c.rejected),
            poll_errors: get(&c.poll_errors),
            rewards: get(&c.rewards),
            rewards_applied: get(&c.rewards_applied),
            rewards_not_applied: get(&c.rewards_not_applied),
            rewards_foreign: get(&c.rewards_foreign),
            commits: get(&c.commits),
            lag: get(&c.lag).checked_sub(1),
            last_error: c.last_error.lock().ok().and_then(|g| g.clone()),
        }
    }

    /// Stops after the current batch is applied and committed, and waits for that.
    pub fn stop(mut self) {
        self.thread.stop();
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
    Event(crate::features::aggregate::Event),
    Reward(RewardMessage),
}

fn parse(
    payload: Option<&[u8]>,
    aggs: &crate::features::aggregate::Aggregates,
    now_ms: u64,
) -> Result<Parsed, String> {
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
    let e: crate::features::aggregate::Event =
        serde_json::from_value(json).map_err(|e| format!("not an event: {e}"))?;
    // Validated against the target's clock, so an event dated far in the future is poison.
    aggs.updates(&e, now_ms).map_err(|e| e.to_string())?;
    Ok(Parsed::Event(e))
}

fn consume_loop(
    consumer: &BaseConsumer,
    dlq: &mut DeadLetters,
    o: &UpdaterOptions,
    target: &dyn EventTarget,
    engine: Option<&Engine>,
    stop: &crate::background::Stop,
    c: &UpdaterCounters,
) {
    let mut batch = Vec::with_capacity(o.batch);
    let mut raws: Vec<Raw> = Vec::with_capacity(o.batch);
    let mut uncommitted = false;
    let mut last_lag = std::time::Instant::now();
    let mut dlq_backoff = Duration::from_millis(100);
    loop {
        let stopping = stop.is_set();
        let started = std::time::Instant::now();
        // While dead letters wait for confirmation nothing new is taken in: their offsets
        // must not be committed, and the backlog of unconfirmed letters stays bounded.
        while !stopping
            && dlq.pending() == 0
            && batch.len() < o.batch
            && started.elapsed() < Duration::from_millis(100)
        {
            let m = match consumer.poll(Duration::from_millis(20)) {
                None => continue,
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    c.problem(o, &UpdaterError::Poll(e.to_string()));
                    continue;
                }
            };
            uncommitted = true;
            match parse(m.payload(), &o.aggregates, target.now_ms()) {
                Ok(Parsed::Event(e)) => {
                    batch.push(e);
                    raws.push(Raw::of(&m));
                }
                Ok(Parsed::Reward(r)) => {
                    c.rewards.fetch_add(1, Relaxed);
                    let outcome = match engine {
                        Some(e) if r.decision_id.prefix() != e.id_prefix() => {
                            c.rewards_foreign.fetch_add(1, Relaxed);
                            "reward_foreign"
                        }
                        Some(e) => {
                            if e.reward(r.decision_id, r.reward) == crate::RewardOutcome::Applied {
                                c.rewards_applied.fetch_add(1, Relaxed);
                                "reward"
                            } else {
                                c.rewards_not_applied.fetch_add(1, Relaxed);
                                "reward_not_applied"
                            }
                        }
                        None => "reward",
                    };
                    metrics::counter!("elvon_updater_events_total", "outcome" => outcome)
                        .increment(1);
                }
                Err(why) => dlq.add(Raw::of(&m), why),
            }
        }
        if !batch.is_empty() {
            if !apply_batch(target, &batch, &raws, dlq, o, stop, c) {
                // Stopped while retrying: nothing is committed, and the batch is delivered
                // again to whoever takes the partitions.
                return;
            }
            batch.clear();
            raws.clear();
        }
        if dlq.pending() > 0 {
            let round = dlq.send(Duration::from_secs(10));
            c.dead_lettered.fetch_add(round.confirmed, Relaxed);
            metrics::counter!("elvon_updater_events_total", "outcome" => "dead_letter")
                .increment(round.confirmed);
            if round.failed > 0 {
                let why = round
                    .error
                    .unwrap_or_else(|| "dead-letter write failed".into());
                c.problem(o, &UpdaterError::DeadLetter(why));
                if stop.sleep(dlq_backoff) {
                    return;
                }
                dlq_backoff = (dlq_backoff * 2).min(Duration::from_secs(5));
                continue;
            }
            dlq_backoff = Duration::from_millis(100);
        }
        if uncommitted {
            match consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync) {
                Ok(()) => {
                    uncommitted = false;
                    c.commits.fetch_add(1, Relaxed);
                }
                // Nothing to commit (no new positions): not a problem.
                Err(rdkafka::error::KafkaError::ConsumerCommit(
                    rdkafka::error::RDKafkaErrorCode::NoOffset,
                )) => uncommitted = false,
                Err(e) => c.problem(o, &UpdaterError::Commit(e.to_string())),
            }
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

/// Applies one batch: transient errors are retried (with back-off) until it works, permanent
/// ones `permanent_retries` times, then the batch's messages are dead-lettered. `false` when
/// told to stop before the batch was settled.
fn apply_batch(
    target: &dyn EventTarget,
    batch: &[crate::features::aggregate::Event],
    raws: &[Raw],
    dlq: &mut DeadLetters,
    o: &UpdaterOptions,
    stop: &crate::background::Stop,
    c: &UpdaterCounters,
) -> bool {
    let mut backoff = Duration::from_millis(100);
    let mut permanent = 0;
    loop {
        let error = match target.apply(batch) {
            Ok(()) => {
                c.applied.fetch_add(batch.len() as u64, Relaxed);
                metrics::counter!("elvon_updater_events_total", "outcome" => "applied")
                    .increment(batch.len() as u64);
                return true;
            }
            Err(e) => e,
        };
        if !error.is_transient() {
            permanent += 1;
            if permanent >= o.permanent_retries {
                c.rejected.fetch_add(batch.len() as u64, Relaxed);
                let why = format!("rejected by the event target: {}", error.message());
                c.problem(
                    o,
                    &UpdaterError::Rejected {
                        events: batch.len(),
                        error,
                    },
                );
                for raw in raws {
                    dlq.add(raw.clone(), why.clone());
                }
                return true;
            }
        }
        c.problem(o, &UpdaterError::Apply(error));
        if stop.sleep(backoff) {
            return false;
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
