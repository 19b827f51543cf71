//! The PostgreSQL config store and its watcher against a real server (issue 18, point 1).
#![cfg(feature = "postgres")]

#[path = "common/postgres.rs"]
mod pg;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use elvon::postgres::{ConfigState, ConfigStore, PgConfigWatcher, StoreError, WatchOptions};
use elvon::{Engine, Features, WatchEvent};
use serde_json::json;

/// One server at a time: each test starts its own, and the machine has two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A config of `version` whose slot `s` serves `variant`.
fn serving(version: &str, variant: &str) -> String {
    json!({"version": version, "slots": [{
        "id": "s",
        "variants": [{"id": "a"}, {"id": "b"}, {"id": "c"}],
        "default": "a",
        "rules": [{"serve": variant}]
    }]})
    .to_string()
}

/// The watcher's events as text, for assertions.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<String>>>);

impl Events {
    fn record(&self) -> impl Fn(&WatchEvent) + Send + 'static {
        let log = Arc::clone(&self.0);
        move |e| {
            let line = match e {
                WatchEvent::Loaded(o) => format!("loaded {}", o.version),
                WatchEvent::Rejected(e) => format!("rejected {e}"),
                WatchEvent::SourceError(e) => format!("error {e}"),
                other => format!("{other:?}"),
            };
            log.lock().expect("events").push(line);
        }
    }

    fn any(&self, prefix: &str) -> bool {
        self.0
            .lock()
            .expect("events")
            .iter()
            .any(|l| l.starts_with(prefix))
    }
}

fn watch(engine: &Engine, options: WatchOptions, events: &Events) -> PgConfigWatcher {
    let w = PgConfigWatcher::spawn(engine.clone(), options, events.record()).expect("spawn");
    assert!(w.wait_ready(Duration::from_secs(10)), "watcher never ready");
    w
}

/// Two engines, each with its watcher, polling only every 60 s: a poll far longer than the
/// bounds the tests check, so only the notification moves them that fast.
fn two_engines(server: &pg::Postgres, events: &Events) -> ([Engine; 2], [PgConfigWatcher; 2]) {
    let engines = [Engine::default(), Engine::default()];
    let options = WatchOptions::new(server.url()).poll_interval(Duration::from_secs(60));
    let watchers = [
        watch(&engines[0], options.clone(), events),
        watch(&engines[1], options, events),
    ];
    (engines, watchers)
}

