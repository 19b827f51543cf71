//! The compact form [`MemoryStore`](super::MemoryStore) keeps each user's features in: one
//! byte buffer per user, feature names as numbers into a process-wide table.
//!
//! A [`Features`] map is built for fast lookups (hashes, 56-byte entries, a heap string per
//! owned name and value): about 1 KB for a user with 10 features, most of it per-user copies
//! of the same names. Stored, the same user is a few dozen bytes: per feature a name number
//! (or, for a name the table does not hold, its bytes), a type byte and the value (integers
//! as zigzag varints, floats as 8 bytes, strings as length and bytes).
//!
//! The name table keeps the first [`NAME_TABLE`] distinct names without a `|` that any store
//! in the process meets, once, for the life of the process (bounded: at most `NAME_TABLE`
//! names of at most [`MAX_TABLE_NAME`] bytes). Other names, aggregate bucket fields
//! (`feature|bucket`) among them, are written into each user's buffer.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};

use super::{Features, Text, Value};
use crate::bucketing::name_hash;

/// How many names the process-wide table holds at most.
pub(crate) const NAME_TABLE: usize = 4_096;
/// Longer names are not put in the table.
pub(crate) const MAX_TABLE_NAME: usize = 64;

const FALSE: u8 = 0;
const TRUE: u8 = 1;
const INT: u8 = 2;
const FLOAT: u8 = 3;
const STR: u8 = 4;
const LIST: u8 = 5;

/// Number → name and its [`name_hash`], filled in order; read without a lock.
static NAMES: [OnceLock<(&'static str, u64)>; NAME_TABLE] = [const { OnceLock::new() }; NAME_TABLE];
/// Name → number, for writing.
static NUMBERS: Mutex<Option<Numbers>> = Mutex::new(None);

type Numbers = HashMap<&'static str, u32, ahash::RandomState>;

/// The table number of `name`, adding it if there is room.
fn number(numbers: &mut Numbers, name: &str) -> Option<u32> {
    if let Some(&n) = numbers.get(name) {
        return Some(n);
    }
    if name.len() > MAX_TABLE_NAME || name.contains('|') || numbers.len() >= NAME_TABLE {
        return None;
    }
    let n = numbers.len() as u32;
    let name: &'static str = Box::leak(name.to_owned().into_boxed_str());
    // The slot is empty: numbers are given out under the lock, in order.
    let _ = NAMES[n as usize].set((name, name_hash(name)));
    numbers.insert(name, n);
    Some(n)
}

fn table_name(n: u64) -> Option<(&'static str, u64)> {
    NAMES.get(usize::try_from(n).ok()?)?.get().copied()
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Encodes `features` (names through the process-wide table where it holds them).
pub(crate) fn pack(features: &Features) -> Box<[u8]> {
    let mut out = Vec::with_capacity(features.len() * 12 + 16);
    // The entry count first, so a decode sizes its map once.
    put_varint(&mut out, features.len() as u64);
    let mut guard = NUMBERS.lock().unwrap_or_else(PoisonError::into_inner);
    let numbers = guard.get_or_insert_with(Numbers::default);
    for (name, value) in features.iter() {
        // Name: `2n` for table number n, `2len + 1` and the bytes otherwise.
        match number(numbers, name) {
            Some(n) => put_varint(&mut out, u64::from(n) << 1),
            None => {
                put_varint(&mut out, ((name.len() as u64) << 1) | 1);
                out.extend_from_slice(name.as_bytes());
            }
        }
        match value {
            Value::Bool(false) => out.push(FALSE),
            Value::Bool(true) => out.push(TRUE),
            Value::Int(i) => {
                out.push(INT);
                put_varint(&mut out, ((*i << 1) ^ (*i >> 63)) as u64);
            }
            Value::Float(x) => {
                out.push(FLOAT);
                out.extend_from_slice(&x.to_bits().to_le_bytes());
            }
            Value::Str(s) => {
                out.push(STR);
                put_bytes(&mut out, s.as_bytes());
            }
            Value::List(l) => {
                out.push(LIST);
                put_varint(&mut out, l.len() as u64);
                for s in l {
                    put_bytes(&mut out, s.as_bytes());
                }
            }
        }
    }
    drop(guard);
    out.into_boxed_slice()
}

/// A stored value, borrowing the buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Packed<'a> {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str),
    /// The count and the encoded items.
    List(u64, &'a [u8]),
}

impl Packed<'_> {
    pub(crate) fn as_f64(self) -> Option<f64> {
        match self {
            Packed::Int(i) => Some(i as f64),
            Packed::Float(x) => Some(x),
            _ => None,
        }
    }

    pub(crate) fn to_value(self) -> Value {
        match self {
            Packed::Bool(b) => Value::Bool(b),
            Packed::Int(i) => Value::Int(i),
            Packed::Float(x) => Value::Float(x),
            Packed::Str(s) => Value::Str(Text::Owned(s.to_owned())),
            Packed::List(n, mut b) => {
                let mut items = Vec::with_capacity(usize::try_from(n).unwrap_or(0).min(b.len()));
                for _ in 0..n {
                    match take_str(&mut b) {
                        Some(s) => items.push(Text::Owned(s.to_owned())),
                        None => break,
                    }
                }
                Value::List(items)
            }
        }
    }
}

/// A stored name: from the table (no copy needed, its hash known) or from the buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Name<'a> {
    Table(&'static str, u64),
    Inline(&'a str),
}

impl Name<'_> {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Name::Table(s, _) => s,
            Name::Inline(s) => s,
        }
    }

    pub(crate) fn to_text(self) -> Text {
        match self {
            Name::Table(s, _) => Text::Borrowed(s),
            Name::Inline(s) => Text::Owned(s.to_owned()),
        }
    }

    /// [`name_hash`] of the name.
    fn hash(&self) -> u64 {
        match self {
            Name::Table(_, h) => *h,
            Name::Inline(s) => name_hash(s),
        }
    }
}

