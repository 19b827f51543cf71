//! The decide service: elvon's HTTP API (OFREP and the native routes) over one engine,
//! wired to Redis and Kafka when they are configured and running on embedded defaults when
//! they are not.
//!
//! ```sh
//! cargo run --release --example decide_service --features http,prometheus,redis,kafka
//! curl -s localhost:8080/v1/decide -d '{"slot": "banner", "user": "user-7"}'
//! curl -s localhost:8080/ofrep/v1/evaluate/flags/banner -d '{"context": {"targetingKey": "user-7"}}'
//! curl -s localhost:8080/metrics | grep elvon_decisions_total
//! ```
//!
//! With no environment variables it serves the quickstart config (`examples/quickstart.json`,
//! compiled in) with features from an in-memory store holding 1,000 demo users (`user-0` …
//! `user-999`) and writes the decision log to a JSON-lines file in the temp directory.
//!
//! | variable | effect |
//! |---|---|
//! | `ELVON_LISTEN` | the address to listen on (default `127.0.0.1:8080`; port `0` picks one); the bound address is printed as `listening on http://ADDR` |
//! | `ELVON_THREADS` | runtime worker threads (default: the CPUs this process may run on) |
//! | `ELVON_CONFIG` | a config file, watched every second (default: the Kafka config topic with `KAFKA_BROKERS`, else the embedded quickstart config) |
//! | `REDIS_URL` | features from Redis (`decide_for_async`), keys `ELVON_REDIS_PREFIX` (default `elvon:`) + user |
//! | `KAFKA_BROKERS` | Kafka bootstrap servers, or `mock` for an in-process mock cluster (its config topic holds the quickstart config): the decision log goes to `ELVON_DECISION_TOPIC` (default `elvon-decisions`), configs come from `ELVON_CONFIG_TOPIC` (default `elvon-config`, unless `ELVON_CONFIG` is set), behaviour events and rewards (`{"decision_id", "reward"}`) from `ELVON_EVENTS_TOPIC` (default `elvon-events`, bad messages to `ELVON_DEAD_LETTER_TOPIC`, default `elvon-dead-letter`) |
//! | `ELVON_DECISION_LOG` | the JSON-lines decision log without Kafka (default `$TMPDIR/elvon-decide-service.jsonl`) |
//! | `ELVON_DEMO_USERS` | demo users written to the feature store at start (default 1,000 in memory, 0 with Redis) |
//!
//! `GET /metrics` serves the `elvon_*` metrics. `SIGTERM` or `SIGINT` shuts down
//! gracefully: in-flight requests finish and the decision log is flushed before exit.

use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use elvon::features::aggregate::{Aggregate, Aggregates};
use elvon::features::MemoryStore;
use elvon::http::{HttpOptions, Prometheus};
use elvon::sink::{JsonlOptions, JsonlSink, SinkStats};
use elvon::{ConfigWatcher, Engine, Features, WatchEvent};

const QUICKSTART: &str = include_str!("../quickstart.json");

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn var_or(name: &str, default: &str) -> String {
    var(name).unwrap_or_else(|| default.to_owned())
}

/// The behaviour aggregates the quickstart config reads.
fn aggregates() -> Result<Aggregates, Box<dyn Error>> {
    let day = Duration::from_secs(86_400);
    Ok(Aggregates::new(vec![
        Aggregate::count("page_view_7d", "page_view").window(day, 7),
        Aggregate::count("purchase_7d", "purchase").window(day, 7),
        Aggregate::count("cart_abandon_7d", "cart_abandon").window(day, 7),
    ])?)
}

/// Demo user `i`: every quickstart rule is reachable across users.
fn demo_user(i: usize) -> Features {
    Features::new()
        .with("country", ["KR", "JP", "TW", "US", "DE", "BR"][i % 6])
        .with("plan", ["free", "pro", "free", "vip"][i % 4])
        .with("app_version", ["3.1.9", "3.2.0", "3.4.1", "4.0.0"][i % 4])
        .with("page_view_7d", (i % 20) as i64)
        .with("purchase_7d", (i % 4) as i64)
        .with("cart_abandon_7d", (i % 5) as i64)
        .with(
            "email",
            if i.is_multiple_of(3) {
                "dev@example.com"
            } else {
                "someone@mail.test"
            },
        )
}

fn print_event(what: &str) -> impl Fn(&WatchEvent) + Send + 'static {
    let what = what.to_owned();
    move |e| match e {
        WatchEvent::Loaded(o) => println!("config {what}: loaded {o:?}"),
        other => eprintln!("config {what}: {other:?}"),
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        eprintln!("cannot listen for signals; stop the process to end it");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    println!("shutting down: draining requests, flushing the decision log");
}

