//! The MCP tools the agent calls. None blocks longer than a client waits (Claude Code drops a
//! call after about a minute): a request is queued and answered `pending` with its id, and
//! `request_status` waits a little for the human's decision.

use crate::queue::{Queue, valid_id};
use bottle_contract::supervise::validate;
use bottle_contract::supervise::{Decision, Request, RequestKind, Verdict};
use rmcp::handler::server::{router::tool::ToolRouter, wrapper::Parameters};
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::{ErrorData, ServerHandler, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

/// What the tools share.
#[derive(Debug)]
pub struct State {
    /// The queue.
    pub queue: Queue,
    /// How long a call waits for the human before answering `pending`.
    pub wait: Duration,
    /// Requests that may wait at once.
    pub max_open: usize,
    /// egress's address, for `list_access` (`127.0.0.1:9099`).
    pub egress: Option<String>,
    /// The run's hop token, which egress asks of every proxied request (the same token the
    /// bundle's daemons all get).
    pub hop_token: Option<String>,
    /// Requests allowed per minute.
    pub per_minute: usize,
    /// When recent requests were made (the rate limit).
    pub recent: std::sync::Mutex<std::collections::VecDeque<std::time::Instant>>,
}

/// Requests one bottle may make per minute, by default.
pub const PER_MINUTE: usize = 10;

/// `request_host_access`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct HostAccessArgs {
    /// The host name you were refused (e.g. `pypi.org`), without scheme, port or path.
    pub host: String,
    /// Why you need it, for the human who decides.
    pub reason: String,
    /// The URL that was refused, if you have it.
    #[serde(default)]
    pub failed_url: Option<String>,
    /// The HTTP method of the request you want to make there (`GET`, `POST`…), so the human
    /// sees what would go out.
    #[serde(default)]
    pub method: Option<String>,
    /// That request's body, if it has one (at most 64 KiB; the human sees its start, with
    /// anything secret marked). Never put a credential here.
    #[serde(default)]
    pub body: Option<String>,
}

/// `request_route`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct RouteArgs {
    /// The host name.
    pub host: String,
    /// The path prefix you need under it (e.g. `/repos/org/`).
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Why you need it, for the human who decides. Never put a credential here.
    pub reason: String,
}

/// `request_status`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct StatusArgs {
    /// The id a request call returned.
    pub id: String,
}

/// The MCP server.
#[derive(Debug, Clone)]
pub struct Supervise {
    state: Arc<State>,
    tool_router: ToolRouter<Self>,
}

impl Supervise {
    /// A server over `state`.
    pub fn new(state: Arc<State>) -> Self {
        Supervise {
            state,
            tool_router: Self::tool_router(),
        }
    }

    async fn ask(&self, req: Request) -> Result<CallToolResult, ErrorData> {
        // Refusals are tool results with `isError`, so the model reads why.
        {
            let mut recent = self.state.recent.lock().unwrap_or_else(|p| p.into_inner());
            let now = std::time::Instant::now();
            while recent
                .front()
                .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(60))
            {
                recent.pop_front();
            }
            if recent.len() >= self.state.per_minute {
                log_line("request", &req.id, &req.host, "rate-limited");
                return Ok(refuse(format!(
                    "more than {} requests in a minute; wait for the human's answers (request_status)",
                    self.state.per_minute
                )));
            }
            recent.push_back(now);
        }
        if let Err(e) = self.state.queue.submit(&req, self.state.max_open) {
            log_line("request", &req.id, &req.host, "refused");
            return Ok(refuse(e.to_string()));
        }
        log_line("request", &req.id, &req.host, "pending");
        let decision = self.state.queue.wait(&req.id, self.state.wait).await;
        Ok(reply(answer(&req, decision.as_ref())))
    }
}

