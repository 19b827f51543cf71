//! The in-memory feature store.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use super::aggregate::{write_bucket_field, AggregateError, AggregateKind, Aggregates, Event, Op};
use super::packed;
use super::{FeatureSource, Features, FetchFuture, FetchRequest, Text, Value};
use crate::clock::Clock;

/// Default time an applied event id is remembered for deduplication (24 h).
pub const DEFAULT_DEDUP_TTL_MS: u64 = 86_400_000;

/// An in-memory feature store: a concurrent map from user id to [`Features`].
///
/// Users are kept in a compact encoded form (about 200 bytes for a user with 10 numbers and
/// short strings, against over 1 KB as a `Features` map): [`get`](Self::get) and a fetch
/// decode a copy, [`update`](Self::update) decodes, changes and re-encodes. Feature names
/// are stored once per process for the first 4,096 distinct names without a `|` (each at
/// most 64 bytes), which stay allocated for the life of the process; other names are stored
/// with each user.
///
/// Cheap to clone (clones share the same map). Use it directly as the engine's
/// [`FeatureSource`], in tests, or as a local cache in front of a remote store.
///
/// ```
/// use elvon::Features;
/// use elvon::features::MemoryStore;
/// let store = MemoryStore::new();
/// store.set("u1", Features::new().with("country", "KR"));
/// store.update("u1", |f| { f.insert("page_view_7d", 3); });
/// assert_eq!(store.get("u1").unwrap().len(), 2);
/// ```
#[derive(Clone, Default)]
pub struct MemoryStore {
    /// Each user's features in the compact form of [`packed`](super::packed).
    map: Arc<DashMap<Box<str>, Box<[u8]>, ahash::RandomState>>,
    /// Aggregates read by `fetch` (windowed ones are summed from their buckets).
    aggregates: Option<Arc<Aggregates>>,
    /// Applied event ids (`user \x1f id`) → when they may be forgotten (unix ms).
    seen: Arc<DashMap<Box<str>, u64, ahash::RandomState>>,
    applied: Arc<AtomicU64>,
    /// The "now" `fetch` reads windowed aggregates at.
    clock: Clock,
}

/// What [`MemoryStore::apply`] did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApplyOutcome {
    /// The event's updates were applied (`stale` windowed ones left out: older than their
    /// window).
    Applied {
        /// Windowed updates left out.
        stale: usize,
    },
    /// An event with this id was already applied (within the dedup TTL): nothing changed.
    Duplicate,
    /// Nothing to write: no aggregate counts this event kind, or its windowed updates are
    /// all older than their window.
    Ignored,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("users", &self.map.len())
            .finish()
    }
}

