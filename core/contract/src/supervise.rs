//! supervise's queue files: requests the agent makes (written by `bottle-supervise` in the
//! bundle) and the human's decisions (written by the host CLI). One schema both ways.

use serde::{Deserialize, Serialize};

pub mod validate;

/// What the agent asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RequestKind {
    /// Reach a host, no credential.
    HostAccess,
    /// A route: a host (and path prefix) through egress.
    Route,
}

/// One request, as `pending/<id>.json`. Every text field is validated and sanitised by the
/// daemon before it is written: it came from the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Its id (the file name without `.json`).
    pub id: String,
    /// What is asked.
    pub kind: RequestKind,
    /// The host (lower case; `*.` allowed over two labels or more).
    pub host: String,
    /// For a route: the path prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Why, in the agent's words (control characters removed, length capped).
    pub reason: String,
    /// The URL that was refused, if the agent said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_url: Option<String>,
    /// When it was asked (RFC 3339, UTC).
    pub created: String,
    /// The request the agent wants to make, if it attached it, for the human to see.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<Preview>,
}

/// The request an agent wants to make once a host is open, as the human sees it before
/// approving: sanitised and cut short by the daemon, secrets replaced by the DLP rule that
/// found them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preview {
    /// The method (upper case).
    pub method: String,
    /// The body's first characters, without control characters, each DLP finding replaced by
    /// `[DLP: rule]`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub body: String,
    /// The body's whole length in bytes.
    #[serde(default)]
    pub body_bytes: usize,
    /// The DLP rules that found something in the body (each once, in order).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<String>,
}

/// The longest body an agent may attach to a request (bytes); the preview shows its start.
pub const MAX_PREVIEW_BODY: usize = 64 * 1024;
/// How many characters of the body the preview shows.
pub const PREVIEW_CHARS: usize = 600;

impl Request {
    /// What approving it would change, in words.
    pub fn effect(&self) -> String {
        match (&self.kind, &self.path_prefix) {
            (RequestKind::HostAccess, _) => {
                format!("the agent can reach {}, no credential", self.host)
            }
            (RequestKind::Route, Some(p)) => {
                format!("the agent can reach {}{p}…, no credential", self.host)
            }
            (RequestKind::Route, None) => {
                format!("the agent can reach {}, no credential", self.host)
            }
        }
    }
}

/// The human's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Granted.
    Approved,
    /// Refused.
    Rejected,
}

/// One decision, as `decisions/<id>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// The request's id.
    pub id: String,
    /// Granted or refused.
    pub decision: Verdict,
    /// A note for the agent (why, or what to do instead).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
    /// Whether the change runs now (an approval takes effect only once applied).
    #[serde(default)]
    pub applied: bool,
    /// Why it could not be applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply_error: Option<String>,
    /// When it was decided (RFC 3339, UTC).
    pub decided: String,
    /// The host command that decided (`bottle approve`, `bottle reject`, `bottle dashboard`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub by: String,
}
