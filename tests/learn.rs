//! The learning loop: regret of the bandit policies against a known optimum, determinism of
//! draws, the contextual policy, rewards and learner state across swaps and restarts.
//! Simulations are sized to run in seconds (the test profile optimizes this crate); the
//! longer versions are `#[ignore]`d.

use elvon::{Engine, Features, LearnerState, RewardOutcome};
use serde_json::json;

mod common;
use common::rng;
use rand::RngExt;

const ARMS: usize = 10;
const BEST: usize = 3;

fn arm_ids(k: usize) -> Vec<String> {
    (0..k).map(|i| format!("arm{i}")).collect()
}

fn bandit_engine(policy: serde_json::Value, k: usize, seed: u64) -> Engine {
    let ids = arm_ids(k);
    let mut bandit = policy;
    bandit["arms"] = json!(ids);
    let config = json!({"version": "1", "slots": [{
        "id": "s",
        "variants": ids.iter().map(|i| json!({"id": i})).collect::<Vec<_>>(),
        "default": ids[0],
        "rules": [{"bandit": bandit}]
    }]});
    let engine = Engine::builder().id_prefix(seed).build();
    engine
        .load_config_json(&config.to_string())
        .expect("bandit config is valid");
    engine
}

/// Runs `horizon` Bernoulli rounds (best arm 0.5, others 0.4); returns the pseudo-regret.
fn regret(policy: serde_json::Value, horizon: usize, seed: u64) -> f64 {
    let engine = bandit_engine(policy, ARMS, seed);
    let mut rng = rng(seed ^ 0xdead_beef);
    let none = Features::new();
    let mut regret = 0.0;
    for _ in 0..horizon {
        let d = engine.decide("s", "u", &none);
        let arm: usize = d.variant().expect("known slot")[3..]
            .parse()
            .expect("arm id");
        let mu = if arm == BEST { 0.5 } else { 0.4 };
        regret += 0.5 - mu;
        let r = if rng.random::<f64>() < mu { 1.0 } else { 0.0 };
        assert_eq!(engine.reward(d.id(), r), RewardOutcome::Applied);
    }
    regret
}

fn mean_regret(policy: serde_json::Value, horizon: usize, seeds: u64) -> f64 {
    let runs: Vec<f64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..seeds)
            .map(|seed| {
                let p = policy.clone();
                s.spawn(move || regret(p, horizon, seed + 1))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("run"))
            .collect()
    });
    runs.iter().sum::<f64>() / runs.len() as f64
}

const HORIZON: usize = 100_000;
const SEEDS: u64 = 12;
/// Uniform random play: 9 of 10 rounds lose 0.1.
const UNIFORM_REGRET: f64 = HORIZON as f64 * 0.9 * 0.1;

fn every(rewards: u64) -> serde_json::Value {
    json!({"rewards": rewards, "ms": 3_600_000})
}

#[test]
fn ucb1_regret_is_under_the_auer_bound() {
    // Auer, Cesa-Bianchi & Fischer (2002), Theorem 1:
    // E[R_n] ≤ 8 Σ_{i: Δi>0} ln(n)/Δi + (1 + π²/3) Σ Δi.
    let n = HORIZON as f64;
    let bound = 8.0 * 9.0 * n.ln() / 0.1 + (1.0 + std::f64::consts::PI.powi(2) / 3.0) * 0.9;
    let r = mean_regret(
        json!({"policy": "ucb1", "refresh": every(1)}),
        HORIZON,
        SEEDS,
    );
    println!("UCB1 mean regret {r:.0}, bound {bound:.0}");
    assert!(r < bound, "UCB1 regret {r} exceeds the bound {bound}");
}

