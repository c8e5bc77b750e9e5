//! A run's ledger, written at teardown: the host's start record (the plan's hash), every
//! request egress decided (from its access log in the bundle's logs, so written by the bundle),
//! every fetch and push through git-gate (from its log: refs, outcome, reason; the bundle's),
//! every request the agent made through supervise (written by the bundle) and the human's
//! decision on it (the host's, with how long the grant lasts), every change applied live (the
//! host's journal: the plan's sha256 before and after, egress's confirmed config hash) and
//! every grant the host ended, in time order; the host's stop record (the agent's exit code),
//! and the final seal.

use super::chain::{self, Chain};
use super::key::AuditKey;
use serde_json::{Map, Value};
use std::path::Path;

/// The fields of an egress access-log line that go into the ledger: never a query string,
/// never a header or a body.
const REQUEST_FIELDS: [&str; 9] = [
    "method", "host", "path", "route", "decision", "reason", "status", "bytes", "rule",
];

/// The JSON objects daemon `daemon` logged in the merged logs `logs`, with their time: the
/// bundle's lines alone (the agent can write to its own container's log, and what it writes
/// there must not become the bundle's record), each starting `[daemon] ` (bottle-init's prefix
/// for every line of that daemon). Read once per daemon: the logs can be 30 MB.
pub fn daemon_records(logs: &str, daemon: &str) -> Vec<(String, Map<String, Value>)> {
    let prefix = format!("[{daemon}] ");
    logs.lines()
        .filter_map(|line| {
            let text =
                crate::run::docker::down::text_of(line, bottle_contract::layout::BUNDLE_SERVICE)?;
            let json = text.strip_prefix(prefix.as_str())?;
            let Value::Object(record) = serde_json::from_str::<Value>(json).ok()? else {
                return None;
            };
            let time = record.get("time")?.as_str()?.to_owned();
            Some((time, record))
        })
        .collect()
}

/// The fields `keys` of `record`, taken out of it.
fn take(record: &mut Map<String, Value>, keys: &[&str]) -> Map<String, Value> {
    keys.iter()
        .filter_map(|k| Some(((*k).to_owned(), record.remove(*k)?)))
        .collect()
}

/// Where the bundle's log lines can have gone, said in each gap record.
const GAP_WHY: &str = "the bundle's log no longer holds them (the engine keeps its last 30 MB) or they could not be read";

/// A record for each run of lines daemon `daemon` numbered that its `records` (from
/// [`daemon_records`]) do not hold (rotated away by the engine's log limit, which a flood of
/// requests reaches, or cut into parts): its time is that of the first line after it, so it
/// sorts where the loss is. A gap after the last line held cannot be seen.
pub fn missing_lines(
    records: &[(String, Map<String, Value>)],
    daemon: &str,
) -> Vec<(String, Map<String, Value>)> {
    let mut gaps = Vec::new();
    let mut next = 1u64;
    for (time, record) in records {
        let Some(seq) = record
            .get(bottle_contract::logline::SEQ_FIELD)
            .and_then(Value::as_u64)
        else {
            continue;
        };
        if seq > next {
            let mut data = Map::new();
            data.insert("daemon".into(), Value::from(daemon));
            data.insert("first".into(), Value::from(next));
            data.insert("last".into(), Value::from(seq - 1));
            data.insert("why".into(), Value::from(GAP_WHY));
            gaps.push((time.clone(), data));
        }
        next = next.max(seq + 1);
    }
    gaps
}

/// Each request egress decided, from its `records` ([`daemon_records`] of `compose.log`): its
/// time and fields.
pub fn egress_requests(
    records: Vec<(String, Map<String, Value>)>,
) -> Vec<(String, Map<String, Value>)> {
    records
        .into_iter()
        .filter(|(_, r)| r.contains_key("decision"))
        .map(|(time, mut record)| {
            if let Some(Value::String(path)) = record.get_mut("path") {
                // Only the path: a query may carry what was refused.
                path.truncate(path.find('?').unwrap_or(path.len()));
            }
            (time, take(&mut record, &REQUEST_FIELDS))
        })
        .collect()
}

