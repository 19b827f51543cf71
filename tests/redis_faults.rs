//! The Redis feature store under hostile data and faults (issue 13), against real
//! `redis-server` processes on free loopback ports.
#![cfg(feature = "redis")]

use std::time::{Duration, Instant};

use elvon::clock::Clock;
use elvon::redis::{BreakerState, RedisFeatureSource};
use elvon::{FallbackCause, FeatureStatus, Reason};

#[path = "common/redis.rs"]
mod redis_common;
use redis_common::*;

fn source(server: &Server) -> RedisFeatureSource {
    RedisFeatureSource::builder(server.url())
        .aggregates(aggregates())
        .breaker_failures(3)
        .breaker_cool_down(Duration::from_secs(30))
        .build()
        .expect("source")
}

/// `total_net_output_bytes` of the server's INFO.
fn output_bytes(server: &Server) -> u64 {
    server
        .cli(&["INFO", "stats"])
        .lines()
        .find_map(|l| l.strip_prefix("total_net_output_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("INFO stats has total_net_output_bytes")
}

/// Points 12 and 15: a user whose key holds the wrong type, or a field that is not UTF-8,
/// gets a fallback; the breaker does not count it, so everyone else keeps their features.
/// Before, a few requests for that user opened the breaker for everyone.
#[test]
fn one_bad_key_does_not_open_the_breaker_for_everyone() {
    let _serial = serial();
    let server = Server::start(&[]);
    let src = source(&server);
    let e = engine(src.clone(), Duration::from_millis(200));
    let now = wall_ms();
    src.writer()
        .apply(&views("good", 3, now, "g"))
        .expect("write");
    server.cli(&["SET", &src.key("wrongtype"), "not a hash"]);
    // A field that is not UTF-8 (redis-cli's -x reads the value from stdin).
    let mut child = std::process::Command::new("redis-cli")
        .args([
            "-p",
            &server.port.to_string(),
            "-x",
            "HSET",
            &src.key("binary"),
            "spend",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-cli");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&[0xff, 0xfe, 0x00, 0x80])
        .expect("written");
    child.wait().expect("redis-cli ends");
    for _ in 0..5 {
        // The bad users a few times in a row (a hot key), then a good one.
        for bad in ["wrongtype", "binary"].repeat(5) {
            let d = e.decide_for("banner", bad);
            assert_eq!(d.feature_status(), FeatureStatus::Failed, "{bad}");
            assert_eq!(
                d.reason(),
                Reason::Fallback(FallbackCause::SourceError),
                "{bad}"
            );
        }
        let d = e.decide_for("banner", "good");
        assert_eq!(d.feature_status(), FeatureStatus::Fetched);
        assert_eq!(d.variant(), Some("engaged"));
    }
    assert_eq!(src.breaker_state(), BreakerState::Closed);
}

/// Point 15: one user whose hash holds a 16 MB field is refused by size before Redis sends
/// the value (the server sends kilobytes, not 16 MB per request), and the breaker stays
/// closed for everyone else.
#[test]
fn a_huge_field_is_refused_before_it_is_sent() {
    let _serial = serial();
    let server = Server::start(&[]);
    let src = source(&server);
    let e = engine(src.clone(), Duration::from_millis(500));
    let huge = "x".repeat(16 << 20);
    let client = redis::Client::open(server.url()).expect("client");
    let mut c = client.get_connection().expect("connection");
    redis::cmd("HSET")
        .arg(src.key("huge"))
        .arg("spend")
        .arg(&huge)
        .query::<()>(&mut c)
        .expect("HSET");
    let before = output_bytes(&server);
    for _ in 0..10 {
        let d = e.decide_for("banner", "huge");
        assert_eq!(d.feature_status(), FeatureStatus::Failed);
    }
    let sent = output_bytes(&server) - before;
    assert!(
        sent < 1 << 20,
        "the server sent {sent} bytes for 10 refused fetches"
    );
    for _ in 0..10 {
        assert_eq!(
            e.decide_for("banner", "someone-else").feature_status(),
            FeatureStatus::Fetched
        );
    }
    assert_eq!(src.breaker_state(), BreakerState::Closed);
    // A larger cap reads it (and the value decodes as a string, not a number).
    let roomy = RedisFeatureSource::builder(server.url())
        .aggregates(aggregates())
        .max_reply_bytes(32 << 20)
        .build()
        .expect("source");
    let got = roomy
        .fetch_many(&["huge"], &["last_category"])
        .expect("fetch");
    assert!(got[0].is_empty());
}

/// Point 14: the writer has a connection of its own, so its Lua batches do not queue in
/// front of the deciding reads. Seen on the server: two client connections, one of which
/// ran the writer's commands.
#[test]
fn the_writer_has_its_own_connection() {
    let _serial = serial();
    let server = Server::start(&[]);
    let src = source(&server);
    let e = engine(src.clone(), Duration::from_millis(200));
    let now = wall_ms();
    assert_eq!(
        e.decide_for("banner", "u1").feature_status(),
        FeatureStatus::Fetched
    );
    src.writer()
        .apply(&views("u1", 3, now, "w"))
        .expect("write");
    assert_eq!(e.decide_for("banner", "u1").variant(), Some("engaged"));
    let clients: Vec<String> = server
        .cli(&["CLIENT", "LIST"])
        .lines()
        .filter(|l| !l.contains("cmd=client"))
        .map(str::to_owned)
        .collect();
    assert_eq!(clients.len(), 2, "{clients:#?}");
    // The deciding reads keep their deadline while the writer sends large batches.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (fetched, total) = std::thread::scope(|s| {
        s.spawn(|| {
            let mut round = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let batch: Vec<_> = (0..50)
                    .flat_map(|u| views(&format!("w{u}"), 20, now, &format!("r{round}")))
                    .collect();
                src.writer().apply(&batch).expect("batch written");
                round += 1;
            }
        });
        let mut fetched = 0;
        let t = Instant::now();
        let mut total = 0;
        while t.elapsed() < Duration::from_secs(2) {
            total += 1;
            if e.decide_for("banner", &format!("r{}", total % 100))
                .feature_status()
                == FeatureStatus::Fetched
            {
                fetched += 1;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (fetched, total)
    });
    eprintln!("{fetched} of {total} fetched during write batches");
    assert!(fetched * 100 >= total * 95, "{fetched} of {total} fetched");
    assert_eq!(src.breaker_state(), BreakerState::Closed);
}

/// Point 16: after a restart, the first probe (which races the reconnect) may fail; the
/// breaker probes again promptly instead of waiting a whole extra cool-down.
#[test]
fn recovery_after_a_restart_does_not_wait_an_extra_cool_down() {
    let _serial = serial();
    let mut server = Server::start(&[]);
    let cool_down = Duration::from_secs(3);
    // The breaker measures its cool-down on the source's clock: a fake one moves it at once.
    let clock = Clock::fake(wall_ms());
    let src = RedisFeatureSource::builder(server.url())
        .aggregates(aggregates())
        .breaker_failures(3)
        .breaker_cool_down(cool_down)
        .clock(clock.clone())
        .build()
        .expect("source");
    let e = engine(src.clone(), Duration::from_millis(100));
    assert_eq!(
        e.decide_for("banner", "u").feature_status(),
        FeatureStatus::Fetched
    );
    server.kill();
    while src.breaker_state() != BreakerState::Open {
        e.decide_for("banner", "u");
    }
    assert!(matches!(
        e.decide_for("banner", "u").reason(),
        Reason::Fallback(FallbackCause::SourceUnavailable)
    ));
    // A probe is due once the cool-down has passed; the server comes back after that.
    clock.advance(cool_down);
    server.spawn();
    let (back, mut waited) = (Instant::now(), Duration::ZERO);
    loop {
        let d = e.decide_for("banner", "u");
        if d.feature_status() == FeatureStatus::Fetched {
            break;
        }
        assert!(
            matches!(
                d.reason(),
                Reason::Fallback(FallbackCause::SourceUnavailable | FallbackCause::SourceError)
            ) || d.feature_status() == FeatureStatus::TimedOut,
            "{:?}",
            d.reason()
        );
        assert!(
            waited < cool_down / 2,
            "still not fetching {waited:?} (on the source's clock) after the restart \
             (cool-down {cool_down:?})"
        );
        assert!(
            back.elapsed() < Duration::from_secs(30),
            "the restarted server never answered"
        );
        // The client reconnects in real time; the breaker's time moves with it.
        std::thread::sleep(Duration::from_millis(10));
        clock.advance(Duration::from_millis(10));
        waited += Duration::from_millis(10);
    }
    eprintln!("fetching again {waited:?} (source clock) after the restart");
}

/// Point 9: Redis saturates a counter near `i64::MAX` like the memory store (it used to fail
/// the script, so the stores diverged), and rejects events dated far in the future.
#[test]
fn redis_counters_saturate_like_memory_and_future_events_are_rejected() {
    use elvon::features::aggregate::{Aggregate, Aggregates, Event};
    let _serial = serial();
    let server = Server::start(&[]);
    let aggs = Aggregates::new(vec![Aggregate::count("views", "view")]).expect("valid");
    let src = RedisFeatureSource::builder(server.url())
        .aggregates(aggs.clone())
        .build()
        .expect("source");
    let now = wall_ms();
    server.cli(&["HSET", &src.key("u"), "views", &(i64::MAX - 1).to_string()]);
    let memory = elvon::features::MemoryStore::new();
    memory.set_feature("u", "views", i64::MAX - 1);
    let events: Vec<Event> = (0..3)
        .map(|i| Event::new(format!("e{i}"), "u", "view", now))
        .collect();
    src.writer().apply(&events).expect("applied, saturating");
    for e in &events {
        memory.apply(&aggs, e, now).expect("applied");
    }
    let from_redis = src.fetch_many(&["u"], &["views"]).expect("fetch");
    assert_eq!(
        from_redis[0].get("views"),
        Some(&elvon::Value::Int(i64::MAX))
    );
    assert_eq!(from_redis[0], memory.read(&aggs, "u", now));
    let err = src
        .writer()
        .apply(&[Event::new("late", "u", "view", u64::MAX)])
        .expect_err("dated in the future");
    assert!(err.to_string().contains("future"), "{err}");
}
