//! The aggregates writer: behaviour events applied by one Lua script each.

use std::sync::Arc;
use std::time::Duration;

use crate::features::aggregate::{Event, Op};

use super::*;

/// The Lua script applying one event: dedup by id, then the updates, then the key's TTL.
/// KEYS: user hash, dedup key. ARGV: dedup TTL ms (0: no dedup), key TTL ms (0: none), then
/// ops: `i field n` (HINCRBY), `f field x` (HINCRBYFLOAT), `s field json` (HSET),
/// `p feature first cap` (prune buckets below `first`, at most `cap` of them).
pub(super) const APPLY_LUA: &str = include_str!("apply.lua");

pub(super) static APPLY_SCRIPT: std::sync::LazyLock<redis::Script> =
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
    pub(super) shared: Arc<Shared>,
    pub(super) _runtime: Option<Arc<OwnedRuntime>>,
    pub(super) dedup_ttl: Duration,
    pub(super) key_ttl: Option<Duration>,
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
pub(super) const WRITE_CHUNK: usize = 1_000;

impl AggregatesWriter {
    /// Now on the source's clock, as unix milliseconds.
    pub(crate) fn now_ms(&self) -> u64 {
        self.shared.clock.now_ms()
    }
    /// How long event ids are remembered for deduplication (default 24 h).
    #[must_use]
    pub fn dedup_ttl(mut self, ttl: Duration) -> Self {
        self.dedup_ttl = ttl;
        self
    }

    /// A TTL the writer sets on a user's hash after each event, so users who stop sending
    /// events disappear (default none: the hash may hold features written by others). Set
    /// it at least to the longest window ([`Aggregates::longest_window_ms`](crate::features::aggregate::Aggregates::longest_window_ms)).
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
        let now = self.now_ms();
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
            // Safe to send again only when every event carries an id (the script skips ids
            // it has applied).
            let idempotent = chunk.iter().all(|(e, _)| !e.id.is_empty());
            let batch = Arc::new(batch);
            let send = |batch: Arc<Vec<(String, String, Vec<String>)>>| {
                let conn = sh.write_conn.clone();
                run_on(&sh.rt, sh.command_timeout, "apply events", async move {
                    let futs = batch.iter().map(|(key, dedup_key, args)| {
                        let mut c = conn.clone();
                        let mut inv = APPLY_SCRIPT.key(key);
                        inv.key(dedup_key).arg(args);
                        async move { inv.invoke_async::<i64>(&mut c).await }
                    });
                    futures_util::future::try_join_all(futs).await
                })
            };
            let results: Vec<i64> = match send(Arc::clone(&batch)) {
                // The writer's connection is idle between batches, so it may find out only
                // now that Redis restarted; the connection manager has reconnected since.
                Err(e) if idempotent && e.is_connection_dropped() => send(batch)?,
                other => other?,
            };
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