/// Thompson sampling (refreshed every reward) against ε-greedy(0.05) and uniform play, and
/// against itself refreshed only every 1,000 rewards.
#[test]
fn thompson_beats_epsilon_greedy_and_uniform_and_tolerates_batched_refresh() {
    let ts = mean_regret(
        json!({"policy": "thompson", "refresh": every(1)}),
        HORIZON,
        SEEDS,
    );
    let eg = mean_regret(
        json!({"policy": "epsilon_greedy", "epsilon": 0.05, "refresh": every(1)}),
        HORIZON,
        SEEDS,
    );
    let batched = mean_regret(
        json!({"policy": "thompson", "refresh": every(1_000)}),
        HORIZON,
        SEEDS,
    );
    println!(
        "mean regret over {SEEDS} seeds: Thompson {ts:.0} (refreshed every 1,000 rewards: {batched:.0}), \
         epsilon-greedy(0.05) {eg:.0}, uniform {UNIFORM_REGRET:.0}"
    );
    assert!(ts < eg, "Thompson {ts} is not below epsilon-greedy {eg}");
    assert!(
        ts < 0.03 * UNIFORM_REGRET,
        "Thompson {ts} is not below 3% of uniform regret {UNIFORM_REGRET}"
    );
    assert!(
        batched <= 1.3 * ts,
        "batched refresh regret {batched} is more than 1.3x {ts}"
    );
}

#[test]
fn draws_are_reproducible_and_probabilities_are_distributions() {
    let policies = [
        json!({"policy": "epsilon_greedy", "epsilon": 0.2, "floor": 0.01}),
        json!({"policy": "softmax", "temperature": 0.05, "floor": 0.02}),
        json!({"policy": "igw", "gamma": 50, "floor": 0.03}),
        json!({"policy": "thompson", "floor": 0.01}),
        json!({"policy": "ucb1"}),
    ];
    for p in policies {
        let floor = p.get("floor").and_then(|f| f.as_f64()).unwrap_or(0.0);
        let engine = bandit_engine(p.clone(), 5, 7);
        let twin = bandit_engine(p.clone(), 5, 7);
        let other = bandit_engine(p.clone(), 5, 7);
        let mut rng = rng(3);
        let none = Features::new();
        for step in 0..3_000 {
            let d = engine.decide("s", "u", &none);
            let t = twin.decide("s", "u", &none);
            // Same id prefix, config and rewards: the twin engine makes the same choices.
            assert_eq!(d.id(), t.id());
            // Another engine in the same state replays the id to the same draw.
            let o = other.replay("s", "u", &none, d.id());
            assert_eq!(o.variant(), d.variant());
            assert_eq!(o.probability_vector(), d.probability_vector());
            assert_eq!(d.variant(), t.variant(), "{p} step {step}");
            let probs = d.probability_vector().expect("bandit decision");
            assert_eq!(Some(probs), t.probability_vector());
            // Replaying the id against the same snapshot and model gives the same draw.
            let r = engine.replay("s", "u", &none, d.id());
            assert_eq!(r.variant(), d.variant());
            assert_eq!(r.probability_vector(), Some(probs));
            let sum: f64 = probs.iter().sum();
            assert!((sum - 1.0).abs() < 1e-9, "{p}: sum {sum}");
            assert!(probs.iter().all(|&x| x >= floor - 1e-12), "{p}: {probs:?}");
            let chosen: Vec<(&str, f64)> = d.probabilities().expect("bandit").collect();
            let mine = chosen
                .iter()
                .find(|(v, _)| Some(*v) == d.variant())
                .expect("chosen arm listed");
            assert!((mine.1 - d.propensity()).abs() < 1e-12);
            if p["policy"] == "ucb1" {
                assert_eq!(d.propensity(), 1.0, "UCB1 is deterministic");
            }
            let arm: usize = d.variant().expect("variant")[3..].parse().expect("id");
            let r = if rng.random::<f64>() < 0.3 + 0.1 * arm as f64 {
                1.0
            } else {
                0.0
            };
            engine.reward(d.id(), r);
            twin.reward(t.id(), r);
            let v = d.variant().expect("variant");
            assert_eq!(other.reward_variant("s", v, r), RewardOutcome::Applied);
        }
        assert!(engine.reward_stats().refreshes > 1);
    }
}

