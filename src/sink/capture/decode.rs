//! The writer's side: reading a record back and writing its JSON.

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

use super::encode::unpack_reason;
use super::{HAS_MODEL, HAS_PASS, HEADER, SLOT_NAME};
use crate::decision::{DecisionId, FeatureStatus};
use crate::sink::record::{ArmProbability, RecordReason, RECORD_SCHEMA};
use crate::snapshot::{RawReason, Snapshot};

/// A record as the writer reads it back.
pub(crate) struct Captured<'a> {
    pub(super) snap: &'a Snapshot,
    pub(super) slot: u32,
    pub(super) variant: u32,
    pub(super) reason: RawReason,
    pub(super) propensity: f64,
    pub(super) model_version: Option<u64>,
    pub(super) id: DecisionId,
    pub(super) status: FeatureStatus,
    pub(super) timestamp_ms: u64,
    /// The user id (the Kafka message key).
    pub(crate) user: &'a str,
    pub(super) slot_name: &'a str,
    pub(super) features: &'a [u8],
    pub(super) probs: &'a [u8],
    pub(super) pass: f64,
}

/// The JSON of a [`Captured`]: the same fields, names and order as
/// [`DecisionRecord`](super::DecisionRecord) (the sink tests decode every line as one).
#[derive(Serialize)]
pub(super) struct Line<'a> {
    pub(super) schema: u32,
    pub(super) id: DecisionId,
    pub(super) timestamp_ms: u64,
    pub(super) slot: &'a str,
    pub(super) user: &'a str,
    pub(super) variant: Option<&'a str>,
    pub(super) reason: RecordReason,
    pub(super) propensity: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) probabilities: Option<Vec<ArmProbability>>,
    pub(super) features: EncodedFeatures<'a>,
    pub(super) feature_status: &'a str,
    pub(super) config_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) model_version: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) pass_probability: Option<f64>,
}

impl Captured<'_> {
    /// Appends the record's JSON object (no newline) to `out`.
    pub(crate) fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        let probabilities = self
            .snap
            .bandit_spec(self.slot, self.reason)
            .filter(|_| !self.probs.is_empty())
            .map(|spec| {
                spec.arm_ids
                    .iter()
                    .zip(self.probs.chunks_exact(8))
                    .map(|(v, b)| ArmProbability::new(v, f64::from_le_bytes(word(b))))
                    .collect()
            });
        let names = self
            .snap
            .slots
            .get(self.slot as usize)
            .map_or(&[][..], |s| &s.features);
        let line = Line {
            schema: RECORD_SCHEMA,
            id: self.id,
            timestamp_ms: self.timestamp_ms,
            slot: self.slot_name,
            user: self.user,
            variant: self.snap.variant(self.slot, self.variant).map(|v| &*v.id),
            reason: self.snap.resolve_reason(self.slot, self.reason).into(),
            propensity: self.propensity,
            probabilities,
            features: EncodedFeatures {
                names,
                bytes: self.features,
            },
            feature_status: self.status.as_str(),
            config_version: self.snap.version(),
            model_version: self.model_version,
            pass_probability: (self.pass < 1.0).then_some(self.pass),
        };
        serde_json::to_writer(out, &line)
    }
}

/// Up to 8 bytes as a little-endian word's bytes (zero-padded).
pub(super) fn word(b: &[u8]) -> [u8; 8] {
    let mut a = [0u8; 8];
    let n = b.len().min(8);
    a[..n].copy_from_slice(&b[..n]);
    a
}

/// Decodes [`encode_features`]' bytes while serializing them as a JSON object.
pub(super) struct EncodedFeatures<'a> {
    pub(super) names: &'a [Box<str>],
    pub(super) bytes: &'a [u8],
}

/// Reads the encoded feature bytes front to back.
pub(super) struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    pub(super) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    pub(super) fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    pub(super) fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub(super) fn u64(&mut self) -> Option<[u8; 8]> {
        self.take(8).map(word)
    }
    pub(super) fn text(&mut self) -> Option<&'a str> {
        let n = self.u32()? as usize;
        std::str::from_utf8(self.take(n)?).ok()
    }
}

/// A list of strings, serialized from its encoding.
pub(super) struct EncodedList<'a> {
    pub(super) n: u32,
    pub(super) bytes: &'a [u8],
}

impl Serialize for EncodedList<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut c = Cursor(self.bytes);
        let mut seq = s.serialize_seq(Some(self.n as usize))?;
        for _ in 0..self.n {
            let t = c.text().ok_or_else(|| bad_encoding::<S>())?;
            seq.serialize_element(t)?;
        }
        seq.end()
    }
}

pub(super) fn bad_encoding<S: Serializer>() -> S::Error {
    serde::ser::Error::custom("a captured decision record is malformed")
}

impl Serialize for EncodedFeatures<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        let mut c = Cursor(self.bytes);
        while !c.0.is_empty() {
            let entry = (|| {
                let name = &**self.names.get(c.u32()? as usize)?;
                Some(match c.u8()? {
                    t @ (0 | 1) => map.serialize_entry(name, &(t == 1)),
                    2 => map.serialize_entry(name, &i64::from_le_bytes(c.u64()?)),
                    3 => map.serialize_entry(name, &f64::from_le_bytes(c.u64()?)),
                    4 => map.serialize_entry(name, c.text()?),
                    5 => {
                        let n = c.u32()?;
                        let start = c.0;
                        for _ in 0..n {
                            c.text()?;
                        }
                        let used = start.len() - c.0.len();
                        map.serialize_entry(
                            name,
                            &EncodedList {
                                n,
                                bytes: &start[..used],
                            },
                        )
                    }
                    _ => return None,
                })
            })();
            match entry {
                Some(r) => r?,
                None => return Err(bad_encoding::<S>()),
            }
        }
        map.end()
    }
}

pub(super) fn read_record<'a>(
    snap: &'a Snapshot,
    h0: u64,
    w: &impl Fn(u64) -> u64,
    bytes: &'a [u8],
) -> Option<Captured<'a>> {
    let flags = h0 >> 32 & 0xff;
    let lens = w(7);
    let (user_len, features_len) = (lens as u32 as usize, (lens >> 32) as usize);
    let probs_len = 8 * (h0 >> 48) as usize;
    let slot_variant = w(5);
    let (slot, variant) = (slot_variant as u32, (slot_variant >> 32) as u32);
    let (user, rest) = bytes.split_at_checked(user_len)?;
    let (slot_name, rest) = if flags & SLOT_NAME != 0 {
        let mut c = Cursor(rest);
        let name = c.text()?;
        (name, c.0)
    } else {
        (&*snap.slots.get(slot as usize)?.id, rest)
    };
    let (features, rest) = rest.split_at_checked(features_len)?;
    let probs = rest.get(..probs_len)?;
    Some(Captured {
        snap,
        slot,
        variant,
        reason: unpack_reason(w(6))?,
        propensity: f64::from_bits(w(4)),
        model_version: (flags & HAS_MODEL != 0).then(|| w(HEADER)),
        pass: if flags & HAS_PASS != 0 {
            f64::from_bits(w(HEADER + u64::from(flags & HAS_MODEL != 0)))
        } else {
            1.0
        },
        id: DecisionId::from_u128(u128::from(w(1)) | u128::from(w(2)) << 64),
        status: FeatureStatus::try_from((h0 >> 40) as u8).ok()?,
        timestamp_ms: w(3),
        user: std::str::from_utf8(user).ok()?,
        slot_name,
        features,
        probs,
    })
}
