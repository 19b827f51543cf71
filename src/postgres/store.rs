//! [`ConfigStore`]: publish, activate, roll back and list config versions.

use std::time::{Duration, SystemTime};

use tokio::sync::{Mutex, MutexGuard};
use tokio_postgres::{Client, NoTls};

use super::error::{DbError, StoreError};
use super::sql::{activate, audit, migrate, publish, rollback, select, SelectKind};
use crate::config::{Config, ConfigError, ConfigProblem};

/// Longest author or actor name stored.
pub(super) const MAX_ACTOR: usize = 256;

/// Default time limit of one store operation.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The lifecycle state of a stored config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConfigState {
    /// Valid, stored, never active or not yet.
    Candidate,
    /// The one version watchers load.
    Active,
    /// Failed validation when published; never served.
    Rejected,
    /// Was active; another version replaced it.
    Retired,
}

impl ConfigState {
    /// The state as stored: `candidate`, `active`, `rejected` or `retired`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            ConfigState::Candidate => "candidate",
            ConfigState::Active => "active",
            ConfigState::Rejected => "rejected",
            ConfigState::Retired => "retired",
        }
    }

    pub(super) fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "candidate" => ConfigState::Candidate,
            "active" => ConfigState::Active,
            "rejected" => ConfigState::Rejected,
            "retired" => ConfigState::Retired,
            other => {
                return Err(StoreError::Database(DbError::other(format!(
                    "unknown config state {other:?} in elvon_configs"
                ))))
            }
        })
    }
}

/// One stored config.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StoredConfig {
    /// The row id (increasing with publication order).
    pub id: i64,
    /// The document's `version` (`""` for a rejected document that had none).
    pub version: String,
    /// Who published it.
    pub author: String,
    /// When it was published.
    pub created_at: SystemTime,
    /// Where it is in its lifecycle.
    pub state: ConfigState,
    /// For a rejected config, every validation problem; otherwise the non-fatal warnings.
    pub problems: Vec<ConfigProblem>,
    /// The document as published (`None` in [`ConfigStore::history`]).
    pub document: Option<String>,
}

/// What [`ConfigStore::publish`] stored.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Published {
    /// The row id.
    pub id: i64,
    /// The config's version.
    pub version: String,
    /// Non-fatal findings of validation.
    pub warnings: Vec<ConfigProblem>,
    /// `true` when the same document was already stored under this version (nothing was
    /// written; publishing is idempotent).
    pub existed: bool,
}

/// What [`ConfigStore::activate`] or [`ConfigStore::rollback`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Activation {
    /// The version now active.
    pub version: String,
    /// The version it replaced (`None` when none was active, or nothing changed).
    pub replaced: Option<String>,
    /// `false` when the version was active already (nothing was written).
    pub changed: bool,
}

/// One entry of the audit log: every publish, rejection, activation and rollback.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditEntry {
    /// When.
    pub at: SystemTime,
    /// Who (an author, an admin token's name).
    pub actor: String,
    /// `publish`, `reject`, `activate` or `rollback`.
    pub action: String,
    /// The version acted on.
    pub version: String,
    /// For a rollback, the version rolled back from; for a rejection, the problem count.
    pub detail: String,
}

/// The config store in one PostgreSQL database.
///
/// Operations are async and must run inside a Tokio runtime (the connection is driven by
/// a task spawned on it). One connection is shared, and operations run one at a time; a
/// connection that broke is replaced on the next call. Every change runs in a transaction
/// under an advisory lock, so concurrent publishers and activators in several processes
/// see one order.
pub struct ConfigStore {
    url: String,
    client: Mutex<Option<Client>>,
    timeout: Duration,
}

impl std::fmt::Debug for ConfigStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigStore")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

pub(super) async fn connect(url: &str, context: &str) -> Result<Client, DbError> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|e| DbError::from_pg(context, &e))?;
    tokio::spawn(async move {
        // Ends when the client is dropped or the connection breaks; the next call sees
        // `is_closed` and reconnects.
        let _ = connection.await;
    });
    Ok(client)
}

