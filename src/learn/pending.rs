//! The pending-reward store: bandit decisions waiting for their reward, by shard.

use super::MAX_CONTEXT;

/// One remembered bandit decision, waiting for its reward. Its context (contextual rules
/// only) is in the shard's `contexts`, at the same ring position.
#[derive(Clone, Copy)]
pub(super) struct Pending {
    pub(super) id: u128,
    pub(super) learner: u32,
    pub(super) arm: u32,
    /// The arm's generation when the decision was made (see `Bandit::gens`).
    pub(super) gen: u32,
    pub(super) expires_ms: u64,
    pub(super) dim: u8,
}

/// A taken pending decision with its context.
pub(super) struct Taken {
    pub(super) p: Pending,
    pub(super) x: [f64; MAX_CONTEXT],
}

impl Taken {
    pub(super) fn x(&self) -> &[f64] {
        &self.x[..usize::from(self.p.dim)]
    }
}

/// The pending index: decision id → ring position, open addressing with Robin Hood
/// linear probing and backward-shift deletion, at most half full.
///
/// An entry packs the id's 32-bit key (its low bits, folded with the high ones) above the
/// ring position + 1 (0 = empty). The key's low bits are the home slot, so the ids of one
/// thread, which are consecutive, land on consecutive slots: remembering a decision and
/// evicting the oldest one touch two sliding windows of the table instead of two random
/// cache lines, and the table itself is 8 bytes a slot (a quarter of a general hash map's).
/// Robin Hood order keeps a lookup of an absent id short even inside a long run of
/// consecutive ids: it stops at the first entry closer to its home than the probe.
pub(super) struct Index {
    pub(super) slots: Box<[u64]>,
    pub(super) mask: usize,
}

impl Index {
    pub(super) fn new(cap: usize) -> Self {
        let n = (cap * 2).next_power_of_two().max(16);
        Index {
            slots: vec![0; n].into_boxed_slice(),
            mask: n - 1,
        }
    }

    pub(super) fn key(id: u128) -> u32 {
        let (lo, hi) = (id as u64, (id >> 64) as u64);
        (lo ^ hi ^ (hi >> 32)) as u32
    }

    pub(super) fn dist(&self, slot: usize, entry: u64) -> usize {
        slot.wrapping_sub((entry >> 32) as usize) & self.mask
    }

    /// Inserts a position for a key not in the table (decision ids are unique). The table
    /// is never more than half full, so there is always an empty slot.
    pub(super) fn insert(&mut self, key: u32, pos: usize) {
        let mut e = (u64::from(key) << 32) | (pos as u64 + 1);
        let mut i = key as usize & self.mask;
        let mut d = 0;
        loop {
            let cur = self.slots[i];
            if cur == 0 {
                self.slots[i] = e;
                return;
            }
            let cd = self.dist(i, cur);
            if cd < d {
                self.slots[i] = e;
                e = cur;
                d = cd;
            }
            i = (i + 1) & self.mask;
            d += 1;
        }
    }

    /// The table slot holding `key` whose position satisfies `is`.
    pub(super) fn find(&self, key: u32, mut is: impl FnMut(usize) -> bool) -> Option<usize> {
        let mut i = key as usize & self.mask;
        let mut d = 0;
        loop {
            let cur = self.slots[i];
            if cur == 0 || self.dist(i, cur) < d {
                return None;
            }
            if (cur >> 32) as u32 == key && is((cur as u32 - 1) as usize) {
                return Some(i);
            }
            i = (i + 1) & self.mask;
            d += 1;
        }
    }

    /// Removes the entry at table slot `i`, shifting the run after it back.
    pub(super) fn remove_at(&mut self, mut i: usize) -> usize {
        let pos = (self.slots[i] as u32 - 1) as usize;
        loop {
            let j = (i + 1) & self.mask;
            let next = self.slots[j];
            if next == 0 || self.dist(j, next) == 0 {
                self.slots[i] = 0;
                return pos;
            }
            self.slots[i] = next;
            i = j;
        }
    }
}

/// A FIFO ring of pending decisions with an id index. Allocated on first use, then never
/// again: the index has at least twice the ring's capacity, so it never grows.
pub(super) struct Shard {
    pub(super) ring: Vec<Option<Pending>>,
    /// Contexts by ring position; allocated on the first contextual decision.
    pub(super) contexts: Vec<[f64; MAX_CONTEXT]>,
    pub(super) head: usize,
    pub(super) len: usize,
    pub(super) index: Index,
    /// Decisions evicted while still pending, or found expired by `push`, waiting for their
    /// rule's default reward (at most [`EVICTED_KEEP`], room reserved up front so `push`
    /// never allocates).
    pub(super) evicted_due: Vec<Taken>,
    /// Where [`Shard::sweep`] looks next.
    pub(super) cursor: usize,
}

/// Evicted decisions a shard keeps for their default reward between two refreshes (or
/// rewards of the shard); beyond that an evicted decision is only counted.
pub(super) const EVICTED_KEEP: usize = 256;

impl Shard {
    pub(super) fn new(cap: usize) -> Self {
        Shard {
            ring: vec![None; cap],
            contexts: Vec::new(),
            head: 0,
            len: 0,
            index: Index::new(cap),
            evicted_due: Vec::with_capacity(EVICTED_KEEP),
            cursor: 0,
        }
    }

