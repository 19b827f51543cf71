//! Helpers of the Kafka tests (`#[path]`-included by `tests/kafka.rs` and
//! `tests/kafka_faults.rs`).
#![allow(dead_code)]

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::Message;

/// The tests of a file run one at a time (some time `decide`).
pub static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Reads `n` records from `topic` with a fresh consumer group, at most `within`.
pub fn read_back(
    bootstrap: &str,
    topic: &str,
    n: usize,
    within: Duration,
) -> Vec<(String, Vec<u8>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("check-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut out = Vec::with_capacity(n);
    let t = Instant::now();
    while out.len() < n && t.elapsed() < within {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.expect("message");
            let key = String::from_utf8(m.key().expect("keyed").to_vec()).expect("utf-8 key");
            out.push((key, m.payload().expect("payload").to_vec()));
        }
    }
    // Nothing more than `n` arrives.
    let extra_until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < extra_until {
        if let Some(m) = consumer.poll(Duration::from_millis(50)) {
            let m = m.expect("message");
            out.push((String::new(), m.payload().unwrap_or_default().to_vec()));
        }
    }
    out
}