#[test]
fn contextual_policy_approaches_the_optimal_policy() {
    const K: usize = 4;
    const D: usize = 8;
    const STEPS: usize = 50_000;
    let mut rng = rng(11);
    let theta: Vec<[f64; D]> = (0..K)
        .map(|_| std::array::from_fn(|_| rng.random::<f64>()))
        .collect();
    let names: Vec<String> = (0..D).map(|j| format!("x{j}")).collect();
    let engine = bandit_engine(
        json!({"policy": "linear", "features": names, "exploration": "igw", "gamma": 2000,
               "refresh": every(200)}),
        K,
        5,
    );
    let (mut got, mut best) = (0.0, 0.0);
    for t in 0..STEPS {
        let x: [f64; D] = std::array::from_fn(|_| rng.random::<f64>());
        let mut f = Features::with_capacity(D);
        for (n, v) in names.iter().zip(x) {
            f.insert(n.clone(), v);
        }
        let means: Vec<f64> = theta
            .iter()
            .map(|th| th.iter().zip(&x).map(|(a, b)| a * b).sum())
            .collect();
        let d = engine.decide("s", "u", &f);
        let arm: usize = d.variant().expect("variant")[3..].parse().expect("id");
        let r = means[arm] + 0.1 * common::normal(&mut rng);
        engine.reward(d.id(), r);
        if t >= STEPS - STEPS / 10 {
            got += means[arm];
            best += means.iter().copied().fold(f64::MIN, f64::max);
        }
    }
    println!("contextual: last 10% average reward {got:.1} vs optimal {best:.1}");
    assert!(got >= 0.95 * best, "{got} is not within 5% of {best}");
}

fn config_with_arms(arms: &[&str]) -> String {
    json!({"version": arms.join("-"), "slots": [{
        "id": "s",
        "variants": [{"id": "a"}, {"id": "b"}, {"id": "c"}, {"id": "d"}],
        "default": "a",
        "rules": [{"bandit": {"policy": "epsilon_greedy", "epsilon": 0.1, "arms": arms,
                               "refresh": {"rewards": 1}}}]
    }]})
    .to_string()
}

fn arm<'s>(state: &'s LearnerState, id: &str) -> Option<&'s elvon::ArmState> {
    state.bandits[0]
        .arms
        .iter()
        .find(|a| a.id == id && a.active)
}

#[test]
fn learner_state_survives_swaps_and_restarts() {
    let engine = Engine::default();
    engine
        .load_config_json(&config_with_arms(&["a", "b", "c"]))
        .expect("valid");
    for v in ["a", "b", "b", "c"] {
        assert_eq!(engine.reward_variant("s", v, 1.0), RewardOutcome::Applied);
    }
    assert_eq!(
        engine.reward_variant("s", "d", 1.0),
        RewardOutcome::NoSuchArm
    );
    assert_eq!(
        engine.reward_variant("nope", "a", 1.0),
        RewardOutcome::NoSuchArm
    );
    assert_eq!(
        engine.reward_variant("s", "a", f64::NAN),
        RewardOutcome::Invalid
    );
    // Swap: drop c, add d. b keeps its two rewards, d starts fresh, c is dropped.
    engine
        .load_config_json(&config_with_arms(&["b", "a", "d"]))
        .expect("valid");
    let state = engine.learner_state();
    assert_eq!(arm(&state, "b").map(|a| a.n), Some(2.0));
    assert_eq!(arm(&state, "a").map(|a| a.n), Some(1.0));
    assert_eq!(arm(&state, "d").map(|a| a.n), Some(0.0));
    assert!(arm(&state, "c").is_none());
    // Untried arm d is the greedy choice, then b (mean 1.0, first among ties) once d is tried.
    let d = engine.decide("s", "u", &Features::new());
    let probs: Vec<(String, f64)> = d
        .probabilities()
        .expect("bandit")
        .map(|(v, p)| (v.to_owned(), p))
        .collect();
    assert_eq!(
        probs.iter().map(|(v, _)| v.as_str()).collect::<Vec<_>>(),
        ["b", "a", "d"]
    );
    assert!((probs[2].1 - (0.9 + 0.1 / 3.0)).abs() < 1e-12, "{probs:?}");
    // Save, restore into a fresh engine: same model.
    let saved = serde_json::to_string(&engine.learner_state()).expect("serializes");
    let restarted = Engine::default();
    restarted
        .load_config_json(&config_with_arms(&["b", "a", "d"]))
        .expect("valid");
    restarted.restore_learner(serde_json::from_str(&saved).expect("deserializes"));
    let (before, after) = (engine.learner_state(), restarted.learner_state());
    for id in ["a", "b", "d"] {
        assert_eq!(arm(&before, id), arm(&after, id), "arm {id}");
    }
    assert!(arm(&after, "c").is_none());
    let again = restarted.decide("s", "u", &Features::new());
    assert_eq!(again.probability_vector(), d.probability_vector());
}

