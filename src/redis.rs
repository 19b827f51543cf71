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

use std::future::ready;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture};

use crate::aggregate::{bucket_field, AggregateKind, Aggregates, Event, Op};
use crate::features::{FeatureSource, Features, FetchFuture, FetchRequest, SourceError, Value};

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

fn command_error(what: &str, e: redis::RedisError) -> RedisError {
    RedisError::Command {
        what: what.to_owned(),
        source: Box::new(e),
    }
}

/// The connection: one node or a cluster. Both pipeline concurrent requests.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }
    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }
    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// The source's private runtime, owned by the source and its writers (never by the tasks
/// running on it, so it is not dropped on its own worker), and shut down without blocking,
/// so dropping the source inside async code is fine.
struct OwnedRuntime(Option<tokio::runtime::Runtime>);

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Breaker states, as the gauge reports them.
const CLOSED: u32 = 0;
const OPEN: u32 = 1;
const PROBING: u32 = 2;

/// A consecutive-failure circuit breaker.
struct Breaker {
    threshold: u32,
    cool_down: Duration,
    epoch: Instant,
    failures: AtomicU32,
    state: AtomicU32,
    /// Monotonic ms (since `epoch`) when an open breaker may probe.
    retry_at: AtomicU64,
    probe_out: AtomicBool,
}

impl Breaker {
    fn new(threshold: u32, cool_down: Duration) -> Self {
        Breaker {
            threshold: threshold.max(1),
            cool_down,
            epoch: Instant::now(),
            failures: AtomicU32::new(0),
            state: AtomicU32::new(CLOSED),
            retry_at: AtomicU64::new(0),
            probe_out: AtomicBool::new(false),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// `Ok` to go ahead; `Err` while open (or while another probe is out).
    fn admit(&self) -> Result<(), SourceError> {
        if self.state.load(Ordering::Acquire) == CLOSED {
            return Ok(());
        }
        let now = self.now();
        let at = self.retry_at.load(Ordering::Acquire);
        if now >= at
            && self
                .probe_out
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.set_state(PROBING);
            return Ok(());
        }
        Err(SourceError::Unavailable(format!(
            "redis circuit breaker open after {} consecutive failures; next probe in {} ms",
            self.failures.load(Ordering::Relaxed),
            at.saturating_sub(now)
        )))
    }

    fn success(&self) {
        self.failures.store(0, Ordering::Relaxed);
        if self.state.load(Ordering::Acquire) != CLOSED {
            self.probe_out.store(false, Ordering::Release);
            self.set_state(CLOSED);
        }
    }

    fn failure(&self) {
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let state = self.state.load(Ordering::Acquire);
        if state == PROBING || (state == CLOSED && n >= self.threshold) {
            let cool = u64::try_from(self.cool_down.as_millis()).unwrap_or(u64::MAX);
            self.retry_at
                .store(self.now().saturating_add(cool), Ordering::Release);
            self.set_state(OPEN);
            self.probe_out.store(false, Ordering::Release);
        }
    }

    fn set_state(&self, s: u32) {
        if self.state.swap(s, Ordering::AcqRel) != s {
            metrics::gauge!("elvon_redis_breaker_state").set(f64::from(s));
            if s == OPEN {
                metrics::counter!("elvon_redis_breaker_opened_total").increment(1);
            }
        }
    }
}

/// How the breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakerState {
    /// Calls go to Redis.
    Closed,
    /// Calls fail at once until the cool-down passes.
    Open,
    /// One probe call is out; its result closes or re-opens the breaker.
    Probing,
}

/// How one requested feature is read from the user's hash.
enum Part {
    /// One field, decoded from JSON.
    Plain,
    /// One field holding an all-time counter or sum.
    Total(AggregateKind),
    /// `n` bucket fields summed.
    Window(AggregateKind, usize),
}

struct Shared {
    // Field order matters for drop: connections before the runtime that drives them.
    conn: Conn,
    prefix: String,
    breaker: Breaker,
    cache: Option<Cache>,
    aggregates: Aggregates,
    clock: Clock,
    command_timeout: Duration,
    /// Where tasks run (the private runtime's handle, or the application's).
    rt: tokio::runtime::Handle,
}

