//! The deciding thread's side: encoding a decision into its ring.

use std::cell::RefCell;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::Arc;
use std::time::Duration;

use super::ring::{lock, Ring};
use super::{extra_words, Queue, HAS_MODEL, HAS_PASS, HEADER, NEW_SNAP, SLOT_NAME, SNAPS};
use crate::features::Value;
use crate::kinds::FallbackKind;
use crate::sink::{DecisionEvent, Overflow};
use crate::snapshot::{RawCause, RawReason};

/// A deciding thread's end of a ring.
pub(super) struct Producer {
    pub(super) queue: u64,
    pub(super) ring: Arc<Ring>,
    pub(super) st: ProducerState,
}

/// A producer's positions and counts (apart from the ring, to borrow both at once).
#[derive(Default)]
pub(super) struct ProducerState {
    pub(super) capacity: u64,
    pub(super) tail: u64,
    pub(super) records: u64,
    /// The consumer's positions as last read (refreshed only when the ring looks full).
    pub(super) head: u64,
    pub(super) head_records: u64,
    /// Address of the snapshot last passed to the writer.
    pub(super) snap: usize,
    pub(super) offered: u64,
    pub(super) dropped: u64,
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.ring.closed.store(true, Release);
    }
}

/// What became of one record offered to a ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Push {
    Done,
    /// No room now (the writer is behind): waiting may help.
    Full,
    /// Can never fit this ring.
    Never,
}

/// A thread's producers (one per sink it recorded to) and its encoding scratch.
#[derive(Default)]
pub(super) struct Local {
    pub(super) producers: Vec<Producer>,
    pub(super) scratch: Vec<u8>,
}

thread_local! {
    pub(super) static LOCAL: RefCell<Local> = RefCell::new(Local::default());
}

/// Scratch capacity kept between records; a larger buffer is shrunk back after use.
pub(super) const SCRATCH_KEEP: usize = 16 * 1024;

impl Producer {
    pub(super) fn push(&mut self, event: &DecisionEvent<'_>, scratch: &mut Vec<u8>, queue: &Queue) {
        let (ring, st) = (&*self.ring, &mut self.st);
        st.offered += 1;
        ring.producer.0.offered.store(st.offered, Relaxed);
        let mut outcome = st.try_push(ring, event, scratch);
        if let (Push::Full, Overflow::Block(bound)) = (outcome, queue.overflow) {
            // Wait for the writer to make room, at most `bound`.
            let deadline = crate::clock::deadline(bound);
            while outcome == Push::Full && std::time::Instant::now() < deadline {
                queue.wake();
                std::thread::sleep(Duration::from_micros(50));
                outcome = st.try_push(ring, event, scratch);
            }
        }
        if outcome != Push::Done {
            st.dropped += 1;
            ring.producer.0.dropped.store(st.dropped, Release);
        }
        if scratch.capacity() > SCRATCH_KEEP {
            scratch.clear();
            scratch.shrink_to(SCRATCH_KEEP);
        }
    }
}

impl ProducerState {
    /// Writes the record; `false` when the ring has no room for it.
    /// Writes the record, or says why it could not.
    pub(super) fn try_push(
        &mut self,
        ring: &Ring,
        event: &DecisionEvent<'_>,
        scratch: &mut Vec<u8>,
    ) -> Push {
        let d = event.decision;
        let o = &d.outcome;
        // A full ring (by count) drops before paying for the encoding.
        if self.records - self.head_records >= self.capacity {
            self.head_records = ring.consumer.0.records.load(Acquire);
            if self.records - self.head_records >= self.capacity {
                return Push::Full;
            }
        }
        scratch.clear();
        encode_features(event, scratch);
        let probs = o.bandit.as_ref().map_or(&[][..], |b| b.probs());
        // The engine resolved `d.slot` from `event.slot` by exact name, so the snapshot has
        // the name unless the slot is unknown.
        let slot_name = d
            .snap
            .slots
            .get(d.slot as usize)
            .is_none()
            .then_some(event.slot);
        let (Ok(user_len), Ok(slot_len), Ok(features_len), Ok(n_probs)) = (
            u32::try_from(event.user.len()),
            u32::try_from(slot_name.map_or(0, str::len)),
            u32::try_from(scratch.len()),
            u16::try_from(probs.len()),
        ) else {
            return Push::Never;
        };
        let payload = event.user.len()
            + slot_name.map_or(0, |s| 4 + s.len())
            + scratch.len()
            + 8 * probs.len();
        let mut flags = 0;
        if o.bandit.is_some() {
            flags |= HAS_MODEL;
        }
        if slot_name.is_some() {
            flags |= SLOT_NAME;
        }
        if event.pass < 1.0 {
            flags |= HAS_PASS;
        }
        let n = HEADER + extra_words(flags) + payload.div_ceil(8) as u64;
        let size = ring.mask + 1;
        if n > size || n > u64::from(u32::MAX) {
            return Push::Never;
        }
        // Room by count was checked above; now room by words.
        if self.tail + n - self.head > size {
            self.head = ring.consumer.0.head.load(Acquire);
            if self.tail + n - self.head > size {
                return Push::Full;
            }
        }
        let snap = Arc::as_ptr(&d.snap.0) as usize;
        if snap != self.snap {
            let mut snaps = lock(&ring.snaps);
            // Bounded and never grown here: a writer this far behind costs a record.
            if snaps.len() == SNAPS {
                return Push::Full;
            }
            snaps.push_back(Arc::clone(&d.snap.0));
            self.snap = snap;
            flags |= NEW_SNAP;
        }
        let mut out = Words {
            ring,
            at: self.tail,
            acc: 0,
            fill: 0,
        };
        let status = d.features as u64;
        out.word(n | flags << 32 | status << 40 | u64::from(n_probs) << 48);
        let id = d.id.as_u128();
        out.word(id as u64);
        out.word((id >> 64) as u64);
        out.word(event.timestamp_ms());
        out.word(o.propensity.to_bits());
        out.word(u64::from(d.slot) | u64::from(o.variant) << 32);
        out.word(pack_reason(o.reason));
        out.word(u64::from(user_len) | u64::from(features_len) << 32);
        if let Some(b) = &o.bandit {
            out.word(b.model_version);
        }
        if flags & HAS_PASS != 0 {
            out.word(event.pass.to_bits());
        }
        out.bytes(event.user.as_bytes());
        if let Some(name) = slot_name {
            out.bytes(&slot_len.to_le_bytes());
            out.bytes(name.as_bytes());
        }
        out.bytes(scratch);
        for p in probs {
            out.bytes(&p.to_le_bytes());
        }
        out.finish();
        debug_assert_eq!(out.at, self.tail + n);
        self.tail += n;
        self.records += 1;
        ring.producer.0.tail.store(self.tail, Release);
        Push::Done
    }
}

