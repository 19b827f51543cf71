//! Where a decision's features came from.

/// Where the features of a decision came from.
///
/// Its number (`status as u8`, and [`TryFrom<u8>`]) and [`as_str`](FeatureStatus::as_str)
/// name are stable: decision records carry the name.
///
/// ```
/// use elvon::FeatureStatus;
///
/// let s = FeatureStatus::NotFetched;
/// assert_eq!((s as u8, s.as_str()), (5, "not_fetched"));
/// assert_eq!(FeatureStatus::try_from(5), Ok(s));
/// assert!(FeatureStatus::try_from(6).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[repr(u8)]
pub enum FeatureStatus {
    /// The caller passed them (`decide`).
    Provided = 0,
    /// The feature source answered in time (`decide_for`).
    Fetched = 1,
    /// The source missed the deadline; the decision was made without features.
    TimedOut = 2,
    /// The source failed; the decision was made without features.
    Failed = 3,
    /// The source refused to try (its circuit breaker is open after repeated failures); the
    /// decision was made without features and without waiting.
    Unavailable = 4,
    /// Nothing was fetched (`decide_for`): the slot reads no features, or the engine has no
    /// source. The decision was made on no features.
    NotFetched = 5,
}

impl FeatureStatus {
    /// The status's name in decision records: `provided`, `fetched`, `timed_out`, `failed`,
    /// `unavailable`, `not_fetched`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            FeatureStatus::Provided => "provided",
            FeatureStatus::Fetched => "fetched",
            FeatureStatus::TimedOut => "timed_out",
            FeatureStatus::Failed => "failed",
            FeatureStatus::Unavailable => "unavailable",
            FeatureStatus::NotFetched => "not_fetched",
        }
    }
}

impl TryFrom<u8> for FeatureStatus {
    type Error = crate::UnknownCodeError;

    fn try_from(n: u8) -> Result<Self, Self::Error> {
        Ok(match n {
            0 => FeatureStatus::Provided,
            1 => FeatureStatus::Fetched,
            2 => FeatureStatus::TimedOut,
            3 => FeatureStatus::Failed,
            4 => FeatureStatus::Unavailable,
            5 => FeatureStatus::NotFetched,
            _ => return Err(crate::UnknownCodeError(n)),
        })
    }
}