/// Reads user features from Redis (see the [module docs](self) for the layout), under the
/// request's deadline, behind a circuit breaker and an optional local cache.
///
/// Cheap to clone; clones share the connection, breaker and cache.
#[derive(Clone)]
pub struct RedisFeatureSource {
    shared: Arc<Shared>,
    _runtime: Option<Arc<OwnedRuntime>>,
}

impl std::fmt::Debug for RedisFeatureSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisFeatureSource")
            .field("prefix", &self.shared.prefix)
            .field("cluster", &matches!(self.shared.conn, Conn::Cluster(_)))
            .field("breaker", &self.breaker_state())
            .finish()
    }
}

/// Builds a [`RedisFeatureSource`].
#[must_use]
pub struct RedisFeatureSourceBuilder {
    urls: Vec<String>,
    cluster: bool,
    prefix: String,
    breaker_failures: u32,
    breaker_cool_down: Duration,
    cache: Option<(Duration, u64)>,
    aggregates: Aggregates,
    clock: Option<Clock>,
    runtime: Option<tokio::runtime::Handle>,
    command_timeout: Duration,
    connect_timeout: Duration,
}

impl RedisFeatureSource {
    /// A builder for one Redis node at `url` (`redis://127.0.0.1:6379/0`).
    pub fn builder(url: impl Into<String>) -> RedisFeatureSourceBuilder {
        RedisFeatureSourceBuilder {
            urls: vec![url.into()],
            cluster: false,
            prefix: "elvon:f:".to_owned(),
            breaker_failures: 5,
            breaker_cool_down: Duration::from_secs(1),
            cache: None,
            aggregates: Aggregates::default(),
            clock: None,
            runtime: None,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            connect_timeout: Duration::from_secs(1),
        }
    }

    /// A builder for a Redis Cluster reached through any of `urls`.
    pub fn cluster_builder<S: Into<String>>(
        urls: impl IntoIterator<Item = S>,
    ) -> RedisFeatureSourceBuilder {
        let mut b = Self::builder(String::new());
        b.urls = urls.into_iter().map(Into::into).collect();
        b.cluster = true;
        b
    }

    /// The state of the circuit breaker.
    #[must_use]
    pub fn breaker_state(&self) -> BreakerState {
        match self.shared.breaker.state.load(Ordering::Acquire) {
            CLOSED => BreakerState::Closed,
            OPEN => BreakerState::Open,
            _ => BreakerState::Probing,
        }
    }

    /// The hash key of `user`.
    #[must_use]
    pub fn key(&self, user: &str) -> String {
        self.shared.key(user)
    }

    /// An [`AggregatesWriter`] sharing this source's connection, clock and aggregates.
    #[must_use]
    pub fn writer(&self) -> AggregatesWriter {
        AggregatesWriter {
            shared: Arc::clone(&self.shared),
            _runtime: self._runtime.clone(),
            dedup_ttl: Duration::from_secs(86_400),
            key_ttl: None,
        }
    }

    /// Writes plain features of `user` (JSON-encoded `HSET`; non-finite floats are
    /// rejected). Blocks the calling thread for at most the command timeout (from async code,
    /// call it through `spawn_blocking`).
    pub fn set_features(&self, user: &str, features: &Features) -> Result<(), RedisError> {
        if features.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("HSET");
        cmd.arg(self.key(user));
        for (name, v) in features.iter() {
            cmd.arg(name).arg(encode(v).map_err(|m| {
                RedisError::Config(format!("feature {name:?} of user {user:?}: {m}"))
            })?);
        }
        let sh = Arc::clone(&self.shared);
        self.run("HSET", async move {
            let mut c = sh.conn.clone();
            cmd.query_async::<()>(&mut c).await
        })
    }

