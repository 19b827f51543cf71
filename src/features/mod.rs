//! Where features come from: the [`FeatureSource`] trait and what implementing it needs
//! ([`FetchRequest`], [`FetchFuture`], [`SourceError`]), the in-memory [`MemoryStore`], and
//! behaviour-event [`aggregate`]s. The feature map itself, [`Features`], and its [`Value`]s
//! are core types at the crate root.

pub mod aggregate;
mod key;
mod memory;
mod packed;
pub(crate) mod set;
mod source;
pub(crate) mod value;

pub(crate) use key::{str_eq, FeatureKey};
pub use memory::{ApplyOutcome, MemoryStore, DEFAULT_DEDUP_TTL_MS};
pub(crate) use set::Features;
pub(crate) use source::block_on;
pub use source::{FeatureSource, FetchFuture, FetchRequest, SourceError};
pub(crate) use value::{Text, Value};

/// The most features one deserialized [`Features`] map may hold (a decoded decision record,
/// a Kafka event); a larger map is an error, not a slow decode.
pub const MAX_DECODED_FEATURES: usize = 10_000;