impl ConfigStore {
    /// Connects to the database at `url` (a libpq-style connection string,
    /// `host=... user=... dbname=...`, or a `postgresql://` URL). Run
    /// [`migrate`](Self::migrate) once before the first use of a new database.
    ///
    /// # Errors
    /// [`StoreError::Database`] when the server cannot be reached.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let client = connect(url, "connect").await?;
        Ok(ConfigStore {
            url: url.to_owned(),
            client: Mutex::new(Some(client)),
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// The time limit of one operation (default 10 s); a connection that did not answer in
    /// time is dropped and replaced on the next call.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The shared client, connected again if the connection broke.
    async fn client(&self, context: &str) -> Result<MutexGuard<'_, Option<Client>>, StoreError> {
        let mut guard = self.client.lock().await;
        if guard.as_ref().is_none_or(Client::is_closed) {
            *guard = None;
            let fresh = tokio::time::timeout(self.timeout, connect(&self.url, context))
                .await
                .map_err(|_| DbError::timeout(context, self.timeout))??;
            *guard = Some(fresh);
        }
        Ok(guard)
    }

    /// Applies the schema migrations this elvon ships that the database lacks, in order,
    /// in one transaction; returns the names of those applied (empty when up to date).
    ///
    /// # Errors
    /// [`StoreError::SchemaTooNew`] when the database has a migration this elvon does not
    /// know; [`StoreError::Database`].
    pub async fn migrate(&self) -> Result<Vec<String>, StoreError> {
        on_client!(self, "migrate", |c| migrate(c))
    }

    /// Validates `document` and stores it as a candidate under its `version`, published by
    /// `author`. Publishing the same document under the same version again changes nothing
    /// ([`Published::existed`]).
    ///
    /// # Errors
    /// - [`StoreError::Invalid`]: not JSON, not a valid config, or no `version`: stored as
    ///   `rejected` with every problem.
    /// - [`StoreError::VersionExists`]: the version holds a different document.
    /// - [`StoreError::BadActor`], [`StoreError::Database`].
    pub async fn publish(&self, document: &str, author: &str) -> Result<Published, StoreError> {
        check_actor(author)?;
        let checked = check(document);
        on_client!(self, "publish", |c| publish(c, document, author, &checked))
    }

    /// Makes `version` the active config (the active one becomes `retired`) and notifies
    /// the watchers; `actor` is recorded. Activating the active version changes nothing.
    ///
    /// # Errors
    /// [`StoreError::NotFound`], [`StoreError::Rejected`], [`StoreError::BadActor`],
    /// [`StoreError::Database`].
    pub async fn activate(&self, version: &str, actor: &str) -> Result<Activation, StoreError> {
        check_actor(actor)?;
        on_client!(self, "activate", |c| activate(c, version, actor))
    }

    /// Re-activates the version that was active before the current one became active and
    /// notifies the watchers; `actor` is recorded. Each rollback goes one activation
    /// further back (a rollback is not itself a step to return to).
    ///
    /// # Errors
    /// [`StoreError::NothingToRollBack`], [`StoreError::BadActor`],
    /// [`StoreError::Database`].
    pub async fn rollback(&self, actor: &str) -> Result<Activation, StoreError> {
        check_actor(actor)?;
        on_client!(self, "rollback", |c| rollback(c, actor))
    }

    /// The active config, with its document.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn active(&self) -> Result<Option<StoredConfig>, StoreError> {
        on_client!(self, "active", |c| select(c, SelectKind::Active)).map(|mut v| v.pop())
    }

    /// The stored config of `version` (the valid one if a rejected attempt shares its
    /// version), with its document.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn get(&self, version: &str) -> Result<Option<StoredConfig>, StoreError> {
        on_client!(self, "get", |c| select(c, SelectKind::Version(version))).map(|mut v| v.pop())
    }

    /// The newest `limit` stored configs, newest first, without their documents.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn history(&self, limit: usize) -> Result<Vec<StoredConfig>, StoreError> {
        on_client!(self, "history", |c| select(c, SelectKind::History(limit)))
    }

    /// The newest `limit` audit entries, newest first.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        on_client!(self, "audit", |c| audit(c, limit))
    }
}

fn check_actor(actor: &str) -> Result<(), StoreError> {
    if actor.is_empty() || actor.len() > MAX_ACTOR {
        return Err(StoreError::BadActor { len: actor.len() });
    }
    Ok(())
}

/// A document's version and validation outcome: `Ok(warnings)` or `Err(problems)`.
pub(super) struct Checked {
    pub(super) version: String,
    pub(super) outcome: Result<Vec<ConfigProblem>, Vec<ConfigProblem>>,
}

fn check(document: &str) -> Checked {
    let config = match Config::from_json(document) {
        Ok(c) => c,
        Err(e) => {
            let message = match e {
                ConfigError::Parse {
                    line,
                    column,
                    message,
                } => format!("not valid JSON (line {line}, column {column}): {message}"),
                other => other.to_string(),
            };
            return Checked {
                version: String::new(),
                outcome: Err(vec![ConfigProblem::new("(root)", message)]),
            };
        }
    };
    let version = config.version().unwrap_or_default();
    let mut outcome = config.validate().map_err(|e| e.problems().to_vec());
    if version.is_empty() {
        let problem = ConfigProblem::new("version", "a stored config needs a non-empty version");
        match &mut outcome {
            Ok(_) => outcome = Err(vec![problem]),
            Err(p) => p.insert(0, problem),
        }
    }
    Checked { version, outcome }
}

/// Runs `$op` (an expression using the connected client `$c`) within the store's time
/// limit; a client that did not answer in time is dropped (the server rolls back its open
/// transaction) and replaced on the next call.
macro_rules! on_client {
    ($store:ident, $context:literal, |$c:ident| $op:expr) => {{
        let mut guard = $store.client($context).await?;
        let out = match guard.as_mut() {
            Some($c) => tokio::time::timeout($store.timeout, $op).await,
            None => return Err(DbError::closed("no connection").into()),
        };
        out.unwrap_or_else(|_| {
            *guard = None;
            Err(DbError::timeout($context, $store.timeout).into())
        })
    }};
}
use on_client;
