//! Compiling a `bandit` rule action.
//!
//! ```json
//! {"bandit": {"policy": "thompson", "arms": ["a", "b", "c"],
//!             "refresh": {"rewards": 100, "ms": 1000},
//!             "reward": {"window_ms": 60000, "default": 0}}}
//! ```

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::condition::Env;
use super::walk::{variant_ref, Ctx, Obj};
use crate::bucketing::salt_seed;
use crate::policy::model::{
    layout, BanditSpec, Explore, Policy, DEFAULT_REWARD_BOUND, MAX_ARMS, MAX_CONTEXT,
};
use crate::snapshot::Action;

const POLICIES: &str = "epsilon_greedy, softmax, igw, thompson, ucb1, linear";

/// A positive (or non-negative) number field with a default.
fn param(ctx: &mut Ctx, obj: &Obj, key: &str, default: f64, min: f64, max: f64) -> f64 {
    match ctx.num_field(obj, key, false) {
        None => default,
        Some(v) if v >= min && v <= max => v,
        Some(v) => {
            ctx.field(key, |c| {
                c.error(format!("{v} is outside {min}..={max}"));
            });
            default
        }
    }
}

fn count(ctx: &mut Ctx, obj: &Obj, key: &str, default: u64) -> u64 {
    match obj.get(key) {
        None => default,
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => n,
            _ => {
                ctx.field(key, |c| {
                    c.error(format!("expected a positive integer, found {v}"));
                });
                default
            }
        },
    }
}

/// A non-empty array field with at most `max` items; `verb` starts the error message
/// ("a bandit may have at most 16 arms, found 17").
fn bounded<'v>(
    ctx: &mut Ctx,
    obj: &'v Obj,
    key: &str,
    empty: &str,
    (verb, max): (&str, usize),
) -> Option<&'v [Value]> {
    let items = ctx.nonempty_array(obj, key, empty)?;
    if items.len() > max {
        ctx.field(key, |c| {
            c.error(format!("{verb} at most {max} {key}, found {}", items.len()))
        });
        return None;
    }
    Some(items)
}

