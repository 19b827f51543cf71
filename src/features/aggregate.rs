//! Real-time aggregates of behaviour events: counters and sums over sliding windows kept in
//! time buckets, and last values.
//!
//! An [`Aggregates`] set says which feature each event kind feeds. The definitions and the
//! code that turns an event into updates are shared by every store that applies events; the
//! Redis writer (feature `redis`) applies them to Redis atomically. Reading a windowed
//! feature sums the buckets still inside its window, so old events stop counting once their
//! bucket leaves the window; a windowed counter or sum with nothing in its window reads 0.
//!
//! ```
//! use std::time::Duration;
//! use elvon::features::aggregate::{Aggregate, Aggregates};
//!
//! let aggs = Aggregates::new(vec![
//!     Aggregate::count("page_view_7d", "page_view").window(Duration::from_secs(86_400), 7),
//!     Aggregate::sum("spend_total", "purchase", "amount"),
//!     Aggregate::last("last_category", "page_view", "category"),
//! ])
//! .unwrap();
//! assert_eq!(aggs.longest_window_ms(), 8 * 86_400_000);
//!
//! let bad = Aggregates::new(vec![Aggregate::count("n", "click").window(Duration::ZERO, 7)]);
//! assert_eq!(
//!     bad.unwrap_err().to_string(),
//!     "aggregates[0].window: needs 1..=1024 buckets of at least 1 ms (got 7 of 0 ms)"
//! );
//! ```

use std::collections::HashSet;
use std::time::Duration;

use super::{Features, Text, Value};

/// Most buckets a window may have (a 7-day window in hourly buckets has 168).
pub const MAX_BUCKETS: u32 = 1_024;

/// A behaviour event: something a user did, at a time, with values.
///
/// Its JSON form (the wire format of the Kafka feature updater):
/// `{"id": "e-1", "user": "u42", "kind": "purchase", "time_ms": 1700000000000,
/// "values": {"amount": 12.5}}`; `id` and `values` may be left out.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Event {
    /// Unique id of the event, for idempotent application (a redelivered event with the same
    /// id does not count twice). Empty: no deduplication.
    #[serde(default)]
    pub id: String,
    /// The user the event is about.
    pub user: String,
    /// The event kind (`page_view`, `purchase`, …) that aggregates select on.
    pub kind: String,
    /// When it happened, unix milliseconds.
    pub time_ms: u64,
    /// The event's values (`amount`, `category`, …).
    #[serde(default)]
    pub values: Features,
}

impl Event {
    /// An event with no values.
    #[must_use]
    pub fn new(
        id: impl Into<String>,
        user: impl Into<String>,
        kind: impl Into<String>,
        time_ms: u64,
    ) -> Self {
        Event {
            id: id.into(),
            user: user.into(),
            kind: kind.into(),
            time_ms,
            values: Features::new(),
        }
    }

    /// Adds a value.
    #[must_use]
    pub fn with(mut self, name: impl Into<Text>, value: impl Into<Value>) -> Self {
        self.values.insert(name, value);
        self
    }
}

/// What an aggregate computes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AggregateKind {
    /// How many matching events (an integer).
    Count,
    /// The sum of a numeric event value (a float).
    Sum {
        /// The event value summed.
        field: String,
    },
    /// The latest value of an event field (any type).
    Last {
        /// The event value kept.
        field: String,
    },
}

/// A sliding window: `buckets` buckets of `bucket_ms` each; the current bucket is the one
/// holding "now", and the window is it and the `buckets - 1` before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Window {
    /// Bucket width in milliseconds.
    pub bucket_ms: u64,
    /// Number of buckets in the window.
    pub buckets: u32,
}

impl Window {
    /// The bucket holding `ms`.
    #[must_use]
    pub fn bucket(&self, ms: u64) -> u64 {
        ms / self.bucket_ms.max(1)
    }

    /// The first bucket still inside the window at `now_ms`.
    #[must_use]
    pub fn first_live(&self, now_ms: u64) -> u64 {
        self.bucket(now_ms)
            .saturating_add(1)
            .saturating_sub(u64::from(self.buckets))
    }

    /// The window's length in milliseconds.
    #[must_use]
    pub fn span_ms(&self) -> u64 {
        self.bucket_ms.saturating_mul(u64::from(self.buckets))
    }
}