    /// Fetches `names` of many users in one pipeline (single node) or in concurrent requests
    /// (cluster, one per node's share); the answer is in the order of `users`. Bypasses the
    /// cache and the breaker; blocks the calling thread for at most the command timeout (from
    /// async code, call it through `spawn_blocking`).
    pub fn fetch_many(&self, users: &[&str], names: &[&str]) -> Result<Vec<Features>, RedisError> {
        let now = (self.shared.clock)();
        let names: Vec<Box<str>> = names.iter().map(|&n| n.into()).collect();
        let (fields, plan) = self.shared.plan(&names, now);
        let keys: Vec<String> = users.iter().map(|u| self.key(u)).collect();
        let sh = Arc::clone(&self.shared);
        let rows: Vec<Vec<Option<String>>> = self.run("HMGET (batch)", async move {
            let mut conn = sh.conn.clone();
            if matches!(conn, Conn::Cluster(_)) {
                let futs = keys.iter().map(|k| {
                    let mut c = conn.clone();
                    let cmd = hmget(k, &fields);
                    async move { cmd.query_async::<Vec<Option<String>>>(&mut c).await }
                });
                futures_util::future::try_join_all(futs).await
            } else {
                let mut p = redis::pipe();
                for k in &keys {
                    p.add_command(hmget(k, &fields));
                }
                p.query_async(&mut conn).await
            }
        })?;
        Ok(rows
            .into_iter()
            .map(|vals| decode(&names, &plan, vals))
            .collect())
    }

    /// Runs `fut` on the source's runtime, waiting at most the command timeout.
    fn run<T: Send + 'static>(
        &self,
        what: &str,
        fut: impl std::future::Future<Output = redis::RedisResult<T>> + Send + 'static,
    ) -> Result<T, RedisError> {
        run_on(&self.shared.rt, self.shared.command_timeout, what, fut)
    }
}

/// Runs `fut` on `rt`, waiting on the calling thread at most `timeout` for it.
fn run_on<T: Send + 'static>(
    rt: &tokio::runtime::Handle,
    timeout: Duration,
    what: &str,
    fut: impl std::future::Future<Output = redis::RedisResult<T>> + Send + 'static,
) -> Result<T, RedisError> {
    let task = rt.spawn(async move { tokio::time::timeout(timeout, fut).await });
    let deadline = crate::clock::deadline(timeout.saturating_add(Duration::from_millis(100)));
    match crate::features::block_on(task, deadline) {
        Some(Ok(Ok(Ok(v)))) => Ok(v),
        Some(Ok(Ok(Err(e)))) => Err(command_error(what, e)),
        Some(Err(e)) => Err(RedisError::Command {
            what: what.to_owned(),
            source: Box::new(e),
        }),
        Some(Ok(Err(_))) | None => Err(RedisError::Timeout(what.to_owned())),
    }
}

fn hmget(key: &str, fields: &[String]) -> Cmd {
    let mut cmd = redis::cmd("HMGET");
    cmd.arg(key).arg(fields);
    cmd
}