/// Writes a record's words and bytes into a ring from a position (room already checked).
pub(super) struct Words<'r> {
    pub(super) ring: &'r Ring,
    pub(super) at: u64,
    /// Bytes not yet stored (little-endian), `fill` of them.
    pub(super) acc: u64,
    pub(super) fill: u32,
}

impl Words<'_> {
    #[inline]
    pub(super) fn word(&mut self, v: u64) {
        self.ring.word(self.at).store(v, Relaxed);
        self.at += 1;
    }

    /// Appends bytes: whole words while at a word boundary, the rest one by one.
    #[inline]
    pub(super) fn bytes(&mut self, mut b: &[u8]) {
        if self.fill == 0 {
            while let Some((w, rest)) = b.split_first_chunk::<8>() {
                self.word(u64::from_le_bytes(*w));
                b = rest;
            }
        }
        for &x in b {
            self.acc |= u64::from(x) << (8 * self.fill);
            self.fill += 1;
            if self.fill == 8 {
                self.finish();
            }
        }
    }

    /// Stores the partial word, zero-padded (the last one of a record).
    #[inline]
    pub(super) fn finish(&mut self) {
        if self.fill > 0 {
            let w = std::mem::take(&mut self.acc);
            self.fill = 0;
            self.word(w);
        }
    }
}

/// Appends the features the event's slot reads: per feature its position in the slot's
/// feature list (u32), a tag and the value.
pub(super) fn encode_features(event: &DecisionEvent<'_>, out: &mut Vec<u8>) {
    let text = |out: &mut Vec<u8>, s: &str| {
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    };
    for (i, _, v) in event.features_used_at() {
        out.extend_from_slice(&(i as u32).to_le_bytes());
        match v {
            Value::Bool(b) => out.push(u8::from(*b)),
            Value::Int(x) => {
                out.push(2);
                out.extend_from_slice(&x.to_le_bytes());
            }
            Value::Float(x) => {
                out.push(3);
                out.extend_from_slice(&x.to_le_bytes());
            }
            Value::Str(s) => {
                out.push(4);
                text(out, s);
            }
            Value::List(l) => {
                out.push(5);
                out.extend_from_slice(&(l.len() as u32).to_le_bytes());
                for s in l {
                    text(out, s);
                }
            }
        }
    }
}

/// A reason in one word: tag in the top byte, a 16-bit and a 32-bit field below.
pub(super) fn pack_reason(r: RawReason) -> u64 {
    let (tag, a, b): (u64, u16, u32) = match r {
        RawReason::Rule { rule, bucket } => (0, rule, bucket),
        RawReason::Holdout { layer: None } => (1, 0, 0),
        RawReason::Holdout { layer: Some(l) } => (2, 0, l),
        RawReason::NotInLayer { layer } => (3, 0, layer),
        RawReason::Default => (4, 0, 0),
        RawReason::KillSwitch => (5, 0, 0),
        RawReason::UnknownSlot => (6, 0, 0),
        // The cause is numbered by its `FallbackKind`.
        RawReason::Fallback(c) => (FALLBACK_TAG, u16::from(c.kind() as u8), c.feature()),
        RawReason::Sticky { version } => (STICKY_TAG, 0, version),
    };
    tag << 56 | u64::from(a) << 32 | u64::from(b)
}

/// The tag of a fallback reason (its cause's kind number follows in `a`).
const FALLBACK_TAG: u64 = 7;
/// The tag of a sticky reason (its bucket version in `b`).
const STICKY_TAG: u64 = 8;

pub(super) fn unpack_reason(w: u64) -> Option<RawReason> {
    let (a, b) = ((w >> 32) as u16, w as u32);
    Some(match w >> 56 {
        0 => RawReason::Rule { rule: a, bucket: b },
        1 => RawReason::Holdout { layer: None },
        2 => RawReason::Holdout { layer: Some(b) },
        3 => RawReason::NotInLayer { layer: b },
        4 => RawReason::Default,
        5 => RawReason::KillSwitch,
        6 => RawReason::UnknownSlot,
        FALLBACK_TAG => {
            let kind = FallbackKind::try_from(u8::try_from(a).ok()?).ok()?;
            RawReason::Fallback(RawCause::from_kind(kind, b))
        }
        STICKY_TAG => RawReason::Sticky { version: b },
        _ => return None,
    })
}