/// One aggregate: which feature it writes, from which event kind, how.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Aggregate {
    /// The feature name rules read (`page_view_7d`).
    pub feature: String,
    /// The event kind it counts (`page_view`).
    pub event: String,
    /// What it computes.
    pub kind: AggregateKind,
    /// Counters and sums: the sliding window, or `None` for all time.
    pub window: Option<Window>,
}

impl AggregateKind {
    /// The value a counter (integer) or sum (float) reads as, given its total.
    #[must_use]
    pub fn total_value(&self, total: f64) -> Value {
        match self {
            AggregateKind::Count => Value::Int(total as i64),
            _ => Value::Float(total),
        }
    }
}

impl Aggregate {
    /// Counts events of kind `event` into feature `feature`.
    #[must_use]
    pub fn count(feature: impl Into<String>, event: impl Into<String>) -> Self {
        Aggregate {
            feature: feature.into(),
            event: event.into(),
            kind: AggregateKind::Count,
            window: None,
        }
    }

    /// Sums the numeric value `field` of events of kind `event` into feature `feature`.
    #[must_use]
    pub fn sum(
        feature: impl Into<String>,
        event: impl Into<String>,
        field: impl Into<String>,
    ) -> Self {
        Aggregate {
            kind: AggregateKind::Sum {
                field: field.into(),
            },
            ..Aggregate::count(feature, event)
        }
    }

    /// Keeps the latest value `field` of events of kind `event` as feature `feature`.
    #[must_use]
    pub fn last(
        feature: impl Into<String>,
        event: impl Into<String>,
        field: impl Into<String>,
    ) -> Self {
        Aggregate {
            kind: AggregateKind::Last {
                field: field.into(),
            },
            ..Aggregate::count(feature, event)
        }
    }

    /// Makes a counter or sum a sliding window of `buckets` buckets of `bucket` each (a 7-day
    /// window in daily buckets: `window(Duration::from_secs(86_400), 7)`).
    #[must_use]
    pub fn window(mut self, bucket: Duration, buckets: u32) -> Self {
        self.window = Some(Window {
            bucket_ms: u64::try_from(bucket.as_millis()).unwrap_or(u64::MAX),
            buckets,
        });
        self
    }
}

/// A rejected aggregate definition or event: what is wrong and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
#[non_exhaustive]
pub struct AggregateError {
    /// Where: `aggregates[2].window` for a definition, `event "e-1".values.amount` for an
    /// event.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

fn problem(path: impl Into<String>, message: impl Into<String>) -> AggregateError {
    AggregateError {
        path: path.into(),
        message: message.into(),
    }
}

/// How far in the future (by the store's clock) an event may be dated by default: one hour.
pub const DEFAULT_MAX_FUTURE_SKEW_MS: u64 = 3_600_000;

/// A validated set of aggregates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aggregates {
    defs: Vec<Aggregate>,
    max_future_skew_ms: u64,
}

impl Default for Aggregates {
    fn default() -> Self {
        Aggregates {
            defs: Vec::new(),
            max_future_skew_ms: DEFAULT_MAX_FUTURE_SKEW_MS,
        }
    }
}

/// One change an event makes to a user's stored aggregates (see [`Aggregates::updates`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Update<'a> {
    /// The aggregate updated.
    pub def: &'a Aggregate,
    /// The bucket written, for windowed aggregates.
    pub bucket: Option<u64>,
    /// The change.
    pub op: Op,
}

impl Update<'_> {
    /// The stored field (or in-memory entry) this update writes: the feature name, or
    /// [`bucket_field`] for a windowed one.
    #[must_use]
    pub fn field(&self) -> String {
        match self.bucket {
            Some(b) => bucket_field(&self.def.feature, b),
            None => self.def.feature.clone(),
        }
    }
}

/// The name under which bucket `bucket` of windowed feature `feature` is stored:
/// `<feature>|<bucket>`. Every store (memory, Redis) uses this layout.
#[must_use]
pub fn bucket_field(feature: &str, bucket: u64) -> String {
    let mut s = String::with_capacity(feature.len() + 12);
    write_bucket_field(&mut s, feature, bucket);
    s
}

/// [`bucket_field`] into `buf` (cleared first), for lookups that reuse one buffer.
pub(crate) fn write_bucket_field(buf: &mut String, feature: &str, bucket: u64) {
    use std::fmt::Write as _;
    buf.clear();
    let _ = write!(buf, "{feature}|{bucket}");
}

