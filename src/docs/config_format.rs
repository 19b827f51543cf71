//! # Config format
//!
//! A config is JSON (or anything serde can turn into the same shape). Unknown fields are errors,
//! so typos do not pass silently; `description` is allowed on every object.
//!
//! ```json
//! {
//!   "version": "2026-11-24.1",
//!   "holdout": {"percent": 5, "salt": "global-holdout"},
//!   "segments": {"asia": {"feature": "country", "op": "in", "value": ["KR", "JP"]}},
//!   "layers": [{"id": "home", "salt": "home-layer", "holdout": {"percent": 10}}],
//!   "slots": [{
//!     "id": "banner",
//!     "layer": {"id": "home", "from": 0, "to": 5000},
//!     "killed": false,
//!     "variants": [{"id": "control", "payload": {"image": "a.png"}}, {"id": "sale", "payload": "raw text"}],
//!     "default": "control",
//!     "rules": [
//!       {"id": "vip", "when": {"feature": "plan", "op": "eq", "value": "vip"}, "serve": "sale"},
//!       {"id": "ramp", "when": {"segment": "asia"}, "rollout": {"percent": 20, "variant": "sale"}},
//!       {"id": "test", "split": {"by": "device_id", "salt": "banner-test-1",
//!                                "variants": [{"variant": "control", "weight": 50}, {"variant": "sale", "weight": 50}]}}
//!     ]
//!   }]
//! }
//! ```
//!
//! | element | meaning |
//! |---|---|
//! | `version` | required string or number; every decision reports it |
//! | `slots[]` | `id` (unique), `variants` (≥ 1, unique ids, optional `payload`), `default` (a variant id), optional `killed`, `layer`, `rules`, `sticky` |
//! | payload | a JSON string is delivered as its raw UTF-8 bytes; any other JSON value as its compact JSON text (`Decision::payload() -> &Bytes`) |
//! | `rules[]` | evaluated in order; optional `id`, optional `when` condition, and exactly one action: |
//! | `serve` | a variant id |
//! | `split` | `variants: [{variant, weight}]`, weights in percent with at most two decimals, summing to 100; optional `salt`, optional `by` (feature name to bucket by instead of the user id) |
//! | `rollout` | `{variant, percent}`; units whose bucket is below the percentage get the variant, everyone else falls through to the next rule; optional `salt`, `by` |
//! | `score` | `variants: [{variant, bias, weights: {feature: w}}]`; score = bias + Σ w·feature, the highest wins, the first listed wins ties; missing or non-numeric features count as 0 |
//! | `segments` | named conditions, usable as `{"segment": "name"}` anywhere (also inside other segments; cycles are rejected) |
//! | `layers[]` | `id`, optional `salt`, optional `holdout`. A slot joins with `layer: {id, from, to}`: it applies only to users whose layer bucket is in `[from, to)`; slots of one layer must not overlap, so a user is in at most one of them |
//! | `holdout` | `{percent, salt}` globally or per layer: held-out users get every affected slot's default, with `Reason::Holdout` |
//! | `killed` | `true` serves the default to everyone (`Reason::KillSwitch`) |
//! | `sticky` | `{by, version, min_version, recheck_targeting}`, all optional: keep the variant a split or rollout gave each unit (see [below](#sticky-assignment)) |
//!
//! Evaluation order per slot: kill switch → global holdout → layer holdout → layer range → rules
//! in order → default. Rules after one that always decides (no `when` and `serve`, `score`, a
//! user-id `split` or a 100% user-id `rollout`) are unreachable; they are dropped and reported as
//! warnings by `load_config`.
//!
//! **Salts.** A split, rollout or bandit without `salt` uses `rule:<n>:<slot id>:id:<rule id>`,
//! or `rule:<n>:<slot id>:index:<rule index>` when the rule has no id, where `<n>` is the slot
//! id's length in UTF-8 bytes (so no two rules share a salt, whatever their ids contain); a layer
//! without one uses `layer:<layer id>`, its holdout `layer-holdout:<layer id>`, the global holdout
//! `holdout`. Give rules ids (or explicit salts) so that reordering rules does not reshuffle users. Slots never share default salts, so editing one
//! slot never moves the users of another; ramping a rollout's percentage up keeps everyone who
//! was in.
//!
//! ## Sticky assignment
//!
//! With `"sticky": {}` a slot stores the variant a split or rollout gives a unit, and serves
//! that stored assignment to the unit afterwards, whatever later configs do to the weights or
//! the targeting, until the assignment stops holding. The engine needs an assignment store
//! (`EngineBuilder::assignments`: `sticky::MemoryAssignments` in the process, or
//! `RedisFeatureSource::assignments`, shared by a fleet and read in the same command as the
//! features); without one, loading warns and the slot decides from the config alone.
//!
//! | field | default | meaning |
//! |---|---|---|
//! | `by` | the user | the feature an assignment is tied to: assignments are kept per user, and one made while the feature had another value (or none) does not hold |
//! | `version` | 0 | the bucket version new assignments are made under (a whole number) |
//! | `min_version` | `version` | assignments made under a lower version are discarded; so bumping `version` alone reassigns everyone, and raising `version` with `min_version` left lower keeps earlier assignments |
//! | `recheck_targeting` | `true` | `true`: a stored assignment is served only while the unit still reaches a split or rollout rule of the slot (holdouts, layers and `when` conditions all apply; a unit targeted out gets the config's outcome and keeps its assignment for when it is back); `false`: it is served whatever the targeting says |
//!
//! A sticky decision has `Reason::Sticky { version }` and the propensity the assignment was
//! made with, so off-policy estimates over the log stay correct; it logs as kind `sticky`
//! with `sticky_version`. The kill switch always wins. An assignment holds only while it is
//! of a version in `min_version..=version`, for the same `by` value, and of a variant the slot
//! still has: a removed variant is never served, the unit is assigned again. Serve, score and
//! bandit rules, and the default, store nothing.
//!
//! New assignments never wait for the store: the deciding thread queues them for the
//! engine's writer thread (`EngineBuilder::assignment_queue`, default 16,384), a full queue
//! drops the write and counts it (`Engine::assignment_stats`, metric
//! `elvon_sticky_writes_total{outcome="dropped"}`), and the unit is assigned again, the same
//! way while the config is unchanged, on its next decision. `Engine::flush_assignments` waits
//! for the queued writes. When the store could not be read (a failed feature fetch, a store
//! error, `decide` with a Redis store, no `by` value) the decision is made from the config and
//! nothing is written, so a stored assignment is never overwritten unseen
//! (`elvon_sticky_decisions_total{outcome="unread"}`).
//!
//! Cost: sticky slots read the store on every decision (`MemoryAssignments` takes a shard read
//! lock and copies the assignment; the Redis store adds one field to the fetch) and allocate
//! when they queue a write. A config without sticky slots costs one flag check of the
//! snapshot; in a config with some, the other slots take an out-of-line path that does the
//! same work plus a look at the slot's option.
//!
//! ## Conditions
//!
//! `{"feature": NAME, "op": OP, "value": V}`, combined with `{"all": [...]}`, `{"any": [...]}`,
//! `{"not": {...}}` and `{"segment": NAME}`. Conditions nest at most 32 levels.
//!
//! | op | value | true when the feature… |
//! |---|---|---|
//! | `eq`, `ne` | string, number or boolean | equals / differs (integers and floats compare numerically) |
//! | `in`, `not_in` | list of strings and integers | is (not) in the set; a list feature matches when any element is |
//! | `lt`, `le`, `gt`, `ge` | number | compares numerically |
//! | `between` | `[low, high]` | is within, inclusive |
//! | `exists`, `missing` | — | is present / absent |
//! | `starts_with`, `ends_with` | string | string prefix / suffix |
//! | `contains` | string | string contains it, or a list feature has it as an element |
//! | `matches` | regex (Rust `regex` syntax) | matches; compiled once per config |
//! | `semver_eq`, `semver_lt`, `semver_le`, `semver_gt`, `semver_ge` | semver version | compares as a semantic version |
//! | `semver_match` | semver requirement (`">=1.2, <2"`, `"^3.4"`) | satisfies it |
//! | `before`, `after` | RFC 3339 timestamp, `YYYY-MM-DD` (UTC midnight) or unix seconds | is an instant (RFC 3339 string or integer unix seconds) before / after it |
//!
//! A condition on a **missing** feature, or on a feature whose type the operator cannot use, is
//! false (`ne` and `not_in` included; `missing` is the way to ask for absence), and `not` negates
//! that result. When no rule decides and such a feature was involved, the reason is
//! `Reason::Fallback(FeatureMissing | FeatureType)` naming the feature, rather than
//! `Reason::Default`.
//!
//! Validation reports every problem with its path, for example:
//!
//! ```text
//! config rejected with 3 problem(s):
//!   slots[0].rules[0].when.any[1]: unknown operator "gtt" (expected one of: eq, ne, in, ...)
//!   slots[1].default: unknown variant "zzz"
//!   slots[1].rules[0].split.variants: split weights sum to 90, expected 100
//! ```
