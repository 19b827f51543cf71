//! Decision counts that scale with threads: each deciding thread adds into cells only it
//! writes, and the sums reach the [`metrics`] counters in batches.
//!
//! Incrementing a recorder's counter on every decide makes all deciding threads write one
//! shared atomic per slot and reason, so a second core adds no throughput. Instead a thread
//! claims one of [`SHARDS`] process-wide shard numbers on its first decide (released when it
//! ends) and counts into that shard's row of a snapshot's table with a plain load and store:
//! no locked instruction, no shared cache line. Threads beyond [`SHARDS`] share one more shard
//! and add atomically there, so nothing is lost with any number of threads.
//!
//! [`publish`] adds what each cell gained since the last publish to the registered counter
//! handles. It runs every [`PERIOD`] on the `elvon-metrics` thread (started with the first
//! table, ending when no table is left), before elvon's `GET /metrics` renders, when the
//! application calls [`publish`](crate::metrics::publish), and once more when a snapshot is
//! freed, so counts a swapped-out config made are not lost.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::Duration;

use metrics::{counter, Counter};
use zerocopy::FromZeros;

use crate::kinds::{FallbackKind, ReasonKind};

/// Shard numbers a thread can own alone; the shard numbered `SHARDS` is shared by the rest.
pub(crate) const SHARDS: usize = 16;
const SHARED: u8 = SHARDS as u8;
const UNCLAIMED: u8 = u8::MAX;

/// How often the `elvon-metrics` thread publishes.
pub(crate) const PERIOD: Duration = Duration::from_secs(1);

/// Cells per row: the decisions by reason, then the fallbacks by cause.
const COLS: usize = ReasonKind::ALL.len() + FallbackKind::ALL.len();

/// Bit `i`: shard `i` has an owner now.
static CLAIMED: AtomicU32 = AtomicU32::new(0);
/// Bit `i`: shard `i` was ever written (publish reads no other shard); bit `SHARDS` for the
/// shared one.
static EVER: AtomicU32 = AtomicU32::new(0);

thread_local! {
    /// This thread's shard, `UNCLAIMED` before its first count.
    static SHARD: Cell<u8> = const { Cell::new(UNCLAIMED) };
    /// Releases the owned shard when the thread ends.
    static CLAIM: RefCell<Option<Claim>> = const { RefCell::new(None) };
}

/// Ownership of one shard number, given back on drop.
struct Claim(u8);

impl Drop for Claim {
    fn drop(&mut self) {
        // Counts made after this (by other thread-local destructors) go to the shared shard.
        let _ = SHARD.try_with(|s| s.set(SHARED));
        // Release: the next owner sees every count this thread stored.
        CLAIMED.fetch_and(!(1 << self.0), Ordering::Release);
    }
}

/// This thread's shard number (claiming one on first use).
#[inline]
fn shard() -> u8 {
    let s = SHARD.with(Cell::get);
    if s != UNCLAIMED {
        return s;
    }
    claim()
}

#[cold]
fn claim() -> u8 {
    let mut bits = CLAIMED.load(Ordering::Relaxed);
    let shard = loop {
        let free = (!bits).trailing_zeros() as usize;
        if free >= SHARDS {
            break SHARED;
        }
        // Acquire: this thread sees every count the shard's previous owner stored.
        match CLAIMED.compare_exchange_weak(
            bits,
            bits | 1 << free,
            Ordering::Acquire,
            Ordering::Relaxed,
        ) {
            Ok(_) => {
                let held = CLAIM.try_with(|c| *c.borrow_mut() = Some(Claim(free as u8)));
                if held.is_err() {
                    // The thread is ending and could not give the shard back later.
                    CLAIMED.fetch_and(!(1 << free), Ordering::Release);
                    break SHARED;
                }
                break free as u8;
            }
            Err(now) => bits = now,
        }
    };
    EVER.fetch_or(1 << shard, Ordering::Relaxed);
    // Cannot fail while the thread runs; a count during teardown finds `SHARED` next time.
    let _ = SHARD.try_with(|s| s.set(shard));
    shard
}

/// Unused cells before and after each shard's cells (one cache line each way), so cells
/// of different shards never share a line.
const PAD: usize = 8;

/// The decision and fallback counts of one snapshot: a row per slot and one for unknown
/// slots, per shard.
pub(crate) struct Counts {
    rows: usize,
    /// Cells per shard table: `PAD`, `rows * COLS`, `PAD`.
    cells: usize,
    /// `SHARDS + 1` tables, allocated (zeroed) at registration for every shard some thread
    /// has counted into before, and on first use for the others: a 10,000-slot config costs
    /// 1.3 MB per deciding thread.
    shards: Box<[OnceLock<Box<[AtomicU64]>>]>,
    /// `rows * COLS` registered handles.
    handles: Box<[Counter]>,
    /// What each cell's sum was at the last publish.
    published: Mutex<Box<[u64]>>,
}

