//! The feature source, its builder and `fetch`.

use std::future::ready;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::clock::Clock;
use crate::features::aggregate::Aggregates;
use crate::features::{FeatureSource, Features, FetchFuture, FetchRequest, SourceError};

use super::*;

pub(super) struct Shared {
    // Field order matters for drop: connections before the runtime that drives them.
    pub(super) conn: Conn,
    /// The writer's connection (see [`RedisFeatureSource::writer`]).
    pub(super) write_conn: Conn,
    /// Cap on the value bytes of one fetch.
    pub(super) max_reply_bytes: u64,
    pub(super) prefix: String,
    pub(super) breaker: Breaker,
    pub(super) cache: Option<Cache>,
    pub(super) aggregates: Aggregates,
    pub(super) clock: Clock,
    pub(super) command_timeout: Duration,
    /// Where tasks run (the private runtime's handle, or the application's).
    pub(super) rt: tokio::runtime::Handle,
}

/// Reads user features from Redis (see the [module docs](crate::redis) for the layout), under the
/// request's deadline, behind a circuit breaker and an optional local cache.
///
/// Cheap to clone; clones share the connection, breaker and cache.
#[derive(Clone)]
pub struct RedisFeatureSource {
    pub(super) shared: Arc<Shared>,
    pub(super) _runtime: Option<Arc<OwnedRuntime>>,
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
    breaker_rate: f64,
    breaker_window: Duration,
    breaker_cool_down: Duration,
    max_reply_bytes: u64,
    cache: Option<(Duration, u64)>,
    aggregates: Aggregates,
    clock: Clock,
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
            breaker_rate: 0.5,
            breaker_window: Duration::from_secs(1),
            breaker_cool_down: Duration::from_secs(1),
            max_reply_bytes: DEFAULT_MAX_REPLY_BYTES,
            cache: None,
            aggregates: Aggregates::default(),
            clock: Clock::system(),
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

    /// An [`AggregatesWriter`] sharing this source's clock and aggregates. It writes over a
    /// connection of its own (made when the source was built), so its batches never delay
    /// the source's reads.
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
        let now = self.shared.clock.now_ms();
        let names: Vec<Box<str>> = names.iter().map(|&n| n.into()).collect();
        let (fields, plan) = self.shared.plan(&names, now);
        let cmds: Vec<redis::Cmd> = users.iter().map(|u| hmget(&self.key(u), &fields)).collect();
        let sh = Arc::clone(&self.shared);
        let rows: Vec<Vec<Option<Vec<u8>>>> =
            self.run(
                "HMGET (batch)",
                async move { query_each(&sh.conn, cmds).await },
            )?;
        rows.into_iter()
            .zip(users)
            .map(|(vals, user)| {
                decode(&names, &plan, vals).map_err(|m| RedisError::Data {
                    user: (*user).to_owned(),
                    message: m,
                })
            })
            .collect()
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

    /// Failures (timeouts or errors reaching Redis) within the breaker's window that open
    /// it, when they are also at least [`breaker_failure_rate`](Self::breaker_failure_rate)
    /// of the window's calls (default 5). Errors about one user's data (a key of the wrong
    /// type, a value that does not decode, a reply over
    /// [`max_reply_bytes`](Self::max_reply_bytes)) are not failures of Redis: that user gets
    /// a fallback, the breaker does not count them.
    pub fn breaker_failures(mut self, n: u32) -> Self {
        self.breaker_failures = n.max(1);
        self
    }

    /// Share of the window's calls that must fail for the breaker to open (default 0.5).
    pub fn breaker_failure_rate(mut self, rate: f64) -> Self {
        self.breaker_rate = if rate.is_finite() {
            rate.clamp(0.0, 1.0)
        } else {
            0.5
        };
        self
    }

    /// The sliding window the breaker counts calls over (default 1 s, in 10 buckets).
    pub fn breaker_window(mut self, d: Duration) -> Self {
        self.breaker_window = d.max(Duration::from_millis(10));
        self
    }

