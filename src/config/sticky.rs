//! Compiling a slot's `sticky` option.

use serde_json::Value;

use super::condition::Env;
use super::walk::Ctx;
use crate::snapshot::{Action, Sticky, Unit};

/// A parsed `sticky` option, before the slot's id and feature list are known.
pub(crate) struct Parsed {
    unit: Unit,
    version: u32,
    min_version: u32,
    recheck: bool,
}

impl Parsed {
    /// The option of slot `slot`, whose features are `features`.
    pub(crate) fn finish(self, slot: &str, features: &[Box<str>]) -> Sticky {
        let field: Box<str> = crate::sticky::field_name(slot).into();
        let fetch = features
            .iter()
            .cloned()
            .chain(std::iter::once(field.clone()))
            .collect();
        Sticky {
            unit: self.unit,
            version: self.version,
            min_version: self.min_version,
            recheck: self.recheck,
            field,
            fetch,
        }
    }
}

/// Whether a rule's decisions are stored as assignments: splits and rollouts (the
/// randomized, bucketed rules).
pub(crate) fn assigns(action: &Action) -> bool {
    matches!(action, Action::Split { .. } | Action::Rollout { .. })
}

/// `{"by": feature, "version": n, "min_version": m, "recheck_targeting": bool}`, all optional.
pub(crate) fn sticky(ctx: &mut Ctx, v: &Value, env: &mut Env<'_>) -> Option<Parsed> {
    let obj = ctx.object(v)?;
    ctx.check_keys(obj, &["by", "version", "min_version", "recheck_targeting"]);
    let unit = super::slot::by_unit(ctx, obj, env);
    let version = match obj.get("version") {
        None => Some(0),
        Some(x) => ctx.field("version", |c| bucket_version(c, x)),
    };
    let min_version = match obj.get("min_version") {
        None => version,
        Some(x) => ctx.field("min_version", |c| bucket_version(c, x)),
    };
    let recheck = match obj.get("recheck_targeting") {
        None => Some(true),
        Some(Value::Bool(b)) => Some(*b),
        Some(other) => {
            ctx.field("recheck_targeting", |c| {
                c.error(format!("expected true or false, found {other}"))
            });
            None
        }
    };
    let (version, min_version) = (version?, min_version?);
    if min_version > version {
        ctx.field("min_version", |c| {
            c.error(format!(
                "{min_version} is above the bucket version {version}: no assignment could hold"
            ))
        });
        return None;
    }
    Some(Parsed {
        unit: unit?,
        version,
        min_version,
        recheck: recheck?,
    })
}

fn bucket_version(ctx: &mut Ctx, v: &Value) -> Option<u32> {
    match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
        Some(n) => Some(n),
        None => {
            ctx.error(format!(
                "expected a whole number in 0..={}, found {v}",
                u32::MAX
            ));
            None
        }
    }
}