fn take_varint(b: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = b.split_first()?;
        *b = rest;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(v);
        }
    }
    None
}

fn take<'a>(b: &mut &'a [u8], n: u64) -> Option<&'a [u8]> {
    let n = usize::try_from(n).ok()?;
    if n > b.len() {
        return None;
    }
    let (head, rest) = b.split_at(n);
    *b = rest;
    Some(head)
}

fn take_str<'a>(b: &mut &'a [u8]) -> Option<&'a str> {
    let n = take_varint(b)?;
    std::str::from_utf8(take(b, n)?).ok()
}

/// The entries of a buffer `pack` wrote, in order. A malformed buffer (which `pack` never
/// writes) ends the iteration early.
pub(crate) fn entries(mut b: &[u8]) -> impl Iterator<Item = (Name<'_>, Packed<'_>)> {
    let _count = take_varint(&mut b);
    std::iter::from_fn(move || {
        let head = take_varint(&mut b)?;
        let name = if head & 1 == 0 {
            let (name, hash) = table_name(head >> 1)?;
            Name::Table(name, hash)
        } else {
            Name::Inline(std::str::from_utf8(take(&mut b, head >> 1)?).ok()?)
        };
        let (&tag, rest) = b.split_first()?;
        b = rest;
        let value = match tag {
            FALSE => Packed::Bool(false),
            TRUE => Packed::Bool(true),
            INT => {
                let z = take_varint(&mut b)?;
                Packed::Int(((z >> 1) as i64) ^ -((z & 1) as i64))
            }
            FLOAT => {
                let bytes: [u8; 8] = take(&mut b, 8)?.try_into().ok()?;
                Packed::Float(f64::from_bits(u64::from_le_bytes(bytes)))
            }
            STR => Packed::Str(take_str(&mut b)?),
            LIST => {
                let n = take_varint(&mut b)?;
                let start = b;
                for _ in 0..n {
                    take_str(&mut b)?;
                }
                Packed::List(n, &start[..start.len() - b.len()])
            }
            _ => return None,
        };
        Some((name, value))
    })
}

/// A buffer's entries by name hash, for lookups in one buffer (a windowed aggregate
/// reads one field per bucket): built once without copying a string, then each lookup is a
/// binary search.
pub(crate) struct Index<'a>(Vec<(u64, Name<'a>, Packed<'a>)>);