#[tool_router]
impl Supervise {
    /// Ask the human to let this bottle reach a host.
    #[tool(
        name = "request_host_access",
        description = "Ask the human supervising this bottle to allow a host you were refused \
                       (e.g. `403 blocked by egress: pypi.org is not on this bottle's allowlist`). \
                       Returns `pending` with an id unless they answer at once; then poll \
                       request_status. Never auto-approved."
    )]
    async fn request_host_access(
        &self,
        Parameters(a): Parameters<HostAccessArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let host = match validate::host(&a.host) {
            Ok(h) => h,
            Err(e) => return Ok(refuse(e)),
        };
        let failed = a.failed_url.as_deref().unwrap_or("");
        // A URL on another host would show the human one name while the grant opens another.
        if !failed.trim().is_empty() && !validate::url_is_under(failed, &host) {
            return Ok(refuse(format!(
                "failed_url `{}` is not a URL on {host}: give the URL egress refused, on the host you ask for (scheme://{}/path, no user name)",
                validate::text(failed, 120),
                host.trim_start_matches("*.")
            )));
        }
        if let Some(why) = carries_secret(&host, &[("reason", &a.reason), ("failed_url", failed)]) {
            return Ok(refuse(why));
        }
        let preview = match preview(a.method.as_deref(), a.body.as_deref()) {
            Ok(p) => p,
            Err(why) => return Ok(refuse(why)),
        };
        let req = Request {
            id: self.state.queue.new_id(),
            kind: RequestKind::HostAccess,
            host,
            path_prefix: None,
            reason: validate::text(&a.reason, validate::MAX_REASON),
            failed_url: a
                .failed_url
                .map(|u| validate::text(&u, 300))
                .filter(|u| !u.is_empty()),
            created: now(),
            preview,
        };
        self.ask(req).await
    }

    /// Ask for a route (host and path prefix). Never carries a credential.
    #[tool(
        name = "request_route",
        description = "Ask the human to open a host, optionally under a path prefix only. \
                       Never include a credential: bottle attaches any the human chooses. \
                       Returns `pending` with an id unless answered at once."
    )]
    async fn request_route(
        &self,
        Parameters(a): Parameters<RouteArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let host = match validate::host(&a.host) {
            Ok(h) => h,
            Err(e) => return Ok(refuse(e)),
        };
        let path_prefix = match a
            .path_prefix
            .as_deref()
            .map(validate::path_prefix)
            .transpose()
        {
            Ok(p) => p,
            Err(e) => return Ok(refuse(e)),
        };
        let prefix = path_prefix.as_deref().unwrap_or("");
        if let Some(why) = carries_secret(&host, &[("reason", &a.reason), ("path_prefix", prefix)])
        {
            return Ok(refuse(why));
        }
        let req = Request {
            id: self.state.queue.new_id(),
            kind: RequestKind::Route,
            host,
            path_prefix,
            reason: validate::text(&a.reason, validate::MAX_REASON),
            failed_url: None,
            created: now(),
            preview: None,
        };
        self.ask(req).await
    }

    /// The status of a request; waits a little for the human.
    #[tool(
        name = "request_status",
        description = "The status of a request by id: pending, approved or rejected (with the \
                       human's note). Waits up to about 20 s for an answer."
    )]
    async fn request_status(
        &self,
        Parameters(a): Parameters<StatusArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let req = valid_id(&a.id)
            .then(|| self.state.queue.request(&a.id))
            .flatten();
        let Some(req) = req else {
            return Ok(refuse(format!(
                "no request {} in this bottle; use the id a request call returned",
                validate::text(&a.id, 40)
            )));
        };
        let decision = self.state.queue.wait(&a.id, self.state.wait).await;
        Ok(reply(answer(&req, decision.as_ref())))
    }

    /// What this bottle may reach now.
    #[tool(
        name = "list_access",
        description = "What this bottle may reach now: egress's routes and allowlist (credential \
                       names only, never values), and the requests still waiting."
    )]
    async fn list_access(&self) -> Result<CallToolResult, ErrorData> {
        let routes = match &self.state.egress {
            Some(addr) => egress_view(addr, self.state.hop_token.as_deref())
                .await
                .unwrap_or_else(|e| serde_json::json!({ "error": e })),
            None => serde_json::json!({ "error": "egress is not in this bottle" }),
        };
        let waiting: Vec<serde_json::Value> = self
            .state
            .queue
            .open_requests()
            .iter()
            .map(
                |r| serde_json::json!({ "id": r.id, "host": r.host, "path_prefix": r.path_prefix }),
            )
            .collect();
        Ok(reply(
            serde_json::json!({ "egress": routes, "waiting": waiting }).to_string(),
        ))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Supervise {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                "bottle-supervise",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(
                "bottle's supervise: when egress refuses a host you need, call request_host_access \
             (or request_route) with the host and why; a human on the host decides. Poll \
             request_status with the id you get. Never send credentials.",
            )
    }
}

