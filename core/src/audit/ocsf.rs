//! The ledger as OCSF events (Open Cybersecurity Schema Framework 1.3), one JSON object per
//! record, for a SIEM: `bottle audit export SLUG --format ocsf`.
//!
//! Requests egress decided are HTTP Activity (4002) with the decision as `action_id` and
//! `disposition_id`; git-gate's fetches and pushes and the agent's asks are API Activity
//! (6003); the human's decisions and ended grants are User Access Management (3005: assign,
//! revoke); the run's start, stop, live applies and seals are Application Lifecycle (6002).
//! Every event keeps the record's own fields under `unmapped`, its writer as the actor, and
//! the record's place and chain hash under `metadata`, so an event leads back to its line.

use super::chain::Record;
use serde_json::{Value, json};

/// The OCSF schema version the events follow.
pub const VERSION: &str = "1.3.0";

/// OCSF classes used here.
const HTTP_ACTIVITY: u32 = 4002;
const API_ACTIVITY: u32 = 6003;
const USER_ACCESS: u32 = 3005;
const APP_LIFECYCLE: u32 = 6002;

/// `record` of bottle `slug`, whose line hashes to `line_sha256`, as an OCSF event.
pub fn event(slug: &str, record: &Record, line_sha256: &str) -> Value {
    let field = |k: &str| record.data.get(k).and_then(Value::as_str).unwrap_or("");
    let (class, activity, extra) = match record.kind.as_str() {
        "request" => request(record),
        "git" => {
            let activity = match field("op") {
                "fetch" => 2,
                "push" => 3,
                _ => 99,
            };
            let api = json!({"operation": format!("git {}", field("op")), "service": {"name": "git-gate"}});
            (API_ACTIVITY, activity, json!({"api": api}))
        }
        "ask" => (
            API_ACTIVITY,
            1,
            json!({"api": {"operation": "supervise request", "service": {"name": "supervise"}}}),
        ),
        "decision" => {
            let activity = if field("decision") == "approved" {
                1
            } else {
                99
            };
            (
                USER_ACCESS,
                activity,
                json!({"privileges": [field("granted")]}),
            )
        }
        "grant-ended" => (USER_ACCESS, 2, json!({"privileges": [field("host")]})),
        "start" => (APP_LIFECYCLE, 3, json!({})),
        "stop" => (APP_LIFECYCLE, 4, json!({})),
        "live-apply" => (APP_LIFECYCLE, 8, json!({})),
        "bundle-died" | "bundle-lost" => (APP_LIFECYCLE, 4, json!({})),
        "bundle-restarted" => (APP_LIFECYCLE, 5, json!({})),
        _ => (APP_LIFECYCLE, 99, json!({})),
    };
    let time_ms =
        time::OffsetDateTime::parse(&record.time, &time::format_description::well_known::Rfc3339)
            .map_or(0, |t| (t.unix_timestamp_nanos() / 1_000_000) as i64);
    let mut event = json!({
        "class_uid": class,
        "category_uid": class / 1000,
        "activity_id": activity,
        "type_uid": class * 100 + activity,
        "time": time_ms,
        "severity_id": 1,
        "actor": {"app_name": record.writer},
        "metadata": {
            "version": VERSION,
            "product": {"name": "bottle", "vendor_name": "bottle", "version": env!("CARGO_PKG_VERSION")},
            "log_name": "bottle audit ledger",
            "correlation_uid": slug,
            "sequence": record.seq,
            "uid": line_sha256,
            "original_time": record.time,
        },
        "message": format!("{} {}", record.kind, field("reason")).trim().to_owned(),
        "unmapped": Value::Object(record.data.clone()),
    });
    if let (Value::Object(e), Value::Object(x)) = (&mut event, extra) {
        e.extend(x);
    }
    event
}

/// An egress request as HTTP Activity: the method as the activity, allow or block as the
/// action and disposition.
fn request(record: &Record) -> (u32, u32, Value) {
    let field = |k: &str| record.data.get(k).and_then(Value::as_str).unwrap_or("");
    let activity = match field("method") {
        "CONNECT" => 1,
        "DELETE" => 2,
        "GET" => 3,
        "HEAD" => 4,
        "OPTIONS" => 5,
        "POST" => 6,
        "PUT" => 7,
        "TRACE" => 8,
        "PATCH" => 9,
        _ => 99,
    };
    // Allowed, denied; an upstream failure was allowed and failed.
    let (action, disposition, status) = match field("decision") {
        "allow" => (1, 1, 1),
        "block" => (2, 2, 2),
        _ => (1, 1, 2),
    };
    let extra = json!({
        "action_id": action,
        "disposition_id": disposition,
        "status_id": status,
        "status_detail": field("reason"),
        "http_request": {
            "http_method": field("method"),
            "url": {"hostname": field("host"), "path": field("path")},
        },
        "http_response": {"code": record.data.get("status").cloned().unwrap_or(Value::Null)},
        "traffic": {"bytes_in": record.data.get("bytes").cloned().unwrap_or(Value::Null)},
    });
    (HTTP_ACTIVITY, activity, extra)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: &str, data: Value) -> Record {
        Record {
            seq: 2,
            time: "2026-12-05T10:00:00.5Z".into(),
            writer: "bundle/egress".into(),
            kind: kind.into(),
            data: data.as_object().cloned().unwrap_or_default(),
            prev: "00".into(),
        }
    }

    #[test]
    fn a_refused_request_is_denied_http_activity_that_leads_back_to_its_line() {
        let e = event(
            "coder-1",
            &record(
                "request",
                json!({"method": "POST", "host": "evil.test", "path": "/x", "decision": "block",
                       "reason": "evil.test is not on this bottle's allowlist", "status": 403, "bytes": 0}),
            ),
            "ab12",
        );
        assert_eq!(e["class_uid"], 4002);
        assert_eq!(e["category_uid"], 4);
        assert_eq!(e["type_uid"], 400206);
        assert_eq!(
            (&e["action_id"], &e["disposition_id"], &e["status_id"]),
            (&json!(2), &json!(2), &json!(2))
        );
        assert_eq!(e["http_request"]["url"]["hostname"], "evil.test");
        assert_eq!(e["http_response"]["code"], 403);
        assert_eq!(e["time"], 1_796_464_800_500_i64);
        assert_eq!(e["metadata"]["uid"], "ab12");
        assert_eq!(e["metadata"]["correlation_uid"], "coder-1");
        assert_eq!(e["actor"]["app_name"], "bundle/egress");
        assert_eq!(
            e["unmapped"]["reason"],
            "evil.test is not on this bottle's allowlist"
        );
    }

    #[test]
    fn every_kind_has_a_class_and_a_consistent_type() {
        for (kind, data, class, activity) in [
            ("git", json!({"op": "push"}), 6003, 3),
            ("ask", json!({}), 6003, 1),
            (
                "decision",
                json!({"decision": "approved", "granted": "x.com"}),
                3005,
                1,
            ),
            ("grant-ended", json!({"host": "x.com"}), 3005, 2),
            ("start", json!({}), 6002, 3),
            ("stop", json!({}), 6002, 4),
            ("live-apply", json!({}), 6002, 8),
            ("bundle-died", json!({}), 6002, 4),
            ("bundle-restarted", json!({}), 6002, 5),
            ("seal", json!({}), 6002, 99),
        ] {
            let e = event("s", &record(kind, data), "h");
            assert_eq!(
                (&e["class_uid"], &e["activity_id"]),
                (&json!(class), &json!(activity)),
                "{kind}"
            );
            assert_eq!(e["type_uid"], json!(class * 100 + activity), "{kind}");
        }
    }
}