pub(crate) fn bandit(
    ctx: &mut Ctx,
    v: &Value,
    key: String,
    default_salt: &str,
    index: &HashMap<&str, u32>,
    env: &mut Env<'_>,
) -> Option<Action> {
    let obj = ctx.object(v)?;
    ctx.check_keys(
        obj,
        &[
            "policy",
            "arms",
            "epsilon",
            "temperature",
            "gamma",
            "floor",
            "features",
            "exploration",
            "ridge",
            "refresh",
            "reward",
            "salt",
        ],
    );
    let mut ok = true;
    let policy_name = ctx.str_field(obj, "policy", true);
    let items = bounded(
        ctx,
        obj,
        "arms",
        "a bandit needs at least one arm",
        ("a bandit may have", MAX_ARMS),
    )?;
    let mut arms = Vec::with_capacity(items.len());
    let mut arm_ids: Vec<Box<str>> = Vec::with_capacity(items.len());
    let mut seen = HashSet::new();
    ctx.field("arms", |c| {
        for (i, item) in items.iter().enumerate() {
            c.index(i, |c| match variant_ref(c, item, index) {
                Some(var) if seen.insert(var) => {
                    arms.push(var);
                    arm_ids.push(item.as_str().unwrap_or_default().into());
                }
                Some(_) => {
                    c.error(format!("arm {item} listed twice"));
                    ok = false;
                }
                None => ok = false,
            });
        }
    });
    let k = items.len() as f64;
    let floor = param(ctx, obj, "floor", 0.0, 0.0, 1.0 / k);
    let mut context = Vec::new();
    let policy = match policy_name? {
        "epsilon_greedy" => Policy::EpsilonGreedy {
            epsilon: param(ctx, obj, "epsilon", 0.1, 0.0, 1.0),
        },
        "softmax" => Policy::Softmax {
            temperature: param(ctx, obj, "temperature", 0.1, 1e-6, 1e6),
        },
        "igw" => Policy::Igw {
            gamma: param(ctx, obj, "gamma", 100.0, 0.0, 1e12),
        },
        "thompson" => Policy::Thompson,
        "ucb1" => Policy::Ucb1,
        "linear" => {
            let feats = bounded(
                ctx,
                obj,
                "features",
                "a linear bandit needs at least one numeric feature",
                ("a linear bandit may read", MAX_CONTEXT),
            )?;
            ctx.field("features", |c| {
                for (i, f) in feats.iter().enumerate() {
                    c.index(i, |c| match f {
                        Value::String(s) if !s.is_empty() => {
                            if c.name_fits(s) {
                                context.push(env.feature(s));
                            } else {
                                ok = false;
                            }
                        }
                        other => {
                            c.error(format!("expected a feature name, found {other}"));
                            ok = false;
                        }
                    });
                }
            });
            let explore = match ctx.str_field(obj, "exploration", false).unwrap_or("igw") {
                "igw" => Explore::Igw(param(ctx, obj, "gamma", 100.0, 0.0, 1e12)),
                "softmax" => Explore::Softmax(param(ctx, obj, "temperature", 0.1, 1e-6, 1e6)),
                other => {
                    ctx.field("exploration", |c| {
                        c.error(format!(
                            "unknown exploration {other:?}; expected igw or softmax"
                        ))
                    });
                    return None;
                }
            };
            Policy::Linear {
                explore,
                ridge: param(ctx, obj, "ridge", 1.0, 1e-9, 1e9),
            }
        }
        other => {
            ctx.field("policy", |c| {
                c.error(format!(
                    "unknown policy {other:?}; expected one of {POLICIES}"
                ))
            });
            return None;
        }
    };
    let (mut refresh_rewards, mut refresh_ms) = (100, 1_000);
    if let Some(r) = obj.get("refresh") {
        ctx.field("refresh", |c| {
            if let Some(o) = c.object(r) {
                c.check_keys(o, &["rewards", "ms"]);
                refresh_rewards = count(c, o, "rewards", refresh_rewards);
                refresh_ms = count(c, o, "ms", refresh_ms);
            }
        });
    }
    let (mut window_ms, mut default_reward) = (3_600_000, None);
    let mut range = (-DEFAULT_REWARD_BOUND, DEFAULT_REWARD_BOUND);
    if let Some(r) = obj.get("reward") {
        ctx.field("reward", |c| {
            if let Some(o) = c.object(r) {
                c.check_keys(o, &["window_ms", "default", "min", "max"]);
                window_ms = count(c, o, "window_ms", window_ms);
                default_reward = c.num_field(o, "default", false);
                let bound = DEFAULT_REWARD_BOUND;
                range.0 = param(c, o, "min", -bound, -bound, bound);
                range.1 = param(c, o, "max", bound, -bound, bound);
                if range.0 > range.1 {
                    c.error(format!("min {} is above max {}", range.0, range.1));
                    ok = false;
                }
                if let Some(d) = default_reward.filter(|d| !(range.0..=range.1).contains(d)) {
                    c.field("default", |c| {
                        c.error(format!(
                            "{d} is outside the reward range [{}, {}]",
                            range.0, range.1
                        ))
                    });
                    ok = false;
                }
            }
        });
    }
    let salt = ctx.str_field(obj, "salt", false).unwrap_or(default_salt);
    if !ok {
        return None;
    }
    let layout = layout(&arm_ids);
    Some(Action::Bandit(Box::new(BanditSpec {
        key: key.into(),
        seed: salt_seed(salt),
        arms,
        arm_ids,
        layout,
        policy,
        floor,
        context,
        refresh_rewards,
        refresh_ms,
        window_ms,
        reward_range: range,
        default_reward,
        // Numbered in config order once the snapshot's rules are final.
        binding: u32::MAX,
    })))
}
