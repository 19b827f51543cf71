//! Promises of the public types: which are `Send`, `Sync` and `Clone`, and an owned decision
//! held across an `.await` on another thread.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use elvon::features::MemoryStore;
use elvon::{Engine, Features, OwnedDecision};

fn send_sync<T: Send + Sync>() {}
fn clone<T: Clone>() {}
fn send_static<T: Send + 'static>(_: &T) {}

#[test]
fn public_types_are_send_sync_and_clone_where_promised() {
    send_sync::<Engine>();
    clone::<Engine>();
    send_sync::<OwnedDecision>();
    clone::<OwnedDecision>();
    send_sync::<elvon::Snapshot>();
    send_sync::<Features>();
    clone::<Features>();
    send_sync::<MemoryStore>();
    send_sync::<elvon::sink::MemorySink>();
    clone::<elvon::sink::MemorySink>();
    send_sync::<elvon::sink::JsonlSink>();
    send_sync::<elvon::sink::NoopSink>();
    send_sync::<elvon::DecisionId>();
    send_sync::<elvon::ConfigError>();
    send_sync::<elvon::features::SourceError>();
    send_sync::<elvon::clock::Clock>();
    clone::<elvon::clock::Clock>();
    send_sync::<elvon::WatchEvent>();
    send_sync::<elvon::ConfigSourceError>();
    send_sync::<elvon::ConfigWatcher>();
    send_sync::<elvon::sink::FlushError>();
    #[cfg(feature = "redis")]
    {
        send_sync::<elvon::redis::RedisFeatureSource>();
        send_sync::<elvon::redis::AggregatesWriter>();
        send_sync::<elvon::redis::RedisError>();
        clone::<elvon::redis::RedisFeatureSource>();
    }
    #[cfg(feature = "kafka")]
    {
        send_sync::<elvon::kafka::KafkaDecisionSink>();
        clone::<elvon::kafka::KafkaDecisionSink>();
        send_sync::<elvon::kafka::KafkaError>();
        send_sync::<elvon::kafka::KafkaConfigWatcher>();
        send_sync::<elvon::kafka::FeatureUpdater>();
        send_sync::<elvon::kafka::MemoryTarget>();
        send_sync::<elvon::kafka::FleetSync>();
    }
}

/// Polls a future to completion on this thread (the memory store answers at once; the
/// `Yield` below asks to be polled once more).
fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

/// Returns `Pending` once, like any real suspension point.
struct Yield(bool);

impl Future for Yield {
    type Output = ();
    fn poll(mut self: std::pin::Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            Poll::Pending
        }
    }
}

#[test]
fn an_owned_decision_is_held_across_an_await_on_another_thread() {
    let store = MemoryStore::new();
    store.set("u1", Features::new().with("country", "KR"));
    let engine = Engine::builder().source(store).build();
    engine
        .load_config_json(
            r#"{"version": "1", "slots": [{"id": "s", "variants": [{"id": "off"}, {"id": "on"}],
                "default": "off", "rules": [{"when": {"feature": "country", "op": "eq", "value": "KR"},
                "serve": "on"}]}]}"#,
        )
        .expect("valid");
    let task = {
        let engine = engine.clone();
        async move {
            let d = engine.decide_for_async("s", "u1").await;
            Yield(false).await;
            // A config swap while the decision is held does not change it.
            engine
                .load_config_json(r#"{"version": "2", "slots": []}"#)
                .expect("valid");
            Yield(false).await;
            (
                d.variant().map(str::to_owned),
                d.config_version().to_owned(),
                d.clone(),
            )
        }
    };
    send_static(&task);
    let (variant, version, copy) = std::thread::spawn(move || block_on(task))
        .join()
        .expect("the task ran");
    assert_eq!((variant.as_deref(), version.as_str()), (Some("on"), "1"));
    assert_eq!(copy.variant(), Some("on"));
    let moved: OwnedDecision = engine.decide("x", "u", &Features::new()).into_owned();
    assert_eq!(
        std::thread::spawn(move || moved.slot().map(str::to_owned))
            .join()
            .ok(),
        Some(None),
        "an unknown slot's decision, moved to another thread"
    );
}
