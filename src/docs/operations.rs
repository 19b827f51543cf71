//! # Operations
//!
//! Running elvon inside a service.
//!
//! ## Start-up and shutdown
//!
//! Build one [`Engine`](crate::Engine) per process and clone it into request handlers (a clone
//! is a reference count). Install a metrics recorder before the first config load: per-slot
//! handles are registered when a config is compiled. On shutdown, after the last decision,
//! call [`Engine::flush`](crate::Engine::flush) with a timeout: it waits for the decisions
//! already made to reach the decision log. Dropping the last handle of a JSON-lines or Kafka
//! sink drains it too, bounded by its drain timeout, and counts what could not be delivered
//! as failed ([`SinkStats`](crate::sink::SinkStats)).
//!
//! ```
//! use std::time::Duration;
//! use elvon::{Engine, Features};
//! use elvon::sink::MemorySink;
//!
//! let sink = MemorySink::new(100);
//! let engine = Engine::builder().sink(sink.clone()).build();
//! engine.load_config_json(r#"{"version": "1", "slots": [{"id": "s",
//!     "variants": [{"id": "a"}], "default": "a"}]}"#)?;
//! let learner = engine.spawn_learner(Duration::from_millis(100))?; // model refresh, expiry
//! let _ = engine.decide("s", "user-1", &Features::new());
//! engine.flush(Duration::from_secs(5))?; // the decision log has everything decided so far
//! drop(learner); // stops and joins the learner thread
//! assert_eq!(sink.stats().written, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Behind HTTP (feature `http`), `elvon::http::serve` does this for you: on its shutdown
//! signal it stops accepting, lets the requests in flight finish, then flushes, so every
//! decision answered with `200` is in the log when it returns. `examples/decide_service` shows
//! the whole service, wired to SIGTERM.
//!
//! ## Background threads
//!
//! [`Engine::spawn_learner`](crate::Engine::spawn_learner) (model refresh and reward expiry),
//! [`ConfigWatcher`](crate::ConfigWatcher) (a config file) and, with feature `kafka`, the
//! config-topic watcher and the feature updater, and with feature `postgres` the
//! `PgConfigWatcher` (`elvon-pg-config`, a one-thread Tokio runtime of its own) each run one
//! named thread, stopped and joined when their handle is dropped. Besides these, elvon starts only the JSON-lines and Kafka
//! sinks' writer threads, one snapshot reclaimer per process, one `elvon-metrics` thread per
//! process that publishes decision counts every second (see [`crate::metrics::publish`];
//! it ends when no snapshot is left), and, for a Redis source
//! without a runtime of the caller's, a one-worker Tokio runtime (librdkafka runs threads of
//! its own); with feature `prometheus`, `http::Prometheus::install` starts one upkeep thread
//! that folds histogram samples in every 5 s.
//!
//! ## Metrics and benchmarks
//!
//! Every metric is listed in [`crate::metrics`]. Latency, throughput and allocation figures,
//! with the commands that produce them and the machine they were measured on, are in
//! `BENCHMARKS.md` at the repository root.
//!
//! ## Testing
//!
//! `scripts/test.sh` installs what is missing (`gcc`, `g++`, `make`, `redis-server`,
//! `redis-tools`, `python3` via `apt-get`; `cargo-fuzz` and `cargo-hack` via `cargo install`)
//! and runs: `cargo fmt --check`, `cargo clippy --all-targets --all-features -D warnings`, the
//! rust-version check, `cargo hack clippy --each-feature --no-dev-deps -- -D warnings`, `cargo test
//! --all-features` (unit, integration, property and doc tests, these pages included), `cargo
//! test --no-default-features`, `cargo doc` with `-D warnings`, the quickstart, and a
//! 20-second run of each fuzz target on the stable toolchain. The fuzz targets are `config`
//! (arbitrary bytes as a config), `decide` (arbitrary users and features against committed
//! configs) and `record` (JSON-lines round trip). Fuzz longer with `FUZZ_SECONDS=600
//! scripts/test.sh`, or one target with `cargo fuzz run decide --sanitizer none
//! fuzz/corpus/decide fuzz/seeds/decide -- -max_total_time=600` (the seed directory goes
//! second so that libFuzzer writes new inputs to `fuzz/corpus/`).
