//! Compiling `when` conditions and named segments.

use std::collections::{BTreeSet, HashMap};

use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use regex::{Regex, RegexBuilder};
use semver::{Version, VersionReq};
use serde_json::Value;

use super::walk::{kind, Ctx};
use crate::bucketing::name_hash;
use crate::snapshot::condition::{parse_instant, Cmp, Lit, Set, Test};
use crate::snapshot::{Cond, FeatureKey};

/// Conditions nested deeper than this are rejected (keeps evaluation's recursion bounded).
pub(crate) const MAX_DEPTH: usize = 32;

const OPERATORS: &str = "eq, ne, in, not_in, lt, le, gt, ge, between, exists, missing, starts_with, \
ends_with, contains, matches, semver_eq, semver_lt, semver_le, semver_gt, semver_ge, semver_match, before, after";

/// Feature-name interning for one config.
#[derive(Default)]
pub(crate) struct Interner {
    ids: HashMap<String, u32>,
    pub(crate) names: Vec<Box<str>>,
}

impl Interner {
    pub(crate) fn key(&mut self, name: &str) -> FeatureKey {
        let id = match self.ids.get(name) {
            Some(id) => *id,
            None => {
                let id = self.names.len() as u32;
                self.ids.insert(name.to_owned(), id);
                self.names.push(name.into());
                id
            }
        };
        FeatureKey {
            id,
            hash: name_hash(name),
            name: name.into(),
        }
    }
}

/// What condition compilation reads and records.
pub(crate) struct Env<'a> {
    pub(crate) interner: &'a mut Interner,
    pub(crate) segment_ids: &'a HashMap<String, u32>,
    /// Feature ids read directly by what is being compiled.
    pub(crate) features: BTreeSet<u32>,
    /// Segment ids referenced directly.
    pub(crate) segments: BTreeSet<u32>,
}

impl Env<'_> {
    pub(crate) fn feature(&mut self, name: &str) -> FeatureKey {
        let k = self.interner.key(name);
        self.features.insert(k.id);
        k
    }
}

pub(crate) fn compile_cond(
    ctx: &mut Ctx,
    v: &Value,
    env: &mut Env<'_>,
    depth: usize,
) -> Option<Cond> {
    if depth > MAX_DEPTH {
        ctx.error(format!(
            "conditions are nested deeper than {MAX_DEPTH} levels"
        ));
        return None;
    }
    let obj = ctx.object(v)?;
    for comb in ["all", "any", "not", "segment"] {
        if let Some(inner) = obj.get(comb) {
            if obj.len() != 1 {
                ctx.error(format!("a {comb:?} condition must have no other fields"));
                return None;
            }
            return ctx.field(comb, |ctx| match comb {
                "not" => Some(Cond::Not(Box::new(compile_cond(
                    ctx,
                    inner,
                    env,
                    depth + 1,
                )?))),
                "segment" => {
                    let Value::String(name) = inner else {
                        ctx.error(format!("expected a segment name, found {}", kind(inner)));
                        return None;
                    };
                    match env.segment_ids.get(name) {
                        Some(id) => {
                            env.segments.insert(*id);
                            Some(Cond::Segment(*id))
                        }
                        None => {
                            ctx.error(format!("unknown segment {name:?}"));
                            None
                        }
                    }
                }
                _ => {
                    let items = ctx.array(inner)?;
                    let mut out = Vec::with_capacity(items.len());
                    let mut ok = true;
                    for (i, item) in items.iter().enumerate() {
                        match ctx.index(i, |ctx| compile_cond(ctx, item, env, depth + 1)) {
                            Some(c) => out.push(c),
                            None => ok = false,
                        }
                    }
                    ok.then(|| {
                        if comb == "all" {
                            Cond::All(out)
                        } else {
                            Cond::Any(out)
                        }
                    })
                }
            });
        }
    }
    ctx.check_keys(obj, &["feature", "op", "value"]);
    let feature = ctx.id_field(obj, "feature");
    let op = ctx.str_field(obj, "op", true);
    let (feature, op) = (feature?, op?);
    let value = obj.get("value");
    let test = compile_test(ctx, op, value)?;
    Some(Cond::Test(env.feature(feature), test))
}

