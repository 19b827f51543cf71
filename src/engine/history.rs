//! The snapshots an engine served before the current one, for [`Engine::rollback`].

use std::collections::VecDeque;
use std::sync::Arc;

use super::{Engine, LoadOutcome};
use crate::snapshot::Snapshot;

/// Default number of replaced snapshots an engine keeps for [`Engine::rollback`].
pub const DEFAULT_KEEP_PREVIOUS: usize = 2;

/// The replaced snapshots, newest last, at most `keep` of them. Guarded by the engine's
/// loading lock, so loads and rollbacks see one order.
pub(super) struct History {
    previous: VecDeque<Arc<Snapshot>>,
    keep: usize,
    /// Whether a config was ever loaded: the empty snapshot an engine starts with is not
    /// kept (rolling back to "every slot unknown" is never what an operator means).
    loaded: bool,
}

impl History {
    pub(super) fn new(keep: usize) -> Self {
        History {
            previous: VecDeque::with_capacity(keep.min(16)),
            keep,
            loaded: false,
        }
    }

    /// Keeps `old`, the snapshot a load just replaced; returns the one that no longer fits
    /// (or `old` itself when nothing is kept), for the caller to retire.
    pub(super) fn replaced(&mut self, old: Arc<Snapshot>) -> Option<Arc<Snapshot>> {
        if !std::mem::replace(&mut self.loaded, true) || self.keep == 0 {
            return Some(old);
        }
        // Its counts so far reach the recorder now, as they would if it were freed; later
        // ones (decisions still in flight) with the next publish.
        old.counts.publish();
        self.previous.push_back(old);
        if self.previous.len() > self.keep {
            self.previous.pop_front()
        } else {
            None
        }
    }
}

/// Why [`Engine::rollback`] changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RollbackError {
    /// No replaced snapshot is kept: no config was loaded over another yet, every kept one
    /// was rolled back to already, or the engine keeps none
    /// ([`EngineBuilder::keep_previous`](super::EngineBuilder::keep_previous)).
    #[error("no previous config to roll back to (the engine keeps the last {keep} replaced)")]
    NoPrevious {
        /// How many replaced snapshots the engine keeps.
        keep: usize,
    },
}

impl Engine {
    /// Swaps the snapshot that served before the current one back in, without parsing,
    /// validating or compiling anything, and returns its version.
    ///
    /// The engine keeps the last few snapshots that loads replaced
    /// ([`EngineBuilder::keep_previous`](super::EngineBuilder::keep_previous), default
    /// [`DEFAULT_KEEP_PREVIOUS`]). Rollback works like a stack: each call goes one config
    /// further back, and the config rolled back from is not kept (load it again to return to
    /// it). Decisions already made keep the snapshot they were made on. A snapshot with
    /// bandit rules is copied (not recompiled) so that it binds to the learner's current
    /// models; learner state carries over as it does on any load.
    ///
    /// ```
    /// let engine = elvon::Engine::default();
    /// let config = |v: &str| format!(r#"{{"version": "{v}", "slots": [{{"id": "s", "variants": [{{"id": "a"}}], "default": "a"}}]}}"#);
    /// engine.load_config_json(&config("1")).unwrap();
    /// engine.load_config_json(&config("2")).unwrap();
    /// assert_eq!(engine.rollback().unwrap().version, "1");
    /// assert_eq!(engine.config_version(), "1");
    /// assert!(engine.rollback().is_err(), "nothing older is kept");
    /// ```
    ///
    /// # Errors
    /// [`RollbackError::NoPrevious`] when no replaced snapshot is kept; nothing changes.
    pub fn rollback(&self) -> Result<LoadOutcome, RollbackError> {
        let mut history = self.lock_loading();
        let keep = history.keep;
        let previous = history
            .previous
            .pop_back()
            .ok_or(RollbackError::NoPrevious { keep })?;
        let restored = if previous.bindings.is_empty() {
            self.inner.learner.deactivate_all();
            previous
        } else {
            let mut copy = Snapshot::clone(&previous);
            self.inner.learner.attach(&mut copy);
            crate::snapshot::reclaim::retire(previous);
            Arc::new(copy)
        };
        let version = restored.version().to_owned();
        let old = self.inner.snapshot.swap(restored);
        crate::snapshot::reclaim::retire(old);
        crate::metrics::config_rolled_back();
        Ok(LoadOutcome {
            version,
            warnings: Vec::new(),
        })
    }

    /// The versions of the replaced snapshots kept for [`Engine::rollback`], oldest first
    /// (the last is what a rollback would serve).
    #[must_use]
    pub fn previous_versions(&self) -> Vec<String> {
        self.lock_loading()
            .previous
            .iter()
            .map(|s| s.version().to_owned())
            .collect()
    }
}
