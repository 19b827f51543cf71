//! Arbitrary bytes as a config: parse, validate, compile; when it loads, decide and explain
//! every slot for a few users with features derived from the input. Nothing may panic, and a
//! rejected config must leave the engine serving its previous version.
#![no_main]

use elvon::{Config, Engine, Features};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let engine = Engine::default();
    let Ok(config) = Config::from_slice(data) else {
        return;
    };
    match engine.load_config(&config) {
        Err(e) => {
            assert!(!e.problems().is_empty());
            assert_eq!(engine.config_version(), "");
        }
        Ok(_) => {
            let snap = engine.snapshot();
            let tail = String::from_utf8_lossy(&data[data.len().saturating_sub(16)..]).into_owned();
            let users = ["", "user-1", tail.as_str()];
            for slot in snap.slots() {
                let mut f = Features::new();
                for (i, name) in snap.features_for(slot).into_iter().flatten().enumerate() {
                    match (data.len() + i) % 5 {
                        0 => f.insert(name.to_owned(), tail.clone()),
                        1 => f.insert(name.to_owned(), data.len() as i64 - 50),
                        2 => f.insert(name.to_owned(), (i as f64) * 0.7),
                        3 => f.insert(name.to_owned(), i % 2 == 0),
                        _ => f.insert(name.to_owned(), vec![tail.clone()]),
                    };
                }
                for u in users {
                    let d = engine.decide(slot, u, &f);
                    assert!(d.variant().is_some());
                    assert!((0.0..=1.0).contains(&d.propensity()));
                    let _ = engine.explain(slot, u, &f);
                }
            }
        }
    }
});
