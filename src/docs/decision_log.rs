//! # Decisions
//!
//! `Decision` holds a lightweight guard on the snapshot it came from, so `variant()`,
//! `payload()`, `reason()` and `config_version()` borrow instead of copying. Keep decisions
//! short-lived (clone the `Bytes` payload if you need it longer), or turn one into an
//! [`OwnedDecision`](crate::OwnedDecision) with `into_owned()` to store it or hold it across an
//! `.await` (`decide_for_async` returns one).
//!
//! | `Reason` | when |
//! |---|---|
//! | `Serve(rule)`, `Split{rule, bucket}`, `Rollout{rule, bucket}`, `Score(rule)` | that rule decided (`rule.index`, `rule.id`) |
//! | `Holdout{layer}` | global (`None`) or layer holdout |
//! | `NotInLayer{layer}` | the user's layer bucket is outside the slot's range |
//! | `Default` | no rule matched |
//! | `KillSwitch` | the slot is killed |
//! | `UnknownSlot` | the slot is not in the config (`variant()` is `None`) |
//! | `Fallback(cause)` | no rule decided and inputs were degraded: `FeatureMissing{feature}`, `FeatureType{feature}`, `SourceTimeout`, `SourceError` |
//! | `Bandit(rule)` | a bandit rule drew the variant (see [learning](super::learning)) |
//! | `Sticky{version}` | a sticky slot served the unit's stored assignment (see [sticky assignment](super::config_format#sticky-assignment)); the propensity is the assignment's |
//!
//! **Propensity** is the probability of the path that produced the decision, treating hash
//! buckets as uniform randomization: a split arm's share, a rollout's percentage, times `1 − p`
//! for each rollout the unit fell through; 1.0 for deterministic outcomes; for a sticky
//! decision, the propensity of the stored assignment.
//!
//! **Decision ids** are 128-bit (32 hex digits): a random per-engine prefix and a sequence handed
//! out to threads in blocks, so generating one writes no shared memory. Bandit decisions number
//! from a sequence of their own (the top bit of the low half is set), which indexes the
//! pending-reward store.
//!
//! # Decision log
//!
//! A `DecisionSink` receives every decision; `record` never blocks. Built in: `NoopSink` (the
//! default), `MemorySink` (bounded, for tests) and `JsonlSink` (a background writer thread fed
//! by a bounded queue per deciding thread; `record` encodes the decision into the calling
//! thread's queue with no allocation, lock or system call, and when that queue is full the
//! record is dropped and counted; so are a thread's records while the writer is 16 config
//! versions behind it). Every sink keeps
//! `offered = written + dropped + failed` (plus pending until `flush`).
//!
//! `DecisionSink::flush(timeout)` (and `Engine::flush`, to call on shutdown) waits for the
//! records offered before the call, not for a backlog other threads keep refilling. Both
//! queued sinks take an overflow policy: `Overflow::Drop` (the default: drop and count) or
//! `Overflow::Block(bound)` (wait up to `bound` for room; for batch jobs; the quickstart uses it
//! and ends with 0 dropped). The JSON-lines sink `fsync`s on `flush`; a write that fails
//! part-way is cut back to the last whole line (its records count as failed, the error is in
//! `SinkStats::last_error`); `JsonlSink::reopen()` (for logrotate, which also works without it:
//! the writer notices a moved or deleted file within a second) and
//! `JsonlOptions::rotate_bytes` rotate the file without losing a record.
//!
//! **Exposure dedupe** (opt in): `DedupeSink::new(sink, DedupeOptions::default())` in front of
//! any sink passes the first record of each (slot, user, variant, config version) per window
//! (default 60 s; `DedupeKey::SlotUserVariant` ignores the version) and counts the repeats as
//! `deduped`, so `offered = written + dropped + failed + deduped` (plus pending). Its table is
//! fixed at 16 bytes per key of `capacity` (default 100,000), whatever the number of users;
//! past the capacity some repeats are passed, none is dropped. Bandit decisions always pass:
//! each has its own id and reward join. Deduped records are not in the log, so estimates from
//! a deduped log describe first exposures per window, not every decision.
//!
//! One JSON object per line (`DecisionRecord`, schema 1; readers must ignore unknown fields):
//!
//! ```json
//! {"schema":1,"id":"5f0c…","timestamp_ms":1795516000000,"slot":"banner","user":"user-42","variant":"sale",
//!  "reason":{"kind":"split","rule_index":0,"rule_id":"kr","bucket":7391},"propensity":0.5,
//!  "features":{"country":"KR"},"feature_status":"provided","config_version":"2026-11-24.1"}
//! ```
//!
//! `timestamp_ms` comes from the kernel's coarse real-time clock in the JSON-lines and Kafka
//! sinks (on Linux up to one timer tick, typically 1–4 ms, behind the precise clock, and several
//! times cheaper to read). `features` holds only the features the slot's config reads. JSON has no NaN or infinity:
//! non-finite floats are logged as `null`, which `DecisionRecord` reads back as an absent
//! feature; finite floats round-trip exactly. Bandit decisions add `probabilities` (every arm's
//! probability, `[{"variant": "a", "probability": 0.12}, …]`) and `model_version`; both are
//! omitted for other decisions.
//!
//! **Sampled logs** (opt in): `SampleSink::new(sink, SampleOptions::new(1.0).slot("banner",
//! 0.1))` keeps each slot's share of records, chosen by a hash of the decision id (a replay
//! keeps the same ones), counts the rest as `sampled_out`, and adds `"pass_probability": 0.1`
//! to every kept record (absent, meaning 1, in an unsampled log; stages in front multiply).
//! A kept record stands for `1 / pass_probability` decisions: `ope::evaluate_records` and
//! `ope::Sample::weight` weight it so, and estimates from a log sampled at different rates
//! per slot stay unbiased.