#[test]
fn rewards_join_by_id_within_the_window_and_default_after() {
    let config = json!({"version": "1", "slots": [{
        "id": "s", "variants": [{"id": "a"}, {"id": "b"}], "default": "a",
        "rules": [{"bandit": {"policy": "igw", "gamma": 10, "arms": ["a", "b"],
                              "reward": {"window_ms": 30, "default": 0.0}}}]
    }]});
    let clock = elvon::clock::Clock::fake(1_000);
    let engine = Engine::builder().clock(clock.clone()).build();
    engine.load_config_json(&config.to_string()).expect("valid");
    let f = Features::new();
    let first = engine.decide("s", "u", &f);
    assert_eq!(engine.reward(first.id(), 1.0), RewardOutcome::Applied);
    assert_eq!(
        engine.reward(first.id(), 1.0),
        RewardOutcome::Unknown,
        "rewarded twice"
    );
    let plain = Engine::default().decide("s", "u", &f);
    assert_eq!(engine.reward(plain.id(), 1.0), RewardOutcome::Unknown);
    let late: Vec<_> = (0..10).map(|_| engine.decide("s", "u", &f).id()).collect();
    clock.advance(std::time::Duration::from_millis(30));
    let on_time = engine.decide("s", "u", &f).id();
    assert_eq!(
        engine.reward(on_time, 0.0),
        RewardOutcome::Applied,
        "a decision made now is rewarded at once"
    );
    clock.advance(std::time::Duration::from_millis(1));
    engine.refresh();
    assert_eq!(
        engine.reward(late[0], 1.0),
        RewardOutcome::Unknown,
        "expired"
    );
    let s = engine.reward_stats();
    assert_eq!((s.applied, s.unknown, s.defaulted), (2, 3, 10), "{s:?}");
    let state = engine.learner_state();
    let n: f64 = state.bandits[0].arms.iter().map(|a| a.n).sum();
    let sum: f64 = state.bandits[0].arms.iter().map(|a| a.sum).sum();
    assert_eq!((n, sum), (12.0, 1.0));
}

