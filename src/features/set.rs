//! The [`Features`] map.

use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::key::str_eq;
use super::value::{Text, Value};
use super::MAX_DECODED_FEATURES;
use crate::bucketing::name_hash;

/// Above this many entries lookups use binary search instead of a linear scan.
const LINEAR_SCAN_MAX: usize = 32;

/// A user's features: a small map from feature name to [`Value`].
///
/// Cheap to build and fast to read: entries are kept sorted by a precomputed hash of the name,
/// so a lookup compares integers first and strings only on a hash match. `&'static str` names
/// and values are stored without copying.
///
/// ```
/// use elvon::Features;
/// let f = Features::new().with("country", "KR").with("page_view_7d", 12).with("vip", true);
/// assert_eq!(f.get("country").and_then(|v| v.as_str()), Some("KR"));
/// assert_eq!(f.len(), 3);
/// ```
#[derive(Clone, Default, PartialEq)]
pub struct Features {
    /// Name hashes, sorted ascending; kept apart from the entries so a lookup scans one or
    /// two cache lines.
    hashes: Vec<u64>,
    /// `(name, value)`, parallel to `hashes`.
    entries: Vec<(Text, Value)>,
}

impl Features {
    /// An empty feature set (does not allocate).
    #[must_use]
    pub const fn new() -> Self {
        Features {
            hashes: Vec::new(),
            entries: Vec::new(),
        }
    }

    /// An empty feature set with room for `n` entries.
    #[must_use]
    pub fn with_capacity(n: usize) -> Self {
        Features {
            hashes: Vec::with_capacity(n),
            entries: Vec::with_capacity(n),
        }
    }

    /// Builds a map with room for `capacity` entries from `(name_hash, name, value)` in the
    /// order [`iter`](Self::iter) yields them (as a store wrote them out); an entry out of
    /// that order, or a repeated name, is inserted the slow way, so any input gives a valid
    /// map.
    pub(crate) fn from_ordered(
        capacity: usize,
        entries: impl Iterator<Item = (u64, Text, Value)>,
    ) -> Self {
        let mut f = Features::with_capacity(capacity);
        for (hash, name, value) in entries {
            if f.hashes.last().is_some_and(|&last| last >= hash) {
                f.insert(name, value);
            } else {
                f.hashes.push(hash);
                f.entries.push((name, value));
            }
        }
        f
    }

    /// Adds or replaces a feature, builder style.
    #[must_use]
    pub fn with(mut self, name: impl Into<Text>, value: impl Into<Value>) -> Self {
        self.insert(name, value);
        self
    }

    /// Adds or replaces a feature; returns the previous value.
    ///
    /// O(n): entries are kept sorted, so building a large set one `insert` at a time is
    /// quadratic. Build large sets with [`collect`](Iterator::collect) or
    /// [`extend`](Extend::extend), which sort once (O(n log n)).
    pub fn insert(&mut self, name: impl Into<Text>, value: impl Into<Value>) -> Option<Value> {
        let name = name.into();
        let hash = name_hash(&name);
        let value = value.into();
        match self.position(hash, &name) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                self.hashes.insert(i, hash);
                self.entries.insert(i, (name, value));
                None
            }
        }
    }

    /// Removes a feature; returns its value.
    pub fn remove(&mut self, name: &str) -> Option<Value> {
        let i = self.position(name_hash(name), name).ok()?;
        self.hashes.remove(i);
        Some(self.entries.remove(i).1)
    }

    /// The value of a feature.
    #[inline]
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.get_hashed(name_hash(name), name)
    }

    /// Lookup with a precomputed name hash (the compiled snapshot stores them).
    #[inline]
    pub(crate) fn get_hashed(&self, hash: u64, name: &str) -> Option<&Value> {
        let start = if self.hashes.len() <= LINEAR_SCAN_MAX {
            self.hashes.iter().position(|&h| h == hash)?
        } else {
            self.hashes.partition_point(|&h| h < hash)
        };
        self.scan_equal(start, hash, name)
            .ok()
            .map(|i| &self.entries[i].1)
    }

    fn position(&self, hash: u64, name: &str) -> Result<usize, usize> {
        self.scan_equal(self.hashes.partition_point(|&h| h < hash), hash, name)
    }

    /// From `start`, the first index with this hash and name; `Err(start)` if none.
    #[inline]
    fn scan_equal(&self, start: usize, hash: u64, name: &str) -> Result<usize, usize> {
        let mut i = start;
        while self.hashes.get(i) == Some(&hash) {
            if str_eq(&self.entries[i].0, name) {
                return Ok(i);
            }
            i += 1;
        }
        Err(start)
    }

    /// Number of features.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// `true` when there are no features.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Iterates over `(name, value)` pairs (in an unspecified but stable order).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> + '_ {
        self.entries.iter().map(|(n, v)| (&**n, v))
    }

    /// A copy holding only the named features (those present).
    #[must_use]
    pub fn select<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Features {
        let mut out = Features::new();
        for name in names {
            if let Some(v) = self.get(name) {
                out.insert(Text::Owned(name.to_owned()), v.clone());
            }
        }
        out
    }
}

