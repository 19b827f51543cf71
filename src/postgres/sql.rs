//! The store's statements and transactions, one function per operation.

use std::time::{Duration, SystemTime};

use serde_json::json;
use tokio_postgres::{Client, GenericClient, Row};

use super::error::{DbError, StoreError};
use super::store::{Activation, AuditEntry, Checked, ConfigState, Published, StoredConfig};
use super::{MIGRATIONS, NOTIFY_CHANNEL};
use crate::config::ConfigProblem;

/// Key of the transaction-level advisory lock that orders publishes, activations, rollbacks
/// and migrations across every process using the database (`'elvon'` in ASCII).
const LOCK_KEY: i64 = 0x65_6c_76_6f_6e;

pub(super) fn problems_json(problems: &[ConfigProblem]) -> String {
    let list: Vec<_> = problems
        .iter()
        .map(|p| json!({"path": p.path(), "message": p.message()}))
        .collect();
    serde_json::Value::Array(list).to_string()
}

pub(super) fn parse_problems(text: &str) -> Vec<ConfigProblem> {
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

pub(super) fn time_of(micros: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_micros(u64::try_from(micros).unwrap_or(0))
}

fn pg(context: &'static str) -> impl Fn(tokio_postgres::Error) -> StoreError {
    move |e| StoreError::Database(DbError::from_pg(context, &e))
}

pub(super) async fn migrate(client: &mut Client) -> Result<Vec<String>, StoreError> {
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

pub(super) async fn publish(
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

pub(super) async fn activate(
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

pub(super) async fn rollback(client: &mut Client, actor: &str) -> Result<Activation, StoreError> {
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

pub(super) enum SelectKind<'a> {
    Active,
    Version(&'a str),
    History(usize),
}

pub(super) async fn select(
    client: &Client,
    kind: SelectKind<'_>,
) -> Result<Vec<StoredConfig>, StoreError> {
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

pub(super) async fn audit(client: &Client, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
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
