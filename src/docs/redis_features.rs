//! # Redis feature store (feature `redis`)
//!
//! `elvon::redis::RedisFeatureSource` is a `FeatureSource` for `Engine::decide_for`: it reads, in
//! one round trip (a small Lua script: the values' sizes are checked with `HSTRLEN` against
//! `max_reply_bytes`, then one `HMGET`), only the fields the slot's rules read from the user's hash
//! `elvon:f:{<user>}`
//! (prefix configurable; the braces are a Cluster hash tag). Values are JSON (`42`, `0.5`, `true`,
//! `"KR"`, `["a","b"]`); text that is not JSON is read as a string. It connects to one node (lazily,
//! reconnecting on its own) or to a Redis Cluster (`cluster_builder`).
//!
//! ```rust,no_run
//! # #[cfg(feature = "redis")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # use elvon::Engine;
//! # let now_ms = 1_700_000_000_000;
//! use std::time::Duration;
//! use elvon::features::aggregate::{Aggregate, Aggregates, Event};
//! use elvon::redis::RedisFeatureSource;
//!
//! let aggregates = Aggregates::new(vec![
//!     Aggregate::count("page_view_7d", "page_view").window(Duration::from_secs(86_400), 7),
//!     Aggregate::sum("spend_30d", "purchase", "amount").window(Duration::from_secs(86_400), 30),
//!     Aggregate::last("last_category", "page_view", "category"),
//! ])?;
//! let source = RedisFeatureSource::builder("redis://127.0.0.1:6379/")
//!     .aggregates(aggregates)
//!     .cache(Duration::from_millis(500), 100_000) // optional: TTL and size bound
//!     .build()?;
//! source.writer().apply(&[Event::new("ev-1", "u42", "page_view", now_ms).with("category", "shoes")])?;
//! let engine = Engine::builder().source(source).fetch_deadline(Duration::from_millis(5)).build();
//! let d = engine.decide_for("banner", "u42");
//! println!("{:?} ({:?})", d.variant(), d.feature_status());
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "redis"))]
//! # fn main() {}
//! ```
//!
//! - **Deadline**: a fetch gives up at the engine's fetch deadline (default 5 ms). The decision
//!   is then made on defaults with `Reason::Fallback(SourceTimeout)` (or `SourceError`), and
//!   `decision.feature_status()` says `TimedOut` / `Failed`.
//! - **Circuit breaker**: when, within a sliding window (`breaker_window`, default 1 s), at least
//!   5 fetches failed (`breaker_failures`) and they were at least half of the window's fetches
//!   (`breaker_failure_rate`), fetches fail at once with `Reason::Fallback(SourceUnavailable)` and
//!   `FeatureStatus::Unavailable`. After the cool-down (`breaker_cool_down`, default 1 s) one
//!   probe goes through, and the breaker closes when it succeeds; a failed probe gets one quick
//!   retry 50 ms later. `breaker_state()` and gauge `elvon_redis_breaker_state` (0 closed, 1 open,
//!   2 probing) report it.
//! - **One user's bad data is that user's problem**: a key of the wrong type, a value that is not
//!   UTF-8, or a reply over `max_reply_bytes` (default 1 MiB, checked by Redis with `HSTRLEN`
//!   before any value is sent) gives that user `SourceError::Data` (a `SourceError` fallback);
//!   the breaker does not count it. The aggregates writer has a connection of its own, so its
//!   batches never delay the deciding reads.
//! - **Cache**: with `.cache(ttl, max_entries)`, answers are kept per (user, requested names) in a
//!   `quick_cache` bounded by entries. A cached answer does not see writes made during its TTL.
//!   Counter `elvon_feature_cache_total{result}`.
//! - **Aggregates**: `source.writer().apply(&events)` runs one Lua script per event. The script
//!   checks the event id (a redelivered event is skipped while its id is remembered,
//!   `dedup_ttl`, default 24 h). It then applies every aggregate the event feeds: `HINCRBY` for
//!   counters, `HINCRBYFLOAT` for sums, `HSET` of the JSON value for `last`. It also deletes the
//!   bucket fields that left their window and optionally refreshes the key's TTL (`key_ttl`). A
//!   batch goes out as concurrent requests on the multiplexed connection, so it costs one round
//!   trip. A windowed counter or sum is stored in time buckets (`<name>|<bucket>`), and reads sum
//!   the buckets still inside the window, so old events stop counting. Events older than their
//!   window are not written (`WriteReport::stale`). An invalid event (for example a missing or
//!   non-numeric summed value) rejects the batch with an error naming the event and the field,
//!   before anything is written.
//! - **Batch reads**: `fetch_many(&users, &names)` is one pipeline on a single node, and
//!   concurrent per-key requests on a cluster.
//! - **In memory, the same**: `MemoryStore::apply(&aggregates, &event, now_ms)` applies events
//!   with the same definitions, the same bucket layout and the same id deduplication.
//!   `MemoryStore::read` sums the live buckets, and `MemoryStore::with_aggregates(..)` serves
//!   them to `decide_for`. A test applies the same 2,000 events, some delivered twice, to both
//!   stores and finds every feature equal.
//!
//! Run the example against a local server:
//!
//! ```sh
//! redis-server --port 6379 --save '' --daemonize yes      # Debian: apt-get install redis-server
//! REDIS_URL=redis://127.0.0.1:6379/ cargo run --release --features redis --example redis_features
//! ```
//!
//! It writes 35,531 events for 5,000 users, delivers them a second time (all duplicates), then
//! decides for every user and prints the variant distribution and `decide_for` percentiles.
//! One run here: 35,531 events written in 0.76 s; variants 46.0% default, 32.0% engaged, 15.3%
//! korea, 6.7% big-spender; all 5,000 fetched; closed-loop p50 96 µs, p99 175 µs.
//!
//! `tests/redis.rs` starts real `redis-server` processes on free loopback ports, and fails with
//! an install hint if the binary is missing. It tests:
//! - the round trip from events to decisions;
//! - 10,000 events delivered twice giving the same counters as once;
//! - window expiry and pruning with an injected clock;
//! - a paused server (SIGSTOP): 1,000 `decide_for` calls, each within deadline + 1 ms and each a
//!   fallback, then Redis features again after SIGCONT;
//! - a killed server: the breaker opens, and fallbacks take under 10 µs each (measured p50
//!   0.45 µs, max 4–6 µs). This VM now and then stalls a call for 20–50 µs, so a call over
//!   10 µs is timed again at once; it fails if it is slow twice, or if more than 1% need a
//!   second timing. A restarted server is then used again without restarting the engine;
//! - the cache serving hot users with the server gone;
//! - a 3-master cluster created with `redis-cli --cluster create`, with writes and reads across
//!   slots.
//! - memory and Redis giving the same features for the same events.
