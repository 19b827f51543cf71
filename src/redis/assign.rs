//! [`RedisAssignments`]: sticky assignments in the users' feature hashes.

use std::sync::Arc;

use super::source::Shared;
use super::{query_each, run_on, OwnedRuntime, RedisError, RedisFeatureSource};
use crate::sticky::{field_name, Assignment, AssignmentError, AssignmentStore, AssignmentWrite};

/// Sticky slots' assignments in Redis, in each user's feature hash: field
/// `elvon.sticky:<slot>` ([`field_name`]) holds the [`Assignment::to_text`] form. Because
/// they live beside the features, an engine whose source is the same
/// [`RedisFeatureSource`] reads a user's features and assignment with one command
/// (`decide_for` adds the field to the fetch), and every instance of a fleet sees the
/// assignments the others made. Sticky fetches bypass the source's local cache, so a cached
/// answer never hides a new assignment.
///
/// Writes go over the source's writer connection, one pipeline per batch (one command per
/// user on a cluster), bounded by the source's command timeout. Made by
/// [`RedisFeatureSource::assignments`]; cheap to clone.
#[derive(Clone)]
pub struct RedisAssignments {
    shared: Arc<Shared>,
    _runtime: Option<Arc<OwnedRuntime>>,
}

impl std::fmt::Debug for RedisAssignments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisAssignments")
            .field("prefix", &self.shared.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisFeatureSource {
    /// The assignment store of sticky slots that keeps assignments in this source's user
    /// hashes (give the engine this source too, so `decide_for` reads both in one command).
    #[must_use]
    pub fn assignments(&self) -> RedisAssignments {
        RedisAssignments {
            shared: Arc::clone(&self.shared),
            _runtime: self._runtime.clone(),
        }
    }
}

fn backend(e: RedisError) -> AssignmentError {
    AssignmentError::Backend {
        message: "redis assignments".into(),
        source: Box::new(e),
    }
}

impl AssignmentStore for RedisAssignments {
    /// Reads the field with `HGET`, blocking for at most the command timeout (the engine
    /// does not call this: it reads assignments with the features).
    fn get(&self, user: &str, slot: &str) -> Result<Option<Assignment>, AssignmentError> {
        let (key, field) = (self.shared.key(user), field_name(slot));
        let sh = Arc::clone(&self.shared);
        let text: Option<String> = run_on(
            &self.shared.rt,
            self.shared.command_timeout,
            "HGET (assignment)",
            async move {
                let mut c = sh.write_conn.clone();
                redis::cmd("HGET")
                    .arg(key)
                    .arg(field)
                    .query_async(&mut c)
                    .await
            },
        )
        .map_err(backend)?;
        text.map(|t| Assignment::from_text(&t)).transpose()
    }

    fn put(&self, batch: &[AssignmentWrite]) -> Result<(), AssignmentError> {
        if batch.is_empty() {
            return Ok(());
        }
        let cmds: Vec<redis::Cmd> = batch
            .iter()
            .map(|w| {
                let mut cmd = redis::cmd("HSET");
                cmd.arg(self.shared.key(&w.user))
                    .arg(field_name(&w.slot))
                    .arg(w.assignment.to_text());
                cmd
            })
            .collect();
        let sh = Arc::clone(&self.shared);
        run_on(
            &self.shared.rt,
            self.shared.command_timeout,
            "HSET (assignments)",
            async move {
                query_each::<redis::Value>(&sh.write_conn, cmds)
                    .await
                    .map(drop)
            },
        )
        .map_err(backend)
    }

    fn reads_with_features(&self) -> bool {
        true
    }
}
