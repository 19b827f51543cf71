//! The config file watcher swaps in valid files and reports, ignores, bad ones.

use std::sync::mpsc;
use std::time::Duration;

use elvon::{ConfigWatcher, Engine, WatchEvent};

fn config(version: &str) -> String {
    format!(
        r#"{{"version": "{version}", "slots": [{{"id": "s", "variants": [{{"id": "{version}"}}], "default": "{version}"}}]}}"#
    )
}

#[test]
fn watcher_loads_changes_and_reports_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, config("v1")).unwrap();
    let engine = Engine::default();
    let (tx, rx) = mpsc::channel();
    let watcher =
        ConfigWatcher::spawn(engine.clone(), &path, Duration::from_millis(10), move |e| {
            let line = match e {
                WatchEvent::Loaded(o) => format!("loaded {}", o.version),
                WatchEvent::Rejected(err) => format!("rejected {err}"),
                WatchEvent::SourceError(err) => format!("source error {err}"),
                _ => "other".into(),
            };
            let _ = tx.send(line);
        })
        .unwrap();
    let next = || {
        rx.recv_timeout(Duration::from_secs(5))
            .expect("watcher reported")
    };
    assert_eq!(next(), "loaded v1");
    assert_eq!(engine.config_version(), "v1");

    std::fs::write(&path, r#"{"version": "v2", "slots": [{"id": "s"}]}"#).unwrap();
    let e = next();
    assert!(
        e.starts_with("rejected config rejected")
            && e.contains("slots[0]: missing required field \"variants\""),
        "{e}"
    );
    assert_eq!(engine.config_version(), "v1", "a bad file changes nothing");

    std::fs::write(&path, "{ not json").unwrap();
    assert!(next().starts_with("rejected config is not valid JSON"));

    std::fs::write(&path, config("v3")).unwrap();
    assert_eq!(next(), "loaded v3");
    assert_eq!(
        engine.decide("s", "u", &elvon::Features::new()).variant(),
        Some("v3")
    );

    std::fs::remove_file(&path).unwrap();
    let e = next();
    assert!(
        e.starts_with("source error cannot read config file") && e.contains("config.json"),
        "a read error is the source's, not a rejected config: {e}"
    );
    // Reported once, not on every poll.
    assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
    drop(watcher);
    assert_eq!(engine.config_version(), "v3");
}
