//! What the config store and its watcher report when the database does not do what was
//! asked.

use std::time::Duration;

use super::store::MAX_ACTOR;
use crate::config::ConfigProblem;

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

    pub(super) fn other(message: String) -> Self {
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
