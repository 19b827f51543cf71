//! The updater's dead-letter topic: messages it cannot use, written and confirmed before
//! the offsets that skip them are committed.

use std::sync::Mutex;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Message};

use super::KafkaError;

/// How much of a message's payload a truncated dead letter keeps.
pub(crate) const TRUNCATED_PREFIX: usize = 64 * 1024;

/// A consumed message, kept until its fate is settled.
#[derive(Debug, Clone)]
pub(crate) struct Raw {
    pub(crate) payload: Vec<u8>,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
}

impl Raw {
    pub(crate) fn of(m: &rdkafka::message::BorrowedMessage<'_>) -> Self {
        Raw {
            payload: m.payload().unwrap_or_default().to_vec(),
            key: m.key().map(<[u8]>::to_vec),
            topic: m.topic().to_owned(),
            partition: m.partition(),
            offset: m.offset(),
        }
    }
}

/// A message on its way to the dead-letter topic.
struct Letter {
    raw: Raw,
    error: String,
    /// Sent as a bounded prefix with its original size (too large for the topic whole).
    truncated: bool,
}

/// Delivery results of the letters of one round, by index.
#[derive(Default)]
struct Results(Mutex<Vec<(usize, Result<(), RdKafkaError>)>>);

impl ClientContext for Results {}

impl ProducerContext for Results {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, i: usize) {
        let r = result.as_ref().map(|_| ()).map_err(|(e, _)| e.clone());
        if let Ok(mut v) = self.0.lock() {
            v.push((i, r));
        }
    }
}

/// What one round of sending achieved.
#[derive(Debug, Default)]
pub(crate) struct Round {
    /// Letters the broker confirmed.
    pub(crate) confirmed: u64,
    /// Letters that failed this round (kept for the next).
    pub(crate) failed: u64,
    /// The last failure, if any.
    pub(crate) error: Option<String>,
}

/// The dead-letter producer and the letters not yet confirmed.
pub(crate) struct DeadLetters {
    producer: BaseProducer<Results>,
    topic: String,
    pending: Vec<Letter>,
    /// Largest message the producer takes whole (its `message.max.bytes`).
    max_bytes: usize,
}

impl DeadLetters {
    pub(crate) fn new(
        brokers: &str,
        topic: &str,
        settings: &[(String, String)],
    ) -> Result<Self, KafkaError> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", brokers)
            .set("acks", "all")
            .set("message.timeout.ms", "10000");
        for (k, v) in settings {
            config.set(k, v);
        }
        let max_bytes = config
            .get("message.max.bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000);
        let producer = config
            .create_with_context(Results::default())
            .map_err(|e| KafkaError::rdkafka("", &e))?;
        Ok(DeadLetters {
            producer,
            topic: topic.to_owned(),
            pending: Vec::new(),
            max_bytes,
        })
    }

    /// Queues a message for the dead-letter topic with the reason it is there.
    pub(crate) fn add(&mut self, raw: Raw, error: String) {
        let truncated =
            raw.payload.len() + raw.key.as_ref().map_or(0, Vec::len) + error.len() + 512
                > self.max_bytes;
        self.pending.push(Letter {
            raw,
            error,
            truncated,
        });
    }

    /// Letters not yet confirmed.
    pub(crate) fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Sends every pending letter and waits (at most `timeout`) for the broker to confirm
    /// them. Confirmed letters are done; a letter the topic refuses as too large is turned
    /// into a truncated one and sent again in this round; others stay pending.
    pub(crate) fn send(&mut self, timeout: Duration) -> Round {
        let mut round = Round::default();
        for _attempt in 0..2 {
            if self.pending.is_empty() {
                break;
            }
            if let Ok(mut v) = self.producer.context().0.lock() {
                v.clear();
            }
            let mut sent = vec![false; self.pending.len()];
            let mut retry_truncated = false;
            for (i, ok) in sent.iter_mut().enumerate() {
                let letter = &self.pending[i];
                match self.producer.send(record(&self.topic, letter, i)) {
                    Ok(()) => *ok = true,
                    Err((e, _)) => {
                        if too_large(&e) && !letter.truncated {
                            retry_truncated = true;
                            self.pending[i].truncated = true;
                        }
                        round.error = Some(format!("dead-letter send: {e}"));
                    }
                }
            }
            let _ = self.producer.flush(timeout);
            let results = self
                .producer
                .context()
                .0
                .lock()
                .map(|mut v| std::mem::take(&mut *v))
                .unwrap_or_default();
            let mut done = vec![false; self.pending.len()];
            for (i, r) in results {
                match r {
                    Ok(()) => {
                        if let Some(d) = done.get_mut(i) {
                            *d = true;
                        }
                    }
                    Err(e) => {
                        let too_large = too_large(&e);
                        if let Some(l) = self
                            .pending
                            .get_mut(i)
                            .filter(|l| too_large && !l.truncated)
                        {
                            l.truncated = true;
                            retry_truncated = true;
                        }
                        round.error = Some(format!("dead-letter delivery: {e}"));
                    }
                }
            }
            let unreported = sent.iter().zip(&done).any(|(s, d)| *s && !*d);
            if unreported && round.error.is_none() {
                round.error = Some(format!(
                    "dead-letter delivery not confirmed within {timeout:?}"
                ));
            }
            let mut i = 0;
            self.pending.retain(|_| {
                let keep = !done[i];
                i += 1;
                keep
            });
            round.confirmed += done.iter().filter(|d| **d).count() as u64;
            if !retry_truncated {
                break;
            }
        }
        round.failed = self.pending.len() as u64;
        round
    }
}

/// The broker or librdkafka refused a message for its size.
fn too_large(e: &RdKafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessageSize)
    )
}

/// The dead letter of `letter`: its key, its payload (or a bounded prefix), and headers with
/// the error and where it came from.
fn record<'a>(topic: &'a str, letter: &'a Letter, i: usize) -> BaseRecord<'a, [u8], [u8], usize> {
    let raw = &letter.raw;
    let partition = raw.partition.to_string();
    let offset = raw.offset.to_string();
    let size = raw.payload.len().to_string();
    let mut headers = OwnedHeaders::new()
        .insert(Header {
            key: "elvon-error",
            value: Some(letter.error.as_bytes()),
        })
        .insert(Header {
            key: "elvon-topic",
            value: Some(raw.topic.as_bytes()),
        })
        .insert(Header {
            key: "elvon-partition",
            value: Some(partition.as_bytes()),
        })
        .insert(Header {
            key: "elvon-offset",
            value: Some(offset.as_bytes()),
        });
    let payload = if letter.truncated {
        headers = headers
            .insert(Header {
                key: "elvon-truncated",
                value: Some(b"true"),
            })
            .insert(Header {
                key: "elvon-original-size",
                value: Some(size.as_bytes()),
            });
        &raw.payload[..raw.payload.len().min(TRUNCATED_PREFIX)]
    } else {
        &raw.payload[..]
    };
    let mut rec = BaseRecord::with_opaque_to(topic, i)
        .payload(payload)
        .headers(headers);
    if let Some(k) = &raw.key {
        rec = rec.key(&k[..k.len().min(TRUNCATED_PREFIX)]);
    }
    rec
}
