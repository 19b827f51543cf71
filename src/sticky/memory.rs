//! [`MemoryAssignments`]: assignments kept in the process.

use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;

use super::{Assignment, AssignmentError, AssignmentStore, AssignmentWrite};

type Map<V> = DashMap<Box<str>, V, ahash::RandomState>;

/// Assignments in memory, at most `capacity` of them: for one instance, tests and
/// simulations (assignments are lost when the process ends; a fleet shares them through
/// `RedisAssignments`). A lookup takes a shard read lock; writes beyond the capacity are
/// refused and counted as failed writes ([`AssignmentError::Full`]), so the store never
/// grows past it. Each assignment takes about 100 bytes plus its user and variant ids.
///
/// Cheap to share: wrap it in an `Arc` to keep a handle after giving it to the engine.
#[derive(Debug)]
pub struct MemoryAssignments {
    /// Slot → user → assignment (two levels, so a lookup by `&str`s allocates nothing).
    slots: Map<Map<Assignment>>,
    len: AtomicUsize,
    capacity: usize,
}

impl MemoryAssignments {
    /// An empty store holding at most `capacity` assignments.
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        MemoryAssignments {
            slots: Map::default(),
            len: AtomicUsize::new(0),
            capacity,
        }
    }

    /// Assignments held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether the store holds none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every assignment of `slot` (for example when an experiment ends); returns
    /// how many there were.
    pub fn clear_slot(&self, slot: &str) -> usize {
        let n = self.slots.remove(slot).map_or(0, |(_, users)| users.len());
        self.len.fetch_sub(n, Ordering::Relaxed);
        n
    }
}

impl AssignmentStore for MemoryAssignments {
    fn get(&self, user: &str, slot: &str) -> Result<Option<Assignment>, AssignmentError> {
        Ok(self
            .slots
            .get(slot)
            .and_then(|users| users.get(user).map(|a| a.clone())))
    }

    fn put(&self, batch: &[AssignmentWrite]) -> Result<(), AssignmentError> {
        let mut rejected = 0;
        for w in batch {
            let users = self
                .slots
                .entry(w.slot.as_str().into())
                .or_default()
                .downgrade();
            if let Some(mut held) = users.get_mut(w.user.as_str()) {
                *held = w.assignment.clone();
                continue;
            }
            // Reserve a place first, so concurrent writers cannot pass the capacity.
            let reserved = self
                .len
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    (n < self.capacity).then_some(n + 1)
                })
                .is_ok();
            if !reserved {
                rejected += 1;
                continue;
            }
            if users
                .insert(w.user.as_str().into(), w.assignment.clone())
                .is_some()
            {
                // Another writer inserted it meanwhile: one entry, one place.
                self.len.fetch_sub(1, Ordering::Relaxed);
            }
        }
        if rejected > 0 {
            return Err(AssignmentError::Full {
                capacity: self.capacity,
                rejected,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(user: &str, variant: &str) -> AssignmentWrite {
        AssignmentWrite {
            user: user.into(),
            slot: "s".into(),
            assignment: Assignment::new(variant, 0.5, 1, 0),
        }
    }

    #[test]
    fn refuses_new_units_beyond_the_capacity_and_still_updates_held_ones() {
        let m = MemoryAssignments::new(2);
        m.put(&[write("u1", "a"), write("u2", "a")]).expect("fits");
        let err = m
            .put(&[write("u3", "a"), write("u1", "b")])
            .expect_err("u3 does not fit");
        assert!(
            matches!(
                err,
                AssignmentError::Full {
                    capacity: 2,
                    rejected: 1
                }
            ),
            "{err}"
        );
        assert_eq!(m.len(), 2);
        assert_eq!(
            m.get("u1", "s").expect("reads").map(|a| a.variant),
            Some("b".into())
        );
        assert_eq!(m.get("u3", "s").expect("reads"), None);
        assert_eq!(m.clear_slot("s"), 2);
        assert!(m.is_empty());
    }
}
