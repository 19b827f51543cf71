//! Arbitrary users and features against a corpus of valid configs: decide, decide again,
//! explain. Nothing may panic; decisions must be deterministic and well-formed.
#![no_main]

use std::sync::OnceLock;

use elvon::{Engine, Features};
use libfuzzer_sys::fuzz_target;

const CONFIGS: [&str; 2] = [
    include_str!("../../tests/data/kinds.json"),
    include_str!("../../examples/quickstart.json"),
];

fn engines() -> &'static [Engine] {
    static E: OnceLock<Vec<Engine>> = OnceLock::new();
    E.get_or_init(|| {
        CONFIGS
            .iter()
            .map(|c| {
                let e = Engine::default();
                e.load_config_json(c).expect("corpus configs are valid");
                e
            })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let engine = &engines()[pick as usize % CONFIGS.len()];
    let snap = engine.snapshot();
    let mut chunks = rest.split(|&b| b == 0xFF);
    let user = String::from_utf8_lossy(chunks.next().unwrap_or_default()).into_owned();
    let names: Vec<String> = snap
        .slots()
        .flat_map(|s| snap.features_for(s).into_iter().flatten())
        .map(str::to_owned)
        .collect();
    let mut f = Features::new();
    for c in chunks {
        let (Some(&a), Some(&b)) = (c.first(), c.get(1)) else {
            continue;
        };
        let body = &c[2..];
        let name = if a & 0x80 == 0 && !names.is_empty() {
            names[a as usize % names.len()].clone()
        } else {
            String::from_utf8_lossy(body).into_owned()
        };
        let text = String::from_utf8_lossy(body).into_owned();
        let mut num = [0u8; 8];
        for (i, x) in body.iter().take(8).enumerate() {
            num[i] = *x;
        }
        match b % 6 {
            0 => f.insert(name, text),
            1 => f.insert(name, i64::from_le_bytes(num)),
            2 => f.insert(name, f64::from_le_bytes(num)),
            3 => f.insert(name, b & 0x10 != 0),
            4 => f.insert(name, vec![text]),
            _ => f.remove(&name),
        };
    }
    for slot in snap.slots().chain(["", "no-such-slot"]) {
        let d = engine.decide(slot, &user, &f);
        // Bandit rules randomize per decision id; the same id gives the same decision.
        let again = match d.model_version() {
            Some(_) => engine.replay(slot, &user, &f, d.id()),
            None => engine.decide(slot, &user, &f),
        };
        assert_eq!(d.variant(), again.variant());
        assert_eq!(d.reason(), again.reason());
        assert_eq!(d.propensity().to_bits(), again.propensity().to_bits());
        assert!((0.0..=1.0).contains(&d.propensity()), "{}", d.propensity());
        assert_eq!(d.variant().is_none(), snap.features_for(slot).is_none());
        if let Some(p) = d.probability_vector() {
            assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{p:?}");
            assert!(p.iter().all(|x| x.is_finite() && *x >= 0.0), "{p:?}");
        }
        let x = engine.explain(slot, &user, &f);
        if d.model_version().is_none() {
            assert_eq!(x.decision.variant(), d.variant());
        }
        assert!(!x.steps.is_empty());
    }
});