/// A successful call's result: JSON text.
fn reply(json: String) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(json)])
}

/// Why a request's free text may not reach the host, if it may not: it is stored there and
/// shown to the human, so a secret in it (plain or wrapped) would leave the bottle, and a host
/// name whose labels carry data would leave it once approved.
fn carries_secret(host: &str, texts: &[(&str, &str)]) -> Option<String> {
    static SCANNER: std::sync::LazyLock<bottle_dlp::Scanner> =
        std::sync::LazyLock::new(|| bottle_dlp::Scanner::new(&[]));
    if let Some(f) = SCANNER.inspect_labels(host) {
        return Some(format!(
            "the host name carries {} (DLP); ask for the host you were refused, as it was named",
            f.rule
        ));
    }
    texts.iter().find_map(|(field, text)| {
        SCANNER.inspect(text.as_bytes()).map(|f| {
            format!(
                "the {field} carries {} (DLP); never put a credential or encoded data in a request",
                f.rule
            )
        })
    })
}

/// The preview of the request the agent attached (`method`, `body`), or why it is refused.
/// The body is shown, not refused, when DLP finds something in it: each finding is replaced
/// by `[DLP: rule]` and listed, so the human sees what approving would let out.
fn preview(
    method: Option<&str>,
    body: Option<&str>,
) -> Result<Option<bottle_contract::supervise::Preview>, String> {
    use bottle_contract::supervise::{MAX_PREVIEW_BODY, PREVIEW_CHARS, Preview};
    static SCANNER: std::sync::LazyLock<bottle_dlp::Scanner> =
        std::sync::LazyLock::new(|| bottle_dlp::Scanner::new(&[]));
    if method.is_none() && body.is_none() {
        return Ok(None);
    }
    let method = method.unwrap_or("GET").trim().to_ascii_uppercase();
    if !bottle_contract::egress::KNOWN_METHODS.contains(&method.as_str()) {
        return Err(format!(
            "method {:?} is not one HTTP or WebDAV defines",
            validate::text(&method, 20)
        ));
    }
    let body = body.unwrap_or("");
    if body.len() > MAX_PREVIEW_BODY {
        return Err(format!(
            "the body is {} bytes; attach at most {MAX_PREVIEW_BODY} (its start is what the human sees)",
            body.len()
        ));
    }
    let mut findings: Vec<String> = Vec::new();
    let mut shown = String::new();
    let mut at = 0;
    for f in SCANNER.scan_all(body.as_bytes()) {
        // Findings end on char boundaries of valid UTF-8 only by luck: widen to them.
        let start = (0..=f.start)
            .rev()
            .find(|i| body.is_char_boundary(*i))
            .unwrap_or(0);
        let end = (f.end..=body.len())
            .find(|i| body.is_char_boundary(*i))
            .unwrap_or(body.len());
        if start < at {
            continue;
        }
        shown.push_str(&body[at..start]);
        shown.push_str(&format!("[DLP: {}]", f.rule));
        at = end;
        if !findings.contains(&f.rule) {
            findings.push(f.rule);
        }
    }
    shown.push_str(&body[at..]);
    // What only decoding finds (base64, hex, gzip…) cannot be marked in place: named.
    if let Some(f) = SCANNER.inspect(shown.as_bytes()) {
        let rule = format!("{} (encoded)", f.rule);
        if !findings.contains(&rule) {
            findings.push(rule);
        }
    }
    Ok(Some(Preview {
        method,
        body: validate::text(&shown, PREVIEW_CHARS),
        body_bytes: body.len(),
        findings,
    }))
}

/// A refused call: the reason, as a tool error the model reads.
fn refuse(why: String) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(why)])
}

