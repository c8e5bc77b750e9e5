//! The log: one JSON line per operation on stdout (bottle-init prefixes it `[git-gate] `).
//! Never a key, never file contents: refusals name places and rules only.

use crate::hook::HookReport;
use crate::mirror::Synced;
use serde::Serialize;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// One operation's line.
#[derive(Debug, Default, Serialize)]
pub struct Record {
    /// RFC 3339, UTC.
    pub time: String,
    /// `fetch`, `push`, `refuse`, `start`, `reload`.
    pub op: &'static str,
    /// The repo, when one was named.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub repo: String,
    /// The client's address.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub peer: String,
    /// The protocol version the client asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<u8>,
    /// `ok`, `refused` or `error`.
    pub outcome: &'static str,
    /// Why, when not `ok`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// How the mirror was brought up to date.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<Synced>,
    /// What the pre-receive hook did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push: Option<HookReport>,
    /// Start-up and reload: the repos served.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub repos: Vec<String>,
    /// Start-up: the address listened on.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub listen: String,
    /// From the connection to the end of the operation.
    pub duration_ms: f64,
}

impl Record {
    /// A record for `op`, stamped now.
    pub fn new(op: &'static str) -> Record {
        Record {
            time: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            op,
            outcome: "ok",
            ..Record::default()
        }
    }

    /// Write the line, numbered and ASCII only ([`bottle_contract::logline`]).
    pub fn emit(&self) {
        /// Lines numbered so far; taken under stdout's lock, so numbers follow the output.
        static NUMBERED: AtomicU64 = AtomicU64::new(0);
        if let Ok(line) = serde_json::to_string(self) {
            let mut out = std::io::stdout().lock();
            let seq = NUMBERED.fetch_add(1, Ordering::Relaxed) + 1;
            let _ = writeln!(out, "{}", bottle_contract::logline::numbered(seq, &line));
            let _ = out.flush();
        }
    }
}