/// Waits (up to `limit`) until every engine serves `version`; returns how long it took.
async fn until_serving(engines: &[&Engine], version: &str, limit: Duration) -> Duration {
    let t = Instant::now();
    while !engines.iter().all(|e| e.config_version() == version) {
        assert!(
            t.elapsed() < limit,
            "engines serve {:?}, not {version:?}, after {limit:?}",
            engines
                .iter()
                .map(|e| e.config_version())
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    t.elapsed()
}

/// Publishes `version` serving `variant` and activates it.
async fn activate_new(store: &ConfigStore, version: &str, variant: &str) {
    store
        .publish(&serving(version, variant), "alice")
        .await
        .expect("valid");
    store.activate(version, "alice").await.expect("activate");
}

/// [`activate_new`], then waits until `engines` serve it.
async fn go_live(store: &ConfigStore, engines: &[&Engine], version: &str, variant: &str) {
    activate_new(store, version, variant).await;
    until_serving(engines, version, Duration::from_secs(5)).await;
}

async fn store(server: &pg::Postgres) -> ConfigStore {
    let store = ConfigStore::connect(&server.url()).await.expect("connect");
    store.migrate().await.expect("migrate");
    store
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_explicit_and_run_once() {
    let _serial = SERIAL.lock().await;
    let server = pg::Postgres::start();
    let store = ConfigStore::connect(&server.url()).await.expect("connect");
    let err = store
        .publish(&serving("1", "a"), "alice")
        .await
        .expect_err("no schema yet");
    assert!(
        err.to_string().contains("run ConfigStore::migrate"),
        "{err}"
    );
    assert_eq!(
        store.migrate().await.expect("migrate"),
        ["0001_config_store"]
    );
    assert!(store.migrate().await.expect("again").is_empty());
    store
        .publish(&serving("1", "a"), "alice")
        .await
        .expect("now it works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_activation_reaches_every_engine_within_a_second_by_notify() {
    let _serial = SERIAL.lock().await;
    let server = pg::Postgres::start();
    let store = store(&server).await;
    let events = Events::default();
    let ([a, b], _watchers) = two_engines(&server, &events);
    assert_eq!(a.config_version(), "", "nothing active yet");

    for (v, variant) in [("1", "a"), ("2", "b")] {
        let p = store
            .publish(&serving(v, variant), "alice")
            .await
            .expect("valid");
        assert!(!p.existed);
        assert_eq!(
            a.config_version(),
            if v == "1" { "" } else { "1" },
            "a candidate is not served"
        );
        store.activate(v, "bob").await.expect("activate");
        let took = until_serving(&[&a, &b], v, Duration::from_secs(5)).await;
        assert!(took <= Duration::from_secs(1), "version {v} took {took:?}");
        let d = a.decide("s", "u", &Features::new());
        assert_eq!(d.variant(), Some(variant));
    }
    let history = store.history(10).await.expect("history");
    let states: Vec<_> = history
        .iter()
        .map(|c| (c.version.as_str(), c.state))
        .collect();
    assert_eq!(
        states,
        [("2", ConfigState::Active), ("1", ConfigState::Retired)]
    );
    assert_eq!(history[0].author, "alice");
    let audit = store.audit(10).await.expect("audit");
    let trail: Vec<_> = audit
        .iter()
        .map(|e| (e.action.as_str(), e.version.as_str(), e.actor.as_str()))
        .collect();
    assert_eq!(
        trail,
        [
            ("activate", "2", "bob"),
            ("publish", "2", "alice"),
            ("activate", "1", "bob"),
            ("publish", "1", "alice")
        ]
    );
    assert!(events.any("loaded 2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_notify_the_poll_picks_activations_up() {
    let _serial = SERIAL.lock().await;
    let server = pg::Postgres::start();
    let store = store(&server).await;
    let engine = Engine::default();
    let events = Events::default();
    let poll = Duration::from_millis(300);
    let options = WatchOptions::new(server.url())
        .listen(false)
        .poll_interval(poll);
    let _w = watch(&engine, options, &events);
    store
        .publish(&serving("1", "b"), "alice")
        .await
        .expect("valid");
    store.activate("1", "alice").await.expect("activate");
    let took = until_serving(&[&engine], "1", Duration::from_secs(5)).await;
    // One poll period, plus the query and the load.
    assert!(took <= poll + Duration::from_millis(500), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_config_is_stored_as_rejected_and_never_served() {
    let _serial = SERIAL.lock().await;
    let server = pg::Postgres::start();
    let store = store(&server).await;
    let engine = Engine::default();
    let events = Events::default();
    let _w = watch(&engine, WatchOptions::new(server.url()), &events);
    go_live(&store, &[&engine], "1", "a").await;

    let bad = json!({"version": "2", "slots": [{"id": "s", "variants": [{"id": "a"}], "default": "a",
        "rules": [{"when": {"feature": "x", "op": "gtt", "value": 1}, "serve": "a"}]}]});
    let err = store
        .publish(&bad.to_string(), "mallory")
        .await
        .expect_err("invalid");
    let StoreError::Invalid {
        id,
        version,
        problems,
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!(version, "2");
    assert!(
        problems
            .iter()
            .any(|p| p.path().starts_with("slots[0].rules[0].when")),
        "{problems:?}"
    );
    let stored = store.get("2").await.expect("get").expect("stored");
    assert_eq!((stored.id, stored.state), (*id, ConfigState::Rejected));
    assert_eq!(&stored.problems, problems);
    assert_eq!(stored.document.as_deref(), Some(&*bad.to_string()));
    assert_eq!(
        store.activate("2", "mallory").await,
        Err(StoreError::Rejected {
            version: "2".into()
        })
    );
    // Not JSON, and no version: rejected too, with the reason.
    let err = store
        .publish("{not json", "mallory")
        .await
        .expect_err("not json");
    assert!(err.to_string().contains("(root): not valid JSON"), "{err}");
    let err = store
        .publish(&serving("", "a"), "mallory")
        .await
        .expect_err("no version");
    assert!(
        err.to_string().contains("version: a stored config needs"),
        "{err}"
    );
    // A version holds one document; the same one again is a no-op.
    assert_eq!(
        store.publish(&serving("1", "b"), "alice").await,
        Err(StoreError::VersionExists {
            version: "1".into()
        })
    );
    assert!(
        store
            .publish(&serving("1", "a"), "alice")
            .await
            .expect("same")
            .existed
    );
    assert_eq!(
        store.activate("9", "alice").await,
        Err(StoreError::NotFound {
            version: "9".into()
        })
    );
    assert!(matches!(
        store.publish(&serving("3", "a"), "").await,
        Err(StoreError::BadActor { len: 0 })
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(engine.config_version(), "1", "nothing rejected was served");
    let rejected = store
        .history(10)
        .await
        .expect("history")
        .iter()
        .filter(|c| c.state == ConfigState::Rejected)
        .count();
    assert_eq!(rejected, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_restores_the_previous_version_on_every_engine() {
    let _serial = SERIAL.lock().await;
    let server = pg::Postgres::start();
    let store = store(&server).await;
    let events = Events::default();
    let ([a, b], _watchers) = two_engines(&server, &events);
    assert_eq!(
        store.rollback("ops").await,
        Err(StoreError::NothingToRollBack)
    );
    for (v, variant) in [("1", "a"), ("2", "b"), ("3", "c")] {
        go_live(&store, &[&a, &b], v, variant).await;
    }
    let r = store.rollback("ops").await.expect("rollback");
    assert_eq!(
        (r.version.as_str(), r.replaced.as_deref()),
        ("2", Some("3"))
    );
    until_serving(&[&a, &b], "2", Duration::from_secs(1)).await;
    assert_eq!(b.decide("s", "u", &Features::new()).variant(), Some("b"));
    let r = store.rollback("ops").await.expect("rollback");
    assert_eq!(r.version, "1");
    until_serving(&[&a, &b], "1", Duration::from_secs(1)).await;
    assert_eq!(
        store.rollback("ops").await,
        Err(StoreError::NothingToRollBack)
    );
    assert_eq!(
        store.active().await.expect("active").map(|c| c.version),
        Some("1".to_owned())
    );
    let audit = store.audit(2).await.expect("audit");
    assert_eq!(
        (
            audit[0].action.as_str(),
            audit[0].version.as_str(),
            audit[0].detail.as_str(),
            audit[0].actor.as_str()
        ),
        ("rollback", "1", "2", "ops")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_version_that_does_not_load_is_reported_and_the_engine_keeps_serving() {
    let _serial = SERIAL.lock().await;
    let server = pg::Postgres::start();
    let store = store(&server).await;
    let engine = Engine::default();
    let events = Events::default();
    let _w = watch(&engine, WatchOptions::new(server.url()), &events);
    go_live(&store, &[&engine], "1", "b").await;
    // A row another elvon (one that knows an operator this one does not) wrote as valid.
    let (client, connection) = tokio_postgres::connect(&server.url(), tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let unknown = json!({"version": "2", "slots": [{"id": "s", "variants": [{"id": "a"}], "default": "a",
        "rules": [{"when": {"feature": "x", "op": "future_op", "value": 1}, "serve": "a"}]}]});
    client
        .execute(
            "INSERT INTO elvon_configs (version, document, author, state) VALUES ('2', $1, 'newer', 'candidate')",
            &[&unknown.to_string()],
        )
        .await
        .expect("insert");
    store.activate("2", "alice").await.expect("activate");
    let t = Instant::now();
    while !events.any("rejected") {
        assert!(t.elapsed() < Duration::from_secs(5), "never reported");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(engine.config_version(), "1", "the engine kept its snapshot");
    assert_eq!(
        engine.decide("s", "u", &Features::new()).variant(),
        Some("b")
    );
    // Back to a version that loads.
    store.activate("1", "alice").await.expect("activate");
    let loads = || {
        let log = events.0.lock().expect("events");
        log.iter().filter(|l| l.starts_with("loaded 1")).count()
    };
    let t = Instant::now();
    while loads() < 2 {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "version 1 was not loaded again"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(engine.config_version(), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_never_fails_a_decision_and_the_watcher_comes_back() {
    let _serial = SERIAL.lock().await;
    let server = pg::Postgres::start();
    let store = store(&server).await;
    activate_new(&store, "1", "b").await;
    let engine = Engine::default();
    let events = Events::default();
    let options = WatchOptions::new(server.url())
        .poll_interval(Duration::from_secs(1))
        .reconnect_backoff(Duration::from_millis(100), Duration::from_secs(1))
        .timeout(Duration::from_secs(1));
    let watcher = watch(&engine, options, &events);
    until_serving(&[&engine], "1", Duration::from_secs(5)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let (decided, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (engine, stop, decided, failed) = (
            engine.clone(),
            stop.clone(),
            decided.clone(),
            failed.clone(),
        );
        std::thread::spawn(move || {
            let none = Features::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let d = engine.decide("s", &format!("u{}", i % 1000), &none);
                if !matches!(d.variant(), Some("b" | "c")) {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                decided.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        })
    };
    server.down();
    let t = Instant::now();
    while watcher.is_connected() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the watcher never saw the outage"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let during = decided.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        decided.load(Ordering::Relaxed) > during,
        "decisions went on while the database was down"
    );
    assert!(events.any("error"), "the outage was reported");
    server.up();
    // Activated while the watcher is still waiting to reconnect.
    store
        .publish(&serving("2", "c"), "alice")
        .await
        .expect("the store reconnects");
    store.activate("2", "alice").await.expect("activate");
    until_serving(&[&engine], "2", Duration::from_secs(10)).await;
    assert!(watcher.is_connected());
    stop.store(true, Ordering::Relaxed);
    load.join().expect("decide thread");
    assert!(decided.load(Ordering::Relaxed) > 0);
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no decision failed");
    assert_eq!(watcher.loaded_version().as_deref(), Some("2"));
}

/// A partition between the watcher and the database (the server stays up for the store):
/// a version activated while the watcher cannot reach the database is picked up once it can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_activated_while_the_watcher_is_cut_off_is_picked_up_after() {
    let _serial = SERIAL.lock().await;
    let server = pg::Postgres::start();
    let proxy = pg::Proxy::start(server.port);
    let store = store(&server).await;
    activate_new(&store, "1", "b").await;
    let engine = Engine::default();
    let events = Events::default();
    let options = WatchOptions::new(proxy.url())
        .poll_interval(Duration::from_millis(500))
        .reconnect_backoff(Duration::from_millis(100), Duration::from_millis(500))
        .timeout(Duration::from_secs(1));
    let watcher = watch(&engine, options, &events);
    until_serving(&[&engine], "1", Duration::from_secs(5)).await;

    proxy.cut();
    let t = Instant::now();
    while watcher.is_connected() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the watcher never saw the cut"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    store
        .publish(&serving("2", "c"), "alice")
        .await
        .expect("valid");
    store.activate("2", "alice").await.expect("activate");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!watcher.is_connected(), "still cut off");
    assert_eq!(
        engine.config_version(),
        "1",
        "cut off, the engine keeps serving"
    );
    assert_eq!(
        engine.decide("s", "u", &Features::new()).variant(),
        Some("b")
    );
    proxy.heal();
    until_serving(&[&engine], "2", Duration::from_secs(10)).await;
    assert!(events.any("error"), "the cut was reported");
}
