//! Numbered kinds with stable names, shared by decisions, metrics, the capture encoding and
//! decision records (a leaf module: it depends on nothing else in the crate).
//!
//! Each kind is declared once, with [`numbered!`]: its variants, their numbers and their
//! names come from that one list, so no second table can drift from it.

/// Declares a `#[repr(u8)]` enum whose variants carry a stable number and a stable name,
/// with `ALL` (every variant, in number order), `as_str`, `Display` and `TryFrom<u8>`
/// (error [`UnknownCodeError`]), all generated from the one list.
macro_rules! numbered {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $n:literal => $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        #[repr(u8)]
        pub enum $name {
            $( $(#[$vmeta])* $variant = $n, )+
        }

        impl $name {
            /// Every variant, in number order.
            pub const ALL: [$name; [$($n),+].len()] = [$($name::$variant),+];

            /// The stable name (what metrics label with and records carry).
            #[must_use]
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl TryFrom<u8> for $name {
            type Error = $crate::kinds::UnknownCodeError;

            fn try_from(n: u8) -> Result<Self, Self::Error> {
                match n {
                    $( $n => Ok($name::$variant), )+
                    _ => Err($crate::kinds::UnknownCodeError(n)),
                }
            }
        }
    };
}

pub(crate) use numbered;

numbered! {
    /// The kind of a [`Reason`](crate::Reason), without its details: what metrics label
    /// decisions with and decision records carry.
    ///
    /// Its number (`kind as u8`, and [`TryFrom<u8>`]) and [`as_str`](ReasonKind::as_str)
    /// name are stable.
    ///
    /// ```
    /// use elvon::ReasonKind;
    ///
    /// let k = ReasonKind::Split;
    /// assert_eq!((k as u8, k.as_str(), k.to_string()), (1, "split", "split".to_owned()));
    /// assert_eq!(ReasonKind::try_from(1), Ok(k));
    /// assert!(ReasonKind::try_from(12).is_err());
    /// assert_eq!(ReasonKind::ALL.len(), 12);
    /// ```
    pub enum ReasonKind {
        /// A `serve` rule ([`Reason::Serve`](crate::Reason::Serve)); named `rule`.
        Rule = 0 => "rule",
        /// [`Reason::Split`](crate::Reason::Split).
        Split = 1 => "split",
        /// [`Reason::Rollout`](crate::Reason::Rollout).
        Rollout = 2 => "rollout",
        /// [`Reason::Score`](crate::Reason::Score).
        Score = 3 => "score",
        /// [`Reason::Holdout`](crate::Reason::Holdout).
        Holdout = 4 => "holdout",
        /// [`Reason::NotInLayer`](crate::Reason::NotInLayer).
        NotInLayer = 5 => "not_in_layer",
        /// [`Reason::Default`](crate::Reason::Default).
        Default = 6 => "default",
        /// [`Reason::KillSwitch`](crate::Reason::KillSwitch).
        KillSwitch = 7 => "kill_switch",
        /// [`Reason::UnknownSlot`](crate::Reason::UnknownSlot).
        UnknownSlot = 8 => "unknown_slot",
        /// [`Reason::Fallback`](crate::Reason::Fallback).
        Fallback = 9 => "fallback",
        /// [`Reason::Bandit`](crate::Reason::Bandit).
        Bandit = 10 => "bandit",
        /// [`Reason::Sticky`](crate::Reason::Sticky).
        Sticky = 11 => "sticky",
    }
}

impl ReasonKind {
    /// The OpenFeature evaluation reason this kind reports as, over OFREP and through the
    /// OpenFeature provider: `TARGETING_MATCH` for a serve or score rule, `SPLIT` for splits,
    /// rollouts, bandits and sticky assignments (made by a split or rollout), `DISABLED` for a killed slot, `DEFAULT` for the rest (the default
    /// variant, holdouts, layers the user is not in, fallbacks, unknown slots).
    ///
    /// ```
    /// assert_eq!(elvon::ReasonKind::Bandit.openfeature_reason(), "SPLIT");
    /// ```
    #[must_use]
    pub const fn openfeature_reason(self) -> &'static str {
        match self {
            ReasonKind::Rule | ReasonKind::Score => "TARGETING_MATCH",
            ReasonKind::Split | ReasonKind::Rollout | ReasonKind::Bandit | ReasonKind::Sticky => {
                "SPLIT"
            }
            ReasonKind::KillSwitch => "DISABLED",
            ReasonKind::Holdout
            | ReasonKind::NotInLayer
            | ReasonKind::Default
            | ReasonKind::UnknownSlot
            | ReasonKind::Fallback => "DEFAULT",
        }
    }
}

numbered! {
    /// The kind of a [`FallbackCause`](crate::FallbackCause), without its details: what
    /// `elvon_fallbacks_total` is labelled with (`cause`) and decision records carry.
    ///
    /// Its number and [`as_str`](FallbackKind::as_str) name are stable.
    ///
    /// ```
    /// use elvon::FallbackKind;
    ///
    /// let k = FallbackKind::SourceTimeout;
    /// assert_eq!((k as u8, k.as_str()), (2, "source_timeout"));
    /// assert_eq!(FallbackKind::try_from(2), Ok(k));
    /// assert!(FallbackKind::try_from(5).is_err());
    /// ```
    pub enum FallbackKind {
        /// [`FallbackCause::FeatureMissing`](crate::FallbackCause::FeatureMissing).
        FeatureMissing = 0 => "feature_missing",
        /// [`FallbackCause::FeatureType`](crate::FallbackCause::FeatureType).
        FeatureType = 1 => "feature_type",
        /// [`FallbackCause::SourceTimeout`](crate::FallbackCause::SourceTimeout).
        SourceTimeout = 2 => "source_timeout",
        /// [`FallbackCause::SourceError`](crate::FallbackCause::SourceError).
        SourceError = 3 => "source_error",
        /// [`FallbackCause::SourceUnavailable`](crate::FallbackCause::SourceUnavailable).
        SourceUnavailable = 4 => "source_unavailable",
    }
}

/// A number that names no [`FeatureStatus`](crate::FeatureStatus), [`ReasonKind`] or
/// [`FallbackKind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown code {0}")]
pub struct UnknownCodeError(pub u8);
