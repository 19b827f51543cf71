//! The learning loop across a fleet of engines sharing one learner state through one
//! ordered log of increments (here a vector; `tests/kafka.rs` runs it on Kafka): the same
//! statistics and model versions everywhere, regret close to one instance, late joiners and
//! instances cut off for a while converge.

use elvon::{Engine, Features, LearnerState};
use serde_json::json;

mod common;
use common::rng;
use rand::RngExt;

const ARMS: usize = 10;
const BEST: usize = 3;

fn arm_ids(k: usize) -> Vec<String> {
    (0..k).map(|i| format!("arm{i}")).collect()
}

fn config(policy: serde_json::Value, k: usize) -> String {
    let ids = arm_ids(k);
    let mut bandit = policy;
    bandit["arms"] = json!(ids);
    json!({"version": "1", "slots": [{
        "id": "s",
        "variants": ids.iter().map(|i| json!({"id": i})).collect::<Vec<_>>(),
        "default": ids[0],
        "rules": [{"bandit": bandit}]
    }]})
    .to_string()
}

fn engine(config: &str, prefix: u64) -> Engine {
    let e = Engine::builder().id_prefix(prefix).build();
    e.load_config_json(config).expect("valid config");
    e
}

/// The shared log and how far each instance merged it.
struct Log {
    entries: Vec<LearnerState>,
    merged: Vec<usize>,
}

impl Log {
    fn new(instances: usize) -> Self {
        Log {
            entries: Vec::new(),
            merged: vec![0; instances],
        }
    }

    /// Instance `i` appends its increments.
    fn publish(&mut self, e: &Engine) {
        if let Some(d) = e.take_learner_deltas() {
            self.entries.push(d);
        }
    }

    /// Instance `i` merges what it has not merged yet.
    fn catch_up(&mut self, i: usize, e: &Engine) {
        for p in self.merged[i]..self.entries.len() {
            e.merge_learner_deltas(&self.entries[p], p as u64 + 1);
        }
        self.merged[i] = self.entries.len();
    }

    fn sync(&mut self, fleet: &[Engine]) {
        for e in fleet {
            self.publish(e);
        }
        for (i, e) in fleet.iter().enumerate() {
            self.catch_up(i, e);
        }
    }
}

fn fleet(config: &str, n: usize, seed: u64) -> Vec<Engine> {
    (0..n as u64)
        .map(|i| {
            let e = engine(config, seed << 8 | i);
            e.join_fleet();
            e
        })
        .collect()
}

fn arm_of(d: &elvon::Decision) -> usize {
    d.variant().expect("known slot")[3..]
        .parse()
        .expect("arm id")
}

/// Bernoulli arms (best 0.5, others 0.4), `horizon` decisions spread round-robin over the
/// instances, the log synced every `every` decisions; returns the pseudo-regret. With one
/// instance and no fleet it is the single-engine baseline (models refreshed by the config).
fn regret(config: &str, instances: usize, horizon: usize, every: usize, seed: u64) -> f64 {
    let mut rng = rng(seed ^ 0xfeed);
    let none = Features::new();
    let (engines, mut log) = if instances == 1 {
        (vec![engine(config, seed << 8)], None)
    } else {
        (fleet(config, instances, seed), Some(Log::new(instances)))
    };
    let mut regret = 0.0;
    for t in 0..horizon {
        let e = &engines[t % instances];
        let d = e.decide("s", "u", &none);
        let mu = if arm_of(&d) == BEST { 0.5 } else { 0.4 };
        regret += 0.5 - mu;
        let r = if rng.random::<f64>() < mu { 1.0 } else { 0.0 };
        assert_eq!(e.reward(d.id(), r), elvon::RewardOutcome::Applied);
        if (t + 1) % every == 0 {
            if let Some(log) = &mut log {
                log.sync(&engines);
            }
        }
    }
    regret
}