    pub(super) fn taken(&self, pos: usize, p: Pending) -> Taken {
        let mut x = [0.0; MAX_CONTEXT];
        if p.dim > 0 {
            if let Some(c) = self.contexts.get(pos) {
                x = *c;
            }
        }
        Taken { p, x }
    }

    /// Drops the oldest slot of the ring; returns the entry if it was still pending.
    pub(super) fn pop_front(&mut self) -> Option<Taken> {
        let cap = self.ring.len();
        let pos = self.head;
        let e = self.ring[pos].take();
        self.head = (self.head + 1) % cap;
        self.len -= 1;
        let p = e?;
        if let Some(i) = self.index.find(Index::key(p.id), |at| at == pos) {
            self.index.remove_at(i);
        }
        Some(self.taken(pos, p))
    }

    /// Looks at up to `n` ring positions from a cursor that keeps going round the ring, and
    /// moves the expired decisions there to `evicted_due` (while there is room). Expiry is
    /// therefore per decision: a long-window decision does not hold back the expiry of the
    /// short-window ones behind it. Lazy: decides and rewards of the shard do it as they go.
    pub(super) fn sweep(&mut self, now: u64, n: usize) {
        let cap = self.ring.len();
        for _ in 0..n.min(self.len) {
            if self.evicted_due.len() >= EVICTED_KEEP {
                return;
            }
            // The cursor goes round the occupied part of the ring only.
            let offset = (self.cursor + cap - self.head) % cap;
            if offset >= self.len {
                self.cursor = self.head;
            }
            let pos = self.cursor;
            self.cursor = (self.cursor + 1) % cap;
            let Some(p) = self.ring[pos] else { continue };
            if now <= p.expires_ms {
                continue;
            }
            // Out of the middle of the ring: the slot stays (as an empty one) until the
            // front passes it, like a rewarded decision's.
            self.ring[pos] = None;
            if let Some(i) = self.index.find(Index::key(p.id), |at| at == pos) {
                self.index.remove_at(i);
            }
            let t = self.taken(pos, p);
            self.evicted_due.push(t);
        }
    }

    /// Inserts; returns whether a still-pending entry was evicted to make room.
    pub(super) fn push(&mut self, p: Pending, x: &[f64], now: u64) -> bool {
        self.sweep(now, 2);
        let cap = self.ring.len();
        let mut evicted = false;
        if self.len == cap {
            if let Some(t) = self.pop_front() {
                evicted = true;
                if self.evicted_due.len() < EVICTED_KEEP {
                    self.evicted_due.push(t);
                }
            }
        }
        let pos = (self.head + self.len) % cap;
        if !x.is_empty() {
            if self.contexts.len() != cap {
                self.contexts = vec![[0.0; MAX_CONTEXT]; cap];
            }
            self.contexts[pos][..x.len()].copy_from_slice(x);
        }
        self.ring[pos] = Some(p);
        self.len += 1;
        self.index.insert(Index::key(p.id), pos);
        evicted
    }

    pub(super) fn take(&mut self, id: u128) -> Option<Taken> {
        let ring = &self.ring;
        let i = self
            .index
            .find(Index::key(id), |at| ring[at].is_some_and(|p| p.id == id))?;
        let pos = self.index.remove_at(i);
        let p = self.ring[pos].take()?;
        Some(self.taken(pos, p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// The pending index against a `HashMap` model, with the FIFO insert/evict pattern of a
    /// shard plus random takes, for consecutive ids, ids of interleaved threads and colliding
    /// keys.
    #[test]
    fn index_matches_a_hash_map() {
        for pattern in 0..3u64 {
            let cap = 64;
            let mut shard = Shard::new(cap);
            let mut model: HashMap<u128, ()> = HashMap::new();
            let mut order: std::collections::VecDeque<u128> = Default::default();
            let mut state = 0x9e37_79b9_7f4a_7c15_u64.wrapping_mul(pattern + 1);
            let mut rand = || {
                state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z ^ (z >> 27)
            };
            for n in 0..20_000u64 {
                let id: u128 = match pattern {
                    0 => u128::from(n),
                    // Two threads' id blocks, 1 << 16 apart.
                    1 => u128::from(((n % 2) << 16) | (n / 2)),
                    // Keys that collide: same low 32 bits of the folded id.
                    _ => (u128::from(n) << 64) | u128::from(n ^ (n << 32)),
                };
                let p = Pending {
                    id,
                    learner: 0,
                    arm: 0,
                    gen: 0,
                    expires_ms: 0,
                    dim: 0,
                };
                if order.len() == cap {
                    let old = order.pop_front().unwrap_or_default();
                    model.remove(&old);
                }
                shard.push(p, &[], 0);
                order.push_back(id);
                model.insert(id, ());
                if rand() % 3 == 0 {
                    // Take a random remembered (or already taken) id, or one never seen.
                    let probe = match rand() % 3 {
                        0 => u128::from(rand()) | (1 << 100),
                        _ => order[(rand() % order.len() as u64) as usize],
                    };
                    let got = shard.take(probe).map(|t| t.p.id);
                    let want = model.remove(&probe).map(|()| probe);
                    assert_eq!(got, want, "pattern {pattern}, step {n}, id {probe:#x}");
                }
            }
            for id in order {
                assert_eq!(
                    shard.take(id).map(|t| t.p.id),
                    model.remove(&id).map(|()| id)
                );
            }
            assert!(
                shard.index.slots.iter().all(|&e| e == 0),
                "pattern {pattern}"
            );
        }
    }
}