/// Each fetch, push and refusal git-gate logged in its `records` ([`daemon_records`]): its
/// time and fields (repo, outcome, reason; for a push, the refs and what the hook decided,
/// with what it scanned). Never file contents: git-gate's log holds places and rules only.
pub fn git_operations(
    records: Vec<(String, Map<String, Value>)>,
) -> Vec<(String, Map<String, Value>)> {
    records
        .into_iter()
        .filter(|(_, r)| {
            r.get("op")
                .and_then(Value::as_str)
                .is_some_and(|op| matches!(op, "fetch" | "push" | "refuse"))
        })
        .map(|(time, mut record)| {
            let mut data = take(&mut record, &["op", "repo", "outcome", "reason"]);
            if let Some(Value::Object(mut push)) = record.remove("push") {
                let hook = take(
                    &mut push,
                    &["outcome", "reason", "refs", "objects", "bytes"],
                );
                data.insert("push".into(), Value::Object(hook));
            }
            (time, data)
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

/// The records of what the agent asked supervise for (`ask`, written by the bundle) and what
/// the human answered (`decision`): from the host's own record of its decisions (the host's),
/// with how long each grant lasts. A decision the queue holds and the host never recorded is
/// kept too, as the bundle's (the queue is writable from it).
pub fn asks_and_decisions(
    asked: &[crate::live::requests::Asked],
    decided: &[bottle_contract::supervise::Decision],
    approved: &crate::live::granted::Approved,
) -> Vec<Event> {
    let mut out = Vec::new();
    let decision = |d: &bottle_contract::supervise::Decision, granted: &str, writer: String| {
        let mut data = Map::new();
        data.insert("id".into(), Value::from(d.id.clone()));
        data.insert(
            "decision".into(),
            serde_json::to_value(d.decision).unwrap_or(Value::Null),
        );
        data.insert("granted".into(), Value::from(granted));
        data.insert("applied".into(), Value::from(d.applied));
        if !d.by.is_empty() {
            data.insert("by".into(), Value::from(d.by.clone()));
        }
        if let Some(g) = approved.access.iter().find(|g| g.request == d.id) {
            data.insert(
                "until".into(),
                g.until.clone().map_or(Value::Null, Value::from),
            );
            data.insert("uses".into(), g.uses.map_or(Value::Null, Value::from));
        }
        if !d.note.is_empty() {
            data.insert("note".into(), Value::from(d.note.clone()));
        }
        if let Some(e) = &d.apply_error {
            data.insert("apply_error".into(), Value::from(e.clone()));
        }
        Event {
            time: d.decided.clone(),
            writer,
            kind: "decision",
            data,
        }
    };
    for a in asked {
        let r = &a.request;
        let mut data = Map::new();
        data.insert("id".into(), Value::from(r.id.clone()));
        data.insert(
            "kind".into(),
            serde_json::to_value(r.kind).unwrap_or(Value::Null),
        );
        data.insert("host".into(), Value::from(r.host.clone()));
        if let Some(p) = &r.path_prefix {
            data.insert("path_prefix".into(), Value::from(p.clone()));
        }
        data.insert("reason".into(), Value::from(r.reason.clone()));
        out.push(Event {
            time: r.created.clone(),
            writer: chain::bundle("supervise"),
            kind: "ask",
            data,
        });
        let host_decided = decided.iter().any(|d| d.id == r.id);
        if !host_decided && let Some(d) = &a.decision {
            out.push(decision(d, &a.effect, chain::bundle("supervise")));
        }
    }
    // Every decision the host recorded, whether or not its ask is still listed (the queue is
    // the bundle's to fill or empty).
    for d in decided {
        // What was granted, from the host's own approvals: the queued request's wording is
        // the bundle's to rewrite. Nothing, when none was (a rejection, a failed apply).
        let granted = approved
            .access
            .iter()
            .find(|g| g.request == d.id)
            .map(|g| format!("{}{}", g.host, g.path_prefix.as_deref().unwrap_or("")))
            .unwrap_or_default();
        out.push(decision(d, &granted, chain::HOST.to_owned()));
    }
    out
}

/// The host's records of what changed under the running agent: each live apply from its
/// journal, and each grant it ended.
pub fn live_changes(
    journal: &[crate::live::apply::Journaled],
    approved: &crate::live::granted::Approved,
) -> Vec<Event> {
    let mut out: Vec<Event> = journal
        .iter()
        .map(|j| {
            let mut data = Map::new();
            data.insert("change".into(), Value::from(j.change.clone()));
            data.insert("plan_before".into(), Value::from(j.plan_before.clone()));
            data.insert("plan_after".into(), Value::from(j.plan_after.clone()));
            data.insert("confirmed".into(), Value::from(j.confirmed.clone()));
            Event {
                time: j.time.clone(),
                writer: chain::HOST.to_owned(),
                kind: "live-apply",
                data,
            }
        })
        .collect();
    for g in &approved.access {
        let Some(ended) = &g.ended else { continue };
        let mut data = Map::new();
        data.insert("id".into(), Value::from(g.request.clone()));
        data.insert("host".into(), Value::from(g.host.clone()));
        if let Some(p) = &g.path_prefix {
            data.insert("path_prefix".into(), Value::from(p.clone()));
        }
        data.insert(
            "until".into(),
            g.until.clone().map_or(Value::Null, Value::from),
        );
        data.insert("uses".into(), g.uses.map_or(Value::Null, Value::from));
        out.push(Event {
            time: ended.clone(),
            writer: chain::HOST.to_owned(),
            kind: "grant-ended",
            data,
        });
    }
    out
}

/// What the host kept of a run's live side: the requests and decisions, the approvals as
/// they ended, and the journal of live applies.
#[derive(Debug, Clone, Default)]
pub struct HostRecords {
    /// The bottle's requests (with the queue's copy of their decisions).
    pub asked: Vec<crate::live::requests::Asked>,
    /// The host's own record of the human's decisions.
    pub decided: Vec<bottle_contract::supervise::Decision>,
    /// The run's approvals as they stand at teardown.
    pub approved: crate::live::granted::Approved,
    /// The changes applied live.
    pub journal: Vec<crate::live::apply::Journaled>,
    /// The bundle's deaths and restarts during the run.
    pub bundle: Vec<crate::run::docker::watch::BundleEvent>,
}

/// The host's record of the bundle's deaths and restarts.
pub fn bundle_events(recorded: &[crate::run::docker::watch::BundleEvent]) -> Vec<Event> {
    recorded
        .iter()
        .map(|b| {
            let mut data = Map::new();
            if let Some(code) = b.exit_code {
                data.insert("exit_code".into(), Value::from(code));
            }
            data.insert("oom".into(), Value::from(b.oom));
            data.insert("reason".into(), Value::from(b.detail.clone()));
            Event {
                time: b.time.clone(),
                writer: chain::HOST.to_owned(),
                kind: match b.event.as_str() {
                    "restarted" => "bundle-restarted",
                    "lost" => "bundle-lost",
                    _ => "bundle-died",
                },
                data,
            }
        })
        .collect()
}

/// One record to be, before it has its place in the chain.
#[derive(Debug, Clone)]
pub struct Event {
    /// When (RFC 3339).
    pub time: String,
    /// Who says so.
    pub writer: String,
    /// What it is.
    pub kind: &'static str,
    /// Its fields.
    pub data: Map<String, Value>,
}

/// `time` as a point in time, for ordering records written with different precision.
fn instant(time: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339).ok()
}

/// The ledger of `run`, with the bundle's `logs` and what the host kept (`host`), sealed
/// with `key`: at teardown (`last`) with the stop record and the final seal; during the run
/// with an interim seal over what happened so far.
pub fn ledger(run: &Run<'_>, logs: &str, host: &HostRecords, key: &AuditKey, last: bool) -> String {
    let mut start = Map::new();
    start.insert("agent".into(), Value::from(run.agent));
    start.insert("plan_sha256".into(), Value::from(run.plan_sha256));
    let mut chain = Chain::start(run.slug, run.started, start);
    let from = |daemon: &str, kind: &'static str, found: Vec<(String, Map<String, Value>)>| {
        let writer = chain::bundle(daemon);
        found.into_iter().map(move |(time, data)| Event {
            time,
            writer: writer.clone(),
            kind,
            data,
        })
    };
    let egress = daemon_records(logs, "egress");
    let git_gate = daemon_records(logs, "git-gate");
    let gaps = |records: &[(String, Map<String, Value>)], daemon: &str| {
        missing_lines(records, daemon)
            .into_iter()
            .map(|(time, data)| Event {
                time,
                writer: chain::HOST.to_owned(),
                kind: "gap",
                data,
            })
    };
    // Gaps first: one sorts before a record of the same time, the first line after it.
    let mut events: Vec<Event> = gaps(&egress, "egress")
        .chain(gaps(&git_gate, "git-gate"))
        .chain(from("egress", "request", egress_requests(egress)))
        .chain(from("git-gate", "git", git_operations(git_gate)))
        .chain(asks_and_decisions(
            &host.asked,
            &host.decided,
            &host.approved,
        ))
        .chain(live_changes(&host.journal, &host.approved))
        .chain(bundle_events(&host.bundle))
        .collect();
    // Stable: records of one source keep their order; an unreadable time sorts first.
    events.sort_by_key(|e| instant(&e.time));
    for e in events {
        chain.append(&e.time, &e.writer, e.kind, e.data);
    }
    if last {
        let mut stop = Map::new();
        stop.insert(
            "exit_code".into(),
            run.exit_code.map_or(Value::Null, Value::from),
        );
        chain.append(run.ended, chain::HOST, "stop", stop);
    }
    chain.seal(key, run.ended, last);
    chain.text()
}

/// Write `text` as the ledger in `state_dir`, whole (0600: it names what the agent asked
/// for): a reader sees the last checkpoint or this one, never a part.
pub fn write(state_dir: &Path, text: &str) -> std::io::Result<()> {
    crate::live::apply::write_whole(&state_dir.join(super::LEDGER_FILE), text.as_bytes(), 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run of agent `a` from 09:59 to 10:20 that exited 0.
    const RUN: Run<'static> = Run {
        slug: "a-1",
        agent: "a",
        started: "2026-12-05T09:59:00Z",
        ended: "2026-12-05T10:20:00Z",
        plan_sha256: "p",
        exit_code: Some(0),
    };

    /// The final ledger of [`RUN`] whose merged logs are `logs` (no host records), and it
    /// verified.
    fn sealed(logs: &str) -> (String, chain::Verified) {
        let key = AuditKey::generate().unwrap();
        let text = ledger(&RUN, logs, &HostRecords::default(), &key, true);
        let v = chain::verify(&text, &key.public()).unwrap();
        (text, v)
    }

    #[test]
    fn git_gate_lines_become_git_records() {
        let logs = "x sidecars | [git-gate] {\"time\":\"2026-12-05T10:00:01Z\",\"op\":\"push\",\"repo\":\"proj\",\"peer\":\"10.0.0.3:5\",\"outcome\":\"refused\",\"reason\":\"push refused\",\"push\":{\"outcome\":\"refused\",\"reason\":\"push refused: k.txt:1: aws-access-key-id\",\"refs\":[\"refs/heads/bottle/c/y\"],\"objects\":3,\"bytes\":90,\"scan_ms\":1.0,\"forward_ms\":0.0},\"duration_ms\":4.0}\n\
                    x sidecars | [git-gate] {\"time\":\"2026-12-05T10:00:00Z\",\"op\":\"start\",\"outcome\":\"ok\",\"duration_ms\":0.0}\n";
        let got = git_operations(daemon_records(logs, "git-gate"));
        assert_eq!(got.len(), 1);
        let data = &got[0].1;
        assert_eq!(data["op"], "push");
        assert_eq!(data["push"]["refs"][0], "refs/heads/bottle/c/y");
        assert!(
            data["push"]["reason"]
                .as_str()
                .unwrap()
                .contains("aws-access-key-id")
        );
        assert!(
            !data.contains_key("peer")
                && !data["push"].as_object().unwrap().contains_key("scan_ms")
        );
    }

    #[test]
    fn egress_lines_become_requests_without_their_query() {
        let logs = "2026-12-05T10:16:51Z sidecars | [egress] {\"time\":\"2026-12-05T10:16:51.6Z\",\"method\":\"GET\",\"host\":\"evil.test\",\"path\":\"/x?k=secret\",\"route\":null,\"decision\":\"block\",\"reason\":\"evil.test is not on this bottle's allowlist\",\"status\":403,\"bytes\":0,\"duration_ms\":0.02}\n\
                    2026-12-05T10:16:51Z sidecars | [egress] {\"time\":\"t\",\"event\":\"start\"}\n\
                    2026-12-05T10:16:51Z sidecars | [init] started egress\n\
                    2026-12-05T10:16:52Z agent | [egress] {\"time\":\"2026-12-05T10:16:52Z\",\"method\":\"GET\",\"host\":\"forged.test\",\"path\":\"/\",\"decision\":\"block\"}\n\
                    2026-12-05T10:16:52Z agent | 2026-12-05T10:16:52Z sidecars | [egress] {\"time\":\"2026-12-05T10:16:52Z\",\"method\":\"GET\",\"host\":\"forged.test\",\"path\":\"/\",\"decision\":\"block\"}\n\
                    2026-12-05T10:16:52Z sidecars | [git-gate] [egress] {\"time\":\"2026-12-05T10:16:52Z\",\"method\":\"GET\",\"host\":\"forged.test\",\"path\":\"/\",\"decision\":\"block\"}\n";
        let got = egress_requests(daemon_records(logs, "egress"));
        // The agent's own lines, however they are dressed, and another daemon's are not egress's.
        assert_eq!(got.len(), 1, "{got:?}");
        let (time, data) = &got[0];
        assert_eq!(time, "2026-12-05T10:16:51.6Z");
        assert_eq!(data["path"], "/x");
        assert_eq!(data["decision"], "block");
        assert!(!data.contains_key("duration_ms"));
        let (text, v) = sealed(logs);
        let kinds: Vec<&str> = v.records.iter().map(|r| r.kind.as_str()).collect();
        assert_eq!(kinds, ["start", "request", "stop", "seal"]);
        assert_eq!(v.records[1].writer, "bundle/egress");
        assert!(!text.contains("secret"));
    }

    #[test]
    fn lines_the_logs_no_longer_hold_are_a_gap_record_where_they_were() {
        let line = |seq: u64, time: &str, host: &str| {
            let object = format!(
                "{{\"time\":\"{time}\",\"method\":\"GET\",\"host\":\"{host}\",\"path\":\"/\",\"decision\":\"allow\"}}"
            );
            format!(
                "{time} sidecars | [egress] {}\n",
                bottle_contract::logline::numbered(seq, &object)
            )
        };
        // Lines 1-3 rotated away, 5 cut into parts (unreadable), 4 and 6 held.
        let logs = [
            line(4, "2026-12-05T10:00:04Z", "a.test"),
            "2026-12-05T10:00:05Z sidecars | [egress] {\"seq\":5,\"time\":\"2026-12-05T10:00:05Z\",\"host\":\"b.te2026-12-05T10:00:05Z st\n".into(),
            line(6, "2026-12-05T10:00:06Z", "c.test"),
        ]
        .concat();
        let gaps = missing_lines(&daemon_records(&logs, "egress"), "egress");
        let spans: Vec<(u64, u64, &str)> = gaps
            .iter()
            .map(|(t, d)| {
                (
                    d["first"].as_u64().unwrap(),
                    d["last"].as_u64().unwrap(),
                    t.as_str(),
                )
            })
            .collect();
        assert_eq!(
            spans,
            [
                (1, 3, "2026-12-05T10:00:04Z"),
                (5, 5, "2026-12-05T10:00:06Z")
            ]
        );
        let (_, v) = sealed(&logs);
        let kinds: Vec<&str> = v.records.iter().map(|r| r.kind.as_str()).collect();
        assert_eq!(
            kinds,
            ["start", "gap", "request", "gap", "request", "stop", "seal"]
        );
        assert_eq!(v.records[1].writer, "host");
        // A whole log has no gap.
        let whole = [
            line(1, "2026-12-05T10:00:01Z", "a.test"),
            line(2, "2026-12-05T10:00:02Z", "b.test"),
        ]
        .concat();
        assert!(missing_lines(&daemon_records(&whole, "egress"), "egress").is_empty());
        // Every request rotated away (a flood after them), only the daemon's numbered stop
        // line held: the loss is still a gap on record, not a silence.
        let stop = format!(
            "2026-12-05T10:19:00Z sidecars | [egress] {}\n",
            bottle_contract::logline::numbered(
                9,
                "{\"time\":\"2026-12-05T10:19:00Z\",\"event\":\"stop\",\"message\":\"SIGTERM\"}"
            )
        );
        let gaps = missing_lines(&daemon_records(&stop, "egress"), "egress");
        assert_eq!(gaps.len(), 1);
        assert_eq!(
            (gaps[0].1["first"].as_u64(), gaps[0].1["last"].as_u64()),
            (Some(1), Some(8))
        );
    }

    #[test]
    fn a_decision_only_the_queue_holds_is_the_bundles() {
        use bottle_contract::supervise::{Decision, Request, RequestKind, Verdict};
        let decision = |by: &str| Decision {
            id: "r1".into(),
            decision: Verdict::Approved,
            note: String::new(),
            applied: true,
            apply_error: None,
            decided: "2026-12-05T10:00:01Z".into(),
            by: by.into(),
        };
        let asked = crate::live::requests::Asked {
            slug: "a-1".into(),
            request: Request {
                id: "r1".into(),
                kind: RequestKind::HostAccess,
                host: "x.com".into(),
                path_prefix: None,
                reason: "r".into(),
                failed_url: None,
                created: "2026-12-05T10:00:00Z".into(),
                preview: None,
            },
            effect: "the agent can reach x.com".into(),
            decision: Some(decision("forged in the queue")),
            problem: None,
            grant: None,
        };
        let approved = crate::live::granted::Approved::default();
        let events = asks_and_decisions(std::slice::from_ref(&asked), &[], &approved);
        assert_eq!(events[1].writer, "bundle/supervise");
        let events = asks_and_decisions(
            std::slice::from_ref(&asked),
            &[decision("bottle approve")],
            &approved,
        );
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].writer, "host");
        assert_eq!(events[1].data["by"], "bottle approve");
        // What the host says was granted comes from its own approvals, never the queue's
        // wording (the bundle can rewrite that): nothing when it holds no grant.
        assert_eq!(events[1].data["granted"], "");
        let mut grant = crate::live::granted::Access::checked("x.com", Some("/v1/")).unwrap();
        grant.request = "r1".into();
        let approved = crate::live::granted::Approved::default().with(grant);
        let events = asks_and_decisions(&[asked], &[decision("bottle approve")], &approved);
        assert_eq!(events[1].data["granted"], "x.com/v1/");
        // The host's decision stays when its ask is no longer listed.
        let events = asks_and_decisions(&[], &[decision("bottle approve")], &approved);
        assert_eq!(events.len(), 1);
        assert_eq!(
            (events[0].kind, events[0].writer.as_str()),
            ("decision", "host")
        );
    }

    #[test]
    fn live_applies_and_ended_grants_are_the_hosts_records_in_time_order() {
        let mut grant =
            crate::live::granted::Access::checked("docs.example.com", Some("/v2/")).unwrap();
        grant.request = "r7".into();
        grant.until = Some("2026-12-05T10:10:00Z".into());
        grant.ended = Some("2026-12-05T10:10:00Z".into());
        let host = HostRecords {
            approved: crate::live::granted::Approved::default().with(grant),
            journal: vec![crate::live::apply::Journaled {
                time: "2026-12-05T10:00:00Z".into(),
                change: "approve r7: docs.example.com/v2/…".into(),
                plan_before: "aa".into(),
                plan_after: "bb".into(),
                confirmed: "egress config sha256 cc".into(),
            }],
            ..HostRecords::default()
        };
        let key = AuditKey::generate().unwrap();
        let text = ledger(&RUN, "", &host, &key, true);
        let so_far = ledger(&RUN, "", &host, &key, false);
        let v = chain::verify_so_far(&so_far, &key.public()).unwrap();
        assert!(!v.complete && v.records.last().unwrap().kind == "seal");
        assert!(
            chain::verify(&so_far, &key.public()).is_err(),
            "not the whole run"
        );
        let v = chain::verify(&text, &key.public()).unwrap();
        let kinds: Vec<&str> = v.records.iter().map(|r| r.kind.as_str()).collect();
        assert_eq!(
            kinds,
            ["start", "live-apply", "grant-ended", "stop", "seal"]
        );
        assert!(v.records[1..3].iter().all(|r| r.writer == "host"));
        assert_eq!(v.records[1].data["plan_after"], "bb");
        assert_eq!(v.records[2].data["path_prefix"], "/v2/");
        assert_eq!(v.records[2].data["until"], "2026-12-05T10:10:00Z");
    }
}
