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

/// SplitMix64: a small, seedable generator for simulated environments in tests.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in 0..n.
    pub fn below(&mut self, n: usize) -> usize {
        (self.f64() * n as f64) as usize % n
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.f64().max(1e-300), self.f64());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}
