//! [`PgConfigWatcher`]: keeps an engine on the store's active config.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls};

use super::error::DbError;
use super::NOTIFY_CHANNEL;
use crate::background::{Background, Stop};
use crate::engine::Engine;
use crate::watch::{ConfigSourceError, WatchEvent};

/// How often a wait checks whether the watcher was told to stop.
const STOP_CHECK: Duration = Duration::from_millis(50);

/// How a [`PgConfigWatcher`] reaches the store and how often it looks.
#[derive(Debug, Clone)]
#[must_use]
pub struct WatchOptions {
    url: String,
    listen: bool,
    poll: Duration,
    backoff: (Duration, Duration),
    timeout: Duration,
}

impl WatchOptions {
    /// The store at `url` (as for [`ConfigStore::connect`](super::ConfigStore::connect)),
    /// with `LISTEN`, a 10 s poll, reconnect backoff from 100 ms doubling to 5 s, and a 5 s
    /// limit on connecting and on each query.
    pub fn new(url: impl Into<String>) -> Self {
        WatchOptions {
            url: url.into(),
            listen: true,
            poll: Duration::from_secs(10),
            backoff: (Duration::from_millis(100), Duration::from_secs(5)),
            timeout: Duration::from_secs(5),
        }
    }

    /// Whether to `LISTEN` for activations (default `true`). Without it (for a pooler that
    /// does not pass notifications through, such as PgBouncer in transaction mode) changes
    /// are seen by polling only.
    pub fn listen(mut self, listen: bool) -> Self {
        self.listen = listen;
        self
    }

    /// How often to read the active version even without a notification (default 10 s;
    /// at least 10 ms).
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.poll = every.max(Duration::from_millis(10));
        self
    }

    /// The wait before reconnecting: `min` after the first failure, doubling up to `max`.
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        let min = min.max(Duration::from_millis(1));
        self.backoff = (min, max.max(min));
        self
    }

    /// The time limit of connecting and of each query (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.max(Duration::from_millis(1));
        self
    }
}

#[derive(Debug, Default)]
struct Shared {
    ready: AtomicBool,
    connected: AtomicBool,
    loaded: Mutex<Option<String>>,
}

/// Loads the store's active config into an engine: at once when an activation or rollback
/// notifies (`LISTEN elvon_config`), and every poll interval as a fallback; stops when
/// dropped.
///
/// - A new active version is loaded with
///   [`Engine::load_config_json`](crate::Engine::load_config_json) semantics and reported as
///   [`WatchEvent::Loaded`]. One that does not load on this engine is reported as
///   [`WatchEvent::Rejected`] (and counted in `elvon_config_rejections_total`) once, and the
///   engine keeps its snapshot.
/// - Database errors (down, slow, refusing) are reported as [`WatchEvent::SourceError`]
///   (`system: "postgres"`) and counted in `elvon_config_watch_errors_total`; the watcher
///   reconnects with backoff and the engine keeps serving what it has, so decisions never
///   wait on the database.
/// - No active version in the store: the engine keeps what it serves.
///
/// ```compile_fail
/// #![deny(unused_must_use)]
/// fn start(engine: elvon::Engine) -> std::io::Result<()> {
///     let options = elvon::postgres::WatchOptions::new("host=db user=elvon");
///     elvon::postgres::PgConfigWatcher::spawn(engine, options, |_| {})?;
///     Ok(())
/// }
/// ```
#[derive(Debug)]
#[must_use = "dropping the handle stops the watcher thread"]
pub struct PgConfigWatcher {
    shared: Arc<Shared>,
    /// Stopped and joined when dropped.
    _thread: Background,
}

