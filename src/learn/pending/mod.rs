//! The pending-reward store: bandit decisions waiting for their reward, without a lock.
//!
//! Bandit decisions number from a sequence of their own (see
//! [`BANDIT_SEQ`](crate::decision::BANDIT_SEQ)), handed to threads in small blocks, and
//! decision `n` lives in slot `n % capacity` of one table per engine. A reward finds its
//! decision with one load; the table is a ring in which new decisions overwrite the oldest.
//!
//! Each slot is a state word, `seq << 2 | tag`, guarding a payload of plain atomics, in the
//! manner of a seqlock:
//! - a writer (the deciding thread) takes the slot by CAS to `n | WRITING`, writes the
//!   payload, then publishes `n | PENDING` with release ordering;
//! - a reader (a reward, a sweep, a writer about to overwrite a pending decision) copies the
//!   payload after an acquire load of `m | PENDING`, then claims the slot by CAS from exactly
//!   that word. The CAS succeeds only if no writer took the slot in between, so the copy is
//!   whole; a sequence number is written once, so the word cannot come back (no ABA).
//!
//! Nobody waits for anybody: a writer that finds the slot being written by another thread
//! (only when the ring laps a stalled writer) or holding a newer decision gives its own
//! decision up as evicted. Evicted and expired decisions found on the decide path go to a
//! second, smaller ring of the same slots (the *due* ring) from which rewards and refreshes
//! take them to apply the rule's default reward.

use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::OnceLock;

use super::MAX_CONTEXT;
use crate::decision::BANDIT_SEQ;

/// One remembered bandit decision, waiting for its reward.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Pending {
    pub(super) learner: u32,
    pub(super) arm: u32,
    /// The arm's generation when the decision was made (see `Bandit::gens`).
    pub(super) gen: u32,
    pub(super) expires_ms: u64,
    pub(super) dim: u8,
    /// The rule had a default reward when the decision was made: an evicted or expired
    /// decision goes to the due ring for it. Without one, it is only counted.
    pub(super) has_default: bool,
    /// In the due ring: the decision was evicted (already counted in `evicted`), not expired.
    pub(super) evicted: bool,
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

const EMPTY: u64 = 0;
const WRITING: u64 = 1;
const PENDING: u64 = 2;
const CLAIMED: u64 = 3;

/// A slot: the state word and the payload it guards (32 bytes, two per cache line).
#[derive(Default)]
struct Slot {
    state: AtomicU64,
    /// `learner << 32 | arm`
    who: AtomicU64,
    /// `gen << 32 | dim << 2 | has_default << 1 | evicted`
    gen: AtomicU64,
    expires: AtomicU64,
}

type Ctx = [AtomicU64; MAX_CONTEXT];

/// A ring of slots indexed by sequence number.
struct Table {
    slots: Box<[Slot]>,
    /// Contexts by slot, allocated on the first contextual decision.
    contexts: OnceLock<Box<[Ctx]>>,
    mask: u64,
}

/// Why a write did not take its slot.
struct Lost;

impl Table {
    /// `cap` is a power of two.
    fn new(cap: usize) -> Self {
        Table {
            slots: (0..cap).map(|_| Slot::default()).collect(),
            contexts: OnceLock::new(),
            mask: cap as u64 - 1,
        }
    }

    fn slot(&self, n: u64) -> (&Slot, usize) {
        let i = (n & self.mask) as usize;
        (&self.slots[i], i)
    }

    /// Copies slot `i`'s payload (relaxed; valid only if a later claim succeeds), with the
    /// context if `ctx` says so of the decision.
    fn read(&self, s: &Slot, i: usize, ctx: impl FnOnce(&Pending) -> bool) -> Taken {
        let (who, gen) = (s.who.load(Ordering::Relaxed), s.gen.load(Ordering::Relaxed));
        let p = Pending {
            learner: (who >> 32) as u32,
            arm: who as u32,
            gen: (gen >> 32) as u32,
            expires_ms: s.expires.load(Ordering::Relaxed),
            dim: ((gen >> 2) as u8).min(MAX_CONTEXT as u8),
            has_default: gen & 2 != 0,
            evicted: gen & 1 != 0,
        };
        let mut x = [0.0; MAX_CONTEXT];
        if p.dim > 0 && ctx(&p) {
            if let Some(c) = self.contexts.get().and_then(|c| c.get(i)) {
                for (v, w) in x.iter_mut().zip(c).take(usize::from(p.dim)) {
                    *v = f64::from_bits(w.load(Ordering::Relaxed));
                }
            }
        }
        Taken { p, x }
    }

