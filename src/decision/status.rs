//! Where a decision's features came from.

crate::kinds::numbered! {
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
    pub enum FeatureStatus {
        /// The caller passed them (`decide`).
        Provided = 0 => "provided",
        /// The feature source answered in time (`decide_for`).
        Fetched = 1 => "fetched",
        /// The source missed the deadline; the decision was made without features.
        TimedOut = 2 => "timed_out",
        /// The source failed; the decision was made without features.
        Failed = 3 => "failed",
        /// The source refused to try (its circuit breaker is open after repeated failures);
        /// the decision was made without features and without waiting.
        Unavailable = 4 => "unavailable",
        /// Nothing was fetched (`decide_for`): the slot reads no features, or the engine has
        /// no source. The decision was made on no features.
        NotFetched = 5 => "not_fetched",
    }
}