    /// The most bytes of field values one fetch reads for one user (default
    /// [`DEFAULT_MAX_REPLY_BYTES`]): Redis checks the sizes (`HSTRLEN`) before sending the
    /// values, so one user with a huge field cannot tie up the connection; that user gets a
    /// fallback.
    pub fn max_reply_bytes(mut self, n: u64) -> Self {
        self.max_reply_bytes = n;
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

    /// The clock aggregate windows are read and written against, and the breaker's window
    /// and cool-down are measured on (default: the system clock). A
    /// [`Clock::fake`](crate::clock::Clock::fake) lets tests move time instead of sleeping.
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
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
        let (rt, owned) = match self.runtime.clone() {
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
        let conn = self.connect(&rt)?;
        // The writer's own connection: its Lua batches must not queue in front of the
        // deciding reads on one multiplexed connection (they made HMGETs miss their
        // deadline and open the breaker).
        let write_conn = self.connect(&rt)?;
        let cache = self.cache.map(|(ttl, n)| Cache {
            map: quick_cache::sync::Cache::new(usize::try_from(n).unwrap_or(usize::MAX).max(1)),
            ttl,
        });
        Ok(RedisFeatureSource {
            shared: Arc::new(Shared {
                conn,
                write_conn,
                max_reply_bytes: self.max_reply_bytes,
                prefix: self.prefix,
                breaker: Breaker::new(
                    self.breaker_failures,
                    self.breaker_rate,
                    self.breaker_window,
                    self.breaker_cool_down,
                    self.clock.clone(),
                ),
                cache,
                aggregates: self.aggregates,
                clock: self.clock,
                command_timeout: self.command_timeout,
                rt,
            }),
            _runtime: owned,
        })
    }
}

impl RedisFeatureSourceBuilder {
    /// One connection to the configured node or cluster.
    fn connect(&self, rt: &tokio::runtime::Handle) -> Result<Conn, RedisError> {
        let target = self.urls.join(",");
        let connect_err = |e: redis::RedisError| RedisError::Connect {
            target: target.clone(),
            source: Box::new(e),
        };
        if self.cluster {
            let client = redis::cluster::ClusterClient::builder(self.urls.clone())
                .connection_timeout(self.connect_timeout)
                .retries(2)
                .build()
                .map_err(connect_err)?;
            let connect = async move { client.get_async_connection().await };
            let what = format!("connect to {target}");
            return match run_on(rt, self.connect_timeout.saturating_mul(2), &what, connect) {
                Ok(c) => Ok(Conn::Cluster(c)),
                Err(RedisError::Command { source, .. }) => Err(RedisError::Connect {
                    target: target.clone(),
                    source,
                }),
                Err(e) => Err(e),
            };
        }
        let client = redis::Client::open(self.urls[0].as_str()).map_err(connect_err)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(100));
        let _guard = rt.enter();
        Ok(Conn::Single(
            ConnectionManager::new_lazy_with_config(client, config).map_err(connect_err)?,
        ))
    }
}

impl FeatureSource for RedisFeatureSource {
    fn fetch<'a>(&'a self, request: FetchRequest<'a>) -> FetchFuture<'a> {
        let sh = &self.shared;
        let mut names_id = 0;
        // A sticky slot's fetch carries its assignment field: never answered from the
        // cache, which would hide assignments made since.
        let sticky = request
            .names
            .iter()
            .any(|n| n.starts_with(crate::sticky::FIELD_PREFIX));
        let cache = sh.cache.as_ref().filter(|_| !sticky);
        if let Some(c) = cache {
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
        let (fields, plan) = sh.plan(&names, sh.clock.now_ms());
        let mut inv = FETCH_SCRIPT.key(sh.key(request.user));
        inv.arg(sh.max_reply_bytes).arg(&fields);
        let shared = Arc::clone(sh);
        let user = cache.map(|_| request.user.to_owned());
        let sent = Instant::now();
        let deadline = tokio::time::Instant::from_std(request.deadline);
        let task = sh.rt.spawn(async move {
            let mut conn = shared.conn.clone();
            let answer = tokio::time::timeout_at(
                deadline,
                inv.invoke_async::<Vec<Option<Vec<u8>>>>(&mut conn),
            )
            .await;
            match answer {
                Err(_) => {
                    shared.breaker.failure();
                    Err(SourceError::Timeout)
                }
                // About this user's data, not about Redis: Redis answered.
                Ok(Err(e)) if is_per_key(&e) => {
                    shared.breaker.success();
                    Err(SourceError::Data(data_message(&e)))
                }
                Ok(Err(e)) => {
                    shared.breaker.failure();
                    Err(SourceError::backend("redis HMGET", e))
                }
                Ok(Ok(vals)) => {
                    shared.breaker.success();
                    let f = decode(&names, &plan, vals).map_err(SourceError::Data)?;
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
