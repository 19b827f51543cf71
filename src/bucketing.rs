//! The bucketing specification (the stable hash every assignment uses), and the other stable
//! hashes and default salts derived from config ids.
//!
//! `bucket = XXH3_64(unit_utf8, seed = XXH3_64(salt_utf8)) mod 10_000`
//!
//! XXH3 (64-bit, with seed) is a published, versioned algorithm with implementations in every
//! mainstream language, so any other service can reproduce an assignment: hash the salt with
//! seed 0, use that as the seed to hash the unit id, take the result modulo 10 000. The committed
//! vectors in `tests/vectors/bucketing.json` pin the behaviour.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// Number of buckets a unit can fall into; percentages have a resolution of 0.01 %.
pub const BUCKETS: u32 = 10_000;

/// Pre-hashes a salt into the seed used by [`bucket_with_seed`].
#[inline]
#[must_use]
pub fn salt_seed(salt: &str) -> u64 {
    xxh3_64(salt.as_bytes())
}

/// The bucket (`0..10_000`) of `unit` under `salt`.
///
/// ```
/// assert_eq!(elvon::bucket("banner.split", "user-1"), elvon::bucket("banner.split", "user-1"));
/// assert!(elvon::bucket("banner.split", "user-1") < 10_000);
/// ```
#[inline]
#[must_use]
pub fn bucket(salt: &str, unit: &str) -> u32 {
    bucket_with_seed(salt_seed(salt), unit.as_bytes())
}

/// The bucket of `unit` given a pre-hashed salt (see [`salt_seed`]).
#[inline]
#[must_use]
pub fn bucket_with_seed(seed: u64, unit: &[u8]) -> u32 {
    // The remainder is < 10_000, so the cast cannot truncate.
    (xxh3_64_with_seed(unit, seed) % u64::from(BUCKETS)) as u32
}

/// The salt of the global holdout when it names none.
pub(crate) const HOLDOUT_SALT: &str = "holdout";

/// The salt of a split, rollout or bandit rule that names none: `rule:<n>:<slot>:id:<rule>`
/// for a rule with an id, `rule:<n>:<slot>:index:<i>` for one without (its position in the
/// slot's rules), where `<n>` is the slot id's length in UTF-8 bytes. The length prefix and
/// the two tags make it injective: no two (slot, rule) pairs share a salt, whatever dots,
/// colons or digits their ids contain.
pub(crate) fn rule_salt(slot: &str, rule: Option<&str>, index: usize) -> String {
    match rule {
        Some(id) => format!("rule:{}:{slot}:id:{id}", slot.len()),
        None => format!("rule:{}:{slot}:index:{index}", slot.len()),
    }
}

/// The salt of a layer that names none: `layer:<layer id>`.
pub(crate) fn layer_salt(layer: &str) -> String {
    format!("layer:{layer}")
}

/// The salt of a layer's holdout that names none: `layer-holdout:<layer id>`.
pub(crate) fn layer_holdout_salt(layer: &str) -> String {
    format!("layer-holdout:{layer}")
}

/// The key a bandit rule's learned state is kept under: the slot id, followed by `/` and the
/// rule id for a rule with an id, where each id has `\` written as `\\` and `/` as `\/`.
/// The first unescaped `/` separates the two, so no two (slot, rule) pairs share a key
/// (slot `a/b` is `a\/b`; slot `a` with rule `b` is `a/b`). A slot may hold at most one
/// bandit rule without an id (validated).
pub(crate) fn learner_key(slot: &str, rule: Option<&str>) -> String {
    fn escaped(out: &mut String, id: &str) {
        for c in id.chars() {
            if matches!(c, '\\' | '/') {
                out.push('\\');
            }
            out.push(c);
        }
    }
    let mut key = String::with_capacity(slot.len() + rule.map_or(0, |r| r.len() + 1));
    escaped(&mut key, slot);
    if let Some(rule) = rule {
        key.push('/');
        escaped(&mut key, rule);
    }
    key
}

/// Hash used to look up feature names quickly (not part of any wire format).
#[inline]
pub(crate) fn name_hash(name: &str) -> u64 {
    xxh3_64(name.as_bytes())
}

/// Writes an integer's decimal form into `buf` and returns the written bytes, so integer
/// bucketing units hash exactly like their string form without allocating.
pub(crate) fn int_bytes(v: i64, buf: &mut [u8; 20]) -> &[u8] {
    let mut n = v.unsigned_abs();
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        i -= 1;
        buf[i] = b'-';
    }
    &buf[i..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_bytes_matches_to_string() {
        for v in [0, 1, -1, 9, 10, 12345, -98765, i64::MAX, i64::MIN] {
            let mut buf = [0u8; 20];
            assert_eq!(int_bytes(v, &mut buf), v.to_string().as_bytes());
        }
    }

    #[test]
    fn buckets_are_in_range_and_salt_sensitive() {
        let a: Vec<u32> = (0..100).map(|i| bucket("a", &format!("u{i}"))).collect();
        let b: Vec<u32> = (0..100).map(|i| bucket("b", &format!("u{i}"))).collect();
        assert!(a.iter().all(|&x| x < BUCKETS));
        assert_ne!(a, b);
    }
}