/// Deciding threads hand their decision ids to rewarding threads while the learner thread
/// refreshes: every reward joins its decision exactly once (a second reward is unknown), and
/// the learner's statistics count each rewarded decision once.
#[test]
fn concurrent_decisions_and_rewards_join_exactly_once() {
    let engine = Engine::builder().pending_rewards(1 << 18).build();
    engine
        .load_config_json(&config_with_arms(&["a", "b", "c"]))
        .expect("valid");
    let learner = engine
        .spawn_learner(std::time::Duration::from_millis(1))
        .expect("learner thread");
    let (deciders, per) = (3, 20_000);
    let (tx, rx) = std::sync::mpsc::sync_channel::<elvon::DecisionId>(1_024);
    let rx = std::sync::Mutex::new(rx);
    let outcomes = std::thread::scope(|s| {
        for t in 0..deciders {
            let (engine, tx) = (&engine, tx.clone());
            s.spawn(move || {
                let f = Features::new();
                for i in 0..per {
                    let d = engine.decide("s", &format!("u{t}-{i}"), &f);
                    tx.send(d.id()).expect("a rewarder is listening");
                }
            });
        }
        drop(tx);
        let rewarders: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let mut seen = [0u64; 3];
                    loop {
                        let next = rx.lock().map(|r| r.recv());
                        let Ok(Ok(id)) = next else { break };
                        let first = engine.reward(id, 1.0);
                        let second = engine.reward(id, 1.0);
                        seen[0] += u64::from(first == RewardOutcome::Applied);
                        seen[1] += u64::from(second == RewardOutcome::Unknown);
                        seen[2] += 1;
                    }
                    seen
                })
            })
            .collect();
        rewarders
            .into_iter()
            .map(|h| h.join().expect("rewarder"))
            .fold([0u64; 3], |a, b| [a[0] + b[0], a[1] + b[1], a[2] + b[2]])
    });
    drop(learner);
    let total = (deciders * per) as u64;
    assert_eq!(
        outcomes,
        [total, total, total],
        "applied once, then unknown"
    );
    let s = engine.reward_stats();
    assert_eq!(
        (s.applied, s.unknown, s.evicted),
        (total, total, 0),
        "{s:?}"
    );
    let n: f64 = engine.learner_state().bandits[0]
        .arms
        .iter()
        .map(|a| a.n)
        .sum();
    assert_eq!(n, total as f64);
}

#[test]
fn pending_store_is_bounded() {
    let config = config_with_arms(&["a", "b"]);
    let engine = Engine::builder().pending_rewards(64).build();
    engine.load_config_json(&config).expect("valid");
    let ids: Vec<_> = (0..5_000)
        .map(|_| engine.decide("s", "u", &Features::new()).id())
        .collect();
    assert!(engine.reward_stats().evicted >= 5_000 - 64);
    assert_eq!(engine.reward(ids[0], 1.0), RewardOutcome::Unknown);
    assert_eq!(engine.reward(ids[4_999], 1.0), RewardOutcome::Applied);
}

#[test]
#[ignore = "long: 10 seeds of 10^6 rounds"]
fn long_regret_runs() {
    let ts = mean_regret(
        json!({"policy": "thompson", "refresh": every(100)}),
        1_000_000,
        10,
    );
    let eg = mean_regret(
        json!({"policy": "epsilon_greedy", "epsilon": 0.05, "refresh": every(100)}),
        1_000_000,
        10,
    );
    println!("10^6 rounds: Thompson {ts:.0}, epsilon-greedy {eg:.0}");
    assert!(ts < eg);
}

#[test]
fn background_learner_republishes_on_its_period() {
    let config = json!({"version": "1", "slots": [{
        "id": "s", "variants": [{"id": "a"}, {"id": "b"}], "default": "a",
        "rules": [{"bandit": {"policy": "epsilon_greedy", "epsilon": 0.0, "arms": ["a", "b"],
                              "refresh": {"rewards": 1_000_000, "ms": 200}}}]
    }]});
    let engine = Engine::default();
    engine.load_config_json(&config.to_string()).expect("valid");
    let v0 = engine.decide("s", "u", &Features::new()).model_version();
    // Below the reward threshold: only the timer can republish.
    assert_eq!(engine.reward_variant("s", "b", 1.0), RewardOutcome::Applied);
    assert_eq!(engine.reward_variant("s", "a", 0.0), RewardOutcome::Applied);
    // Whatever the reward calls republished is counted by now; from here on nothing but the
    // learner thread publishes.
    let before = engine.reward_stats().refreshes;
    let learner = engine
        .spawn_learner(std::time::Duration::from_millis(5))
        .expect("thread");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while engine.reward_stats().refreshes == before && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let d = engine.decide("s", "u", &Features::new());
    learner.stop();
    assert!(
        engine.reward_stats().refreshes > before,
        "the learner thread never republished"
    );
    assert!(d.model_version() > v0);
    // The republished model exploits b (mean 1 against 0).
    assert_eq!(d.variant(), Some("b"));
    assert_eq!(d.propensity(), 1.0);
}