/// The comparison named by an operator suffix (`lt`, `le`, `gt`, `ge`, `eq`).
fn cmp(s: &str) -> Option<Cmp> {
    match s {
        "lt" => Some(Cmp::Lt),
        "le" => Some(Cmp::Le),
        "gt" => Some(Cmp::Gt),
        "ge" => Some(Cmp::Ge),
        "eq" => Some(Cmp::Eq),
        _ => None,
    }
}

fn compile_test(ctx: &mut Ctx, op: &str, value: Option<&Value>) -> Option<Test> {
    if matches!(op, "exists" | "missing") {
        if value.is_some() {
            ctx.error(format!("operator {op:?} takes no value"));
            return None;
        }
        return Some(if op == "exists" {
            Test::Exists
        } else {
            Test::Missing
        });
    }
    let known = matches!(
        op,
        "eq" | "ne"
            | "in"
            | "not_in"
            | "lt"
            | "le"
            | "gt"
            | "ge"
            | "between"
            | "starts_with"
            | "ends_with"
            | "contains"
            | "matches"
            | "semver_match"
            | "before"
            | "after"
    ) || op.strip_prefix("semver_").and_then(cmp).is_some();
    if !known {
        ctx.error(format!(
            "unknown operator {op:?} (expected one of: {OPERATORS})"
        ));
        return None;
    }
    let Some(v) = value else {
        ctx.error(format!("operator {op:?} needs a \"value\""));
        return None;
    };
    ctx.field("value", |ctx| compile_operand(ctx, op, v))
}

/// The operand of a known operator, at the path of its `value`.
fn compile_operand(ctx: &mut Ctx, op: &str, v: &Value) -> Option<Test> {
    let text = |ctx: &mut Ctx| match v {
        Value::String(s) => Some(s.as_str()),
        other => {
            ctx.error(format!(
                "operator {op:?} needs a string, found {}",
                kind(other)
            ));
            None
        }
    };
    Some(match op {
        "eq" | "ne" => {
            let lit = match v {
                Value::Bool(b) => Lit::Bool(*b),
                Value::String(s) => Lit::Str(s.as_str().into()),
                Value::Number(_) => Lit::Num(ctx.number(v)?),
                other => {
                    ctx.error(format!(
                        "operator {op:?} needs a string, number or boolean, found {}",
                        kind(other)
                    ));
                    return None;
                }
            };
            if op == "eq" {
                Test::Eq(lit)
            } else {
                Test::Ne(lit)
            }
        }
        "in" | "not_in" => {
            let items = ctx.array(v)?;
            let mut set = Set::default();
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::String(s) => {
                        set.strs.insert(s);
                    }
                    Value::Number(n) if n.as_i64().is_some() => {
                        set.ints.extend(n.as_i64());
                    }
                    other => ctx.index(i, |c| {
                        c.error(format!(
                            "in-lists hold strings or integers, found {}",
                            kind(other)
                        ))
                    }),
                }
            }
            if op == "in" {
                Test::In(set)
            } else {
                Test::NotIn(set)
            }
        }
        "lt" | "le" | "gt" | "ge" => Test::Num(cmp(op)?, ctx.number(v)?),
        "between" => {
            let items = ctx.array(v)?;
            if items.len() != 2 {
                ctx.error(format!(
                    "\"between\" needs [low, high], found {} element(s)",
                    items.len()
                ));
                return None;
            }
            let lo = ctx.index(0, |c| c.number(&items[0]));
            let hi = ctx.index(1, |c| c.number(&items[1]));
            let (lo, hi) = (lo?, hi?);
            if lo > hi {
                ctx.error(format!("\"between\" low {lo} is greater than high {hi}"));
                return None;
            }
            Test::Between(lo, hi)
        }
        "starts_with" => Test::StartsWith(text(ctx)?.into()),
        "ends_with" => Test::EndsWith(text(ctx)?.into()),
        "contains" => Test::Contains(text(ctx)?.into()),
        "matches" => match shared_regex(text(ctx)?) {
            Ok(re) => Test::Matches(re),
            Err(e) => {
                ctx.error(format!("invalid regex: {}", one_line(&e.to_string())));
                return None;
            }
        },
        "semver_match" => match VersionReq::parse(text(ctx)?) {
            Ok(r) => Test::SemverReq(r),
            Err(e) => {
                ctx.error(format!("invalid semver requirement: {e}"));
                return None;
            }
        },
        "before" | "after" => {
            let t = match v {
                Value::Number(n) if n.as_i64().is_some() => {
                    n.as_i64().map(|s| i128::from(s) * 1_000_000_000)
                }
                Value::String(s) => parse_instant(s),
                _ => None,
            };
            let Some(t) = t else {
                ctx.error(format!(
                    "operator {op:?} needs an RFC 3339 timestamp, a YYYY-MM-DD date or integer unix seconds, found {v}"
                ));
                return None;
            };
            if op == "before" {
                Test::Before(t)
            } else {
                Test::After(t)
            }
        }
        _ => {
            // semver_<cmp>
            let c = op.strip_prefix("semver_").and_then(cmp)?;
            match Version::parse(text(ctx)?) {
                Ok(ver) => Test::Semver(c, ver),
                Err(e) => {
                    ctx.error(format!("invalid semver version: {e}"));
                    return None;
                }
            }
        }
    })
}

