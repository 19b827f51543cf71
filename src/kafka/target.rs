//! Where the feature updater applies events.

use std::sync::Arc;

/// Where a [`FeatureUpdater`](super::FeatureUpdater) applies behaviour events. Application
/// must be idempotent by event id: after a crash or a rebalance, events since the last
/// commit are delivered again.
pub trait EventTarget: Send + Sync {
    /// Applies a batch of valid events. An error means nothing may be assumed applied. The
    /// updater retries a [transient](ApplyError::is_transient) error until it succeeds (or
    /// the updater is stopped); a permanent one a few times, then sends the batch's messages
    /// to the dead-letter topic with the error and commits past them.
    ///
    /// # Errors
    /// An [`ApplyError`] saying whether retrying may help.
    fn apply(&self, events: &[crate::features::aggregate::Event]) -> Result<(), ApplyError>;

    /// Now, as unix milliseconds, on the target's clock: the updater checks incoming events
    /// against it (an event dated beyond the aggregates' future tolerance is poison). The
    /// default is the system clock; the built-in targets answer with their store's
    /// [`Clock`](crate::clock::Clock).
    fn now_ms(&self) -> u64 {
        crate::clock::Clock::system().now_ms()
    }
}

/// A boxed target (a service choosing its target at run time).
impl<T: EventTarget + ?Sized> EventTarget for Box<T> {
    fn apply(&self, events: &[crate::features::aggregate::Event]) -> Result<(), ApplyError> {
        (**self).apply(events)
    }
    fn now_ms(&self) -> u64 {
        (**self).now_ms()
    }
}

/// Why an [`EventTarget`] did not apply a batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApplyError {
    message: String,
    transient: bool,
}

impl ApplyError {
    /// A failure that may pass (a store that is down or slow): the updater retries the batch
    /// for as long as it lasts, with back-off, and commits nothing meanwhile.
    pub fn transient(message: impl Into<String>) -> Self {
        ApplyError {
            message: message.into(),
            transient: true,
        }
    }

    /// A failure that retrying will not fix (the target rejects these events): after a few
    /// tries the batch goes to the dead-letter topic with this message.
    pub fn permanent(message: impl Into<String>) -> Self {
        ApplyError {
            message: message.into(),
            transient: false,
        }
    }

    /// Whether retrying may help.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        self.transient
    }

    /// What went wrong.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Applies events to a [`MemoryStore`](crate::features::MemoryStore) with these aggregates, at the
/// store's clock's now (see [`MemoryStore::clock`](crate::features::MemoryStore::clock)).
#[derive(Debug, Clone)]
pub struct MemoryTarget {
    store: crate::features::MemoryStore,
    aggregates: Arc<crate::features::aggregate::Aggregates>,
}

impl MemoryTarget {
    /// Events go to `store` (a clone shares it), through these aggregates.
    #[must_use]
    pub fn new(
        store: crate::features::MemoryStore,
        aggregates: Arc<crate::features::aggregate::Aggregates>,
    ) -> Self {
        MemoryTarget { store, aggregates }
    }

    /// The store events go to.
    #[must_use]
    pub fn store(&self) -> &crate::features::MemoryStore {
        &self.store
    }
}

impl EventTarget for MemoryTarget {
    fn apply(&self, events: &[crate::features::aggregate::Event]) -> Result<(), ApplyError> {
        let now = self.now_ms();
        for e in events {
            // Events were validated when parsed; an error here is a definition mismatch,
            // which retrying does not fix.
            self.store
                .apply(&self.aggregates, e, now)
                .map_err(|e| ApplyError::permanent(e.to_string()))?;
        }
        Ok(())
    }

    fn now_ms(&self) -> u64 {
        self.store.now_ms()
    }
}

#[cfg(feature = "redis")]
impl EventTarget for crate::redis::AggregatesWriter {
    fn apply(&self, events: &[crate::features::aggregate::Event]) -> Result<(), ApplyError> {
        crate::redis::AggregatesWriter::apply(self, events)
            .map(|_| ())
            .map_err(|e| {
                if e.is_transient() {
                    ApplyError::transient(e.to_string())
                } else {
                    ApplyError::permanent(e.to_string())
                }
            })
    }

    fn now_ms(&self) -> u64 {
        crate::redis::AggregatesWriter::now_ms(self)
    }
}
