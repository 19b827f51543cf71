//! [`ConfigStore`]: publish, activate, roll back and list config versions.

use std::time::{Duration, SystemTime};

use serde_json::json;
use tokio::sync::{Mutex, MutexGuard};
use tokio_postgres::{Client, GenericClient, NoTls, Row};

use super::{MIGRATIONS, NOTIFY_CHANNEL};
use crate::config::{Config, ConfigError, ConfigProblem};

/// Key of the transaction-level advisory lock that orders publishes, activations, rollbacks
/// and migrations across every process using the database (`'elvon'` in ASCII).
const LOCK_KEY: i64 = 0x65_6c_76_6f_6e;

/// Longest author or actor name stored.
const MAX_ACTOR: usize = 256;

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

    fn parse(s: &str) -> Result<Self, StoreError> {
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

/// What the database or the connection reported, as text (the driver's own error type is
/// not part of elvon's API).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DbError {
    message: String,
    code: Option<String>,
    connection: bool,
}

impl DbError {
    pub(super) fn from_pg(context: &str, e: &tokio_postgres::Error) -> Self {
        let detail = match e.as_db_error() {
            Some(db) => db.message().to_owned(),
            None => e.to_string(),
        };
        let hint = if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) {
            " (the elvon schema is missing: run ConfigStore::migrate)"
        } else {
            ""
        };
        DbError {
            message: format!("{context}: {detail}{hint}"),
            code: e.code().map(|c| c.code().to_owned()),
            connection: e.as_db_error().is_none(),
        }
    }

    pub(super) fn timeout(context: &str, after: Duration) -> Self {
        DbError {
            message: format!("{context}: no answer within {after:?}"),
            code: None,
            connection: true,
        }
    }

    pub(super) fn closed(message: &str) -> Self {
        DbError {
            message: format!("connection: {message}"),
            code: None,
            connection: true,
        }
    }

    fn other(message: String) -> Self {
        DbError {
            message,
            code: None,
            connection: false,
        }
    }

    /// The SQLSTATE code of an error the server reported (`"23505"`, …).
    #[must_use]
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// `true` when the server could not be reached or the connection broke (the next call
    /// reconnects), `false` when the server answered with an error.
    #[must_use]
    pub fn is_connection(&self) -> bool {
        self.connection
    }
}

/// Why a store operation did not do what was asked. Nothing was changed unless the variant
/// says so.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database could not be reached or reported an error.
    #[error("postgres config store: {0}")]
    Database(#[from] DbError),
    /// The document failed validation. It **was** stored, as `rejected` with its problems
    /// (row `id`), so the history shows what was attempted; it can never be activated.
    #[error("config rejected (stored as rejected, id {id}) with {} problem(s):\n{}", problems.len(), list(problems))]
    Invalid {
        /// The rejected row.
        id: i64,
        /// The document's version, `""` if it had none.
        version: String,
        /// Every problem, with its path.
        problems: Vec<ConfigProblem>,
    },
    /// Another document is already stored under this version.
    #[error("version {version:?} is already stored with a different document; publish under a new version")]
    VersionExists {
        /// The version.
        version: String,
    },
    /// No stored (non-rejected) config has this version.
    #[error("no stored config has version {version:?}")]
    NotFound {
        /// The version asked for.
        version: String,
    },
    /// The version was rejected when published and cannot be activated.
    #[error("version {version:?} was rejected when published and cannot be activated")]
    Rejected {
        /// The version asked for.
        version: String,
    },
    /// No earlier activation to return to.
    #[error("nothing to roll back to: the active config has no earlier activation")]
    NothingToRollBack,
    /// An author or actor name that is empty or longer than 256 bytes.
    #[error("actor name must be 1 to {MAX_ACTOR} bytes, got {len}")]
    BadActor {
        /// Its length in bytes.
        len: usize,
    },
    /// The database's schema is newer than this elvon's migrations.
    #[error("the database's elvon schema is at migration {found}, newer than this elvon knows ({known})")]
    SchemaTooNew {
        /// The highest migration applied in the database.
        found: i32,
        /// The highest migration this elvon ships.
        known: i32,
    },
}