/// The tool's answer, as JSON text.
fn answer(req: &Request, decision: Option<&Decision>) -> String {
    let (status, next) = match decision {
        None => (
            "pending",
            format!(
                "A human must decide. Ask the user to run `bottle approve {id}` (or `bottle reject {id}`) \
                 on the host, then call request_status with id {id}.",
                id = req.id
            ),
        ),
        Some(d) if d.decision == Verdict::Rejected => (
            "rejected",
            "The human said no; do not ask again for the same thing. Find another way or ask the user.".into(),
        ),
        Some(d) if d.applied => ("approved", "It is in effect now: retry your request.".into()),
        Some(d) => (
            "approved-not-applied",
            format!(
                "Approved, but the change could not be applied yet ({}); ask the user.",
                d.apply_error.as_deref().unwrap_or("not applied")
            ),
        ),
    };
    let mut v = serde_json::json!({
        "status": status,
        "id": req.id,
        "host": req.host,
        "effect": req.effect(),
        "next": next,
    });
    if let Some(d) = decision
        && !d.note.is_empty()
    {
        v["note"] = serde_json::json!(validate::text(&d.note, 500));
    }
    v.to_string()
}

/// `GET http://_egress.local/allowlist` through egress, with the hop token when there is one.
async fn egress_view(addr: &str, hop: Option<&str>) -> Result<serde_json::Value, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let auth = hop.map_or_else(String::new, |t| {
        format!(
            "Proxy-Authorization: {}\r\n",
            bottle_contract::hop::proxy_authorization(t)
        )
    });
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        s.write_all(
            format!("GET http://_egress.local/allowlist HTTP/1.1\r\nHost: _egress.local\r\n{auth}Connection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        s.take(1 << 20)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&buf);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .unwrap_or_default();
        serde_json::from_str(body).map_err(|e| format!("egress answered no table: {e}"))
    };
    tokio::time::timeout(Duration::from_secs(5), fetch)
        .await
        .map_err(|_| "egress did not answer".to_owned())?
}

/// Now, RFC 3339.
pub fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// One JSON log line.
pub fn log_line(op: &str, id: &str, host: &str, outcome: &str) {
    emit(
        &serde_json::json!({ "time": now(), "op": op, "id": id, "host": host, "outcome": outcome }),
    );
}

/// Write one JSON line to stdout; a closed stdout loses the line, never the daemon.
pub fn emit(v: &serde_json::Value) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::preview;

    /// A token of GitHub's format that no one holds.
    const TOKEN: &str = "ghp_0123456789abcdefghijABCDEFGHIJ012345";

    #[test]
    fn a_preview_shows_the_body_with_secrets_marked_not_shown() {
        let p = preview(Some("post"), Some(&format!("name=x&token={TOKEN}&n=1")))
            .unwrap()
            .unwrap();
        assert_eq!(p.method, "POST");
        assert!(!p.body.contains(TOKEN), "{}", p.body);
        assert!(
            p.body.starts_with("name=x&token=[DLP: github"),
            "{}",
            p.body
        );
        assert!(p.body.ends_with("&n=1"), "{}", p.body);
        assert_eq!(p.findings.len(), 1, "{:?}", p.findings);
        assert!(p.findings[0].starts_with("github"), "{:?}", p.findings);
        let encoded: String = TOKEN.bytes().map(|b| format!("{b:02x}")).collect();
        let p = preview(None, Some(&format!("blob={encoded}")))
            .unwrap()
            .unwrap();
        assert_eq!(p.method, "GET");
        assert!(
            p.findings.iter().any(|f| f.ends_with("(encoded)")),
            "{:?}",
            p.findings
        );
        let long = "a\u{1b}[31m".repeat(1000);
        let p = preview(Some("PUT"), Some(&long)).unwrap().unwrap();
        assert_eq!(p.body_bytes, long.len());
        assert!(p.body.chars().count() <= bottle_contract::supervise::PREVIEW_CHARS + 1);
        assert!(!p.body.contains('\u{1b}'));
        assert_eq!(preview(None, None).unwrap(), None);
    }

    #[test]
    fn an_unknown_method_or_a_body_too_large_is_refused() {
        assert!(
            preview(Some("GET /x HTTP/1.1"), None)
                .unwrap_err()
                .contains("method")
        );
        let big = "x".repeat(bottle_contract::supervise::MAX_PREVIEW_BODY + 1);
        assert!(preview(None, Some(&big)).unwrap_err().contains("at most"));
    }
}