impl PgConfigWatcher {
    /// Starts the watcher thread (`elvon-pg-config`), which connects at once.
    ///
    /// # Errors
    /// The thread or its Tokio runtime cannot be started.
    pub fn spawn(
        engine: Engine,
        options: WatchOptions,
        on_event: impl Fn(&WatchEvent) + Send + 'static,
    ) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let shared = Arc::new(Shared::default());
        let state = Arc::clone(&shared);
        let thread = Background::spawn("elvon-pg-config", move |stop| {
            let w = Watch {
                engine: &engine,
                options: &options,
                stop,
                on_event: &on_event,
                shared: &state,
            };
            runtime.block_on(w.run());
        })?;
        Ok(PgConfigWatcher {
            shared,
            _thread: thread,
        })
    }

    /// Whether the watcher has read the store's active version at least once.
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.shared.ready.load(Ordering::Acquire)
    }

    /// Waits up to `timeout` for [`is_ready`](Self::is_ready); returns it.
    #[must_use]
    pub fn wait_ready(&self, timeout: Duration) -> bool {
        let t = Instant::now();
        while !self.is_ready() {
            if t.elapsed() >= timeout {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// Whether the watcher is connected to the database now.
    #[must_use]
    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::Acquire)
    }

    /// The version this watcher last loaded into the engine, if any.
    #[must_use]
    pub fn loaded_version(&self) -> Option<String> {
        self.shared
            .loaded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Why a session with the database ended: what the watcher was doing, and the error.
type Ended = (&'static str, DbError);

struct Watch<'a> {
    engine: &'a Engine,
    options: &'a WatchOptions,
    stop: &'a Stop,
    on_event: &'a (dyn Fn(&WatchEvent) + Send),
    shared: &'a Shared,
}

impl Watch<'_> {
    async fn run(&self) {
        let (min, max) = self.options.backoff;
        let mut backoff = min;
        // The id of the config row last acted on (loaded or rejected).
        let mut last: Option<i64> = None;
        loop {
            let mut connected = false;
            let ended = self.session(&mut last, &mut connected).await;
            self.shared.connected.store(false, Ordering::Release);
            let Some((operation, error)) = ended else {
                return;
            };
            metrics::counter!("elvon_config_watch_errors_total").increment(1);
            (self.on_event)(&WatchEvent::SourceError(ConfigSourceError::Remote {
                system: "postgres",
                operation,
                error: Box::new(error),
            }));
            if connected {
                backoff = min;
            }
            if self.until_stop(tokio::time::sleep(backoff)).await.is_none() {
                return;
            }
            backoff = (backoff * 2).min(max);
        }
    }

    /// Awaits `f`, giving up (`None`) once the watcher is told to stop.
    async fn until_stop<F: Future>(&self, f: F) -> Option<F::Output> {
        tokio::pin!(f);
        loop {
            tokio::select! {
                out = &mut f => return Some(out),
                () = tokio::time::sleep(STOP_CHECK) => {
                    if self.stop.is_set() {
                        return None;
                    }
                }
            }
        }
    }

    /// One connection: connect, listen, then check on every notification and poll tick.
    /// `None` when told to stop; otherwise why it ended.
    async fn session(&self, last: &mut Option<i64>, connected: &mut bool) -> Option<Ended> {
        let timeout = self.options.timeout;
        let connecting =
            tokio::time::timeout(timeout, tokio_postgres::connect(&self.options.url, NoTls));
        let (client, mut connection) = match self.until_stop(connecting).await? {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Some(("connect", DbError::from_pg("connect", &e))),
            Err(_) => return Some(("connect", DbError::timeout("connect", timeout))),
        };
        // The connection's messages: `Ok` for a notification, `Err` once it ends.
        let (tx, mut rx) = mpsc::channel::<Result<(), String>>(4);
        let driver = tokio::spawn(async move {
            loop {
                let message = std::future::poll_fn(|cx| connection.poll_message(cx)).await;
                match message {
                    Some(Ok(AsyncMessage::Notification(_))) => {
                        // One pending wake-up is enough: each check reads the active row.
                        let _ = tx.try_send(Ok(()));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        let _ = tx.send(Err(e.to_string())).await;
                        return;
                    }
                    None => {
                        let _ = tx.send(Err("connection closed".into())).await;
                        return;
                    }
                }
            }
        });
        let _abort = AbortOnDrop(driver);
        if self.options.listen {
            let listen = format!("LISTEN {NOTIFY_CHANNEL}");
            let r = tokio::time::timeout(timeout, client.batch_execute(&listen));
            match self.until_stop(r).await? {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Some(("listen", DbError::from_pg("listen", &e))),
                Err(_) => return Some(("listen", DbError::timeout("listen", timeout))),
            }
        }
        *connected = true;
        self.shared.connected.store(true, Ordering::Release);
        loop {
            if let Err(e) = self.check(&client, last).await? {
                return Some(("query", e));
            }
            self.shared.ready.store(true, Ordering::Release);
            let wait = tokio::time::timeout(self.options.poll, rx.recv());
            match self.until_stop(wait).await? {
                Err(_) | Ok(Some(Ok(()))) => {}
                Ok(Some(Err(message))) => {
                    return Some(("connection", DbError::closed(&message)));
                }
                Ok(None) => return Some(("connection", DbError::closed("connection closed"))),
            }
        }
    }

    /// Reads the active config and loads it if it is not the one last acted on.
    async fn check(&self, client: &Client, last: &mut Option<i64>) -> Option<Result<(), DbError>> {
        let timeout = self.options.timeout;
        let query = tokio::time::timeout(
            timeout,
            client.query_opt(
                "SELECT id, document FROM elvon_configs WHERE state = 'active'",
                &[],
            ),
        );
        let row = match self.until_stop(query).await? {
            Ok(Ok(row)) => row,
            Ok(Err(e)) => return Some(Err(DbError::from_pg("read the active config", &e))),
            Err(_) => return Some(Err(DbError::timeout("read the active config", timeout))),
        };
        let Some(row) = row else {
            return Some(Ok(()));
        };
        let id: i64 = row.get(0);
        if *last == Some(id) {
            return Some(Ok(()));
        }
        *last = Some(id);
        let document: &str = row.get(1);
        let event = crate::watch::load_bytes(self.engine, document.as_bytes());
        if let WatchEvent::Loaded(o) = &event {
            *self
                .shared
                .loaded
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(o.version.clone());
        }
        (self.on_event)(&event);
        Some(Ok(()))
    }
}

/// Ends the connection's driver task with the session.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
