//! The local answer cache.

use std::time::{Duration, Instant};

use crate::features::Features;

/// The local cache: answers by (requested names, user), each valid for `ttl` after it was
/// fetched. `quick_cache` bounds the entries (CLOCK-Pro eviction) and looks keys up by a
/// borrowed form, so a hit allocates only the copy of the answer.
pub(super) struct Cache {
    pub(super) map: quick_cache::sync::Cache<CacheKey, (Instant, Features)>,
    pub(super) ttl: Duration,
}

#[derive(Hash, PartialEq, Eq)]
pub(super) struct CacheKey {
    names: u64,
    user: Box<str>,
}

/// The borrowed form of [`CacheKey`]; hashes the same fields in the same order.
#[derive(Hash)]
pub(super) struct CacheKeyRef<'a> {
    names: u64,
    user: &'a str,
}

impl quick_cache::Equivalent<CacheKey> for CacheKeyRef<'_> {
    fn equivalent(&self, key: &CacheKey) -> bool {
        self.names == key.names && self.user == &*key.user
    }
}

impl Cache {
    pub(super) fn names_id(names: &[Box<str>]) -> u64 {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for n in names {
            h.update(&(n.len() as u64).to_le_bytes());
            h.update(n.as_bytes());
        }
        h.digest()
    }

    pub(super) fn get(&self, names: u64, user: &str) -> Option<Features> {
        let (at, f) = self.map.get(&CacheKeyRef { names, user })?;
        (at.elapsed() < self.ttl).then_some(f)
    }

    pub(super) fn insert(&self, names: u64, user: &str, f: Features, fetched: Instant) {
        let key = CacheKey {
            names,
            user: user.into(),
        };
        self.map.insert(key, (fetched, f));
    }
}