impl MemoryStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store whose [`FeatureSource::fetch`] reads these aggregates as
    /// [`MemoryStore::read`] does, at the store's clock's now (see
    /// [`MemoryStore::clock`]).
    #[must_use]
    pub fn with_aggregates(aggregates: Aggregates) -> Self {
        MemoryStore {
            aggregates: Some(Arc::new(aggregates)),
            ..Self::default()
        }
    }

    /// The clock [`FeatureSource::fetch`] reads windowed aggregates at (default: the system
    /// clock). Share a [`Clock::fake`] with the engine and the event path to test windows
    /// without sleeping:
    ///
    /// ```
    /// use std::time::Duration;
    /// use elvon::clock::Clock;
    /// use elvon::features::aggregate::{Aggregate, Aggregates, Event};
    /// use elvon::features::{FeatureSource, FetchRequest};
    /// use elvon::features::MemoryStore;
    ///
    /// let aggs = Aggregates::new(vec![
    ///     Aggregate::count("views_1h", "view").window(Duration::from_secs(600), 6),
    /// ])?;
    /// let clock = Clock::fake(10 * 3_600_000);
    /// let store = MemoryStore::with_aggregates(aggs.clone()).clock(clock.clone());
    /// store.apply(&aggs, &Event::new("e1", "u", "view", clock.now_ms()), clock.now_ms())?;
    /// // What the engine's fetch sees: the store's features at its clock's now.
    /// let views = |s: &MemoryStore| {
    ///     let names: [Box<str>; 1] = ["views_1h".into()];
    ///     let deadline = std::time::Instant::now() + Duration::from_secs(1);
    ///     let mut fetch = s.fetch(FetchRequest::new("u", &names, deadline));
    ///     let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    ///     match fetch.as_mut().poll(&mut cx) {
    ///         std::task::Poll::Ready(Ok(f)) => f.get("views_1h").cloned(),
    ///         other => panic!("a memory fetch is ready at once: {other:?}"),
    ///     }
    /// };
    /// assert_eq!(views(&store), Some(elvon::Value::Int(1)));
    /// clock.advance(Duration::from_secs(3_600)); // the hour passes at once
    /// assert_eq!(views(&store), Some(elvon::Value::Int(0)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Now on the store's clock, as unix milliseconds.
    pub(crate) fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Applies a behaviour event at `now_ms` with the same definitions and the same layout
    /// as the Redis writer: counters and sums in `<name>|<bucket>` entries for windowed
    /// aggregates (buckets that left their window are pruned), in `<name>` otherwise; `last`
    /// values in `<name>`. Idempotent by event id for `DEFAULT_DEDUP_TTL_MS` (an empty id is
    /// never deduplicated). An invalid event changes nothing.
    ///
    /// ```
    /// use std::time::Duration;
    /// use elvon::features::aggregate::{Aggregate, Aggregates, Event};
    /// use elvon::features::ApplyOutcome;
    /// use elvon::features::MemoryStore;
    ///
    /// let aggs = Aggregates::new(vec![
    ///     Aggregate::count("page_view_7d", "page_view").window(Duration::from_secs(86_400), 7),
    ///     Aggregate::last("last_category", "page_view", "category"),
    /// ])
    /// .unwrap();
    /// let store = MemoryStore::new();
    /// let now = 1_700_000_000_000;
    /// let e = Event::new("e-1", "u1", "page_view", now).with("category", "shoes");
    /// assert_eq!(store.apply(&aggs, &e, now), Ok(ApplyOutcome::Applied { stale: 0 }));
    /// assert_eq!(store.apply(&aggs, &e, now), Ok(ApplyOutcome::Duplicate));
    /// let f = store.read(&aggs, "u1", now + 6 * 86_400_000);
    /// assert_eq!(f.get("page_view_7d").and_then(|v| v.as_f64()), Some(1.0));
    /// assert_eq!(f.get("last_category").and_then(|v| v.as_str()), Some("shoes"));
    /// let f = store.read(&aggs, "u1", now + 7 * 86_400_000);
    /// assert_eq!(f.get("page_view_7d").and_then(|v| v.as_f64()), Some(0.0));
    /// ```
    pub fn apply(
        &self,
        aggregates: &Aggregates,
        event: &Event,
        now_ms: u64,
    ) -> Result<ApplyOutcome, AggregateError> {
        let (updates, stale) = aggregates.updates(event, now_ms)?;
        if updates.is_empty() {
            return Ok(ApplyOutcome::Ignored);
        }
        if !event.id.is_empty() {
            let key: Box<str> = format!("{}\u{1f}{}", event.user, event.id).into();
            let until = now_ms.saturating_add(DEFAULT_DEDUP_TTL_MS);
            let mut fresh = false;
            self.seen
                .entry(key)
                .and_modify(|t| {
                    if *t <= now_ms {
                        *t = until;
                        fresh = true;
                    }
                })
                .or_insert_with(|| {
                    fresh = true;
                    until
                });
            if !fresh {
                return Ok(ApplyOutcome::Duplicate);
            }
            // Forget expired ids now and then, so the dedup memory stays bounded by the
            // events of one TTL.
            if self.applied.fetch_add(1, Ordering::Relaxed) % 4_096 == 4_095 {
                self.seen.retain(|_, t| *t > now_ms);
            }
        }
        self.update(&event.user, |f| {
            for u in &updates {
                let name = &u.def.feature;
                let field = u.field();
                let old = f.get(&field);
                let new = match &u.op {
                    // Saturating, as the Redis writer's script does.
                    Op::Incr(n) => Value::Int(match old {
                        Some(Value::Int(i)) => i.saturating_add(*n),
                        other => {
                            (other.and_then(Value::as_f64).unwrap_or(0.0) as i64).saturating_add(*n)
                        }
                    }),
                    Op::Add(x) => Value::Float(old.and_then(Value::as_f64).unwrap_or(0.0) + x),
                    Op::Set(v) => v.clone(),
                };
                f.insert(field, new);
                if let (Some(w), Some(_)) = (u.def.window, u.bucket) {
                    let first = w.first_live(now_ms);
                    let prefix = format!("{name}|");
                    let dead: Vec<String> = f
                        .iter()
                        .filter_map(|(k, _)| {
                            let b: u64 = k.strip_prefix(&prefix)?.parse().ok()?;
                            (b < first).then(|| k.to_owned())
                        })
                        .collect();
                    for k in dead {
                        f.remove(&k);
                    }
                }
            }
        });
        Ok(ApplyOutcome::Applied { stale })
    }

    /// The stored features of `user` with aggregates read at `now_ms`: a windowed counter or
    /// sum is the total of its live buckets (0 when none), an all-time one is 0 when absent;
    /// bucket entries themselves are left out.
    #[must_use]
    pub fn read(&self, aggregates: &Aggregates, user: &str, now_ms: u64) -> Features {
        let stored = self.get(user).unwrap_or_default();
        let mut out = Features::with_capacity(stored.len());
        for (k, v) in stored.iter() {
            if !k.contains('|') {
                out.insert(k.to_owned(), v.clone());
            }
        }
        let mut key = String::new();
        for d in aggregates.defs() {
            if matches!(d.kind, AggregateKind::Last { .. }) {
                continue;
            }
            let total = aggregate_total(d, |k| stored.get(k)?.as_f64(), now_ms, &mut key);
            out.insert(d.feature.clone(), d.kind.total_value(total));
        }
        out
    }

    /// `read(..).select(names)` without copying what is not asked for: only the named
    /// features are read, and a windowed aggregate's buckets are looked up through one
    /// reused key buffer.
    fn read_names(
        &self,
        aggregates: &Aggregates,
        user: &str,
        names: &[Box<str>],
        now_ms: u64,
    ) -> Features {
        let stored = self.map.get(user);
        let stored = packed::Index::new(stored.as_ref().map_or(&[], |r| r.value()));
        let mut out = Features::with_capacity(names.len());
        let mut key = String::new();
        for name in names {
            if name.contains('|') {
                continue;
            }
            let def = aggregates
                .defs()
                .iter()
                .find(|d| *d.feature == **name && !matches!(d.kind, AggregateKind::Last { .. }));
            let Some(d) = def else {
                if let Some(v) = stored.get(name) {
                    out.insert(Text::Owned(name.to_string()), v.to_value());
                }
                continue;
            };
            let total = aggregate_total(d, |k| stored.get(k)?.as_f64(), now_ms, &mut key);
            out.insert(Text::Owned(name.to_string()), d.kind.total_value(total));
        }
        out
    }

    /// Replaces all features of `user`.
    pub fn set(&self, user: &str, features: Features) {
        self.map.insert(user.into(), packed::pack(&features));
    }

    /// Sets one feature of `user`, creating the user if needed.
    pub fn set_feature(&self, user: &str, name: impl Into<Text>, value: impl Into<Value>) {
        self.update(user, |f| {
            f.insert(name, value);
        });
    }

    /// Changes the features of `user` in place (created empty if absent). The closure runs
    /// while the user's shard is locked: keep it short and do not touch the store from it.
    ///
    /// The store keeps features in a compact form, so this decodes the user's features,
    /// runs `f` and encodes them again.
    pub fn update<R>(&self, user: &str, f: impl FnOnce(&mut Features) -> R) -> R {
        let mut entry = self.map.entry(user.into()).or_default();
        let mut features = packed::unpack(entry.value());
        let r = f(&mut features);
        *entry.value_mut() = packed::pack(&features);
        r
    }

    /// A copy of the features of `user`.
    #[must_use]
    pub fn get(&self, user: &str) -> Option<Features> {
        self.map.get(user).map(|r| packed::unpack(r.value()))
    }

    /// Removes `user`; returns their features.
    pub fn remove(&self, user: &str) -> Option<Features> {
        self.map.remove(user).map(|(_, b)| packed::unpack(&b))
    }

    /// Number of users stored.
    #[must_use]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// `true` when no user is stored.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// A counter or sum aggregate's total at `now_ms` in `stored` (0 without a user or a
