//! # Learning loop
//!
//! A rule can be a **bandit**: the engine picks one of its arms (variants) with probabilities
//! that a policy computes from the rewards it has received.
//!
//! ```json
//! {"id": "offer", "variants": [{"id": "a"}, {"id": "b"}, {"id": "c"}], "default": "a",
//!  "rules": [{"id": "learn", "bandit": {
//!    "policy": "thompson", "arms": ["a", "b", "c"], "floor": 0.01,
//!    "refresh": {"rewards": 100, "ms": 1000},
//!    "reward": {"window_ms": 3600000, "default": 0}}}]}
//! ```
//!
//! | `policy` | parameters | probabilities |
//! |---|---|---|
//! | `epsilon_greedy` | `epsilon` (0.1) | ε/K each, plus 1 − ε on the best mean (untried arms first) |
//! | `softmax` | `temperature` (0.1) | ∝ exp(mean / temperature) |
//! | `igw` | `gamma` (100) | inverse-gap weighting: 1 / (K + γ·gap) for every arm but the best |
//! | `thompson` | — | P(arm is best) under Beta(1 + successes, 1 + failures) posteriors (rewards in [0, 1]) |
//! | `ucb1` | — | 1 on the highest upper confidence bound. Deterministic, so **unsuitable for off-policy evaluation** (no other arm has probability). |
//! | `linear` | `features` (≤ 16 numeric), `exploration` (`igw` with `gamma`, or `softmax` with `temperature`), `ridge` (1.0) | per-arm ridge regression of reward on the features; exploration over the predicted rewards |
//!
//! `floor` (default 0) mixes in the uniform distribution so that every arm keeps at least that
//! probability. A bandit may have up to 16 arms. `refresh` republishes the model every
//! `rewards` rewards or `ms` milliseconds, whichever comes first (defaults 100 and 1000).
//!
//! **How decide stays fast.** Decide reads a frozen model (an `ArcSwap` per rule), copies or
//! computes the probability vector (O(arms); for Thompson the probabilities are computed when the
//! model is refreshed, by numerical integration over the Beta posteriors, not per decision),
//! and draws with a uniform number that is a hash of (decision id, rule seed, model version). The
//! same decision id and snapshot therefore always give the same arm and the same vector:
//! `Engine::replay(slot, user, &features, id)` re-derives a decision. No allocation per decide
//! with the no-op sink. The decision is also remembered in a bounded, lock-free store
//! (`EngineBuilder::pending_rewards`, default 131,072 decisions per engine) so that its reward can
//! be joined later: bandit decisions number from a sequence of their own, a decision sits at its
//! number in a ring, and a reward claims it with one compare-and-swap, so rewards and decisions
//! never wait for each other.
//!
//! **Rewards.**
//!
//! ```rust
//! use elvon::{Engine, Features, RewardOutcome};
//!
//! let engine = Engine::default();
//! engine.load_config_json(r#"{"version": "1", "slots": [{"id": "offer",
//!   "variants": [{"id": "a"}, {"id": "b"}], "default": "a",
//!   "rules": [{"bandit": {"policy": "epsilon_greedy", "arms": ["a", "b"]}}]}]}"#).unwrap();
//! let d = engine.decide("offer", "user-1", &Features::new());
//! println!("{:?} with probability {} (vector {:?}, model {:?})",
//!     d.variant(), d.propensity(), d.probability_vector(), d.model_version());
//! assert_eq!(engine.reward(d.id(), 1.0), RewardOutcome::Applied);    // joined by decision id
//! assert_eq!(engine.reward(d.id(), 1.0), RewardOutcome::Unknown);    // counted, not an error
//! assert_eq!(engine.reward_variant("offer", "b", 0.0), RewardOutcome::Applied); // no id
//! engine.refresh(); // republish now; or let `engine.spawn_learner(period)` do it in the background
//! ```
//!
//! A decision that gets no reward within `reward.window_ms` is given `reward.default` if the rule
//! sets one (for example 0 for "no click"), or forgotten otherwise; either way it is counted in
//! `Engine::reward_stats()`. Rewards for unknown, expired or already rewarded decisions are
//! counted and return `RewardOutcome::Unknown`; they never fail the caller.
//!
//! Expiry is per decision and needs no thread: each reward expires the due decisions in a stretch
//! of the store, and a decision that takes the place of an expired one expires it (`refresh` and
//! the learner thread sweep the whole store); a decision evicted from a full store gets its
//! default too. A reward that comes after the window is not applied (the decision expires, with its default,
//! and the reward returns `Unknown`). Windows and `refresh.ms` run on the engine's clock
//! (`EngineBuilder::clock`, a `elvon::clock::Clock`; `Clock::fake` for tests and simulations).
//!
//! Rewards must lie in the rule's `reward.min`..`reward.max` (default ±1e6, the most allowed):
//! one outside returns `RewardOutcome::OutOfRange` and is not applied, so one absurd value cannot
//! swamp a policy's statistics. Contextual policies clamp each feature to ±1e6. A reward for a
//! decision whose arm a config swap removed returns `RewardOutcome::ArmRemoved`, also when the
//! arm has come back since (a re-added arm starts fresh and only learns from new decisions).
//!
//! **Learner state** lives outside the config snapshot, keyed by the slot id (or `slot/rule-id`
//! for a rule with an `id`; a `/` or `\` inside an id is written `\/` or `\\`) and the arm ids. It survives config swaps: arms added start fresh,
//! arms removed are dropped, a changed policy kind or feature list starts the rule over.
//! `Engine::learner_state()` returns it as a serde value to save; `Engine::restore_learner`
//! loads it after a restart.
//!
//! **What is logged**: every bandit decision's record carries `propensity` (the chosen arm's
//! probability), `probabilities` (the whole vector) and `model_version`, and its `features` are
//! the features the slot reads. That is what off-policy evaluation needs.
//!
//! **Offline evaluation** (`elvon::ope`): `Estimator` takes logged samples (the logged arm, its
//! propensity, the reward, the logging vector, the candidate's probabilities and optionally a
//! reward model) and reports IPS, self-normalized IPS, direct-method and doubly robust
//! estimates with 95% normal intervals (and percentile-bootstrap intervals with
//! `Estimator::with_bootstrap`), the effective sample size, how many decisions carry a
//! non-zero reward term, and how many decisions the candidate plays an arm that the logging
//! policy could never play; inputs that contradict each other are errors naming the row.
//! `ope::evaluate_records(records, &candidate)` does this for decision records and a candidate
//! engine: it replays each logged decision on the candidate, fits the reward model per
//! (slot, variant) cross-fitted over 5 folds, and adds 200 bootstrap replicates
//! (`evaluate_records_with` and `EvalOptions` change both). Estimators of several instances'
//! logs merge (`Estimator::merge`); a record's decision id names its instance (its prefix)
//! and `model_version` the fleet's model. Records carry only the features their slot reads,
//! so make the logging slot read whatever a candidate will need. The example logs 50,000 decisions with an ε-greedy
//! bandit, then estimates a per-segment static config from the log and prints the estimates next
//! to the true value:
//!
//! ```sh
//! cargo run --release --example offline_eval
//! ```
//!
//! `cargo test --test learn` checks regret against known optima. UCB1 stays under the Auer et al.
//! (2002) bound. Thompson sampling beats ε-greedy(0.05) and stays under 3% of uniform play's
//! regret, and refreshing it only every 1,000 rewards costs at most 1.3× the regret. Other
//! checks: the contextual policy comes within 5% of the optimal policy, draws are reproducible,
//! and state survives swaps and restarts. `cargo test --test ope` checks the estimators' bias and
//! interval coverage over 200 simulated logs.
//!
//! ## Running several instances
//!
//! A service behind a load balancer runs the same engine in several processes. Each makes
//! its own decisions, but they should learn as one: every reward counted once, one
//! posterior, the same model for the same decision on every instance. elvon builds this from
//! two facts.
//!
//! **The statistics are sums.** Every policy's sufficient statistics are additive per arm:
//! the count and sum of rewards (ε-greedy, softmax, IGW, UCB1, and Thompson's Beta
//! posterior), and for the linear policy `Σ x xᵀ` and `Σ r x`. So the fleet's state is the
//! sum of each instance's increments, whatever their order. After
//! [`Engine::join_fleet`](crate::Engine::join_fleet), an engine's rewards stop changing its
//! own statistics and gather as increments;
//! [`take_learner_deltas`](crate::Engine::take_learner_deltas) hands them out (a
//! [`LearnerState`](crate::LearnerState) whose numbers are increments). A transport appends
//! them to **one ordered log** and gives every entry, the instance's own included, to every
//! instance's [`merge_learner_deltas`](crate::Engine::merge_learner_deltas) in log order,
//! with its position. Every instance thus adds the same numbers in the same order (so even
//! the floating-point sums agree bit for bit), and after position *p* holds the same
//! statistics and publishes the same models with version *p*: a decision record's
//! `model_version` names the same model on every instance, and the same decision id draws
//! the same arm everywhere. A redelivered entry (position not beyond what a bandit merged)
//! is skipped, so at-least-once delivery is enough; entries that do not fit (another
//! policy, wrong lengths, non-finite numbers) are counted in
//! [`MergeOutcome`](crate::MergeOutcome), not added.
//!
//! **Decision ids name their instance.** The high 64 bits of a decision id are the engine's
//! [id prefix](crate::Engine::id_prefix), random per engine unless set. A reward can only be
//! joined where its decision is pending, so rewards travel on a topic every instance reads
//! in full; each applies the rewards with its own prefix and counts the others as foreign.
//!
//! `kafka::FleetSync` (feature `kafka`) is that transport on Kafka: the log is a topic with
//! one partition (its order is the merge order; position = offset + 1), and the reward topic
//! may have any number of partitions; every instance reads both outside consumer groups.
//!
//! Trade-offs and limits:
//! - A reward counts on every instance (its own included) after the publish interval plus a
//!   round trip; one instance alone refreshes on its own schedule. `cargo test --test fleet`
//!   checks that three instances merging every 30 decisions stay within 1.2× the regret of
//!   one instance refreshing every 30 rewards, and that the linear policy comes within 5%.
//! - Every instance reads every reward: traffic on the reward topic is multiplied by the
//!   number of instances. Keying the reward topic by prefix and assigning partitions would
//!   avoid it, at the cost of a partitioning scheme every producer must follow.
//! - The log keeps every increment since the start: a new instance replays it to build the
//!   fleet's state (10,000 rewards merged every 100 ms are a few hundred entries). Keep the
//!   learner topic's retention at least as long as the state should live.
//! - An instance cut off from the log keeps deciding on its last models and keeps its
//!   increments; they reach the fleet when it reconnects. Rewards for its decisions sent
//!   meanwhile wait on the reward topic.
//! - A restarted instance has a new prefix: rewards for the decisions of its previous life
//!   are foreign to everyone (their pending decisions died with the process).
//! - Arms are matched by id: during a config rollout an instance merges increments for arms
//!   it does not serve yet, so they are there when its config catches up; an arm the config
//!   removed drops its statistics, as on one instance.
//! - [`Engine::restore_learner`](crate::Engine::restore_learner) is for single instances: in
//!   a fleet the state comes from the log.