#[test]
fn instances_hold_the_same_statistics_and_models_after_the_same_log() {
    let config = config(json!({"policy": "thompson"}), ARMS);
    let engines = fleet(&config, 3, 1);
    let mut log = Log::new(3);
    let mut rng = rng(7);
    let none = Features::new();
    for t in 0..3_000 {
        let e = &engines[t % 3];
        let d = e.decide("s", "u", &none);
        let r = if rng.random::<f64>() < 0.4 + 0.01 * arm_of(&d) as f64 {
            1.0
        } else {
            0.0
        };
        assert_eq!(e.reward(d.id(), r), elvon::RewardOutcome::Applied);
        if (t + 1) % 100 == 0 {
            log.sync(&engines);
        }
    }
    log.sync(&engines);
    let states: Vec<LearnerState> = engines.iter().map(Engine::learner_state).collect();
    assert_eq!(states[0], states[1]);
    assert_eq!(states[0], states[2]);
    let n: f64 = states[0].bandits[0].arms.iter().map(|a| a.n).sum();
    assert_eq!(
        n, 3_000.0,
        "every reward counted once in the fleet's statistics"
    );
    let decisions: Vec<_> = engines.iter().map(|e| e.decide("s", "u", &none)).collect();
    let version = decisions[0].model_version();
    assert_eq!(
        version,
        Some(log.entries.len() as u64),
        "the version is the log position"
    );
    for d in &decisions {
        assert_eq!(d.model_version(), version);
        assert_eq!(d.probability_vector(), decisions[0].probability_vector());
    }
    // The same decision id gives the same choice on every instance.
    let id = decisions[0].id();
    let replays: Vec<_> = engines
        .iter()
        .map(|e| e.replay("s", "u", &none, id).variant().map(str::to_owned))
        .collect();
    assert_eq!(replays, vec![decisions[0].variant().map(str::to_owned); 3]);
}

#[test]
fn merging_is_idempotent_and_rejects_what_does_not_fit() {
    let config = config(json!({"policy": "thompson"}), 2);
    let engines = fleet(&config, 1, 2);
    let e = &engines[0];
    let d = e.decide("s", "u", &Features::new());
    e.reward(d.id(), 1.0);
    let entry = e.take_learner_deltas().expect("an increment");
    assert!(e.take_learner_deltas().is_none(), "taken once");
    let first = e.merge_learner_deltas(&entry, 1);
    assert_eq!((first.merged, first.replayed, first.rejected), (1, 0, 0));
    let again = e.merge_learner_deltas(&entry, 1);
    assert_eq!(
        (again.merged, again.replayed),
        (0, 1),
        "a redelivered entry"
    );
    let n = |e: &Engine| {
        e.learner_state().bandits[0]
            .arms
            .iter()
            .map(|a| a.n)
            .sum::<f64>()
    };
    assert_eq!(n(e), 1.0);
    // Hostile entries: a non-finite count, a context on a context-free policy, another policy.
    let mut bad = entry.clone();
    bad.bandits[0].arms[0].n = f64::NAN;
    assert_eq!(e.merge_learner_deltas(&bad, 2).rejected, 1);
    let mut bad = entry.clone();
    bad.bandits[0].arms[0].xr = vec![1.0];
    assert_eq!(e.merge_learner_deltas(&bad, 3).rejected, 1);
    let mut bad = entry;
    bad.bandits[0].policy = "linear".into();
    assert_eq!(e.merge_learner_deltas(&bad, 4).rejected, 1);
    assert_eq!(n(e), 1.0, "nothing that did not fit was added");
}

