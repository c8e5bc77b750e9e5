//! The ledger's records and their hash chain.
//!
//! One JSON object per line. Each names the sha256 of the exact bytes of the line before it
//! (`prev`; the first names [`GENESIS`]), so changing, removing or reordering a line breaks the
//! chain at the next one. A `seal` record signs the head of the chain with the user's audit key
//! ([`super::key`]); the last record of a finished bottle is its final seal, so a ledger cut
//! short (even at an earlier seal) is told apart from a whole one.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Who wrote what the host itself saw and decided.
pub const HOST: &str = "host";
/// The `kind` of a seal.
pub const SEAL: &str = "seal";
/// The `kind` of the first record, which names the bottle.
pub const START: &str = "start";

/// Who a record's content comes from: the host (`host`), or a daemon of the bundle
/// (`bundle/egress`), whose word the host records but cannot vouch for.
pub type Writer = String;

/// The writer of what daemon `daemon` of the bundle reported.
pub fn bundle(daemon: &str) -> Writer {
    format!("bundle/{daemon}")
}

/// One line of the ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Its place, from 1.
    pub seq: u64,
    /// When it happened (RFC 3339, UTC).
    pub time: String,
    /// Who says so ([`HOST`] or [`bundle`]).
    pub writer: Writer,
    /// What it is: `start`, `request`, `stop`, `seal`…
    pub kind: String,
    /// Its fields.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub data: Map<String, Value>,
    /// The sha256 of the line before it.
    pub prev: String,
}