impl std::fmt::Debug for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counts")
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl Counts {
    /// Registers the counters of `slots` (one row each, in order) and of unknown slots (the
    /// last row), and lists the table for periodic publishing.
    pub(crate) fn register<'a>(slots: impl ExactSizeIterator<Item = &'a str>) -> Arc<Self> {
        let rows = slots.len() + 1;
        let mut handles = Vec::with_capacity(rows * COLS);
        for slot in slots.chain(std::iter::once("<unknown>")) {
            push_handles(&mut handles, slot);
        }
        let cells = PAD + rows * COLS + PAD;
        let ever = EVER.load(Ordering::Relaxed);
        let shards = (0..=SHARDS)
            .map(|s| {
                let table = OnceLock::new();
                if ever & (1 << s) != 0 {
                    let _ = table.set(zeroed(cells));
                }
                table
            })
            .collect();
        let counts = Arc::new(Counts {
            rows,
            cells,
            shards,
            handles: handles.into_boxed_slice(),
            published: Mutex::new(vec![0; rows * COLS].into_boxed_slice()),
        });
        list(&counts);
        counts
    }

    /// Row of the unknown-slot counts.
    #[inline]
    pub(crate) fn unknown_row(&self) -> usize {
        self.rows - 1
    }

    /// Counts a decision of `row` (a slot index, or [`unknown_row`](Self::unknown_row)) with
    /// `reason`, and its fallback `cause` if any.
    #[inline]
    pub(crate) fn add(&self, row: usize, reason: ReasonKind, cause: Option<FallbackKind>) {
        let shard = shard();
        let Some(table) = self.shards.get(usize::from(shard)) else {
            return;
        };
        // Allocated here only on a thread's first count into a snapshot registered before
        // the thread first counted anywhere.
        let table = match table.get() {
            Some(t) => t,
            None => first_use(table, self.cells),
        };
        let base = PAD + row * COLS;
        bump(table, shard, base + reason as usize);
        if let Some(c) = cause {
            bump(table, shard, base + ReasonKind::ALL.len() + c as usize);
        }
    }

    /// Adds what each cell gained since the last publish to its counter.
    pub(crate) fn publish(&self) {
        let mut published = self
            .published
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let ever = EVER.load(Ordering::Relaxed);
        for (i, (handle, last)) in self.handles.iter().zip(published.iter_mut()).enumerate() {
            let total = (0..=SHARDS)
                .filter(|s| ever & (1 << s) != 0)
                .filter_map(|s| self.shards[s].get()?.get(PAD + i))
                .map(|c| c.load(Ordering::Relaxed))
                .fold(0u64, u64::wrapping_add);
            let gained = total.wrapping_sub(*last);
            if gained != 0 {
                handle.increment(gained);
                *last = total;
            }
        }
    }
}

impl Drop for Counts {
    fn drop(&mut self) {
        // Whoever drops the last reference sees every count (the `Arc` count synchronizes).
        self.publish();
    }
}

#[cold]
#[inline(never)]
fn first_use(table: &OnceLock<Box<[AtomicU64]>>, cells: usize) -> &[AtomicU64] {
    table.get_or_init(|| zeroed(cells))
}

#[cold]
fn zeroed(cells: usize) -> Box<[AtomicU64]> {
    <[AtomicU64]>::new_box_zeroed_with_elems(cells)
        .unwrap_or_else(|_| (0..cells).map(|_| AtomicU64::new(0)).collect())
}

/// Adds one to cell `i` of `table`: a plain load and store in an owned shard, an atomic add
/// in the shared one.
#[inline]
fn bump(table: &[AtomicU64], shard: u8, i: usize) {
    let Some(cell) = table.get(i) else {
        return;
    };
    if shard == SHARED {
        cell.fetch_add(1, Ordering::Relaxed);
    } else {
        // Only this thread writes this cell while it owns the shard.
        cell.store(
            cell.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
    }
}

fn push_handles(handles: &mut Vec<Counter>, slot: &str) {
    for r in ReasonKind::ALL {
        handles.push(
            counter!("elvon_decisions_total", "slot" => slot.to_owned(), "reason" => r.as_str()),
        );
    }
    for c in FallbackKind::ALL {
        handles.push(
            counter!("elvon_fallbacks_total", "slot" => slot.to_owned(), "cause" => c.as_str()),
        );
    }
}

/// Tables alive in the process, and whether the publishing thread runs.
static LIVE: Mutex<(Vec<Weak<Counts>>, bool)> = Mutex::new((Vec::new(), false));

fn list(counts: &Arc<Counts>) {
    let mut live = LIVE.lock().unwrap_or_else(PoisonError::into_inner);
    live.0.retain(|w| w.strong_count() > 0);
    live.0.push(Arc::downgrade(counts));
    if !live.1 {
        // Without the thread, counts still reach the counters on `publish` and on drop; the
        // next table tries to start it again.
        live.1 =
            crate::background::spawn_while_needed("elvon-metrics", PERIOD, || publish_live(true));
    }
}

/// Publishes every live table; returns whether any is left. With `stop_if_empty`, marks the
/// thread stopped when none is (under the lock, so the next `list` starts a new one).
fn publish_live(stop_if_empty: bool) -> bool {
    let tables: Vec<Arc<Counts>> = {
        let mut live = LIVE.lock().unwrap_or_else(PoisonError::into_inner);
        live.0.retain(|w| w.strong_count() > 0);
        if live.0.is_empty() && stop_if_empty {
            live.1 = false;
            return false;
        }
        live.0.iter().filter_map(Weak::upgrade).collect()
    };
    for t in &tables {
        t.publish();
    }
    true
}

/// Publishes the counts of every live snapshot in the process.
pub(crate) fn publish_all() {
    publish_live(false);
}