impl std::fmt::Debug for RedisFeatureSourceBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisFeatureSourceBuilder")
            .field("urls", &self.urls)
            .field("cluster", &self.cluster)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisFeatureSourceBuilder {
    /// Key prefix of the user hashes (default `elvon:f:`). Must not contain `{` or `}`.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Consecutive failures (timeouts or errors) that open the breaker (default 5).
    pub fn breaker_failures(mut self, n: u32) -> Self {
        self.breaker_failures = n;
        self
    }

    /// How long an open breaker waits before letting a probe through (default 1 s).
    pub fn breaker_cool_down(mut self, d: Duration) -> Self {
        self.breaker_cool_down = d;
        self
    }

    /// Caches answers locally for `ttl`, at most `max_entries` of them (default: no cache).
    /// A cached answer does not see writes made during its TTL.
    pub fn cache(mut self, ttl: Duration, max_entries: u64) -> Self {
        self.cache = Some((ttl, max_entries));
        self
    }

    /// The aggregate definitions, so reads of windowed features sum their live buckets and
    /// the [`AggregatesWriter`] knows what events do.
    pub fn aggregates(mut self, aggregates: Aggregates) -> Self {
        self.aggregates = aggregates;
        self
    }

    /// The clock windows are read and written against (default: the system clock).
    pub fn clock(mut self, clock: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// Runs the client on this Tokio runtime instead of a private one-thread runtime.
    pub fn runtime(mut self, handle: tokio::runtime::Handle) -> Self {
        self.runtime = Some(handle);
        self
    }

    /// Limit on writes and batch fetches (default [`DEFAULT_COMMAND_TIMEOUT`]); fetches for
    /// decisions use the engine's deadline instead.
    pub fn command_timeout(mut self, d: Duration) -> Self {
        self.command_timeout = d;
        self
    }

    /// Limit on establishing a connection (default 1 s).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// The source. A single-node source connects lazily (it can be built while Redis is
    /// down, and reconnects on its own); a cluster source connects here to learn the slots.
    pub fn build(self) -> Result<RedisFeatureSource, RedisError> {
        if self.prefix.contains(['{', '}']) {
            return Err(RedisError::Config(format!(
                "key prefix {:?} must not contain braces (the user is the hash tag)",
                self.prefix
            )));
        }
        if self.urls.is_empty() || self.urls.iter().any(String::is_empty) {
            return Err(RedisError::Config("no Redis URL given".into()));
        }
        let (rt, owned) = match self.runtime {
            Some(h) => (h, None),
            None => {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("elvon-redis")
                    .enable_all()
                    .build()
                    .map_err(|e| RedisError::Connect {
                        target: "tokio runtime".into(),
                        source: Box::new(e),
                    })?;
                (rt.handle().clone(), Some(Arc::new(OwnedRuntime(Some(rt)))))
            }
        };
        let target = self.urls.join(",");
        let connect_err = |e: redis::RedisError| RedisError::Connect {
            target: target.clone(),
            source: Box::new(e),
        };
        let conn = if self.cluster {
            let client = redis::cluster::ClusterClient::builder(self.urls.clone())
                .connection_timeout(self.connect_timeout)
                .retries(2)
                .build()
                .map_err(connect_err)?;
            let connect = async move { client.get_async_connection().await };
            let what = format!("connect to {target}");
            match run_on(&rt, self.connect_timeout.saturating_mul(2), &what, connect) {
                Ok(c) => Conn::Cluster(c),
                Err(RedisError::Command { source, .. }) => {
                    return Err(RedisError::Connect {
                        target: target.clone(),
                        source,
                    })
                }
                Err(e) => return Err(e),
            }
        } else {
            let client = redis::Client::open(self.urls[0].as_str()).map_err(connect_err)?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(self.connect_timeout))
                .set_number_of_retries(1)
                .set_min_delay(Duration::from_millis(10))
                .set_max_delay(Duration::from_millis(100));
            let _guard = rt.enter();
            Conn::Single(
                ConnectionManager::new_lazy_with_config(client, config).map_err(connect_err)?,
            )
        };
        let cache = self.cache.map(|(ttl, n)| Cache {
            map: quick_cache::sync::Cache::new(usize::try_from(n).unwrap_or(usize::MAX).max(1)),
            ttl,
        });
        Ok(RedisFeatureSource {
            shared: Arc::new(Shared {
                conn,
                prefix: self.prefix,
                breaker: Breaker::new(self.breaker_failures, self.breaker_cool_down),
                cache,
                aggregates: self.aggregates,
                clock: self.clock.unwrap_or_else(|| Arc::new(crate::sink::now_ms)),
                command_timeout: self.command_timeout,
                rt,
            }),
            _runtime: owned,
        })
    }
}

impl Shared {
    fn key(&self, user: &str) -> String {
        format!("{}{{{user}}}", self.prefix)
    }

