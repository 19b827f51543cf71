//! PostgreSQL config store (feature `postgres`): every published config with its state and
//! author, activation and rollback in transactions, and a watcher that keeps engines on the
//! active version.
//!
//! A config moves through these states:
//!
//! ```text
//! publish ──► candidate ──activate──► active ──(another is activated)──► retired
//!    │                                  ▲                                   │
//!    └─(invalid)──► rejected            └────────── rollback / activate ────┘
//! ```
//!
//! - [`ConfigStore::publish`] validates the document as
//!   [`Engine::load_config`](crate::Engine::load_config) would. A valid one is stored as a
//!   `candidate`; an invalid one is stored as `rejected` with every problem and its path,
//!   and can never be activated.
//! - [`ConfigStore::activate`] makes one version the active one, in one transaction (the
//!   previous active one becomes `retired`), and notifies the watchers (`NOTIFY
//!   elvon_config`).
//! - [`ConfigStore::rollback`] re-activates the version that was active before the current
//!   one; repeated rollbacks walk further back.
//! - [`PgConfigWatcher`] (one per engine) loads the active version: at once on `NOTIFY`,
//!   and by polling as a fallback. A database that is down or slow never stops decisions:
//!   the engine keeps serving the last config it loaded, and the watcher reconnects with
//!   backoff. An active version that does not load on an engine (an older elvon, say) is
//!   reported and counted, and the engine keeps its snapshot.
//!
//! Before activating, [`Engine::shadow`](crate::Engine::shadow) can run a candidate beside the
//! live config on a sample of live decisions and report agreement, changes by rule and an
//! off-policy estimate of its value; with feature `http` too,
//! `http::admin_router` serves publish, activate, rollback, history, audit and that report
//! over HTTP with bearer tokens. [`Engine::rollback`](crate::Engine::rollback) undoes a swap
//! on one engine at once, without the database.
//!
//! The schema is in the crate (`src/postgres/migrations/`) and applied by
//! [`ConfigStore::migrate`], never implicitly. Its tables are `elvon_configs`,
//! `elvon_activations`, `elvon_audit` and `elvon_schema_migrations`, in the connection's
//! `search_path` (choose a schema with `options=-csearch_path=...` in the connection string).
//! Connections are plain TCP or Unix sockets (`tokio_postgres::NoTls`): put TLS in front
//! (a local proxy or a sidecar) where the database is remote.
//!
//! ```no_run
//! # #[allow(dead_code)]
//! # async fn run() -> Result<(), elvon::postgres::StoreError> {
//! use elvon::postgres::{ConfigStore, PgConfigWatcher, WatchOptions};
//! let url = "host=127.0.0.1 user=elvon dbname=elvon";
//! let store = ConfigStore::connect(url).await?;
//! store.migrate().await?;
//! let v = store.publish(r#"{"version": "7", "slots": []}"#, "alice").await?;
//! store.activate(&v.version, "alice").await?;
//!
//! let engine = elvon::Engine::default();
//! let _watcher = PgConfigWatcher::spawn(engine.clone(), WatchOptions::new(url), |event| {
//!     eprintln!("config: {event:?}");
//! })
//! .expect("thread started");
//! # Ok(()) }
//! ```

mod error;
mod sql;
mod store;
mod watch;

pub use error::{DbError, StoreError};
pub use store::{Activation, AuditEntry, ConfigState, ConfigStore, Published, StoredConfig};
pub use watch::{PgConfigWatcher, WatchOptions};

/// The channel [`ConfigStore::activate`] and [`ConfigStore::rollback`] notify on, with the
/// newly active version as the payload.
pub const NOTIFY_CHANNEL: &str = "elvon_config";

/// The schema migrations, in order: (number, name, SQL).
const MIGRATIONS: &[(i32, &str, &str)] = &[(
    1,
    "config_store",
    include_str!("migrations/0001_config_store.sql"),
)];
