//! Compiling one slot: variants, default, kill switch, layer membership and rules.

use std::collections::{BTreeSet, HashMap, HashSet};

use bytes::Bytes;
use serde_json::Value;

use super::condition::{compile_cond, Env, Interner, Segments};
use super::walk::{variant_ref, Ctx, Obj};
use crate::bucketing::{name_hash, salt_seed, BUCKETS};
use crate::snapshot::{Action, FeatureKey, Rule, ScoreArm, Slot, SlotLayer, Unit, Variant};

/// Read-only context shared by all slots of a config.
pub(crate) struct Shared<'a> {
    pub(crate) segment_ids: &'a HashMap<String, u32>,
    pub(crate) segments: &'a Segments,
    pub(crate) layer_ids: &'a HashMap<String, u32>,
}

pub(crate) fn compile_slot(
    ctx: &mut Ctx,
    v: &Value,
    interner: &mut Interner,
    shared: &Shared<'_>,
) -> Option<Slot> {
    let obj = ctx.object(v)?;
    ctx.check_keys(
        obj,
        &[
            "id",
            "description",
            "variants",
            "default",
            "killed",
            "layer",
            "rules",
            "sticky",
        ],
    );
    let id = ctx.id_field(obj, "id");
    let killed = ctx.bool_field(obj, "killed");
    let variants = ctx
        .nonempty_array(obj, "variants", "a slot needs at least one variant")
        .and_then(|items| ctx.field("variants", |c| variants(c, items)));
    let index: HashMap<&str, u32> = variants
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, v)| (&*v.id, i as u32))
        .collect();
    let default = ctx.str_field(obj, "default", true).and_then(|d| {
        let found = index.get(d).copied();
        if found.is_none() && variants.is_some() {
            ctx.field("default", |c| c.error(format!("unknown variant {d:?}")));
        }
        found
    });
    // Outer None: the slot is in no layer; inner None: the layer spec is invalid.
    let layer = obj
        .get("layer")
        .map(|l| ctx.field("layer", |c| slot_layer(c, l, shared.layer_ids)));
    let mut env = Env {
        interner,
        segment_ids: shared.segment_ids,
        features: BTreeSet::new(),
        segments: BTreeSet::new(),
    };
    let rules = match (obj.get("rules"), id) {
        (Some(r), Some(id)) => ctx.field("rules", |c| rules(c, r, id, &index, &mut env)),
        (Some(r), None) => ctx.field("rules", |c| rules(c, r, "", &index, &mut env)),
        (None, _) => Some(Vec::new()),
    };
    // Outer None: not sticky; inner None: the option is invalid.
    let sticky = obj
        .get("sticky")
        .map(|st| ctx.field("sticky", |c| super::sticky::sticky(c, st, &mut env)));
    // Features read through segments count too.
    let mut features = env.features;
    for s in &env.segments {
        if let Some(f) = shared.segments.features.get(*s as usize) {
            features.extend(f);
        }
    }
    let names: Box<[Box<str>]> = features
        .iter()
        .map(|&f| env.interner.names[f as usize].clone())
        .collect();
    let feature_hashes = names.iter().map(|n| name_hash(n)).collect();
    let sticky = match (sticky, id) {
        (None, _) => None,
        (Some(st), Some(id)) => {
            let st = st?;
            let rules = rules.as_deref().unwrap_or_default();
            if !rules.iter().any(|r| super::sticky::assigns(&r.action)) {
                ctx.field("sticky", |c| {
                    c.warn("has no effect: the slot has no split or rollout rule to assign")
                });
            }
            Some(Box::new(st.finish(id, &names)))
        }
        (Some(_), None) => return None,
    };
    Some(Slot {
        id: id?.into(),
        variants: variants?,
        default: default?,
        killed,
        layer: match layer {
            None => None,
            Some(l) => Some(l?),
        },
        rules: rules?,
        features: names,
        feature_hashes,
        sticky,
    })
}

/// A payload's compact JSON, checked once here so answers embed it without parsing it again.
fn raw(v: &Value) -> Option<Box<serde_json::value::RawValue>> {
    serde_json::value::to_raw_value(v).ok()
}