    /// The hash fields to read for `names` at `now`, and how to turn them back into values.
    fn plan(&self, names: &[Box<str>], now: u64) -> (Vec<String>, Vec<Part>) {
        let mut fields = Vec::with_capacity(names.len());
        let mut plan = Vec::with_capacity(names.len());
        for name in names {
            match self.aggregates.get(name) {
                Some(d) if !matches!(d.kind, AggregateKind::Last { .. }) => match d.window {
                    Some(w) => {
                        let first = w.first_live(now);
                        let last = w.bucket(now);
                        for b in first..=last {
                            fields.push(bucket_field(name, b));
                        }
                        plan.push(Part::Window(d.kind.clone(), (last - first + 1) as usize));
                    }
                    None => {
                        fields.push(name.to_string());
                        plan.push(Part::Total(d.kind.clone()));
                    }
                },
                _ => {
                    fields.push(name.to_string());
                    plan.push(Part::Plain);
                }
            }
        }
        (fields, plan)
    }
}

/// Turns HMGET answers back into features, following `plan`.
fn decode(names: &[Box<str>], plan: &[Part], vals: Vec<Option<String>>) -> Features {
    let mut f = Features::with_capacity(names.len());
    let mut vals = vals.into_iter();
    let num = |v: Option<String>| v.and_then(|s| s.trim().parse::<f64>().ok()).unwrap_or(0.0);
    for (name, part) in names.iter().zip(plan) {
        let value = match part {
            Part::Plain => match vals.next().flatten() {
                Some(raw) => decode_value(raw),
                None => continue,
            },
            Part::Total(kind) => kind.total_value(num(vals.next().flatten())),
            Part::Window(kind, n) => {
                let total: f64 = vals.by_ref().take(*n).map(num).sum();
                kind.total_value(total)
            }
        };
        f.insert(name.to_string(), value);
    }
    f
}

/// A field's text as a value: JSON if it parses as one of the value types, else the string.
fn decode_value(raw: String) -> Value {
    serde_json::from_str::<Value>(&raw).unwrap_or(Value::Str(raw.into()))
}

/// A value as field text (JSON).
fn encode(v: &Value) -> Result<String, String> {
    if let Value::Float(x) = v {
        if !x.is_finite() {
            return Err(format!("{x} is not a finite number"));
        }
    }
    serde_json::to_string(v).map_err(|e| e.to_string())
}

/// The local cache: answers by (requested names, user), each valid for `ttl` after it was
/// fetched. `quick_cache` bounds the entries (CLOCK-Pro eviction) and looks keys up by a
/// borrowed form, so a hit allocates only the copy of the answer.
struct Cache {
    map: quick_cache::sync::Cache<CacheKey, (Instant, Features)>,
    ttl: Duration,
}

#[derive(Hash, PartialEq, Eq)]
struct CacheKey {
    names: u64,
    user: Box<str>,
}

/// The borrowed form of [`CacheKey`]; hashes the same fields in the same order.
#[derive(Hash)]
struct CacheKeyRef<'a> {
    names: u64,
    user: &'a str,
}

impl quick_cache::Equivalent<CacheKey> for CacheKeyRef<'_> {
    fn equivalent(&self, key: &CacheKey) -> bool {
        self.names == key.names && self.user == &*key.user
    }
}

impl Cache {
    fn names_id(names: &[Box<str>]) -> u64 {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for n in names {
            h.update(&(n.len() as u64).to_le_bytes());
            h.update(n.as_bytes());
        }
        h.digest()
    }

    fn get(&self, names: u64, user: &str) -> Option<Features> {
        let (at, f) = self.map.get(&CacheKeyRef { names, user })?;
        (at.elapsed() < self.ttl).then_some(f)
    }

    fn insert(&self, names: u64, user: &str, f: Features, fetched: Instant) {
        let key = CacheKey {
            names,
            user: user.into(),
        };
        self.map.insert(key, (fetched, f));
    }
}

