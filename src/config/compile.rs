//! Top level: version, segments, holdout, layers, slots → [`Snapshot`].

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::condition::{compile_segments, Interner};
use super::slot::{compile_slot, Shared};
use super::walk::Ctx;
use super::{Config, ConfigProblem};
use crate::bucketing::salt_seed;
use crate::metrics::Counts;
use crate::snapshot::{Action, Holdout, Layer, Slot, Snapshot, StrIndex};

/// A compiled snapshot and the warnings (non-fatal findings such as unreachable rules).
pub(crate) struct Compiled {
    pub(crate) snapshot: Snapshot,
    pub(crate) warnings: Vec<ConfigProblem>,
}

/// Validates and compiles a config, collecting every problem.
pub(crate) fn compile(config: &Config) -> Result<Compiled, Vec<ConfigProblem>> {
    let mut ctx = Ctx::default();
    let Some(root) = ctx.object(&config.0) else {
        return Err(ctx.problems);
    };
    ctx.check_keys(
        root,
        &[
            "version",
            "description",
            "segments",
            "layers",
            "holdout",
            "slots",
        ],
    );
    let version = match root.get("version") {
        Some(Value::String(s)) if !s.is_empty() => {
            ctx.field("version", |c| c.name_fits(s)).then(|| s.clone())
        }
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(other) => {
            ctx.field("version", |c| {
                c.error(format!(
                    "expected a non-empty string or a number, found {other}"
                ))
            });
            None
        }
        None => {
            ctx.error("missing required field \"version\"");
            None
        }
    };
    let mut interner = Interner::default();
    let mut segment_ids = HashMap::new();
    let segments = compile_segments(
        &mut ctx,
        root.get("segments"),
        &mut interner,
        &mut segment_ids,
    );
    let holdout = root
        .get("holdout")
        .and_then(|h| ctx.field("holdout", |c| holdout(c, h, crate::bucketing::HOLDOUT_SALT)));
    let (layers, layer_ids) = match root.get("layers") {
        Some(l) => ctx.field("layers", |c| layers(c, l)),
        None => (Vec::new(), HashMap::new()),
    };
    let shared = Shared {
        segment_ids: &segment_ids,
        segments: &segments,
        layer_ids: &layer_ids,
    };
    let mut slots = Vec::new();
    let mut slot_index = StrIndex::default();
    match root.get("slots") {
        None => ctx.error("missing required field \"slots\""),
        Some(v) => ctx.field("slots", |c| {
            let Some(items) = c.array(v) else { return };
            for (i, item) in items.iter().enumerate() {
                let Some(slot) = c.index(i, |c| compile_slot(c, item, &mut interner, &shared))
                else {
                    continue;
                };
                if !slot_index.insert(&slot.id, slots.len() as u32) {
                    c.index(i, |c| {
                        c.field("id", |c| {
                            c.error(format!("duplicate slot id {:?}", slot.id))
                        })
                    });
                    continue;
                }
                slots.push((i, slot));
            }
        }),
    }
    // Slots of one layer must not share buckets.
    let mut by_layer: HashMap<u32, Vec<(u32, u32, usize, &str)>> = HashMap::new();
    for (i, s) in &slots {
        if let Some(l) = s.layer {
            by_layer
                .entry(l.layer)
                .or_default()
                .push((l.from, l.to, *i, &s.id));
        }
    }
    for ranges in by_layer.values_mut() {
        ranges.sort_unstable();
        for w in ranges.windows(2) {
            let ((_, a_to, _, a_id), (b_from, _, b_i, _)) = (w[0], w[1]);
            if b_from < a_to {
                ctx.field("slots", |c| {
                    c.index(b_i, |c| {
                        c.field("layer", |c| {
                            c.error(format!(
                                "bucket range overlaps slot {a_id:?} in the same layer"
                            ))
                        })
                    })
                });
            }
        }
    }
    if !ctx.problems.is_empty() {
        return Err(ctx.problems);
    }
    let Some(version) = version else {
        return Err(vec![ConfigProblem::new("version", "missing")]);
    };
    let mut bandits = 0u32;
    let slots: Vec<Slot> = slots
        .into_iter()
        .map(|(_, mut s)| {
            for rule in &mut s.rules {
                if let Action::Bandit(spec) = &mut rule.action {
                    spec.binding = bandits;
                    bandits += 1;
                }
            }
            s
        })
        .collect();
    let counts = Counts::register(slots.iter().map(|s| &*s.id));
    let any_sticky = slots.iter().any(|s| s.sticky.is_some());
    Ok(Compiled {
        snapshot: Snapshot {
            version: version.into(),
            slots,
            slot_index,
            segments: segments.conds,
            segment_names: segments.names,
            layers,
            holdout,
            feature_names: interner.names,
            counts,
            bindings: Box::default(),
            any_sticky,
        },
        warnings: ctx.warnings,
    })
}

fn holdout(ctx: &mut Ctx, v: &Value, default_salt: &str) -> Option<Holdout> {
    let obj = ctx.object(v)?;
    ctx.check_keys(obj, &["percent", "salt"]);
    let salt = ctx.str_field(obj, "salt", false).unwrap_or(default_salt);
    let p = ctx.num_field(obj, "percent", true)?;
    let below = ctx.field("percent", |c| c.percent_buckets(p))?;
    Some(Holdout {
        seed: salt_seed(salt),
        below,
    })
}

fn layers(ctx: &mut Ctx, v: &Value) -> (Vec<Layer>, HashMap<String, u32>) {
    let mut out = Vec::new();
    let mut ids = HashMap::new();
    let Some(items) = ctx.array(v) else {
        return (out, ids);
    };
    let mut seen = HashSet::new();
    for (i, item) in items.iter().enumerate() {
        ctx.index(i, |c| {
            let Some(obj) = c.object(item) else { return };
            c.check_keys(obj, &["id", "description", "salt", "holdout"]);
            let Some(id) = c.id_field(obj, "id") else {
                return;
            };
            if !seen.insert(id.to_owned()) {
                c.field("id", |c| c.error(format!("duplicate layer id {id:?}")));
                return;
            }
            let salt = c
                .str_field(obj, "salt", false)
                .map_or_else(|| crate::bucketing::layer_salt(id), str::to_owned);
            let holdout = match obj.get("holdout") {
                None => None,
                Some(h) => {
                    match c.field("holdout", |c| {
                        holdout(c, h, &crate::bucketing::layer_holdout_salt(id))
                    }) {
                        Some(h) => Some(h),
                        None => return,
                    }
                }
            };
            ids.insert(id.to_owned(), out.len() as u32);
            out.push(Layer {
                id: id.into(),
                seed: salt_seed(&salt),
                holdout,
            });
        });
    }
    (out, ids)
}