/// The change an [`Update`] makes.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Op {
    /// Add to an integer counter.
    Incr(i64),
    /// Add to a float sum.
    Add(f64),
    /// Replace the value.
    Set(Value),
}

impl Aggregates {
    /// Validates the definitions: non-empty names without `|` (the bucket separator), each
    /// feature defined once, windows with 1..=[`MAX_BUCKETS`] buckets of at least 1 ms, and
    /// no window on a `last` aggregate.
    pub fn new(defs: Vec<Aggregate>) -> Result<Self, AggregateError> {
        let mut seen = HashSet::new();
        for (i, d) in defs.iter().enumerate() {
            let path = format!("aggregates[{i}]");
            if d.feature.is_empty() || d.feature.contains('|') {
                return Err(problem(
                    format!("{path}.feature"),
                    format!("{:?} must be non-empty and must not contain '|'", d.feature),
                ));
            }
            if !seen.insert(d.feature.as_str()) {
                return Err(problem(
                    format!("{path}.feature"),
                    format!("{:?} is defined twice", d.feature),
                ));
            }
            if d.event.is_empty() {
                return Err(problem(format!("{path}.event"), "must be non-empty"));
            }
            if let AggregateKind::Sum { field } | AggregateKind::Last { field } = &d.kind {
                if field.is_empty() {
                    return Err(problem(format!("{path}.field"), "must be non-empty"));
                }
            }
            if let Some(w) = d.window {
                if matches!(d.kind, AggregateKind::Last { .. }) {
                    return Err(problem(
                        format!("{path}.window"),
                        "a `last` aggregate has no window",
                    ));
                }
                if w.bucket_ms == 0 || w.buckets == 0 || w.buckets > MAX_BUCKETS {
                    return Err(problem(
                        format!("{path}.window"),
                        format!(
                            "needs 1..={MAX_BUCKETS} buckets of at least 1 ms (got {} of {} ms)",
                            w.buckets, w.bucket_ms
                        ),
                    ));
                }
            }
        }
        Ok(Aggregates {
            defs,
            max_future_skew_ms: DEFAULT_MAX_FUTURE_SKEW_MS,
        })
    }