impl FeatureSource for RedisFeatureSource {
    fn fetch<'a>(&'a self, request: FetchRequest<'a>) -> FetchFuture<'a> {
        let sh = &self.shared;
        let mut names_id = 0;
        if let Some(c) = &sh.cache {
            names_id = Cache::names_id(request.names);
            if let Some(hit) = c.get(names_id, request.user) {
                metrics::counter!("elvon_feature_cache_total", "result" => "hit").increment(1);
                return Box::pin(ready(Ok(hit)));
            }
            metrics::counter!("elvon_feature_cache_total", "result" => "miss").increment(1);
        }
        if let Err(e) = sh.breaker.admit() {
            return Box::pin(ready(Err(e)));
        }
        let names: Vec<Box<str>> = request.names.to_vec();
        let (fields, plan) = sh.plan(&names, (sh.clock)());
        let cmd = hmget(&sh.key(request.user), &fields);
        let shared = Arc::clone(sh);
        let user = sh.cache.as_ref().map(|_| request.user.to_owned());
        let sent = Instant::now();
        let deadline = tokio::time::Instant::from_std(request.deadline);
        let task = sh.rt.spawn(async move {
            let mut conn = shared.conn.clone();
            let answer = tokio::time::timeout_at(
                deadline,
                cmd.query_async::<Vec<Option<String>>>(&mut conn),
            )
            .await;
            match answer {
                Err(_) => {
                    shared.breaker.failure();
                    Err(SourceError::Timeout)
                }
                Ok(Err(e)) => {
                    shared.breaker.failure();
                    Err(SourceError::backend("redis HMGET", e))
                }
                Ok(Ok(vals)) => {
                    shared.breaker.success();
                    let f = decode(&names, &plan, vals);
                    if let (Some(c), Some(user)) = (&shared.cache, user) {
                        c.insert(names_id, &user, f.clone(), sent);
                    }
                    Ok(f)
                }
            }
        });
        Box::pin(async move {
            task.await
                .unwrap_or_else(|e| Err(SourceError::backend("redis fetch task", e)))
        })
    }
}

/// The Lua script applying one event: dedup by id, then the updates, then the key's TTL.
/// KEYS: user hash, dedup key. ARGV: dedup TTL ms (0: no dedup), key TTL ms (0: none), then
/// ops: `i field n` (HINCRBY), `f field x` (HINCRBYFLOAT), `s field json` (HSET),
/// `p feature first cap` (prune buckets below `first`, at most `cap` of them).
const APPLY_LUA: &str = r"
local dedup = tonumber(ARGV[1])
if dedup > 0 then
  if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', dedup) then return 0 end
end
local i = 3
while i <= #ARGV do
  local op = ARGV[i]
  if op == 'i' then
    redis.call('HINCRBY', KEYS[1], ARGV[i+1], ARGV[i+2]); i = i + 3
  elseif op == 'f' then
    redis.call('HINCRBYFLOAT', KEYS[1], ARGV[i+1], ARGV[i+2]); i = i + 3
  elseif op == 's' then
    redis.call('HSET', KEYS[1], ARGV[i+1], ARGV[i+2]); i = i + 3
  else
    local f = ARGV[i+1]
    local first = tonumber(ARGV[i+2])
    local cap = tonumber(ARGV[i+3])
    local lo = tonumber(redis.call('HGET', KEYS[1], f .. '|lo') or first)
    if lo < first then
      local stop = math.min(first - 1, lo + cap - 1)
      for b = lo, stop do
        redis.call('HDEL', KEYS[1], string.format('%s|%d', f, b))
      end
      lo = first
    end
    redis.call('HSET', KEYS[1], f .. '|lo', string.format('%d', lo))
    i = i + 4
  end
end
local ttl = tonumber(ARGV[2])
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
";

static APPLY_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(APPLY_LUA));

/// What a batch of events did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WriteReport {
    /// Events applied.
    pub applied: u64,
    /// Events skipped because their id was already applied.
    pub duplicates: u64,
    /// Windowed updates left out because the event was older than the window.
    pub stale: u64,
    /// Events matching no aggregate (nothing to write).
    pub ignored: u64,
}

/// Applies behaviour events to Redis: each event is one atomic Lua script (dedup by id,
/// every aggregate it feeds, pruning of buckets that left their window, key TTL); a batch is
/// sent concurrently over the multiplexed connection, so it takes one round trip.
#[derive(Clone)]
pub struct AggregatesWriter {
    shared: Arc<Shared>,
    _runtime: Option<Arc<OwnedRuntime>>,
    dedup_ttl: Duration,
    key_ttl: Option<Duration>,
}

