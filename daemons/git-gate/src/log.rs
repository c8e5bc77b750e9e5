//! The log: one JSON line per operation on stdout (bottle-init prefixes it `[git-gate] `).
//! Never a key, never file contents: refusals name places and rules only.

use crate::hook::HookReport;
use crate::mirror::Synced;
use serde::Serialize;
use std::io::Write;

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

    /// Write the line.
    pub fn emit(&self) {
        if let Ok(line) = serde_json::to_string(self) {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }
}
