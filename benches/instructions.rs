//! A fixed number of decides on one reference workload, for instruction counts:
//!
//! ```text
//! cargo bench --bench instructions --no-run
//! B=$(ls -t target/release/deps/instructions-* | grep -v '\.d$' | head -1)
//! valgrind --tool=callgrind $B 100000 w4; valgrind --tool=callgrind $B 300000 w4
//! ```
//!
//! The difference of the two totals over 200,000 is the cost of one decide, without the
//! set-up (building 100,000 users). `... 100000 w1 sticky` makes the workload's slot sticky
//! on an in-memory assignment store filled before counting. Run as `cargo bench --bench instructions` it decides
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
    // `sticky`: the workload's first slot made sticky, on an engine with an in-memory
    // assignment store that every user's first decision fills (before the counted loop in
    // the same run, so the difference of two runs is the cost of served assignments).
    let sticky = args.iter().any(|a| a == "sticky");
    let engine = if sticky {
        Engine::builder()
            .assignments(elvon::sticky::MemoryAssignments::new(w.users.len() * 2))
            .assignment_queue(w.users.len())
            .build()
    } else {
        Engine::default()
    };
    let mut config: serde_json::Value =
        serde_json::from_str(&w.configs[0]).expect("the workload's config is JSON");
    if sticky {
        config["slots"][0]["sticky"] = serde_json::json!({});
    }
    engine
        .load_config_json(&config.to_string())
        .expect("the workload's config is valid");
    if sticky {
        for (u, f) in &w.users {
            let _ = engine.decide(w.slot, u, f);
        }
        engine
            .flush_assignments(std::time::Duration::from_secs(60))
            .expect("assignments written");
    }
    let mut checksum = 0usize;
    for i in 0..n {
        let (u, f) = &w.users[i % w.users.len()];
        let d = engine.decide(w.slot, u, f);
        checksum = checksum.wrapping_add(d.variant().map_or(0, str::len));
    }
    println!("{} decides on {}, checksum {checksum}", n, w.name);
}
