//! The in-memory feature store.

use std::sync::Arc;

use dashmap::DashMap;

use super::{FeatureSource, Features, FetchFuture, FetchRequest, Text, Value};

/// An in-memory feature store: a concurrent map from user id to [`Features`].
///
/// Cheap to clone (clones share the same map). Use it directly as the engine's
/// [`FeatureSource`], in tests, or as a local cache in front of a remote store.
///
/// ```
/// use elvon::{Features, MemoryStore};
/// let store = MemoryStore::new();
/// store.set("u1", Features::new().with("country", "KR"));
/// store.update("u1", |f| { f.insert("page_view_7d", 3); });
/// assert_eq!(store.get("u1").unwrap().len(), 2);
/// ```
#[derive(Clone, Default)]
pub struct MemoryStore {
    map: Arc<DashMap<Box<str>, Features, ahash::RandomState>>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("users", &self.map.len())
            .finish()
    }
}

impl MemoryStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces all features of `user`.
    pub fn set(&self, user: &str, features: Features) {
        self.map.insert(user.into(), features);
    }

    /// Sets one feature of `user`, creating the user if needed.
    pub fn set_feature(&self, user: &str, name: impl Into<Text>, value: impl Into<Value>) {
        self.update(user, |f| {
            f.insert(name, value);
        });
    }

    /// Changes the features of `user` in place (created empty if absent). The closure runs
    /// while the user's shard is locked: keep it short and do not touch the store from it.
    pub fn update<R>(&self, user: &str, f: impl FnOnce(&mut Features) -> R) -> R {
        let mut entry = self.map.entry(user.into()).or_default();
        f(entry.value_mut())
    }

    /// A copy of the features of `user`.
    #[must_use]
    pub fn get(&self, user: &str) -> Option<Features> {
        self.map.get(user).map(|r| r.value().clone())
    }

    /// Removes `user`; returns their features.
    pub fn remove(&self, user: &str) -> Option<Features> {
        self.map.remove(user).map(|(_, f)| f)
    }

    /// Number of users stored.
    #[must_use]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// `true` when no user is stored.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

impl FeatureSource for MemoryStore {
    fn fetch<'a>(&'a self, request: FetchRequest<'a>) -> FetchFuture<'a> {
        let out = match self.map.get(request.user) {
            Some(r) => r.value().select(request.names.iter().map(|n| &**n)),
            None => Features::new(),
        };
        Box::pin(std::future::ready(Ok(out)))
    }
}
