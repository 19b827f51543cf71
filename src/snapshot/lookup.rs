//! String lookups on the decide path: XXH3 once, then an identity-hashed table, then verify.
//!
//! `ahash` without AES-NI and a generic `HashMap<Box<str>, _>` cost more than the rest of a
//! simple decision; XXH3 on short keys is a few nanoseconds and the table probe then hashes
//! nothing. Small in-lists are scanned linearly, which beats any hashing.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use xxhash_rust::xxh3::xxh3_64;

use crate::features::str_eq;

/// A `Hasher` for keys that already are well-mixed 64-bit hashes.
#[derive(Default, Clone, Copy)]
pub(crate) struct PreHashed(u64);

impl Hasher for PreHashed {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by the tables here; fold anything else deterministically.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type PreHashedMap<V> = HashMap<u64, V, BuildHasherDefault<PreHashed>>;

/// Maps strings to `u32`s: XXH3 → identity-hashed table → string check. Keys whose hash
/// collides with an earlier key go to a plain map, so lookups are exact.
#[derive(Debug, Clone, Default)]
pub(crate) struct StrIndex {
    by_hash: PreHashedMap<(u32, u32)>,
    /// `(key, value)`, indexed by the first element of `by_hash` values.
    keys: Vec<Box<str>>,
    overflow: HashMap<Box<str>, u32>,
}

impl StrIndex {
    /// Inserts `key → value`; returns `false` (and changes nothing) if `key` is present.
    pub(crate) fn insert(&mut self, key: &str, value: u32) -> bool {
        if self.get(key).is_some() {
            return false;
        }
        let h = xxh3_64(key.as_bytes());
        if self.by_hash.contains_key(&h) {
            self.overflow.insert(key.into(), value);
        } else {
            self.by_hash.insert(h, (self.keys.len() as u32, value));
            self.keys.push(key.into());
        }
        true
    }

    #[inline]
    pub(crate) fn get(&self, key: &str) -> Option<u32> {
        if let Some(&(k, v)) = self.by_hash.get(&xxh3_64(key.as_bytes())) {
            if self.keys.get(k as usize).is_some_and(|s| str_eq(s, key)) {
                return Some(v);
            }
        }
        if self.overflow.is_empty() {
            None
        } else {
            self.overflow.get(key).copied()
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len() + self.overflow.len()
    }
}

/// In-lists of up to this many strings are scanned linearly.
const SMALL_SET: usize = 8;

/// A set of strings for `in` / `not_in`.
#[derive(Debug, Clone)]
pub(crate) enum StrSet {
    Small(Vec<Box<str>>),
    Large(StrIndex),
}

impl Default for StrSet {
    fn default() -> Self {
        StrSet::Small(Vec::new())
    }
}

impl StrSet {
    pub(crate) fn insert(&mut self, s: &str) {
        match self {
            StrSet::Small(v) if v.iter().any(|x| **x == *s) => {}
            StrSet::Small(v) if v.len() < SMALL_SET => v.push(s.into()),
            StrSet::Small(v) => {
                let mut idx = StrIndex::default();
                for x in v.iter() {
                    idx.insert(x, 0);
                }
                idx.insert(s, 0);
                *self = StrSet::Large(idx);
            }
            StrSet::Large(idx) => {
                idx.insert(s, 0);
            }
        }
    }

    #[inline]
    pub(crate) fn contains(&self, s: &str) -> bool {
        match self {
            StrSet::Small(v) => v.iter().any(|x| str_eq(x, s)),
            StrSet::Large(idx) => idx.get(s).is_some(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            StrSet::Small(v) => v.len(),
            StrSet::Large(idx) => idx.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn str_eq_matches_std_for_every_length_and_position() {
        let base: String = (0..40).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
        for n in 0..=40 {
            let a = &base[..n];
            assert!(str_eq(a, a));
            assert!(!str_eq(a, &base[..n.saturating_sub(1)]) || n == 0);
            for i in 0..n {
                let mut b = a.as_bytes().to_vec();
                b[i] = b'#';
                let b = String::from_utf8(b).unwrap();
                assert!(!str_eq(a, &b), "n={n} i={i}");
            }
        }
        assert!(str_eq("KR", "KR") && !str_eq("KR", "US") && !str_eq("é", "e"));
    }

    #[test]
    fn sets_small_and_large_agree() {
        let words: Vec<String> = (0..40).map(|i| format!("w{i}")).collect();
        for n in [0, 1, 8, 9, 40] {
            let mut s = StrSet::default();
            for w in &words[..n] {
                s.insert(w);
                s.insert(w);
            }
            assert_eq!(s.len(), n);
            for (i, w) in words.iter().enumerate() {
                assert_eq!(s.contains(w), i < n, "n={n} {w}");
            }
            assert!(!s.contains(""));
        }
    }

    #[test]
    fn index_is_exact_and_rejects_duplicates() {
        let mut idx = StrIndex::default();
        assert!(idx.insert("banner", 3));
        assert!(!idx.insert("banner", 4));
        assert_eq!(idx.get("banner"), Some(3));
        assert_eq!(idx.get("banne"), None);
        // Force the overflow path: a key whose hash is already taken.
        idx.overflow.insert("other".into(), 9);
        assert_eq!(idx.get("other"), Some(9));
        assert_eq!(idx.len(), 2);
    }
}