    /// Claims the decision in the slot of `n` if it is pending, is `n` itself (`exact`) or
    /// any sequence number (`!exact`), and satisfies `pred`. Exactly one claim of a
    /// pending decision succeeds.
    fn claim(&self, n: u64, exact: bool, pred: impl FnOnce(&Pending) -> bool) -> Option<Taken> {
        let (s, i) = self.slot(n);
        let cur = s.state.load(Ordering::Acquire);
        if cur & 3 != PENDING || (exact && cur >> 2 != n) {
            return None;
        }
        let t = self.read(s, i, |_| true);
        if !pred(&t.p) {
            return None;
        }
        #[cfg(test)]
        hooks::before_claim();
        // Orders the payload loads before the CAS: if any of them saw a later writer's
        // store, that writer's `WRITING` is visible to the CAS, which then fails.
        fence(Ordering::Acquire);
        let won =
            s.state
                .compare_exchange(cur, cur | CLAIMED, Ordering::Relaxed, Ordering::Relaxed);
        won.ok().map(|_| t)
    }

    /// Writes decision `n`; returns the pending decision it overwrote (with its context if
    /// it has a default reward), or `Lost` if the slot holds a newer decision or another
    /// writer is writing it.
    fn write(&self, n: u64, p: &Pending, x: &[f64]) -> Result<Option<Taken>, Lost> {
        let (s, i) = self.slot(n);
        let mut cur = s.state.load(Ordering::Acquire);
        let old = loop {
            let tag = cur & 3;
            if tag == WRITING || (tag == PENDING && cur >> 2 > n) {
                return Err(Lost);
            }
            // The context is needed only for a default reward.
            let old = (tag == PENDING).then(|| self.read(s, i, |p| p.has_default));
            fence(Ordering::Acquire);
            match s.state.compare_exchange_weak(
                cur,
                n << 2 | WRITING,
                Ordering::Relaxed,
                Ordering::Acquire,
            ) {
                Ok(_) => break old,
                Err(now) => cur = now,
            }
        };
        // Orders the `WRITING` state before the payload stores (see `claim`).
        fence(Ordering::Release);
        s.who.store(
            u64::from(p.learner) << 32 | u64::from(p.arm),
            Ordering::Relaxed,
        );
        s.gen.store(
            u64::from(p.gen) << 32
                | u64::from(p.dim) << 2
                | u64::from(p.has_default) << 1
                | u64::from(p.evicted),
            Ordering::Relaxed,
        );
        s.expires.store(p.expires_ms, Ordering::Relaxed);
        if !x.is_empty() {
            if let Some(c) = self.contexts().get(i) {
                for (w, v) in c.iter().zip(x) {
                    w.store(v.to_bits(), Ordering::Relaxed);
                }
            }
        }
        s.state.store(n << 2 | PENDING, Ordering::Release);
        Ok(old)
    }

    /// The contexts, allocated on first use.
    fn contexts(&self) -> &[Ctx] {
        let cap = self.slots.len();
        self.contexts
            .get_or_init(|| (0..cap).map(|_| Default::default()).collect())
    }

    /// Whether `n`'s write may still come: the slot is empty, holds an older number, or is
    /// `n` itself being written. (A write given up while an older one was being written
    /// looks the same; the due ring's reader then waits for the ring to move past it.)
    fn awaits(&self, n: u64) -> bool {
        let cur = self.slot(n).0.state.load(Ordering::Acquire);
        let (seq, tag) = (cur >> 2, cur & 3);
        tag == EMPTY || seq < n || (seq == n && tag == WRITING)
    }
}