fn main() -> Result<(), Box<dyn Error>> {
    // The recorder first: per-slot metric handles are registered when a config loads.
    let prometheus = Prometheus::install()?;
    let threads = match var("ELVON_THREADS") {
        Some(n) => n.parse()?,
        None => std::thread::available_parallelism().map_or(1, usize::from),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    rt.block_on(run(prometheus))
}

async fn run(prometheus: Prometheus) -> Result<(), Box<dyn Error>> {
    let aggregates = Arc::new(aggregates()?);

    // Kafka: a real cluster, an in-process mock one, or none.
    let mock = match var("KAFKA_BROKERS").as_deref() {
        Some("mock") => Some(rdkafka::mocking::MockCluster::new(1)?),
        _ => None,
    };
    let decision_topic = var_or("ELVON_DECISION_TOPIC", "elvon-decisions");
    let config_topic = var_or("ELVON_CONFIG_TOPIC", "elvon-config");
    let events_topic = var_or("ELVON_EVENTS_TOPIC", "elvon-events");
    let dead_letter_topic = var_or("ELVON_DEAD_LETTER_TOPIC", "elvon-dead-letter");
    let brokers = match &mock {
        Some(m) => {
            m.create_topic(&decision_topic, 4, 1)?;
            m.create_topic(&config_topic, 1, 1)?;
            m.create_topic(&events_topic, 2, 1)?;
            m.create_topic(&dead_letter_topic, 1, 1)?;
            // A demo cluster: its config topic starts with the quickstart config.
            let topic = elvon::kafka::ConfigTopicOptions::new(m.bootstrap_servers(), &config_topic);
            elvon::kafka::publish_config(&topic, QUICKSTART, Duration::from_secs(10))?;
            println!(
                "kafka: in-process mock cluster at {}",
                m.bootstrap_servers()
            );
            Some(m.bootstrap_servers())
        }
        None => var("KAFKA_BROKERS"),
    };

    // Features: Redis or the in-memory store; the events consumer writes to the same place.
    let builder = Engine::builder();
    let (builder, target): (_, Option<Box<dyn elvon::kafka::EventTarget>>) = match var("REDIS_URL")
    {
        Some(url) => {
            let source = elvon::redis::RedisFeatureSource::builder(&url)
                .key_prefix(var_or("ELVON_REDIS_PREFIX", "elvon:"))
                .aggregates(Aggregates::clone(&aggregates))
                .runtime(tokio::runtime::Handle::current())
                .build()?;
            let users: usize = var_or("ELVON_DEMO_USERS", "0").parse()?;
            let s = source.clone();
            tokio::task::spawn_blocking(move || {
                (0..users).try_for_each(|i| s.set_features(&format!("user-{i}"), &demo_user(i)))
            })
            .await??;
            println!("features: redis at {url} ({users} demo users written)");
            let writer = source.writer();
            (builder.source(source), Some(Box::new(writer)))
        }
        None => {
            let store = MemoryStore::with_aggregates(Aggregates::clone(&aggregates));
            let users: usize = var_or("ELVON_DEMO_USERS", "1000").parse()?;
            for i in 0..users {
                store.set(&format!("user-{i}"), demo_user(i));
            }
            println!("features: in memory ({users} demo users)");
            let target = elvon::kafka::MemoryTarget::new(store.clone(), Arc::clone(&aggregates));
            (builder.source(store), Some(Box::new(target)))
        }
    };

    // The decision log: Kafka or a JSON-lines file.
    let (builder, sink_stats): (_, Box<dyn Fn() -> SinkStats + Send>) = match &brokers {
        Some(b) => {
            let sink = elvon::kafka::KafkaDecisionSink::new(
                elvon::kafka::KafkaSinkOptions::new(b, &decision_topic).queue_capacity(200_000),
            )?;
            println!("decision log: kafka topic {decision_topic}");
            let s = sink.clone();
            (builder.sink(sink), Box::new(move || s.stats()))
        }
        None => {
            let path = var("ELVON_DECISION_LOG").map_or_else(
                || std::env::temp_dir().join("elvon-decide-service.jsonl"),
                std::path::PathBuf::from,
            );
            let sink = JsonlSink::create(&path, JsonlOptions::default())?;
            println!("decision log: {}", path.display());
            let s = sink.clone();
            (builder.sink(sink), Box::new(move || s.stats()))
        }
    };
    let engine = builder.build();

    // Configs: a watched file, the Kafka config topic, or the embedded quickstart config.
    let _file_watcher;
    let _topic_watcher;
    match (var("ELVON_CONFIG"), &brokers) {
        (Some(path), _) => {
            println!("config: watching {path}");
            _file_watcher = Some(ConfigWatcher::spawn(
                engine.clone(),
                &path,
                Duration::from_secs(1),
                print_event("file"),
            )?);
        }
        (None, Some(b)) => {
            println!("config: kafka topic {config_topic}");
            let topic = elvon::kafka::ConfigTopicOptions::new(b, &config_topic);
            _topic_watcher = Some(elvon::kafka::KafkaConfigWatcher::spawn(
                engine.clone(),
                &topic,
                print_event("topic"),
            )?);
        }
        (None, None) => {
            let o = engine.load_config_json(QUICKSTART)?;
            println!("config: embedded quickstart, {o:?}");
        }
    }

    // Behaviour events and rewards from Kafka.
    let updater = match (&brokers, target) {
        (Some(b), Some(target)) => {
            let options = elvon::kafka::UpdaterOptions::new(
                b,
                var_or("ELVON_GROUP", "elvon-decide-service"),
                [events_topic.as_str()],
                &dead_letter_topic,
                Arc::clone(&aggregates),
            )
            .on_error(|e| eprintln!("events: {e}"));
            println!("events and rewards: kafka topic {events_topic}");
            Some(elvon::kafka::FeatureUpdater::spawn(
                options,
                target,
                Some(engine.clone()),
            )?)
        }
        _ => None,
    };
    let learner = engine.spawn_learner(Duration::from_secs(1))?;

    let listener = tokio::net::TcpListener::bind(var_or("ELVON_LISTEN", "127.0.0.1:8080")).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let options = HttpOptions::default().prometheus(prometheus);
    let served = elvon::http::serve(listener, engine.clone(), options, shutdown_signal()).await;

    if let Some(u) = updater {
        let s = u.stats();
        u.stop();
        println!("events: {s:?}");
    }
    learner.stop();
    let s = sink_stats();
    println!(
        "decision log: {} offered, {} written, {} dropped, {} failed",
        s.offered, s.written, s.dropped, s.failed
    );
    served?;
    println!("stopped");
    Ok(())
}