/// The hex sha256 of a line's bytes (without its newline).
pub fn line_hash(line: &str) -> String {
    Sha256::digest(line.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The bytes a seal signs: the bottle, the seal's place, the head it seals and whether it is
/// the last.
pub fn seal_message(slug: &str, seq: u64, head: &str, last: bool) -> Vec<u8> {
    format!("bottle-ledger-seal/1\n{slug}\n{seq}\n{head}\n{last}").into_bytes()
}

/// A ledger being written: its lines so far and the head of its chain.
#[derive(Debug, Clone)]
pub struct Chain {
    slug: String,
    lines: Vec<String>,
    head: String,
}

impl Chain {
    /// A new ledger for bottle `slug`, opened by its `start` record (`data` says what the run
    /// is: the plan's hash, the agent…).
    pub fn start(slug: &str, time: &str, mut data: Map<String, Value>) -> Chain {
        let mut chain = Chain {
            slug: slug.to_owned(),
            lines: Vec::new(),
            head: GENESIS.to_owned(),
        };
        data.insert("slug".into(), Value::from(slug));
        chain.append(time, HOST, START, data);
        chain
    }

    /// Append a record.
    pub fn append(&mut self, time: &str, writer: &str, kind: &str, data: Map<String, Value>) {
        let record = Record {
            seq: self.lines.len() as u64 + 1,
            time: time.to_owned(),
            writer: writer.to_owned(),
            kind: kind.to_owned(),
            data,
            prev: self.head.clone(),
        };
        let line = serde_json::to_string(&record).expect("a record serialises");
        self.head = line_hash(&line);
        self.lines.push(line);
    }

    /// Seal the chain so far with `key`; `last` for the final seal at teardown.
    pub fn seal(&mut self, key: &super::key::AuditKey, time: &str, last: bool) {
        let seq = self.lines.len() as u64 + 1;
        let sig = key.sign(&seal_message(&self.slug, seq, &self.head, last));
        let mut data = Map::new();
        data.insert("head".into(), Value::from(self.head.clone()));
        data.insert("last".into(), Value::from(last));
        data.insert("key".into(), Value::from(hex(&key.public())));
        data.insert("sig".into(), Value::from(hex(&sig)));
        self.append(time, HOST, SEAL, data);
    }

    /// The ledger's text: one line per record, each ending in a newline.
    pub fn text(&self) -> String {
        self.lines.iter().map(|l| format!("{l}\n")).collect()
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Why a ledger does not hold: the first record (from 1) that is wrong, and how.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record {record}: {what}")]
pub struct VerifyError {
    /// The record (its line, from 1).
    pub record: u64,
    /// What is wrong with it.
    pub what: String,
}

/// A ledger that holds: its records, the bottle, and its seals.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The bottle it is of.
    pub slug: String,
    /// Every record, in order.
    pub records: Vec<Record>,
    /// How many seals it has.
    pub seals: usize,
    /// Whether its last seal is the final one (the run ended); a ledger checked with
    /// [`verify_so_far`] may end at an interim seal.
    pub complete: bool,
}

/// Check a whole ledger: every line a record in its place, the chain unbroken, every seal
/// signed by `public_key` over the head it names, and the last record the final seal.
pub fn verify(text: &str, public_key: &[u8]) -> Result<Verified, VerifyError> {
    check(text, public_key, false)
}

/// [`verify`] for the ledger of a run still going: it may end at an interim seal (the
/// checkpoint written during the run), but at a seal all the same.
pub fn verify_so_far(text: &str, public_key: &[u8]) -> Result<Verified, VerifyError> {
    check(text, public_key, true)
}

fn check(text: &str, public_key: &[u8], so_far: bool) -> Result<Verified, VerifyError> {
    let fail = |record: u64, what: String| VerifyError { record, what };
    let lines: Vec<&str> = text.split_terminator('\n').collect();
    if lines.is_empty() {
        return Err(fail(1, "the ledger is empty".into()));
    }
    if !text.ends_with('\n') {
        return Err(fail(
            lines.len() as u64,
            "the line is cut short (no newline): the ledger was truncated".into(),
        ));
    }
    let key_hex = hex(public_key);
    let mut head = GENESIS.to_owned();
    let mut slug = String::new();
    let mut records = Vec::with_capacity(lines.len());
    let mut seals = 0;
    let mut ended = false;
    for (i, line) in lines.iter().enumerate() {
        let n = i as u64 + 1;
        if ended {
            return Err(fail(n, "a record after the final seal".into()));
        }
        let r: Record = serde_json::from_str(line)
            .map_err(|e| fail(n, format!("not a ledger record ({e})")))?;
        if r.seq != n {
            return Err(fail(
                n,
                format!(
                    "numbered {}: a record before it was removed or moved",
                    r.seq
                ),
            ));
        }
        if r.prev != head {
            return Err(fail(
                n,
                "it does not follow the record before it (that record was changed, removed or moved)"
                    .into(),
            ));
        }
        if n == 1 {
            slug = match (r.kind.as_str(), r.data.get("slug").and_then(Value::as_str)) {
                (START, Some(s)) => s.to_owned(),
                _ => return Err(fail(1, "the first record is not the run's start".into())),
            };
        }
        if r.kind == SEAL {
            if r.writer != HOST {
                return Err(fail(n, format!("a seal written by {}", r.writer)));
            }
            let field = |k: &str| r.data.get(k).and_then(Value::as_str).unwrap_or_default();
            let last = r.data.get("last").and_then(Value::as_bool).unwrap_or(false);
            if field("head") != head {
                return Err(fail(n, "the seal names another head".into()));
            }
            if field("key") != key_hex {
                return Err(fail(
                    n,
                    format!(
                        "sealed by key {}, not {key_hex} (`bottle audit key` prints yours)",
                        field("key")
                    ),
                ));
            }
            let signed = unhex(field("sig")).is_some_and(|sig| {
                super::key::verify_signature(public_key, &seal_message(&slug, n, &head, last), &sig)
            });
            if !signed {
                return Err(fail(n, "the seal's signature does not match".into()));
            }
            seals += 1;
            ended = last;
        }
        head = line_hash(line);
        records.push(r);
    }
    // A run still going may end at an interim seal; anything else that stops early was cut.
    let sealed_so_far = so_far && records.last().is_some_and(|r| r.kind == SEAL);
    if !(ended || sealed_so_far) {
        return Err(fail(
            lines.len() as u64,
            "the ledger ends here without its final seal: it was cut short, or the run has not ended"
                .into(),
        ));
    }
    Ok(Verified {
        slug,
        records,
        seals,
        complete: ended,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::key::AuditKey;

    fn ledger(key: &AuditKey) -> String {
        let t = "2026-12-05T10:00:00Z";
        let mut c = Chain::start("a-1", t, Map::new());
        let mut data = Map::new();
        data.insert("host".into(), Value::from("evil.test"));
        data.insert("decision".into(), Value::from("block"));
        c.append(t, &bundle("egress"), "request", data.clone());
        c.seal(key, t, false);
        data.insert("host".into(), Value::from("docs.rs"));
        data.insert("decision".into(), Value::from("allow"));
        c.append(t, &bundle("egress"), "request", data);
        c.append(t, HOST, "stop", Map::new());
        c.seal(key, t, true);
        c.text()
    }

    #[test]
    fn a_whole_ledger_holds() {
        let key = AuditKey::generate().unwrap();
        let v = verify(&ledger(&key), &key.public()).unwrap();
        assert_eq!(v.slug, "a-1");
        assert_eq!(v.records.len(), 6);
        assert_eq!(v.seals, 2);
        assert_eq!(v.records[1].writer, "bundle/egress");
    }

    #[test]
    fn a_changed_byte_a_removed_record_and_a_cut_are_each_named() {
        let key = AuditKey::generate().unwrap();
        let text = ledger(&key);
        let lines: Vec<&str> = text.lines().collect();
        // One byte of record 2 changed: record 3 no longer follows it.
        let changed = text.replacen("evil.test", "evil.tesu", 1);
        assert_eq!(verify(&changed, &key.public()).unwrap_err().record, 3);
        // Record 4 removed.
        let removed: String = lines
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 3)
            .map(|(_, l)| format!("{l}\n"))
            .collect();
        let e = verify(&removed, &key.public()).unwrap_err();
        assert_eq!(e.record, 4, "{e}");
        // Cut after the first seal: whole up to there, but no final seal.
        let cut: String = lines[..3].iter().map(|l| format!("{l}\n")).collect();
        let e = verify(&cut, &key.public()).unwrap_err();
        assert!(e.what.contains("without its final seal"), "{e}");
        // Cut in the middle of a line.
        let e = verify(&text[..text.len() - 10], &key.public()).unwrap_err();
        assert!(
            e.what.contains("truncated") || e.what.contains("not a ledger record"),
            "{e}"
        );
        assert!(verify("", &key.public()).is_err());
    }

    #[test]
    fn a_chain_rewritten_whole_cannot_be_sealed_again_without_the_key() {
        let key = AuditKey::generate().unwrap();
        let forger = AuditKey::generate().unwrap();
        // The forger rebuilds a consistent chain and seals it with its own key.
        let forged = ledger(&forger);
        let e = verify(&forged, &key.public()).unwrap_err();
        assert!(e.what.contains("sealed by key"), "{e}");
        // Or keeps the real key's name but cannot make its signature.
        let real = hex(&key.public());
        let fake = forged.replace(&hex(&forger.public()), &real);
        let e = verify(&fake, &key.public()).unwrap_err();
        assert!(e.what.contains("signature does not match"), "{e}");
    }
}