#[test]
fn fleet_regret_is_within_a_fifth_of_one_instance() {
    // The single engine refreshes its model every 30 rewards; the fleet merges every 30
    // decisions (10 per instance), so both learn at the same pace of the whole traffic.
    const HORIZON: usize = 20_000;
    const SEEDS: u64 = 6;
    let single = config(
        json!({"policy": "thompson", "refresh": {"rewards": 30, "ms": 3_600_000}}),
        ARMS,
    );
    let run = |instances: usize| -> f64 {
        let runs: Vec<f64> = std::thread::scope(|s| {
            let handles: Vec<_> = (1..=SEEDS)
                .map(|seed| {
                    let c = &single;
                    s.spawn(move || regret(c, instances, HORIZON, 30, seed))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("run"))
                .collect()
        });
        runs.iter().sum::<f64>() / runs.len() as f64
    };
    let (one, three) = (run(1), run(3));
    println!("mean regret over {HORIZON} decisions: one instance {one:.0}, three {three:.0}");
    assert!(
        three <= 1.2 * one,
        "fleet regret {three} vs one instance {one}"
    );
    assert!(
        three < 0.5 * HORIZON as f64 * 0.9 * 0.1,
        "the fleet learns at all: {three}"
    );
}

#[test]
fn a_late_instance_and_one_cut_off_converge_on_the_fleets_model() {
    let config = config(json!({"policy": "thompson"}), ARMS);
    let engines = fleet(&config, 3, 3);
    let mut log = Log::new(4);
    let mut rng = rng(9);
    let none = Features::new();
    let rewarded = std::cell::Cell::new(0u32);
    let mut step = |engines: &[Engine], log: &mut Log, live: &[usize]| {
        for t in 0..300 {
            let i = live[t % live.len()];
            let d = engines[i].decide("s", "u", &none);
            let r = f64::from(u8::from(rng.random::<f64>() < 0.3));
            engines[i].reward(d.id(), r);
            rewarded.set(rewarded.get() + 1);
        }
        for &i in live {
            log.publish(&engines[i]);
            log.catch_up(i, &engines[i]);
        }
    };
    // 10,200 rewards on all three; then instance 2 is cut off for 3 rounds: it decides on
    // its last model and keeps its increments.
    for _ in 0..34 {
        step(&engines, &mut log, &[0, 1, 2]);
    }
    let frozen = engines[2].decide("s", "u", &none).model_version();
    for _ in 0..3 {
        let d = engines[2].decide("s", "u", &none);
        assert_eq!(d.model_version(), frozen, "cut off: the last model serves");
        engines[2].reward(d.id(), 1.0);
        rewarded.set(rewarded.get() + 1);
        step(&engines, &mut log, &[0, 1]);
    }
    // A new instance starts from the whole log; instance 2 reconnects.
    let late = engine(&config, 3 << 8 | 9);
    late.join_fleet();
    log.catch_up(3, &late);
    log.publish(&engines[2]);
    for (i, e) in engines.iter().enumerate() {
        log.catch_up(i, e);
    }
    log.catch_up(3, &late);
    let all: Vec<&Engine> = engines.iter().chain([&late]).collect();
    let states: Vec<LearnerState> = all.iter().map(|e| e.learner_state()).collect();
    for s in &states[1..] {
        assert_eq!(s, &states[0]);
    }
    let n: f64 = states[0].bandits[0].arms.iter().map(|a| a.n).sum();
    assert_eq!(n, f64::from(rewarded.get()), "nothing lost while cut off");
    let id = engines[0].decide("s", "u", &none).id();
    let probs: Vec<_> = all
        .iter()
        .map(|e| {
            e.replay("s", "u", &none, id)
                .probability_vector()
                .map(<[f64]>::to_vec)
        })
        .collect();
    for p in &probs {
        assert_eq!(p, &probs[0], "the late instance serves the fleet's model");
    }
}

#[test]
fn the_linear_policy_merges_too() {
    const K: usize = 4;
    const D: usize = 8;
    const STEPS: usize = 30_000;
    let mut env = rng(11);
    let theta: Vec<[f64; D]> = (0..K)
        .map(|_| std::array::from_fn(|_| env.random::<f64>()))
        .collect();
    let names: Vec<String> = (0..D).map(|j| format!("x{j}")).collect();
    let config = config(
        json!({"policy": "linear", "features": names, "exploration": "igw", "gamma": 2000,
               "refresh": {"rewards": 200, "ms": 3_600_000}}),
        K,
    );
    let run = |instances: usize| -> f64 {
        let mut rng = rng(12);
        let engines = if instances == 1 {
            vec![engine(&config, 77)]
        } else {
            fleet(&config, instances, 4)
        };
        let mut log = Log::new(instances);
        let mut got = 0.0;
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
            let e = &engines[t % instances];
            let d = e.decide("s", "u", &f);
            let arm = arm_of(&d);
            e.reward(d.id(), means[arm] + 0.1 * common::normal(&mut rng));
            if instances > 1 && (t + 1) % 200 == 0 {
                log.sync(&engines);
            }
            if t >= STEPS - STEPS / 10 {
                got += means[arm];
            }
        }
        got
    };
    let (one, three) = (run(1), run(3));
    println!("linear, last 10% reward: one instance {one:.1}, three {three:.1}");
    assert!(three >= 0.95 * one, "fleet {three} vs one instance {one}");
}

/// Increments gathered under a policy the rule no longer has are discarded, and counted.
#[test]
fn increments_of_a_replaced_policy_are_discarded_and_counted() {
    let engines = fleet(&config(json!({"policy": "thompson"}), 2), 1, 5);
    let e = &engines[0];
    for _ in 0..3 {
        let d = e.decide("s", "u", &Features::new());
        assert_eq!(e.reward(d.id(), 1.0), elvon::RewardOutcome::Applied);
    }
    e.load_config_json(&config(json!({"policy": "epsilon_greedy"}), 2))
        .expect("valid");
    let d = e.decide("s", "u", &Features::new());
    assert_eq!(e.reward(d.id(), 1.0), elvon::RewardOutcome::Applied);
    let taken = e.take_learner_deltas().expect("the new policy's increment");
    assert_eq!(taken.bandits[0].policy, "epsilon_greedy");
    assert_eq!(taken.bandits[0].arms.iter().map(|a| a.n).sum::<f64>(), 1.0);
    assert_eq!(
        e.reward_stats().fleet_discarded,
        3,
        "{:?}",
        e.reward_stats()
    );
}
