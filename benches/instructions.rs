//! A fixed number of decides on one reference workload, for instruction counts:
//!
//! ```text
//! cargo bench --bench instructions --no-run
//! B=$(ls -t target/release/deps/instructions-* | grep -v '\.d$' | head -1)
//! valgrind --tool=callgrind $B 100000 w4; valgrind --tool=callgrind $B 300000 w4
//! ```
//!
//! The difference of the two totals over 200,000 is the cost of one decide, without the
//! set-up (building 100,000 users). Run as `cargo bench --bench instructions` it decides
//! 200,000 times on W4 and prints nothing but the checksum.

use elvon::Engine;

#[path = "workloads/mod.rs"]
mod workloads;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n = args
        .iter()
        .find_map(|a| a.parse::<usize>().ok())
        .unwrap_or(200_000);
    let w = match args.iter().find(|a| a.starts_with('w')).map(String::as_str) {
        Some("w1") => workloads::w1(),
        Some("w2") => workloads::w2(),
        Some("w3") => workloads::w3(),
        Some("w5") => workloads::w5(),
        _ => workloads::w4(),
    };
    let engine = Engine::default();
    engine
        .load_config_json(&w.configs[0])
        .expect("the workload's config is valid");
    let mut checksum = 0usize;
    for i in 0..n {
        let (u, f) = &w.users[i % w.users.len()];
        let d = engine.decide(w.slot, u, f);
        checksum = checksum.wrapping_add(d.variant().map_or(0, str::len));
    }
    println!("{} decides on {}, checksum {checksum}", n, w.name);
}
