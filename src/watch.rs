//! Polling a config file and swapping in every valid new version.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{Config, ConfigError};
use crate::engine::{Engine, LoadOutcome};

/// What a [`ConfigWatcher`] saw.
#[derive(Debug)]
#[non_exhaustive]
pub enum WatchEvent {
    /// A new config was loaded and is serving.
    Loaded(LoadOutcome),
    /// The file changed but could not be loaded; the previous config keeps serving.
    /// Reported once per distinct file content (or per change of read error).
    Rejected(ConfigError),
    /// The config source could not be read (the file watcher could not read the file, the
    /// Kafka watcher could not reach the broker); the current config keeps serving and the
    /// watcher keeps trying. Also counted in `elvon_config_watch_errors_total`. The file
    /// watcher reports a read error once per change of its kind, not on every poll.
    SourceError(ConfigSourceError),
}

/// Why a config watcher could not read its source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigSourceError {
    /// The watched file could not be read (missing, no permission, …).
    #[error("cannot read config file {}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A remote config source could not be read (the Kafka config topic).
    #[error("{system} config source ({operation}): {error}")]
    Remote {
        /// The source's system: `"kafka"`.
        system: &'static str,
        /// What the watcher was doing (for Kafka: `"watermarks"`, finding the topic's end,
        /// or `"poll"`).
        operation: &'static str,
        /// The client's error, whose own type `downcast_ref` recovers (for Kafka a
        /// `kafka::ClientError`).
        #[source]
        error: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Watches a config file by polling; loads it whenever its content changes. A bad file is
/// reported and ignored. Stops when dropped.
///
/// ```no_run
/// let engine = elvon::Engine::default();
/// let _watcher = elvon::ConfigWatcher::spawn(
///     engine.clone(),
///     "config.json",
///     std::time::Duration::from_secs(1),
///     |event| eprintln!("config: {event:?}"),
/// ).expect("thread started");
/// ```
///
/// The handle is `#[must_use]`: discarding it stops the thread it just started, so this
/// does not compile under `deny(unused_must_use)`:
///
/// ```compile_fail
/// #![deny(unused_must_use)]
/// fn start(engine: elvon::Engine) -> std::io::Result<()> {
///     elvon::ConfigWatcher::spawn(engine, "config.json", std::time::Duration::from_secs(1), |_| {})?;
///     Ok(())
/// }
/// ```
#[derive(Debug)]
#[must_use = "dropping the handle stops the watcher thread"]
pub struct ConfigWatcher {
    /// Stopped and joined when dropped.
    _thread: crate::background::Background,
    path: PathBuf,
}

impl ConfigWatcher {
    /// Starts polling `path` every `interval` (the first check happens at once).
    ///
    /// # Errors
    /// The watcher thread cannot be started.
    pub fn spawn(
        engine: Engine,
        path: impl AsRef<Path>,
        interval: Duration,
        on_event: impl Fn(&WatchEvent) + Send + 'static,
    ) -> std::io::Result<Self> {
        let path = path.as_ref().to_owned();
        let p = path.clone();
        let thread = crate::background::Background::spawn("elvon-config-watch", move |stop| {
            let mut last: Option<u64> = None;
            loop {
                if let Some(event) = poll(&engine, &p, &mut last) {
                    on_event(&event);
                }
                if stop.sleep(interval) {
                    return;
                }
            }
        })?;
        Ok(ConfigWatcher {
            _thread: thread,
            path,
        })
    }

    /// The watched file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// One check. `last` is a fingerprint of the last content (or error) acted on.
fn poll(engine: &Engine, path: &Path, last: &mut Option<u64>) -> Option<WatchEvent> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(source) => {
            let fp = xxhash_rust::xxh3::xxh3_64(format!("io:{:?}", source.kind()).as_bytes());
            if *last == Some(fp) {
                return None;
            }
            *last = Some(fp);
            metrics::counter!("elvon_config_watch_errors_total").increment(1);
            return Some(WatchEvent::SourceError(ConfigSourceError::File {
                path: path.to_owned(),
                source,
            }));
        }
    };
    let fp = xxhash_rust::xxh3::xxh3_64(&bytes);
    if *last == Some(fp) {
        return None;
    }
    *last = Some(fp);
    Some(load_bytes(engine, &bytes))
}

/// Loads a config document from raw bytes (a file, a Kafka message) and says what happened.
/// A document that is not valid JSON is counted as a rejection too, as
/// [`Engine::load_config_json`] counts it.
pub(crate) fn load_bytes(engine: &Engine, bytes: &[u8]) -> WatchEvent {
    let loaded = Config::from_slice(bytes)
        .inspect_err(|_| crate::metrics::config_rejected())
        .and_then(|c| engine.load_config(&c));
    match loaded {
        Ok(o) => WatchEvent::Loaded(o),
        Err(e) => WatchEvent::Rejected(e),
    }
}
