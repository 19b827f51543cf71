//! One thread's ring of atomic words for one sink, with each side on its own cache lines.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::SNAPS;
use crate::snapshot::Snapshot;

/// Keeps what one side writes on its own cache lines.
#[repr(align(128))]
#[derive(Default)]
pub(super) struct Padded<T>(pub(super) T);

/// Written by the deciding thread.
#[derive(Default)]
pub(super) struct ProducerSide {
    /// Words published.
    pub(super) tail: AtomicU64,
    pub(super) offered: AtomicU64,
    pub(super) dropped: AtomicU64,
}

/// Written by the writer thread.
#[derive(Default)]
pub(super) struct ConsumerSide {
    /// Words consumed.
    pub(super) head: AtomicU64,
    /// Records consumed.
    pub(super) records: AtomicU64,
}

/// One thread's ring for one sink.
pub(super) struct Ring {
    pub(super) words: Box<[AtomicU64]>,
    pub(super) mask: u64,
    pub(super) producer: Padded<ProducerSide>,
    pub(super) consumer: Padded<ConsumerSide>,
    /// Snapshots passed to the writer, oldest first.
    pub(super) snaps: Mutex<VecDeque<Arc<Snapshot>>>,
    /// The producing thread is gone (set when its thread-local state is dropped).
    pub(super) closed: AtomicBool,
    /// The writer is gone: the producer forgets the ring.
    pub(super) gone: AtomicBool,
}

impl Ring {
    pub(super) fn new(words: usize) -> Self {
        Ring {
            words: (0..words).map(|_| AtomicU64::new(0)).collect(),
            mask: words as u64 - 1,
            producer: Padded::default(),
            consumer: Padded::default(),
            snaps: Mutex::new(VecDeque::with_capacity(SNAPS)),
            closed: AtomicBool::new(false),
            gone: AtomicBool::new(false),
        }
    }

    #[inline]
    pub(super) fn word(&self, at: u64) -> &AtomicU64 {
        // `mask` is `words.len() - 1` and `words.len()` a power of two: always in bounds.
        &self.words[(at & self.mask) as usize]
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
