//! Decision ids and the sequences they are taken from.

use std::cell::Cell;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

/// A unique id for one decision, used to join rewards and outcomes later.
///
/// 128 bits: a random per-engine prefix (high 64) and a sequence number (low 64) handed out in
/// per-thread blocks, so generating one touches no shared cache line. Bandit decisions number
/// from a sequence of their own, marked by the top bit of the low half. Formatted as 32
/// lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DecisionId(u128);

impl DecisionId {
    /// The raw 128-bit value.
    #[must_use]
    pub const fn as_u128(self) -> u128 {
        self.0
    }

    /// The high 64 bits: the [id prefix](crate::Engine::id_prefix) of the engine that made
    /// the decision, which names the instance in a fleet.
    #[must_use]
    pub const fn prefix(self) -> u64 {
        (self.0 >> 64) as u64
    }

    /// Builds an id from its raw value.
    #[must_use]
    pub const fn from_u128(v: u128) -> Self {
        DecisionId(v)
    }
}

impl fmt::Display for DecisionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for DecisionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DecisionId({self})")
    }
}

/// A string that is not 32 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid decision id {0:?}: expected 32 hex digits")]
pub struct ParseDecisionIdError(String);

impl FromStr for DecisionId {
    type Err = ParseDecisionIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ParseDecisionIdError(s.to_owned()));
        }
        u128::from_str_radix(s, 16)
            .map(DecisionId)
            .map_err(|_| ParseDecisionIdError(s.to_owned()))
    }
}

impl serde::Serialize for DecisionId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for DecisionId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

const BLOCK: u64 = 1 << 16;

/// Set in the sequence half of a bandit decision's id: bandit decisions number from a
/// sequence of their own, so the pending-reward store can index them directly.
pub(crate) const BANDIT_SEQ: u64 = 1 << 63;

/// Engines whose blocks one thread keeps at once: a thread that uses up to this many
/// engines in turn (one per tenant, fleet instances in a test) keeps a block of each instead
/// of throwing its block away at every switch, which would waste most of every block and,
/// for the bandit sequence, wrap the pending-reward store after capacity / block decisions.
const LOCAL_ENGINES: usize = 4;

/// `(engine, next, end)` per engine, most recently used first.
type Blocks = [Cell<(u64, u64, u64)>; LOCAL_ENGINES];
type LocalSeq = std::thread::LocalKey<Blocks>;

thread_local! {
    /// This thread's current blocks of engines' sequences.
    static LOCAL_SEQ: Blocks = const { [const { Cell::new((0, 0, 0)) }; LOCAL_ENGINES] };
    /// The same for the engines' bandit sequences.
    static LOCAL_BANDIT_SEQ: Blocks = const { [const { Cell::new((0, 0, 0)) }; LOCAL_ENGINES] };
}

/// The next number of a sequence handed out in per-thread blocks of `block` from `blocks`.
#[inline]
fn take_seq(local: &'static LocalSeq, engine: u64, blocks: &AtomicU64, block: u64) -> u64 {
    local.with(|c| {
        let (owner, n, end) = c[0].get();
        if owner == engine && n != end {
            c[0].set((owner, n + 1, end));
            return n;
        }
        take_seq_slow(c, engine, blocks, block)
    })
}

/// `take_seq` when the thread's most recent block is another engine's or used up: move
/// this engine's block to the front (or a new one, dropping the least recently used).
#[cold]
fn take_seq_slow(c: &Blocks, engine: u64, blocks: &AtomicU64, block: u64) -> u64 {
    let i = c
        .iter()
        .position(|b| b.get().0 == engine)
        .unwrap_or(LOCAL_ENGINES - 1);
    for j in (1..=i).rev() {
        c[j].swap(&c[j - 1]);
    }
    let (owner, mut n, mut end) = c[0].get();
    if owner != engine || n == end {
        n = blocks.fetch_add(block, Ordering::Relaxed);
        end = n + block;
    }
    c[0].set((engine, n + 1, end));
    n
}

/// The next number of an engine's bandit sequence (see [`BANDIT_SEQ`]).
#[inline]
pub(crate) fn next_bandit_seq(engine: u64, blocks: &AtomicU64, block: u64) -> u64 {
    take_seq(&LOCAL_BANDIT_SEQ, engine, blocks, block)
}

/// A process-unique engine serial number (starting at 1).
pub(crate) fn engine_serial() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

pub(crate) fn random_prefix() -> u64 {
    // RandomState is seeded from the OS once per process; mix in time, pid and a counter.
    static N: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(N.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(d.as_nanos());
    }
    h.finish()
}

/// The next id of an engine: `prefix` and a sequence number from `blocks` (the engine's
/// block counter), handed out in per-thread blocks so no shared line is written per call.
/// `engine` is the engine's serial number (never 0, never reused). Each engine numbers from
/// 0, so an engine with a fixed prefix produces the same ids in the
/// same order on one thread.
#[inline]
pub(crate) fn next_id(prefix: u64, engine: u64, blocks: &AtomicU64) -> DecisionId {
    let seq = take_seq(&LOCAL_SEQ, engine, blocks, BLOCK);
    DecisionId((u128::from(prefix) << 64) | u128::from(seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_round_trip() {
        let p = random_prefix();
        let blocks = AtomicU64::new(0);
        let a = next_id(p, 99, &blocks);
        let b = next_id(p, 99, &blocks);
        assert_ne!(a, b);
        let s = a.to_string();
        assert_eq!(s.len(), 32);
        assert_eq!(s.parse::<DecisionId>().unwrap(), a);
        assert!("xyz".parse::<DecisionId>().is_err());
        let t = std::thread::scope(|s| s.spawn(|| next_id(p, 99, &blocks)).join().unwrap());
        assert_ne!(t, a);
        assert_ne!(t, b);
    }
}
