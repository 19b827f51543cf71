//! Numbered kinds with stable names, shared by decisions, metrics, the capture encoding and
//! decision records (a leaf module: it depends on nothing else in the crate).

/// The kind of a [`Reason`](crate::Reason), without its details: what metrics label decisions with and
/// decision records carry.
///
/// Its number (`kind as u8`, and [`TryFrom<u8>`]) and [`as_str`](ReasonKind::as_str) name
/// are stable.
///
/// ```
/// use elvon::ReasonKind;
///
/// let k = ReasonKind::Split;
/// assert_eq!((k as u8, k.as_str(), k.to_string()), (1, "split", "split".to_owned()));
/// assert_eq!(ReasonKind::try_from(1), Ok(k));
/// assert!(ReasonKind::try_from(11).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
#[repr(u8)]
pub enum ReasonKind {
    /// A `serve` rule ([`Reason::Serve`](crate::Reason::Serve)); named `rule`.
    Rule = 0,
    /// [`Reason::Split`](crate::Reason::Split).
    Split = 1,
    /// [`Reason::Rollout`](crate::Reason::Rollout).
    Rollout = 2,
    /// [`Reason::Score`](crate::Reason::Score).
    Score = 3,
    /// [`Reason::Holdout`](crate::Reason::Holdout).
    Holdout = 4,
    /// [`Reason::NotInLayer`](crate::Reason::NotInLayer).
    NotInLayer = 5,
    /// [`Reason::Default`](crate::Reason::Default).
    Default = 6,
    /// [`Reason::KillSwitch`](crate::Reason::KillSwitch).
    KillSwitch = 7,
    /// [`Reason::UnknownSlot`](crate::Reason::UnknownSlot).
    UnknownSlot = 8,
    /// [`Reason::Fallback`](crate::Reason::Fallback).
    Fallback = 9,
    /// [`Reason::Bandit`](crate::Reason::Bandit).
    Bandit = 10,
}

impl ReasonKind {
    /// Every kind, in number order.
    pub const ALL: [ReasonKind; 11] = [
        ReasonKind::Rule,
        ReasonKind::Split,
        ReasonKind::Rollout,
        ReasonKind::Score,
        ReasonKind::Holdout,
        ReasonKind::NotInLayer,
        ReasonKind::Default,
        ReasonKind::KillSwitch,
        ReasonKind::UnknownSlot,
        ReasonKind::Fallback,
        ReasonKind::Bandit,
    ];

    /// The stable name: `rule`, `split`, `rollout`, `score`, `holdout`, `not_in_layer`,
    /// `default`, `kill_switch`, `unknown_slot`, `fallback`, `bandit`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            ReasonKind::Rule => "rule",
            ReasonKind::Split => "split",
            ReasonKind::Rollout => "rollout",
            ReasonKind::Score => "score",
            ReasonKind::Holdout => "holdout",
            ReasonKind::NotInLayer => "not_in_layer",
            ReasonKind::Default => "default",
            ReasonKind::KillSwitch => "kill_switch",
            ReasonKind::UnknownSlot => "unknown_slot",
            ReasonKind::Fallback => "fallback",
            ReasonKind::Bandit => "bandit",
        }
    }
}

impl std::fmt::Display for ReasonKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<u8> for ReasonKind {
    type Error = UnknownCodeError;

    fn try_from(n: u8) -> Result<Self, Self::Error> {
        ReasonKind::ALL
            .get(usize::from(n))
            .copied()
            .ok_or(UnknownCodeError(n))
    }
}

/// A number that names no [`FeatureStatus`](crate::FeatureStatus) or [`ReasonKind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown code {0}")]
pub struct UnknownCodeError(pub u8);
