//! Feature names as compiled configs hold them (interned id, precomputed hash), and the
//! string comparison the lookups use.

use super::{Features, Value};

/// A feature name as a compiled snapshot knows it: interned id, precomputed hash.
#[derive(Debug, Clone)]
pub(crate) struct FeatureKey {
    pub(crate) id: u32,
    pub(crate) hash: u64,
    pub(crate) name: Box<str>,
}

impl FeatureKey {
    #[inline]
    pub(crate) fn get<'f>(&self, features: &'f Features) -> Option<&'f Value> {
        features.get_hashed(self.hash, &self.name)
    }
}

/// String equality without a call into libc's `memcmp` for short strings (the common case
/// for feature names, slot ids and in-list values), using overlapping 4- and 8-byte loads.
#[inline]
pub(crate) fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let n = a.len();
    if n != b.len() {
        return false;
    }
    match n {
        0 => true,
        // Indices 0, n/2 and n-1 cover every byte of a 1..=3 byte string.
        1..=3 => a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1],
        4..=7 => load4(a, 0) == load4(b, 0) && load4(a, n - 4) == load4(b, n - 4),
        8..=16 => load8(a, 0) == load8(b, 0) && load8(a, n - 8) == load8(b, n - 8),
        _ => a == b,
    }
}

#[inline(always)]
fn load4(s: &[u8], i: usize) -> u32 {
    u32::from_le_bytes(
        s.get(i..i + 4)
            .and_then(|x| x.try_into().ok())
            .unwrap_or([0; 4]),
    )
}

#[inline(always)]
fn load8(s: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(
        s.get(i..i + 8)
            .and_then(|x| x.try_into().ok())
            .unwrap_or([0; 8]),
    )
}