#[test]
fn bad_bandit_rules_are_rejected_with_paths() {
    let slot = |rules: serde_json::Value| {
        json!({"version": "1", "slots": [{
            "id": "s", "variants": [{"id": "a"}, {"id": "b"}], "default": "a", "rules": rules
        }]})
        .to_string()
    };
    let cases = [
        (
            json!([{"bandit": {"policy": "greedy", "arms": ["a"]}}]),
            "slots[0].rules[0].bandit.policy",
            "unknown policy",
        ),
        (
            json!([{"bandit": {"policy": "ucb1", "arms": ["a", "z"]}}]),
            "slots[0].rules[0].bandit.arms[1]",
            "unknown variant",
        ),
        (
            json!([{"bandit": {"policy": "ucb1", "arms": ["a", "a"]}}]),
            "slots[0].rules[0].bandit.arms[1]",
            "listed twice",
        ),
        (
            json!([{"bandit": {"policy": "ucb1", "arms": ["a", "b"], "floor": 0.6}}]),
            "slots[0].rules[0].bandit.floor",
            "outside",
        ),
        (
            json!([{"bandit": {"policy": "linear", "arms": ["a", "b"]}}]),
            "slots[0].rules[0].bandit",
            "features",
        ),
        (
            json!([{"bandit": {"policy": "softmax", "arms": ["a"], "refresh": {"rewards": 0}}}]),
            "slots[0].rules[0].bandit.refresh.rewards",
            "positive integer",
        ),
        (
            json!([{"when": {"feature": "x", "op": "exists"}, "bandit": {"policy": "ucb1", "arms": ["a"]}},
                {"bandit": {"policy": "ucb1", "arms": ["b"]}}]),
            "slots[0].rules[1]",
            "id",
        ),
    ];
    for (rules, path, words) in cases {
        let engine = Engine::default();
        let err = engine
            .load_config_json(&slot(rules.clone()))
            .expect_err("invalid");
        let elvon::ConfigError::Invalid(problems) = err else {
            panic!("expected validation problems for {rules}");
        };
        assert!(
            problems
                .iter()
                .any(|p| p.path() == path && p.message().contains(words)),
            "{rules}: expected {path:?} mentioning {words:?}, got {problems:?}"
        );
    }
    let too_many: Vec<String> = (0..17).map(|i| format!("v{i}")).collect();
    let config = json!({"version": "1", "slots": [{
        "id": "s", "variants": too_many.iter().map(|v| json!({"id": v})).collect::<Vec<_>>(),
        "default": "v0", "rules": [{"bandit": {"policy": "thompson", "arms": too_many}}]
    }]});
    let err = Engine::default()
        .load_config_json(&config.to_string())
        .expect_err("17 arms");
    assert!(err.to_string().contains("at most 16 arms"), "{err}");
}

/// Engines used in turn on one thread (one per tenant, instances in a test) keep their
/// pending decisions: each thread holds a block of every engine's bandit sequence it uses,
/// so switching engines does not throw the block away and wrap the store early.
#[test]
fn engines_alternating_on_one_thread_keep_their_pending_decisions() {
    let engines: Vec<Engine> = (0..3)
        .map(|i| bandit_engine(json!({"policy": "thompson"}), ARMS, 100 + i))
        .collect();
    let none = Features::new();
    let ids: Vec<_> = (0..3_000)
        .map(|t| (t % 3, engines[t % 3].decide("s", "u", &none).id()))
        .collect();
    let applied = ids
        .iter()
        .filter(|(i, id)| engines[*i].reward(*id, 1.0) == RewardOutcome::Applied)
        .count();
    assert_eq!(applied, 3_000, "{:?}", engines[0].reward_stats());
    for e in &engines {
        assert_eq!(e.reward_stats().evicted, 0);
    }
}