impl fmt::Debug for Features {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<N: Into<Text>, V: Into<Value>> FromIterator<(N, V)> for Features {
    /// O(n log n); a name given twice keeps its last value, as with `insert`.
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        let mut f = Features::new();
        f.extend(iter);
        f
    }
}

impl<N: Into<Text>, V: Into<Value>> Extend<(N, V)> for Features {
    /// Adds or replaces features in one O((n + m) log (n + m)) pass; a name given twice keeps
    /// its last value, as with `insert`.
    fn extend<I: IntoIterator<Item = (N, V)>>(&mut self, iter: I) {
        let mut all: Vec<(u64, (Text, Value))> = std::mem::take(&mut self.hashes)
            .into_iter()
            .zip(std::mem::take(&mut self.entries))
            .collect();
        all.extend(iter.into_iter().map(|(n, v)| {
            let n = n.into();
            (name_hash(&n), (n, v.into()))
        }));
        // Stable: among equal hashes, later entries stay later.
        all.sort_by_key(|e| e.0);
        self.hashes.reserve(all.len());
        self.entries.reserve(all.len());
        for (hash, (name, value)) in all {
            // Equal hashes are adjacent; a repeated name replaces the earlier value.
            let run = self.hashes.partition_point(|&h| h < hash);
            match self.scan_equal(run, hash, &name) {
                Ok(i) => self.entries[i].1 = value,
                Err(_) => {
                    self.hashes.push(hash);
                    self.entries.push((name, value));
                }
            }
        }
    }
}

impl Serialize for Features {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.entries.len()))?;
        for (n, v) in &self.entries {
            map.serialize_entry(&**n, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Features {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Features;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of feature name to value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Features, A::Error> {
                let hint = map.size_hint().unwrap_or(0).min(MAX_DECODED_FEATURES);
                let (mut pairs, mut n) = (Vec::with_capacity(hint), 0usize);
                // `null` means absent: JSON has no NaN or infinity, so serde_json writes
                // non-finite floats as `null`, and a log line must still decode.
                while let Some((k, v)) = map.next_entry::<String, Option<Value>>()? {
                    n += 1;
                    if n > MAX_DECODED_FEATURES {
                        return Err(serde::de::Error::custom(format_args!(
                            "more than {MAX_DECODED_FEATURES} features"
                        )));
                    }
                    if let Some(v) = v {
                        pairs.push((k, v));
                    }
                }
                Ok(pairs.into_iter().collect())
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_replace_remove_and_lookup_both_paths() {
        let mut f = Features::new();
        for i in 0..40 {
            f.insert(format!("f{i}"), i);
        }
        assert_eq!(f.len(), 40);
        for i in 0..40 {
            assert_eq!(f.get(&format!("f{i}")), Some(&Value::Int(i)));
        }
        assert_eq!(f.insert("f3", "x"), Some(Value::Int(3)));
        assert_eq!(f.get("f3").and_then(Value::as_str), Some("x"));
        assert_eq!(f.remove("f3"), Some(Value::Str("x".into())));
        assert_eq!(f.get("f3"), None);
        assert_eq!(f.len(), 39);
        let small = Features::new().with("a", 1).with("b", 2.5);
        assert_eq!(small.get("b").and_then(Value::as_f64), Some(2.5));
        assert_eq!(small.get("c"), None);
    }

    #[test]
    fn serde_round_trip() {
        let f = Features::new()
            .with("country", "KR")
            .with("n", 3)
            .with("x", 0.5)
            .with("vip", false)
            .with("tags", vec!["a", "b"]);
        let json = serde_json::to_string(&f).unwrap();
        let back: Features = serde_json::from_str(&json).unwrap();
        assert_eq!(back, f);
    }
}