/// Compiled regexes shared by every config that uses the same pattern. A `Regex` keeps its
/// per-thread search caches in its own pool (a clone gets a fresh one), so reusing the same
/// `Arc<Regex>` across config swaps keeps those caches warm: the first search after a swap
/// allocates nothing. Entries no snapshot uses any more are dropped by [`prune_regexes`].
fn regexes() -> &'static Mutex<HashMap<String, Arc<Regex>>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<Regex>>>> = OnceLock::new();
    CACHE.get_or_init(Mutex::default)
}

fn shared_regex(pattern: &str) -> Result<Arc<Regex>, regex::Error> {
    let mut cache = regexes().lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(re) = cache.get(pattern) {
        return Ok(Arc::clone(re));
    }
    let re = Arc::new(RegexBuilder::new(pattern).size_limit(1 << 20).build()?);
    cache.insert(pattern.to_owned(), Arc::clone(&re));
    Ok(re)
}

/// Drops cached regexes that no live snapshot (or config being compiled) references.
pub(crate) fn prune_regexes() {
    let mut cache = regexes().lock().unwrap_or_else(PoisonError::into_inner);
    cache.retain(|_, re| Arc::strong_count(re) > 1);
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Compiled segments: conditions indexed by id, and the features each reads transitively.
pub(crate) struct Segments {
    pub(crate) names: Vec<Box<str>>,
    pub(crate) conds: Vec<Cond>,
    pub(crate) features: Vec<BTreeSet<u32>>,
}

pub(crate) fn compile_segments(
    ctx: &mut Ctx,
    v: Option<&Value>,
    interner: &mut Interner,
    ids: &mut HashMap<String, u32>,
) -> Segments {
    let mut out = Segments {
        names: Vec::new(),
        conds: Vec::new(),
        features: Vec::new(),
    };
    let Some(v) = v else { return out };
    let Some(obj) = ctx.field("segments", |c| c.object(v)) else {
        return out;
    };
    for (i, name) in obj.keys().enumerate() {
        ctx.field("segments", |c| c.field(name, |c| c.name_fits(name)));
        ids.insert(name.clone(), i as u32);
        out.names.push(name.as_str().into());
    }
    let mut refs = Vec::with_capacity(obj.len());
    let mut ok = true;
    for (name, body) in obj {
        let mut env = Env {
            interner,
            segment_ids: ids,
            features: BTreeSet::new(),
            segments: BTreeSet::new(),
        };
        let c = ctx.field("segments", |c| {
            c.field(name, |c| compile_cond(c, body, &mut env, 0))
        });
        ok &= c.is_some();
        out.conds.push(c.unwrap_or(Cond::All(Vec::new())));
        out.features.push(env.features);
        refs.push(env.segments);
    }
    match check_graph(&refs) {
        Ok(()) => {}
        Err(GraphProblem::Cycle(cycle)) => {
            let path: Vec<&str> = cycle.iter().map(|&i| &*out.names[i]).collect();
            ctx.field("segments", |c| {
                c.field(path[0], |c| {
                    c.error(format!("cyclic segment reference: {}", path.join(" → ")))
                });
            });
            return out;
        }
        Err(GraphProblem::TooDeep(i)) => {
            ctx.field("segments", |c| {
                c.field(&out.names[i], |c| {
                    c.error(format!(
                        "segments reference each other more than {MAX_DEPTH} levels deep"
                    ))
                })
            });
            return out;
        }
    }
    if ok {
        // Transitive feature sets, in dependency order (acyclic now).
        let mut done = vec![false; refs.len()];
        for i in 0..refs.len() {
            close(i, &refs, &mut out.features, &mut done);
        }
    }
    out
}

fn close(i: usize, refs: &[BTreeSet<u32>], features: &mut [BTreeSet<u32>], done: &mut [bool]) {
    if done[i] {
        return;
    }
    done[i] = true;
    for &j in &refs[i] {
        close(j as usize, refs, features, done);
        let inherited = features[j as usize].clone();
        features[i].extend(inherited);
    }
}

enum GraphProblem {
    /// A closed path of segment indices.
    Cycle(Vec<usize>),
    /// A reference chain longer than `MAX_DEPTH`, starting at this segment.
    TooDeep(usize),
}

/// Checks the segment reference graph for cycles and over-long chains. The search never
/// goes deeper than `MAX_DEPTH + 1`, so hostile configs cannot exhaust the stack.
fn check_graph(refs: &[BTreeSet<u32>]) -> Result<(), GraphProblem> {
    // 0 = unvisited, 1 = on stack, 2 = done
    fn dfs(
        i: usize,
        refs: &[BTreeSet<u32>],
        state: &mut [u8],
        height: &mut [usize],
        stack: &mut Vec<usize>,
    ) -> Result<(), GraphProblem> {
        if stack.len() > MAX_DEPTH {
            return Err(GraphProblem::TooDeep(stack[0]));
        }
        state[i] = 1;
        stack.push(i);
        for &j in &refs[i] {
            let j = j as usize;
            match state[j] {
                1 => {
                    let start = stack.iter().position(|&s| s == j).unwrap_or(0);
                    let mut cyc = stack[start..].to_vec();
                    cyc.push(j);
                    return Err(GraphProblem::Cycle(cyc));
                }
                0 => dfs(j, refs, state, height, stack)?,
                _ => {}
            }
            height[i] = height[i].max(height[j] + 1);
        }
        height[i] = height[i].max(1);
        if height[i] > MAX_DEPTH {
            return Err(GraphProblem::TooDeep(i));
        }
        stack.pop();
        state[i] = 2;
        Ok(())
    }
    let mut state = vec![0u8; refs.len()];
    let mut height = vec![0usize; refs.len()];
    let mut stack = Vec::new();
    for i in 0..refs.len() {
        if state[i] == 0 {
            dfs(i, refs, &mut state, &mut height, &mut stack)?;
        }
    }
    Ok(())
}