impl<'a> Index<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Self {
        let mut v: Vec<_> = entries(b).map(|(n, p)| (n.hash(), n, p)).collect();
        // Already in hash order as `pack` writes it; the sort only checks that.
        v.sort_by_key(|e| e.0);
        Index(v)
    }

    pub(crate) fn get(&self, name: &str) -> Option<Packed<'a>> {
        let h = name_hash(name);
        let from = self.0.partition_point(|e| e.0 < h);
        self.0[from..]
            .iter()
            .take_while(|e| e.0 == h)
            .find(|e| e.1.as_str() == name)
            .map(|e| e.2)
    }
}

/// Decodes a buffer back into a feature map (entries come in the map's own order, so
/// nothing is sorted).
pub(crate) fn unpack(b: &[u8]) -> Features {
    let count = take_varint(&mut &b[..]).map_or(0, |n| n.min(64) as usize);
    Features::from_ordered(
        count,
        entries(b).map(|(n, v)| (n.hash(), n.to_text(), v.to_value())),
    )
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn same(a: &Features, b: &Features) -> bool {
        a.len() == b.len()
            && a.iter().all(|(n, v)| match (v, b.get(n)) {
                (Value::Float(x), Some(Value::Float(y))) => x.to_bits() == y.to_bits(),
                (v, w) => Some(v) == w,
            })
    }

    /// Every value type and edge, table and inline names, survive a pack and unpack.
    #[test]
    fn every_value_type_round_trips() {
        let long = "n".repeat(MAX_TABLE_NAME + 1);
        let f = Features::new()
            .with("f", false)
            .with("t", true)
            .with("min", i64::MIN)
            .with("max", i64::MAX)
            .with("zero", 0)
            .with("neg", -1)
            .with("x", 0.1)
            .with("nan", f64::NAN)
            .with("inf", f64::NEG_INFINITY)
            .with("negzero", -0.0)
            .with("s", "KR")
            .with("empty", "")
            .with("utf8", "서울 ✓")
            .with("list", vec!["a", "", "서울"])
            .with("none", Vec::<&str>::new())
            .with("clicks|12345", 3)
            .with("", "empty name")
            .with(long.clone(), 1);
        let packed = pack(&f);
        let back = unpack(&packed);
        assert!(same(&f, &back), "{f:?}\n{back:?}");
        let index = Index::new(&packed);
        assert_eq!(
            index.get("max").map(|v| v.to_value()),
            Some(Value::Int(i64::MAX))
        );
        assert_eq!(
            index.get("clicks|12345").and_then(Packed::as_f64),
            Some(3.0)
        );
        assert_eq!(index.get(&long).and_then(Packed::as_f64), Some(1.0));
        for (name, value) in f.iter() {
            let found = index.get(name).map(Packed::to_value);
            assert_eq!(
                found.as_ref().map(Value::type_name),
                Some(value.type_name()),
                "{name}"
            );
            assert_eq!(
                found.as_ref().and_then(Value::as_f64).map(f64::to_bits),
                value.as_f64().map(f64::to_bits),
                "{name}"
            );
            assert_eq!(
                found.as_ref().and_then(Value::as_str),
                value.as_str(),
                "{name}"
            );
        }
        assert!(index.get("absent").is_none());
    }

    /// A truncated or corrupted buffer yields a prefix of its entries, never a panic.
    #[test]
    fn damaged_buffers_end_early() {
        let f = Features::new()
            .with("a", "xyz")
            .with("b", vec!["p", "q"])
            .with("c", 2.5);
        let packed = pack(&f);
        for cut in 0..packed.len() {
            assert!(unpack(&packed[..cut]).len() < f.len());
        }
        for i in 0..packed.len() {
            let mut bad = packed.to_vec();
            bad[i] = 0xff;
            let _ = unpack(&bad);
        }
    }

    proptest! {
        #[test]
        fn any_features_round_trip(entries in proptest::collection::vec(
            ("[a-z|]{0,6}", prop_oneof![
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(Value::Int),
                any::<f64>().prop_map(Value::Float),
                "\\PC{0,8}".prop_map(Value::from),
                proptest::collection::vec("\\PC{0,4}", 0..4).prop_map(Value::from),
            ]),
            0..12,
        )) {
            let f: Features = entries.into_iter().collect();
            let back = unpack(&pack(&f));
            prop_assert!(same(&f, &back), "{:?} vs {:?}", f, back);
        }
    }
}