/// Size of the due ring: evicted and expired decisions found on the decide path, waiting
/// for their default reward until the next reward or refresh; beyond that an evicted
/// decision is only counted.
pub(super) const DUE: usize = 4_096;

/// Stripes of the store's counters, so threads deciding at the same time count evictions
/// on different cache lines (a thread's stripe follows its block of numbers).
const STRIPES: usize = 16;

/// A stripe: evicted decisions, and decisions without a default reward found expired on the
/// decide path (only counted).
#[derive(Default)]
#[repr(align(128))]
struct Stripe {
    evicted: AtomicU64,
    expired: AtomicU64,
}

/// The pending-reward store of one engine.
pub(super) struct Store {
    /// The table and the due ring, allocated on the first bandit decision (and their
    /// contexts on the first contextual one), so the decide path allocates nothing after.
    tables: OnceLock<(Table, Table)>,
    cap: usize,
    /// The engine's id prefix: a reward for another prefix is unknown without a lookup.
    prefix: u64,
    /// The bandit sequence: blocks handed to threads, and the block size.
    blocks: AtomicU64,
    block: u64,
    due_head: AtomicU64,
    due_tail: AtomicU64,
    cursor: AtomicU64,
    stripes: [Stripe; STRIPES],
    /// Expired decisions the due ring had no room for (counted as expired, no default).
    overflowed: AtomicU64,
}

impl Store {
    /// A store remembering the last `cap` bandit decisions (rounded up to a power of two).
    pub(super) fn new(cap: usize, prefix: u64) -> Self {
        let cap = cap.next_power_of_two();
        Store {
            tables: OnceLock::new(),
            cap,
            prefix,
            blocks: AtomicU64::new(0),
            // Small blocks, so a thread's unused rest of a block wastes little of the ring.
            block: (cap as u64 / 16).clamp(1, 256),
            due_head: AtomicU64::new(0),
            due_tail: AtomicU64::new(0),
            cursor: AtomicU64::new(0),
            stripes: Default::default(),
            overflowed: AtomicU64::new(0),
        }
    }

    /// The id of the next bandit decision of engine `engine` on this thread.
    #[inline]
    pub(super) fn next_id(&self, engine: u64) -> u128 {
        let seq = crate::decision::next_bandit_seq(engine, &self.blocks, self.block);
        u128::from(self.prefix) << 64 | u128::from(seq | BANDIT_SEQ)
    }

    /// The table position of a bandit decision id of this engine.
    fn seq_of(&self, id: u128) -> Option<u64> {
        let lo = id as u64;
        ((id >> 64) as u64 == self.prefix && lo & BANDIT_SEQ != 0).then_some(lo & !BANDIT_SEQ)
    }