    /// How far ahead of the store's clock an event may be dated (default
    /// [`DEFAULT_MAX_FUTURE_SKEW_MS`]); a later one is rejected, so a bad `time_ms` cannot
    /// create buckets that never leave their window.
    #[must_use]
    pub fn max_future_skew(mut self, skew: std::time::Duration) -> Self {
        self.max_future_skew_ms = u64::try_from(skew.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// The definitions.
    #[must_use]
    pub fn defs(&self) -> &[Aggregate] {
        &self.defs
    }

    /// The definition writing `feature`.
    #[must_use]
    pub fn get(&self, feature: &str) -> Option<&Aggregate> {
        self.defs.iter().find(|d| d.feature == feature)
    }

    /// The longest window in milliseconds (0 without windows).
    #[must_use]
    pub fn longest_window_ms(&self) -> u64 {
        self.defs
            .iter()
            .filter_map(|d| d.window)
            .map(|w| w.span_ms().saturating_add(w.bucket_ms))
            .max()
            .unwrap_or(0)
    }

    /// The changes `event` makes at `now_ms`, and how many windowed updates were left out
    /// because the event is older than their window. This is the aggregation every store
    /// applies. The whole event is checked first: an empty user, a `time_ms` more than
    /// [`max_future_skew`](Self::max_future_skew) after `now_ms`, or a `sum` value that is
    /// missing or not a finite number, rejects the event, so it changes nothing. Counters
    /// saturate at `i64::MAX` in every store.
    pub fn updates<'a>(
        &'a self,
        event: &Event,
        now_ms: u64,
    ) -> Result<(Vec<Update<'a>>, usize), AggregateError> {
        if event.user.is_empty() {
            return Err(problem(event_path(event, "user"), "must be non-empty"));
        }
        if event.time_ms > now_ms.saturating_add(self.max_future_skew_ms) {
            return Err(problem(
                event_path(event, "time_ms"),
                format!(
                    "{} is more than {} ms after now ({now_ms}): dated in the future",
                    event.time_ms, self.max_future_skew_ms
                ),
            ));
        }
        let mut out = Vec::new();
        let mut stale = 0;
        for d in self.defs.iter().filter(|d| d.event == event.kind) {
            let op = match &d.kind {
                AggregateKind::Count => Op::Incr(1),
                AggregateKind::Sum { field } => match event.values.get(field) {
                    Some(v) => match v.as_f64() {
                        Some(x) if x.is_finite() => Op::Add(x),
                        _ => {
                            return Err(problem(
                                event_path(event, &format!("values.{field}")),
                                format!(
                                    "summed by {:?}: needs a finite number, got {v}",
                                    d.feature
                                ),
                            ))
                        }
                    },
                    None => {
                        return Err(problem(
                            event_path(event, &format!("values.{field}")),
                            format!("summed by {:?}: missing", d.feature),
                        ))
                    }
                },
                AggregateKind::Last { field } => match event.values.get(field) {
                    Some(v) => Op::Set(v.clone()),
                    // An event without the field leaves the last value alone.
                    None => continue,
                },
            };
            let bucket = match d.window {
                Some(w) => {
                    let b = w.bucket(event.time_ms);
                    if b < w.first_live(now_ms) {
                        stale += 1;
                        continue;
                    }
                    Some(b)
                }
                None => None,
            };
            out.push(Update { def: d, bucket, op });
        }
        Ok((out, stale))
    }
}

fn event_path(event: &Event, what: &str) -> String {
    format!("event {:?}.{what}", event.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aggs() -> Aggregates {
        Aggregates::new(vec![
            Aggregate::count("views_3h", "view").window(Duration::from_secs(3_600), 3),
            Aggregate::count("views", "view"),
            Aggregate::sum("spend", "buy", "amount"),
            Aggregate::last("last_cat", "view", "cat"),
        ])
        .expect("valid")
    }

    #[test]
    fn an_event_turns_into_the_updates_of_its_kind() {
        let a = aggs();
        let now = 10 * 3_600_000;
        let e = Event::new("1", "u", "view", now - 1).with("cat", "shoes");
        let (u, stale) = a.updates(&e, now).expect("valid event");
        assert_eq!(stale, 0);
        let got: Vec<_> = u
            .iter()
            .map(|u| (u.def.feature.as_str(), u.bucket, &u.op))
            .collect();
        assert_eq!(
            got,
            vec![
                ("views_3h", Some(9), &Op::Incr(1)),
                ("views", None, &Op::Incr(1)),
                ("last_cat", None, &Op::Set(Value::from("shoes"))),
            ]
        );
        // Older than the window (buckets 8, 9, 10 are live at `now`): the windowed update is
        // left out, the others stay.
        let old = Event::new("2", "u", "view", 7 * 3_600_000);
        let (u, stale) = a.updates(&old, now).expect("valid event");
        assert_eq!((u.len(), stale), (1, 1));
        assert!(a
            .updates(&Event::new("3", "u", "other", now), now)
            .expect("ok")
            .0
            .is_empty());
    }

    #[test]
    fn bad_events_and_definitions_say_where() {
        let a = aggs();
        let e = Event::new("e9", "u", "buy", 0).with("amount", "ten");
        assert_eq!(
            a.updates(&e, 0).unwrap_err().to_string(),
            "event \"e9\".values.amount: summed by \"spend\": needs a finite number, got \"ten\""
        );
        let e = Event::new("e9", "u", "buy", 0);
        assert!(a.updates(&e, 0).unwrap_err().message.contains("missing"));
        let e = Event::new("e9", "", "view", 0);
        assert_eq!(a.updates(&e, 0).unwrap_err().path, "event \"e9\".user");
        let twice = Aggregates::new(vec![Aggregate::count("n", "a"), Aggregate::count("n", "b")]);
        assert_eq!(twice.unwrap_err().path, "aggregates[1].feature");
        let windowed_last = Aggregates::new(vec![
            Aggregate::last("l", "a", "x").window(Duration::from_secs(1), 2)
        ]);
        assert_eq!(windowed_last.unwrap_err().path, "aggregates[0].window");
        let pipe = Aggregates::new(vec![Aggregate::count("a|b", "a")]);
        assert_eq!(pipe.unwrap_err().path, "aggregates[0].feature");
    }
}