fn list(problems: &[ConfigProblem]) -> String {
    problems
        .iter()
        .map(|p| format!("  {p}"))
        .collect::<Vec<_>>()
        .join("\n")
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
struct Checked {
    version: String,
    outcome: Result<Vec<ConfigProblem>, Vec<ConfigProblem>>,
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

fn problems_json(problems: &[ConfigProblem]) -> String {
    let list: Vec<_> = problems
        .iter()
        .map(|p| json!({"path": p.path(), "message": p.message()}))
        .collect();
    serde_json::Value::Array(list).to_string()
}

fn parse_problems(text: &str) -> Vec<ConfigProblem> {
    let Ok(serde_json::Value::Array(items)) = serde_json::from_str(text) else {
        return Vec::new();
    };
    items
        .iter()
        .map(|p| {
            let s = |k: &str| p.get(k).and_then(|v| v.as_str()).unwrap_or("").to_owned();
            ConfigProblem::new(s("path"), s("message"))
        })
        .collect()
}

fn time_of(micros: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_micros(u64::try_from(micros).unwrap_or(0))
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

fn pg(context: &'static str) -> impl Fn(tokio_postgres::Error) -> StoreError {
    move |e| StoreError::Database(DbError::from_pg(context, &e))
}

async fn migrate(client: &mut Client) -> Result<Vec<String>, StoreError> {
    let tx = client.transaction().await.map_err(pg("migrate"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
        .await
        .map_err(pg("migrate"))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS elvon_schema_migrations (
             version    integer     PRIMARY KEY,
             name       text        NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await
    .map_err(pg("migrate"))?;
    let row = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM elvon_schema_migrations",
            &[],
        )
        .await
        .map_err(pg("migrate"))?;
    let found: i32 = row.get(0);
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    if found > known {
        return Err(StoreError::SchemaTooNew { found, known });
    }
    let mut applied = Vec::new();
    for (n, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > found) {
        tx.batch_execute(sql).await.map_err(pg("migrate"))?;
        tx.execute(
            "INSERT INTO elvon_schema_migrations (version, name) VALUES ($1, $2)",
            &[n, name],
        )
        .await
        .map_err(pg("migrate"))?;
        applied.push(format!("{n:04}_{name}"));
    }
    tx.commit().await.map_err(pg("migrate"))?;
    Ok(applied)
}

async fn audit_row(
    tx: &impl GenericClient,
    actor: &str,
    action: &str,
    version: &str,
    detail: &str,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO elvon_audit (actor, action, version, detail) VALUES ($1, $2, $3, $4)",
        &[&actor, &action, &version, &detail],
    )
    .await
    .map_err(pg("audit"))?;
    Ok(())
}

async fn publish(
    client: &mut Client,
    document: &str,
    author: &str,
    checked: &Checked,
) -> Result<Published, StoreError> {
    let version = checked.version.as_str();
    let tx = client.transaction().await.map_err(pg("publish"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
        .await
        .map_err(pg("publish"))?;
    let warnings = match &checked.outcome {
        Ok(w) => w,
        Err(problems) => {
            let row = tx
                .query_one(
                    "INSERT INTO elvon_configs (version, document, author, state, problems)
                     VALUES ($1, $2, $3, 'rejected', $4) RETURNING id",
                    &[&version, &document, &author, &problems_json(problems)],
                )
                .await
                .map_err(pg("publish"))?;
            let detail = format!("{} problem(s)", problems.len());
            audit_row(&tx, author, "reject", version, &detail).await?;
            tx.commit().await.map_err(pg("publish"))?;
            return Err(StoreError::Invalid {
                id: row.get(0),
                version: version.to_owned(),
                problems: problems.clone(),
            });
        }
    };
    let existing = tx
        .query_opt(
            "SELECT id, document FROM elvon_configs WHERE version = $1 AND state <> 'rejected'",
            &[&version],
        )
        .await
        .map_err(pg("publish"))?;
    if let Some(row) = existing {
        let stored: &str = row.get(1);
        if stored != document {
            return Err(StoreError::VersionExists {
                version: version.to_owned(),
            });
        }
        return Ok(Published {
            id: row.get(0),
            version: version.to_owned(),
            warnings: warnings.clone(),
            existed: true,
        });
    }
    let row = tx
        .query_one(
            "INSERT INTO elvon_configs (version, document, author, state, problems)
             VALUES ($1, $2, $3, 'candidate', $4) RETURNING id",
            &[&version, &document, &author, &problems_json(warnings)],
        )
        .await
        .map_err(pg("publish"))?;
    audit_row(&tx, author, "publish", version, "").await?;
    tx.commit().await.map_err(pg("publish"))?;
    Ok(Published {
        id: row.get(0),
        version: version.to_owned(),
        warnings: warnings.clone(),
        existed: false,
    })
}

/// Makes config row `config_id` active (retiring the active one), records the activation
/// with `previous`, audits and notifies; returns the replaced version.
async fn make_active(
    tx: &impl GenericClient,
    config_id: i64,
    previous: Option<i64>,
    action: &str,
    actor: &str,
    version: &str,
) -> Result<Option<String>, StoreError> {
    let replaced = tx
        .query_opt(
            "UPDATE elvon_configs SET state = 'retired' WHERE state = 'active' RETURNING version",
            &[],
        )
        .await
        .map_err(pg("activate"))?
        .map(|r| r.get::<_, String>(0));
    tx.execute(
        "UPDATE elvon_configs SET state = 'active' WHERE id = $1",
        &[&config_id],
    )
    .await
    .map_err(pg("activate"))?;
    tx.execute(
        "INSERT INTO elvon_activations (config_id, previous, action, actor)
         VALUES ($1, $2, $3, $4)",
        &[&config_id, &previous, &action, &actor],
    )
    .await
    .map_err(pg("activate"))?;
    let detail = replaced.as_deref().unwrap_or("");
    audit_row(tx, actor, action, version, detail).await?;
    tx.execute("SELECT pg_notify($1, $2)", &[&NOTIFY_CHANNEL, &version])
        .await
        .map_err(pg("notify"))?;
    Ok(replaced)
}

async fn activate(
    client: &mut Client,
    version: &str,
    actor: &str,
) -> Result<Activation, StoreError> {
    let tx = client.transaction().await.map_err(pg("activate"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
        .await
        .map_err(pg("activate"))?;
    let rows = tx
        .query(
            "SELECT id, state FROM elvon_configs WHERE version = $1 ORDER BY state = 'rejected'",
            &[&version],
        )
        .await
        .map_err(pg("activate"))?;
    let Some(row) = rows.first() else {
        return Err(StoreError::NotFound {
            version: version.to_owned(),
        });
    };
    let (id, state): (i64, &str) = (row.get(0), row.get(1));
    match state {
        "rejected" => {
            return Err(StoreError::Rejected {
                version: version.to_owned(),
            })
        }
        "active" => {
            return Ok(Activation {
                version: version.to_owned(),
                replaced: None,
                changed: false,
            })
        }
        _ => {}
    }
    let current: Option<i64> = tx
        .query_opt(
            "SELECT id FROM elvon_activations ORDER BY id DESC LIMIT 1",
            &[],
        )
        .await
        .map_err(pg("activate"))?
        .map(|r| r.get(0));
    let replaced = make_active(&tx, id, current, "activate", actor, version).await?;
    tx.commit().await.map_err(pg("activate"))?;
    Ok(Activation {
        version: version.to_owned(),
        replaced,
        changed: true,
    })
}

async fn rollback(client: &mut Client, actor: &str) -> Result<Activation, StoreError> {
    let tx = client.transaction().await.map_err(pg("rollback"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
        .await
        .map_err(pg("rollback"))?;
    // The newest activation is the current one; its `previous` is where to return.
    let previous: Option<i64> = tx
        .query_opt(
            "SELECT previous FROM elvon_activations ORDER BY id DESC LIMIT 1",
            &[],
        )
        .await
        .map_err(pg("rollback"))?
        .and_then(|r| r.get(0));
    let Some(previous) = previous else {
        return Err(StoreError::NothingToRollBack);
    };
    let row = tx
        .query_one(
            "SELECT a.config_id, a.previous, c.version
             FROM elvon_activations a JOIN elvon_configs c ON c.id = a.config_id
             WHERE a.id = $1",
            &[&previous],
        )
        .await
        .map_err(pg("rollback"))?;
    let (config_id, previous, version): (i64, Option<i64>, String) =
        (row.get(0), row.get(1), row.get(2));
    let replaced = make_active(&tx, config_id, previous, "rollback", actor, &version).await?;
    tx.commit().await.map_err(pg("rollback"))?;
    Ok(Activation {
        version,
        replaced,
        changed: true,
    })
}

enum SelectKind<'a> {
    Active,
    Version(&'a str),
    History(usize),
}

async fn select(client: &Client, kind: SelectKind<'_>) -> Result<Vec<StoredConfig>, StoreError> {
    const COLUMNS: &str = "id, version, author,
        (extract(epoch FROM created_at) * 1000000)::int8, state, problems";
    let rows = match kind {
        SelectKind::Active => {
            let sql =
                format!("SELECT {COLUMNS}, document FROM elvon_configs WHERE state = 'active'");
            client.query(&sql, &[]).await
        }
        SelectKind::Version(v) => {
            let sql = format!(
                "SELECT {COLUMNS}, document FROM elvon_configs WHERE version = $1
                 ORDER BY state = 'rejected', id DESC LIMIT 1"
            );
            client.query(&sql, &[&v]).await
        }
        SelectKind::History(limit) => {
            let sql = format!(
                "SELECT {COLUMNS}, NULL::text FROM elvon_configs ORDER BY id DESC LIMIT $1"
            );
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            client.query(&sql, &[&limit]).await
        }
    }
    .map_err(pg("select"))?;
    rows.iter().map(stored).collect()
}

fn stored(row: &Row) -> Result<StoredConfig, StoreError> {
    Ok(StoredConfig {
        id: row.get(0),
        version: row.get(1),
        author: row.get(2),
        created_at: time_of(row.get(3)),
        state: ConfigState::parse(row.get(4))?,
        problems: parse_problems(row.get(5)),
        document: row.get(6),
    })
}

async fn audit(client: &Client, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = client
        .query(
            "SELECT (extract(epoch FROM at) * 1000000)::int8, actor, action, version, detail
             FROM elvon_audit ORDER BY id DESC LIMIT $1",
            &[&limit],
        )
        .await
        .map_err(pg("audit"))?;
    Ok(rows
        .iter()
        .map(|r| AuditEntry {
            at: time_of(r.get(0)),
            actor: r.get(1),
            action: r.get(2),
            version: r.get(3),
            detail: r.get(4),
        })
        .collect())
}
