//! A run's ledger, written at teardown: the host's start record (the plan's hash), every
//! request egress decided (from its access log in the bundle's logs, so written by the bundle),
//! the host's stop record (the agent's exit code), and the final seal.

use super::chain::{self, Chain};
use super::key::AuditKey;
use serde_json::{Map, Value};
use std::path::Path;

/// The fields of an egress access-log line that go into the ledger: never a query string,
/// never a header or a body.
const REQUEST_FIELDS: [&str; 9] = [
    "method", "host", "path", "route", "decision", "reason", "status", "bytes", "rule",
];

/// Each request egress decided, from the merged logs `logs` (`compose.log`): its time and
/// fields.
pub fn egress_requests(logs: &str) -> Vec<(String, Map<String, Value>)> {
    logs.lines()
        .filter_map(|line| {
            let json = line.split_once("[egress] ")?.1;
            let Value::Object(mut record) = serde_json::from_str::<Value>(json).ok()? else {
                return None;
            };
            record.get("decision")?;
            let time = record.get("time")?.as_str()?.to_owned();
            if let Some(Value::String(path)) = record.get_mut("path") {
                // Only the path: a query may carry what was refused.
                path.truncate(path.find('?').unwrap_or(path.len()));
            }
            let data: Map<String, Value> = REQUEST_FIELDS
                .iter()
                .filter_map(|k| Some(((*k).to_owned(), record.remove(*k)?)))
                .collect();
            Some((time, data))
        })
        .collect()
}

/// What the host knows of a finished run.
#[derive(Debug, Clone)]
pub struct Run<'a> {
    /// The bottle.
    pub slug: &'a str,
    /// The agent's name.
    pub agent: &'a str,
    /// When the run started (RFC 3339).
    pub started: &'a str,
    /// When it ended.
    pub ended: &'a str,
    /// The sha256 of its plan (`plan.json`).
    pub plan_sha256: &'a str,
    /// The agent's exit code, when it ran.
    pub exit_code: Option<i64>,
}

/// The ledger of `run`, with the bundle's `logs`, sealed with `key`.
pub fn ledger(run: &Run<'_>, logs: &str, key: &AuditKey) -> String {
    let mut start = Map::new();
    start.insert("agent".into(), Value::from(run.agent));
    start.insert("plan_sha256".into(), Value::from(run.plan_sha256));
    let mut chain = Chain::start(run.slug, run.started, start);
    for (time, data) in egress_requests(logs) {
        chain.append(&time, &chain::bundle("egress"), "request", data);
    }
    let mut stop = Map::new();
    stop.insert(
        "exit_code".into(),
        run.exit_code.map_or(Value::Null, Value::from),
    );
    chain.append(run.ended, chain::HOST, "stop", stop);
    chain.seal(key, run.ended, true);
    chain.text()
}

/// Write `text` as the ledger in `state_dir` (0600: it names what the agent asked for).
pub fn write(state_dir: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(state_dir.join(super::LEDGER_FILE))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn egress_lines_become_requests_without_their_query() {
        let logs = "2026-12-05T10:16:51Z sidecars | [egress] {\"time\":\"2026-12-05T10:16:51.6Z\",\"method\":\"GET\",\"host\":\"evil.test\",\"path\":\"/x?k=secret\",\"route\":null,\"decision\":\"block\",\"reason\":\"evil.test is not on this bottle's allowlist\",\"status\":403,\"bytes\":0,\"duration_ms\":0.02}\n\
                    2026-12-05T10:16:51Z sidecars | [egress] {\"time\":\"t\",\"event\":\"start\"}\n\
                    2026-12-05T10:16:51Z sidecars | [init] started egress\n";
        let got = egress_requests(logs);
        assert_eq!(got.len(), 1);
        let (time, data) = &got[0];
        assert_eq!(time, "2026-12-05T10:16:51.6Z");
        assert_eq!(data["path"], "/x");
        assert_eq!(data["decision"], "block");
        assert!(!data.contains_key("duration_ms"));
        let key = AuditKey::generate().unwrap();
        let run = Run {
            slug: "a-1",
            agent: "a",
            started: "s",
            ended: "e",
            plan_sha256: "p",
            exit_code: Some(0),
        };
        let text = ledger(&run, logs, &key);
        let v = chain::verify(&text, &key.public()).unwrap();
        let kinds: Vec<&str> = v.records.iter().map(|r| r.kind.as_str()).collect();
        assert_eq!(kinds, ["start", "request", "stop", "seal"]);
        assert_eq!(v.records[1].writer, "bundle/egress");
        assert!(!text.contains("secret"));
    }
}