fn variants(ctx: &mut Ctx, items: &[Value]) -> Option<Vec<Variant>> {
    let mut out = Vec::with_capacity(items.len());
    let mut seen = HashSet::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let r = ctx.index(i, |c| {
            let obj = c.object(item)?;
            c.check_keys(obj, &["id", "description", "payload"]);
            let id = c.id_field(obj, "id")?;
            if !seen.insert(id) {
                c.field("id", |c| c.error(format!("duplicate variant id {id:?}")));
                return None;
            }
            let (payload, payload_json) = match obj.get("payload") {
                None | Some(Value::Null) => (Bytes::new(), None),
                Some(v @ Value::String(s)) => (Bytes::from(s.clone().into_bytes()), raw(v)),
                Some(other) => (Bytes::from(other.to_string().into_bytes()), raw(other)),
            };
            Some(Variant {
                id: id.into(),
                payload,
                payload_json,
            })
        });
        match r {
            Some(v) => out.push(v),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn slot_layer(ctx: &mut Ctx, v: &Value, layer_ids: &HashMap<String, u32>) -> Option<SlotLayer> {
    let obj = ctx.object(v)?;
    ctx.check_keys(obj, &["id", "from", "to"]);
    let id = ctx.id_field(obj, "id");
    let layer = id.and_then(|id| {
        let l = layer_ids.get(id).copied();
        if l.is_none() {
            ctx.field("id", |c| c.error(format!("unknown layer {id:?}")));
        }
        l
    });
    let bound = |c: &mut Ctx, key: &str| {
        let x = c.num_field(obj, key, true)?;
        if x.fract() != 0.0 || !(0.0..=f64::from(BUCKETS)).contains(&x) {
            c.field(key, |c| {
                c.error(format!(
                    "bucket bound {x} must be an integer in 0..={BUCKETS}"
                ))
            });
            return None;
        }
        Some(x as u32)
    };
    let from = bound(ctx, "from");
    let to = bound(ctx, "to");
    let (from, to) = (from?, to?);
    if from >= to {
        ctx.error(format!(
            "empty bucket range: from {from} must be below to {to}"
        ));
        return None;
    }
    Some(SlotLayer {
        layer: layer?,
        from,
        to,
    })
}

fn rules(
    ctx: &mut Ctx,
    v: &Value,
    slot_id: &str,
    index: &HashMap<&str, u32>,
    env: &mut Env<'_>,
) -> Option<Vec<Rule>> {
    let items = ctx.array(v)?;
    if items.len() > usize::from(u16::MAX) {
        ctx.error(format!(
            "a slot may have at most {} rules, found {}",
            u16::MAX,
            items.len()
        ));
        return None;
    }
    let mut out: Vec<Rule> = Vec::with_capacity(items.len());
    let mut ids = HashSet::new();
    let mut ok = true;
    let mut shadowed_by: Option<usize> = None;
    let mut bandit_keys = HashSet::new();
    for (i, item) in items.iter().enumerate() {
        let rule = ctx.index(i, |c| rule(c, item, i, slot_id, index, env, &mut ids));
        let Some(rule) = rule else {
            ok = false;
            continue;
        };
        if let Action::Bandit(b) = &rule.action {
            if !bandit_keys.insert(b.key.clone()) {
                ctx.index(i, |c| {
                    c.error("a slot with several bandit rules must give each an \"id\" (learner state is keyed by slot and rule id)")
                });
                ok = false;
            }
        }
        if let Some(prev) = shadowed_by {
            ctx.index(i, |c| {
                c.warn(format!(
                    "unreachable: rules[{prev}] always decides first; rule dropped"
                ))
            });
            continue;
        }
        if rule.when.is_none() && always_decides(&rule.action) {
            shadowed_by = Some(i);
        }
        out.push(rule);
    }
    ok.then_some(out)
}

fn always_decides(a: &Action) -> bool {
    match a {
        Action::Serve(_) | Action::Score { .. } => true,
        Action::Bandit(_) => true,
        Action::Split { unit, .. } => matches!(unit, Unit::User),
        Action::Rollout { unit, below, .. } => matches!(unit, Unit::User) && *below == BUCKETS,
    }
}

const ACTIONS: [&str; 5] = ["serve", "split", "rollout", "score", "bandit"];

fn rule<'v>(
    ctx: &mut Ctx,
    v: &'v Value,
    i: usize,
    slot_id: &str,
    index: &HashMap<&str, u32>,
    env: &mut Env<'_>,
    ids: &mut HashSet<&'v str>,
) -> Option<Rule> {
    let obj = ctx.object(v)?;
    ctx.check_keys(
        obj,
        &[
            "id",
            "description",
            "when",
            "serve",
            "split",
            "rollout",
            "score",
            "bandit",
        ],
    );
    let id = ctx.str_field(obj, "id", false);
    let mut id_ok = true;
    if let Some(id) = id {
        if !ctx.field("id", |c| c.name_fits(id)) {
            id_ok = false;
        }
        if !ids.insert(id) {
            ctx.field("id", |c| c.error(format!("duplicate rule id {id:?}")));
        }
    }
    let when = match obj.get("when") {
        Some(w) => Some(ctx.field("when", |c| compile_cond(c, w, env, 0))?),
        None => None,
    };
    let present: Vec<&str> = ACTIONS
        .into_iter()
        .filter(|a| obj.contains_key(*a))
        .collect();
    if present.len() != 1 {
        ctx.error(format!(
            "a rule needs exactly one action of serve, split, rollout, score, bandit; found {}",
            if present.is_empty() {
                "none".to_owned()
            } else {
                present.join(", ")
            }
        ));
        return None;
    }
    if !id_ok {
        return None;
    }
    let name = present[0];
    let default_salt = crate::bucketing::rule_salt(slot_id, id, i);
    let body = &obj[name];
    let action = ctx.field(name, |c| match name {
        "serve" => variant_ref(c, body, index).map(Action::Serve),
        "split" => split(c, body, &default_salt, index, env),
        "rollout" => rollout(c, body, &default_salt, index, env),
        "bandit" => {
            let key = crate::bucketing::learner_key(slot_id, id);
            super::bandit::bandit(c, body, key, &default_salt, index, env)
        }
        _ => score(c, body, index, env),
    })?;
    Some(Rule {
        index: i as u16,
        id: id.map(Into::into),
        when,
        action,
    })
}

fn unit_and_seed(
    ctx: &mut Ctx,
    obj: &Obj,
    default_salt: &str,
    env: &mut Env<'_>,
) -> (u64, Option<Unit>) {
    let salt = ctx.str_field(obj, "salt", false).unwrap_or(default_salt);
    (salt_seed(salt), by_unit(ctx, obj, env))
}

/// The optional `by` field: the feature a unit is (`None` when the field is invalid; the
/// user when absent).
pub(crate) fn by_unit(ctx: &mut Ctx, obj: &Obj, env: &mut Env<'_>) -> Option<Unit> {
    match obj.get("by") {
        None => Some(Unit::User),
        Some(Value::String(f)) if !f.is_empty() => ctx
            .field("by", |c| c.name_fits(f))
            .then(|| Unit::Feature(env.feature(f))),
        Some(other) => {
            ctx.field("by", |c| {
                c.error(format!("expected a feature name, found {other}"))
            });
            None
        }
    }
}

fn split(
    ctx: &mut Ctx,
    v: &Value,
    default_salt: &str,
    index: &HashMap<&str, u32>,
    env: &mut Env<'_>,
) -> Option<Action> {
    let obj = ctx.object(v)?;
    ctx.check_keys(obj, &["variants", "salt", "by"]);
    let (seed, unit) = unit_and_seed(ctx, obj, default_salt, env);
    let items = ctx.nonempty_array(obj, "variants", "a split needs at least one variant")?;
    let mut arms = Vec::with_capacity(items.len());
    let mut upper = 0u32;
    let mut seen = HashSet::new();
    let mut ok = true;
    let mut total = 0.0;
    ctx.field("variants", |c| {
        for (i, item) in items.iter().enumerate() {
            let arm = c.index(i, |c| {
                let o = c.object(item)?;
                c.check_keys(o, &["variant", "weight"]);
                let var = c.required(o, "variant", |c, v| variant_ref(c, v, index));
                let w = c.num_field(o, "weight", true);
                if let Some(w) = w {
                    total += w;
                }
                let b = c.field("weight", |c| c.percent_buckets(w?));
                let var = var?;
                if !seen.insert(var) {
                    c.field("variant", |c| c.error("variant listed twice in one split"));
                    return None;
                }
                Some((b?, var))
            });
            match arm {
                Some((0, _)) => {}
                Some((b, var)) => {
                    upper += b;
                    arms.push((upper, var));
                }
                None => ok = false,
            }
        }
    });
    if ok && upper != BUCKETS {
        ctx.field("variants", |c| {
            c.error(format!("split weights sum to {total}, expected 100"))
        });
        return None;
    }
    let unit = unit?;
    ok.then_some(Action::Split { seed, unit, arms })
}

fn rollout(
    ctx: &mut Ctx,
    v: &Value,
    default_salt: &str,
    index: &HashMap<&str, u32>,
    env: &mut Env<'_>,
) -> Option<Action> {
    let obj = ctx.object(v)?;
    ctx.check_keys(obj, &["variant", "percent", "salt", "by"]);
    let (seed, unit) = unit_and_seed(ctx, obj, default_salt, env);
    let variant = ctx.required(obj, "variant", |c, v| variant_ref(c, v, index));
    let p = ctx.num_field(obj, "percent", true);
    let below = ctx.field("percent", |c| c.percent_buckets(p?));
    Some(Action::Rollout {
        seed,
        unit: unit?,
        below: below?,
        variant: variant?,
    })
}

fn score(
    ctx: &mut Ctx,
    v: &Value,
    index: &HashMap<&str, u32>,
    env: &mut Env<'_>,
) -> Option<Action> {
    let obj = ctx.object(v)?;
    ctx.check_keys(obj, &["variants"]);
    let items = ctx.nonempty_array(obj, "variants", "a score needs at least one variant")?;
    let mut arms = Vec::with_capacity(items.len());
    let mut seen = HashSet::new();
    let mut ok = true;
    ctx.field("variants", |c| {
        for (i, item) in items.iter().enumerate() {
            let arm = c.index(i, |c| {
                let o = c.object(item)?;
                c.check_keys(o, &["variant", "bias", "weights"]);
                let var = c.required(o, "variant", |c, v| variant_ref(c, v, index));
                let bias = c.num_field(o, "bias", false).unwrap_or(0.0);
                let mut weights = Vec::new();
                let mut wok = true;
                if let Some(w) = o.get("weights") {
                    c.field("weights", |c| {
                        let Some(wo) = c.object(w) else {
                            wok = false;
                            return;
                        };
                        for (name, x) in wo {
                            match c.field(name, |c| c.number(x)) {
                                Some(x)
                                    if !name.is_empty() && c.field(name, |c| c.name_fits(name)) =>
                                {
                                    weights.push((env.feature(name), x));
                                }
                                Some(_) if !name.is_empty() => wok = false,
                                Some(_) => {
                                    c.error("feature names must not be empty");
                                    wok = false;
                                }
                                None => wok = false,
                            }
                        }
                    });
                }
                let var = var?;
                if !seen.insert(var) {
                    c.field("variant", |c| c.error("variant listed twice in one score"));
                    return None;
                }
                wok.then_some((var, bias, weights))
            });
            match arm {
                Some(a) => arms.push(a),
                None => ok = false,
            }
        }
    });
    if !ok {
        return None;
    }
    // Distinct inputs, each read once per decision; arms refer to them by index.
    let mut inputs: Vec<FeatureKey> = Vec::new();
    let arms = arms
        .into_iter()
        .map(
            |(variant, bias, weights): (u32, f64, Vec<(FeatureKey, f64)>)| {
                let weights = weights
                    .into_iter()
                    .map(|(k, w)| {
                        let i = inputs.iter().position(|x| x.id == k.id).unwrap_or_else(|| {
                            inputs.push(k);
                            inputs.len() - 1
                        });
                        (i as u32, w)
                    })
                    .collect();
                ScoreArm {
                    variant,
                    bias,
                    weights,
                }
            },
        )
        .collect();
    Some(Action::Score { inputs, arms })
}
