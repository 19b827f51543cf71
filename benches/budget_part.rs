//! `benches/budget.toml` and the check of a report against it (a module of the latency
//! harness).

use super::*;

/// `benches/budget.toml`.
pub(crate) struct Budget {
    table: toml::Table,
    pub(crate) memory_users: u64,
}

impl Budget {
    pub(crate) fn load() -> Self {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/budget.toml");
        let text =
            std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
        let table: toml::Table = text
            .parse()
            .unwrap_or_else(|e| panic!("{path} is not valid TOML: {e}"));
        let memory_users = table
            .get("memory")
            .and_then(|m| m.get("users"))
            .and_then(toml::Value::as_integer)
            .map_or(10_000_000, |n| n.max(1) as u64);
        Budget {
            table,
            memory_users,
        }
    }

    pub(crate) fn get(&self, section: &str, key: &str) -> Option<f64> {
        let mut v = self.table.get(section.split('.').next()?)?;
        for part in section.split('.').skip(1) {
            v = v.get(part)?;
        }
        let x = v.get(key)?;
        x.as_float().or_else(|| x.as_integer().map(|i| i as f64))
    }

    pub(crate) fn check(&self, r: &Report) -> Vec<String> {
        let mut out = Vec::new();
        let ceiling = |out: &mut Vec<String>, what: String, value: f64, limit: Option<f64>| {
            if let Some(limit) = limit {
                if value > limit {
                    out.push(format!("{what} is {value:.2}, budget {limit}"));
                }
            }
        };
        let base = |w: &str, threads, swap| {
            r.rows.iter().find(|x| {
                x.workload == w
                    && x.scenario
                        == Scenario {
                            threads,
                            swap,
                            sink: Sink::Noop,
                        }
            })
        };
        for w in ["W1", "W2", "W3", "W4", "W5"] {
            let sec = format!("workload.{w}");
            if base(w, 1, false).is_none() && self.table.contains_key("workload") {
                out.push(format!(
                    "{w} was not run (ELVON_BENCH_WORKLOADS): its budgets are unchecked"
                ));
            }
            if let Some(b) = base(w, 1, false) {
                ceiling(
                    &mut out,
                    format!("{w} mean (1 thread, no-op sink)"),
                    b.figures.mean_ns,
                    self.get(&sec, "mean_ns"),
                );
                ceiling(
                    &mut out,
                    format!("{w} batch ns/decide (1 thread, no-op sink)"),
                    b.figures.batch_ns,
                    self.get(&sec, "batch_ns"),
                );
                ceiling(
                    &mut out,
                    format!("{w} p99 (1 thread, no-op sink)"),
                    b.figures.p99_ns,
                    self.get(&sec, "p99_ns"),
                );
            }
            for threads in [1, 2] {
                if let (Some(plain), Some(swapped)) =
                    (base(w, threads, false), base(w, threads, true))
                {
                    ceiling(
                        &mut out,
                        format!("{w} p99 ratio with 1 ms swaps ({threads} thread(s))"),
                        swapped.figures.p99_ns / plain.figures.p99_ns,
                        self.get("swap", "max_p99_ratio"),
                    );
                }
            }
            if let Some(min) = self.get("scaling", "min_ratio") {
                let got = r.scaling.get(w).copied().unwrap_or(0.0);
                if got < min {
                    out.push(format!(
                        "{w} scaling 2 threads / 1 thread is {got:.2}, budget at least {min}"
                    ));
                }
            }
        }
        #[cfg(feature = "redis")]
        {
            ceiling(
                &mut out,
                format!(
                    "redis decide_for p99 at {}/s, cache off (ns)",
                    r.redis.rate_per_s
                ),
                r.redis.p99_ns,
                self.get("redis", "p99_ns"),
            );
            ceiling(
                &mut out,
                "redis decide_for p99, cache hits (ns)".to_owned(),
                r.redis.cached_p99_ns,
                self.get("redis", "cached_p99_ns"),
            );
            if r.redis.fetched < r.redis.calls * 99 / 100 {
                out.push(format!(
                    "redis: only {} of {} decisions had their features fetched",
                    r.redis.fetched, r.redis.calls
                ));
            }
        }
        #[cfg(feature = "kafka")]
        {
            if let Some(min) = self.get("kafka", "min_consumer_events_per_s") {
                if r.kafka.consumer_events_per_s < min {
                    out.push(format!(
                        "kafka consumer applied {:.0} events/s, budget at least {min}",
                        r.kafka.consumer_events_per_s
                    ));
                }
            }
            if let Some(min) = self.get("kafka", "min_delivered_per_s") {
                if r.kafka.delivered_per_s < min {
                    out.push(format!(
                        "kafka sink delivered {:.0}/s, budget at least {min}",
                        r.kafka.delivered_per_s
                    ));
                }
            }
            ceiling(
                &mut out,
                "kafka: W1 decide p99 with the Kafka sink / with none".to_owned(),
                r.kafka.kafka_p99_ns / r.kafka.noop_p99_ns,
                self.get("kafka", "max_p99_ratio"),
            );
        }
        for row in &r.rows {
            let sec = match row.scenario.sink {
                Sink::Noop => "noop",
                Sink::Jsonl => "jsonl",
            };
            ceiling(
                &mut out,
                format!(
                    "{} allocations per decide ({:?})",
                    row.workload, row.scenario
                ),
                row.figures.allocs_per_decide,
                self.get(sec, "allocs_per_decide"),
            );
        }
        ceiling(
            &mut out,
            "W1 batch cost of a Prometheus recorder, 1 thread (ns)".to_owned(),
            r.recorder.cost_ns,
            self.get("recorder", "max_cost_ns"),
        );
        if let Some(min) = self.get("recorder", "min_scaling") {
            if r.recorder.scaling < min {
                out.push(format!(
                    "W1 with a Prometheus recorder: 2 threads / 1 thread is {:.2}, budget at least {min}",
                    r.recorder.scaling
                ));
            }
        }
        if r.recorder.counted != r.recorder.decided {
            out.push(format!(
                "the Prometheus recorder counted {} decisions of {} made",
                r.recorder.counted, r.recorder.decided
            ));
        }
        ceiling(
            &mut out,
            "W2 p99 of unsampled calls with a shadow evaluation / without (median of blocks)"
                .to_owned(),
            r.shadow.p99_ratio,
            self.get("shadow", "max_p99_ratio"),
        );
        ceiling(
            &mut out,
            format!(
                "validate + compile + swap of a {}-slot config (ms, median)",
                r.config_slots
            ),
            r.config_load_ms,
            self.get("config", "max_load_ms"),
        );
        ceiling(
            &mut out,
            "MemoryStore resident bytes per user (1M users x 10 features)".to_owned(),
            r.store_bytes_per_user,
            self.get("memory", "max_store_bytes_per_user"),
        );
        ceiling(
            &mut out,
            format!("resident memory growth for {} users (MiB)", r.memory_users),
            r.memory_growth_mib,
            self.get("memory", "max_growth_mib"),
        );
        out
    }
}