impl std::fmt::Debug for AggregatesWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AggregatesWriter")
            .field("dedup_ttl", &self.dedup_ttl)
            .field("key_ttl", &self.key_ttl)
            .finish()
    }
}

/// Most events a batch sends at once; larger batches go in chunks.
const WRITE_CHUNK: usize = 1_000;

impl AggregatesWriter {
    /// How long event ids are remembered for deduplication (default 24 h).
    #[must_use]
    pub fn dedup_ttl(mut self, ttl: Duration) -> Self {
        self.dedup_ttl = ttl;
        self
    }

    /// A TTL the writer sets on a user's hash after each event, so users who stop sending
    /// events disappear (default none: the hash may hold features written by others). Set
    /// it at least to the longest window ([`Aggregates::longest_window_ms`]).
    #[must_use]
    pub fn key_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.key_ttl = ttl;
        self
    }

    /// Applies `events` at the clock's now. An invalid event rejects the whole batch before
    /// anything is written (the error names the event and value). Blocks the calling thread
    /// (from async code, call it through `spawn_blocking`) for at most the command timeout
    /// per chunk of 1,000 events; on a Redis error, events of the failed chunk may
    /// or may not have been applied; applying them again is safe for events with ids.
    pub fn apply(&self, events: &[Event]) -> Result<WriteReport, RedisError> {
        let sh = &self.shared;
        let now = (sh.clock)();
        let mut report = WriteReport::default();
        let mut prepared = Vec::with_capacity(events.len());
        for e in events {
            let (updates, stale) = sh.aggregates.updates(e, now)?;
            report.stale += stale as u64;
            if updates.is_empty() {
                report.ignored += 1;
                continue;
            }
            prepared.push((e, updates));
        }
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        for chunk in prepared.chunks(WRITE_CHUNK) {
            let mut batch = Vec::with_capacity(chunk.len());
            for (e, updates) in chunk {
                let key = sh.key(&e.user);
                let dedup_key = format!("{key}:e:{}", e.id);
                let dedup = if e.id.is_empty() {
                    0
                } else {
                    ms(self.dedup_ttl).max(1)
                };
                let mut args = vec![dedup.to_string(), self.key_ttl.map_or(0, ms).to_string()];
                let mut pruned: Vec<&str> = Vec::new();
                for u in updates {
                    let field = u.field();
                    let (op, arg) = match &u.op {
                        Op::Incr(n) => ("i", n.to_string()),
                        Op::Add(x) => ("f", x.to_string()),
                        Op::Set(v) => (
                            "s",
                            encode(v).map_err(|m| {
                                RedisError::Config(format!("event {:?}: {m}", e.id))
                            })?,
                        ),
                    };
                    args.extend([op.to_owned(), field, arg]);
                    if let (Some(w), Some(_)) = (u.def.window, u.bucket) {
                        if !pruned.contains(&u.def.feature.as_str()) {
                            pruned.push(&u.def.feature);
                            args.extend([
                                "p".to_owned(),
                                u.def.feature.clone(),
                                w.first_live(now).to_string(),
                                w.buckets.to_string(),
                            ]);
                        }
                    }
                }
                batch.push((key, dedup_key, args));
            }
            let conn = sh.conn.clone();
            let results: Vec<i64> =
                run_on(&sh.rt, sh.command_timeout, "apply events", async move {
                    let futs = batch.iter().map(|(key, dedup_key, args)| {
                        let mut c = conn.clone();
                        let mut inv = APPLY_SCRIPT.key(key);
                        inv.key(dedup_key).arg(args);
                        async move { inv.invoke_async::<i64>(&mut c).await }
                    });
                    futures_util::future::try_join_all(futs).await
                })?;
            for r in results {
                if r == 1 {
                    report.applied += 1;
                } else {
                    report.duplicates += 1;
                }
            }
        }
        Ok(report)
    }
}