    /// Remembers a decision (decide path: no lock, no allocation after the first call).
    #[inline]
    pub(super) fn remember(&self, id: u128, p: &Pending, x: &[f64], now: u64) {
        let Some(n) = self.seq_of(id) else { return };
        let (table, due) = self
            .tables
            .get_or_init(|| (Table::new(self.cap), Table::new(DUE)));
        if !x.is_empty() {
            due.contexts();
        }
        let stripe = &self.stripes[(n / self.block) as usize % STRIPES];
        match table.write(n, p, x) {
            Ok(None) => {}
            Ok(Some(mut old)) => {
                // Still in its window: evicted. Past it: expired, which the learner counts
                // when it applies the default, or only counted here without one.
                old.p.evicted = now <= old.p.expires_ms;
                if old.p.evicted {
                    stripe.evicted.fetch_add(1, Ordering::Relaxed);
                }
                if old.p.has_default {
                    self.push_due(due, &old);
                } else if !old.p.evicted {
                    stripe.expired.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(Lost) => {
                stripe.evicted.fetch_add(1, Ordering::Relaxed);
                if p.has_default {
                    let mut x_all = [0.0; MAX_CONTEXT];
                    x_all[..x.len()].copy_from_slice(x);
                    let p = Pending {
                        evicted: true,
                        ..*p
                    };
                    self.push_due(due, &Taken { p, x: x_all });
                }
            }
        }
    }

    fn push_due(&self, due: &Table, t: &Taken) {
        let d = self.due_head.fetch_add(1, Ordering::AcqRel);
        let lost = match due.write(d, &t.p, t.x()) {
            Ok(old) => old.map(|o| o.p),
            Err(Lost) => Some(t.p),
        };
        if lost.is_some_and(|p| !p.evicted) {
            self.overflowed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Takes the decision `id` if it is pending.
    pub(super) fn take(&self, id: u128) -> Option<Taken> {
        let n = self.seq_of(id)?;
        self.tables.get()?.0.claim(n, true, |_| true)
    }

    /// Moves the due ring's decisions to `out`, in order, up to the first one still being
    /// written.
    pub(super) fn drain_due(&self, out: &mut Vec<Taken>) {
        let Some((_, due)) = self.tables.get() else {
            return;
        };
        let head = self.due_head.load(Ordering::Acquire);
        let tail = self.due_tail.load(Ordering::Acquire);
        let mut d = tail.max(head.saturating_sub(DUE as u64));
        while d < head {
            if let Some(t) = due.claim(d, true, |_| true) {
                out.push(t);
            } else if due.awaits(d) {
                break;
            }
            d += 1;
        }
        self.due_tail.fetch_max(d, Ordering::AcqRel);
    }

    /// Looks at up to `n` positions of the table, from a cursor that goes round its used
    /// part, and moves the decisions there whose window has passed to `out`.
    pub(super) fn sweep(&self, now: u64, n: usize, out: &mut Vec<Taken>) {
        let Some((table, _)) = self.tables.get() else {
            return;
        };
        let used = self
            .blocks
            .load(Ordering::Relaxed)
            .min(self.cap as u64)
            .max(1);
        let n = (n as u64).min(used);
        let start = self.cursor.fetch_add(n, Ordering::Relaxed) % used;
        for k in 0..n {
            let pos = (start + k) % used;
            if let Some(t) = table.claim(pos, false, |p| now > p.expires_ms) {
                out.push(t);
            }
        }
    }

    /// The whole table's decisions whose window has passed, and the due ring, to `out`.
    pub(super) fn sweep_all(&self, now: u64, out: &mut Vec<Taken>) {
        self.drain_due(out);
        let Some((table, _)) = self.tables.get() else {
            return;
        };
        for pos in 0..self.cap as u64 {
            if let Some(t) = table.claim(pos, false, |p| now > p.expires_ms) {
                out.push(t);
            }
        }
    }

    /// Decisions evicted while pending.
    pub(super) fn evicted(&self) -> u64 {
        self.stripes
            .iter()
            .map(|s| s.evicted.load(Ordering::Relaxed))
            .sum()
    }

    /// Expired decisions counted here and not given to the learner: those of rules without
    /// a default reward found on the decide path, and those the due ring had no room for.
    pub(super) fn expired(&self) -> u64 {
        let here: u64 = self
            .stripes
            .iter()
            .map(|s| s.expired.load(Ordering::Relaxed))
            .sum();
        here + self.overflowed.load(Ordering::Relaxed)
    }
}

/// A test hook: lets a test stop a reward between reading a slot and claiming it.
#[cfg(test)]
pub(super) mod hooks {
    use std::cell::RefCell;

    thread_local! {
        static BEFORE_CLAIM: RefCell<Option<Box<dyn FnMut()>>> = const { RefCell::new(None) };
    }

    /// Runs `f` on this thread before each claim's CAS, until `clear`.
    pub(crate) fn set(f: impl FnMut() + 'static) {
        BEFORE_CLAIM.with(|h| *h.borrow_mut() = Some(Box::new(f)));
    }

    pub(crate) fn clear() {
        BEFORE_CLAIM.with(|h| *h.borrow_mut() = None);
    }

    pub(super) fn before_claim() {
        BEFORE_CLAIM.with(|h| {
            if let Some(f) = h.borrow_mut().as_mut() {
                f();
            }
        });
    }
}

#[cfg(test)]
mod tests;