/// value): the sum of its live buckets when windowed (looked up through `key`, a reused
/// buffer holding [`bucket_field`](super::aggregate::bucket_field) names), its one field otherwise.
fn aggregate_total(
    d: &super::aggregate::Aggregate,
    stored: impl Fn(&str) -> Option<f64>,
    now_ms: u64,
    key: &mut String,
) -> f64 {
    match d.window {
        Some(w) => (w.first_live(now_ms)..=w.bucket(now_ms))
            .filter_map(|b| {
                write_bucket_field(key, &d.feature, b);
                stored(key)
            })
            .sum(),
        None => stored(&d.feature).unwrap_or(0.0),
    }
}

impl FeatureSource for MemoryStore {
    fn fetch<'a>(&'a self, request: FetchRequest<'a>) -> FetchFuture<'a> {
        if let Some(aggs) = &self.aggregates {
            let out = self.read_names(aggs, request.user, request.names, self.now_ms());
            return Box::pin(std::future::ready(Ok(out)));
        }
        let out = match self.map.get(request.user) {
            Some(r) => packed::entries(r.value())
                .filter(|(n, _)| request.names.iter().any(|w| **w == *n.as_str()))
                .map(|(n, v)| (n.to_text(), v.to_value()))
                .collect(),
            None => Features::new(),
        };
        Box::pin(std::future::ready(Ok(out)))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::features::aggregate::Aggregate;

    /// The fetch path reads only the asked-for names; it must answer exactly what the full
    /// `read` followed by `select` answers.
    #[test]
    fn reading_named_features_matches_a_full_read_then_select() {
        let day = Duration::from_secs(86_400);
        let aggs = Aggregates::new(vec![
            Aggregate::count("views_7d", "view").window(day, 7),
            Aggregate::count("views_all", "view"),
            Aggregate::sum("spend_3d", "buy", "amount").window(day, 3),
            Aggregate::last("last_cat", "view", "cat"),
        ])
        .expect("valid");
        let store = MemoryStore::new();
        let t0 = 1_800_000_000_000u64;
        let mut seed = 7u64;
        let mut next = |n: u64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 33) % n
        };
        for i in 0..400u64 {
            let user = format!("u{}", next(5));
            let at = t0 + next(10) * 86_400_000 + next(86_400_000);
            let e = if next(3) == 0 {
                Event::new(format!("e{i}"), &user, "buy", at).with("amount", next(100) as f64)
            } else {
                Event::new(format!("e{i}"), &user, "view", at)
                    .with("cat", ["a", "b"][next(2) as usize])
            };
            store.apply(&aggs, &e, at).expect("applied");
        }
        store.set(
            "plain",
            Features::new()
                .with("country", "KR")
                .with("views_7d|3", 9i64),
        );
        let names: Vec<Box<str>> = [
            "views_7d",
            "views_all",
            "spend_3d",
            "last_cat",
            "country",
            "absent",
            "views_7d|20000",
        ]
        .into_iter()
        .map(Into::into)
        .collect();
        for user in ["u0", "u1", "u2", "u3", "u4", "plain", "nobody"] {
            for day in 0..14 {
                let now = t0 + day * 86_400_000 + 3_600_000;
                for take in 1..=names.len() {
                    let asked = &names[names.len() - take..];
                    let want = store
                        .read(&aggs, user, now)
                        .select(asked.iter().map(|n| &**n));
                    let got = store.read_names(&aggs, user, asked, now);
                    assert_eq!(got, want, "{user} at day {day}, names {asked:?}");
                }
            }
        }
    }
}
