//! Fixtures shared by tests and benches (`#[path]`-included by `benches/decide.rs`).
#![allow(dead_code)]

use elvon::Features;

/// `tests/data/kinds.json`: one slot per rule kind.
pub const KINDS_CONFIG: &str = include_str!("../data/kinds.json");

/// The slots of [`KINDS_CONFIG`], plus one that does not exist.
pub const KIND_SLOTS: [&str; 13] = [
    "serve",
    "split",
    "split_by_device",
    "split_by_int",
    "rollout",
    "score",
    "targeting",
    "layered",
    "killed",
    "fallback",
    "bandit",
    "contextual",
    "no-such-slot",
];

/// `n` users `user-0..` with the 14 features [`KINDS_CONFIG`] reads, varied so that every
/// rule kind takes every branch.
pub fn kinds_users(n: usize) -> Vec<(String, Features)> {
    (0..n as i64)
        .map(|i| {
            let f = Features::new()
                .with("country", ["KR", "JP", "US", "DE"][(i % 4) as usize])
                .with("plan", ["free", "pro", "vip"][(i % 3) as usize])
                .with("app_version", ["3.1.0", "3.2.0", "4.0.1"][(i % 3) as usize])
                .with("age", 18 + i % 50)
                .with(
                    "email",
                    if i % 2 == 0 {
                        "ann.lee@example.com"
                    } else {
                        "bob@elsewhere.org"
                    },
                )
                .with("signup", "2024-05-01T12:00:00Z")
                .with("tags", vec!["beta", "early"])
                .with("score", (i % 10) as f64 / 10.0)
                .with("vip", i % 7 == 0)
                .with("device_id", format!("dev-{i}"))
                .with("account", i * 7)
                .with("page_view_7d", i % 20)
                .with("purchase_7d", i % 4)
                .with("cart_abandon_7d", i % 5);
            (format!("user-{i}"), f)
        })
        .collect()
}

/// A seeded generator for simulated environments in tests (the same seed, the same run).
pub fn rng(seed: u64) -> rand::rngs::StdRng {
    rand::SeedableRng::seed_from_u64(seed)
}

/// A standard normal draw (Box–Muller).
pub fn normal(rng: &mut impl rand::RngExt) -> f64 {
    let (u, v): (f64, f64) = (rng.random::<f64>().max(1e-300), rng.random());
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}
