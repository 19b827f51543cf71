//! Decision policies as pure data and math: the compiled bandit spec, the frozen model decide
//! reads, the probability vectors, and the numerical routines (softmax, inverse-gap
//! weighting, Thompson's probability of being best, ridge solves). No state and no I/O:
//! `config` compiles into these types, `snapshot` evaluates them, `learn` fits them.

pub(crate) mod math;
pub(crate) mod model;
