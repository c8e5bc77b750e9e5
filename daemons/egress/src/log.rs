//! The access log: one JSON line per request on stdout (bottle-init prefixes it `[egress] `).
//!
//! A line is written when the response body ends, so `bytes` and `duration_ms` cover the
//! whole stream. Never a token value, never a query string (queries carry keys), and a path is
//! cut at 256 characters.
//!
//! Each line is numbered and ASCII only ([`bottle_contract::logline`]): the ledger records a
//! line that is missing instead of passing over it. The host name is cut at 256 characters and
//! the reason at 1024, so no line comes near the engine's 16 KiB, past which it would be
//! stored in parts.
//!
//! Lines are gathered and written out together, once 32 KiB wait or every 10 ms: under load,
//! many lines per write call rather than one each (the audit ledger is built from these lines,
//! so they cost a request as little as possible). Nothing is dropped: a stdout that stops
//! draining slows requests down, as a blocking write of each line would.

use bytes::Bytes;
use http::Method;
use http_body::{Body, Frame, SizeHint};
use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

/// What a path that carries a secret is written as.
const REDACTED: &str = "[redacted]";

/// What egress did with a request.
#[derive(Debug, Clone, Copy, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Forwarded.
    Allow,
    /// Refused by a rule.
    Block,
    /// Allowed, but the upstream failed.
    Error,
}

/// One request's line.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Record {
    /// RFC 3339, UTC.
    pub time: String,
    /// The method.
    pub method: String,
    /// The target host.
    pub host: String,
    /// The path, without the query.
    pub path: String,
    /// The route that matched.
    pub route: Option<String>,
    /// The route rule that refused it (`methods`, `deny[0]`, `github-git-data`), if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// What egress did.
    pub decision: Option<Decision>,
    /// Why (empty when allowed).
    pub reason: String,
    /// The status the agent got (0 when the connection was closed).
    pub status: u16,
    /// Response bytes passed to the agent.
    pub bytes: u64,
    /// From the request's arrival to the end of the response body.
    pub duration_ms: f64,
    #[serde(skip)]
    started: Option<Instant>,
    #[serde(skip)]
    counter: Option<Arc<AtomicU64>>,
    /// What the request's [`Unsettled`] guard needs to know of this line.
    #[serde(skip)]
    fate: Option<Arc<Fate>>,
}

/// Shared by a request's line and its [`Unsettled`] guard.
#[derive(Debug, Default)]
struct Fate {
    /// The line was written, or handed to the body that writes it.
    settled: std::sync::atomic::AtomicBool,
    /// The path carries a secret and is never written.
    redacted: std::sync::atomic::AtomicBool,
}

/// A request's line written on drop if nothing else wrote it: the agent that closes a request
/// (an HTTP/2 stream reset, a connection cut mid-body) while egress works on it would otherwise
/// leave no line at all, and no record in the ledger.
pub struct Unsettled {
    record: Record,
    log: AccessLog,
}

impl Drop for Unsettled {
    fn drop(&mut self) {
        let Some(fate) = &self.record.fate else {
            return;
        };
        if !fate.settled.load(Ordering::Relaxed) {
            let mut r = self.record.clone();
            if fate.redacted.load(Ordering::Relaxed) {
                r.path = REDACTED.into();
            }
            let r = r.decided(
                Decision::Error,
                "the agent went away before egress answered",
                0,
                None,
            );
            self.log.write(&r);
        }
    }
}

impl Record {
    /// A record for a request that arrived at `started`.
    pub fn new(method: &Method, host: &str, path: &str, started: Instant) -> Self {
        let path: String = path.chars().take(256).collect();
        let host: String = host.chars().take(256).collect();
        // A method no standard defines is refused as a channel (`curl -X <token>`): its word
        // is not written either.
        let method = method.as_str();
        let method = if bottle_contract::egress::KNOWN_METHODS.contains(&method) {
            method
        } else {
            "[not a known method]"
        };
        Record {
            time: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            method: method.to_string(),
            host,
            path,
            route: None,
            rule: None,
            decision: None,
            reason: String::new(),
            status: 0,
            bytes: 0,
            duration_ms: 0.0,
            started: Some(started),
            counter: None,
            fate: None,
        }
    }

    /// A guard that writes this request's line when dropped, unless it was written (or handed
    /// to [`Logged`]) by then.
    pub fn unless_settled(&mut self, log: &AccessLog) -> Unsettled {
        self.fate = Some(Arc::default());
        Unsettled {
            record: self.clone(),
            log: log.clone(),
        }
    }

    /// Mark the line written (or as good as: a body that writes it has it).
    fn settle(&self) {
        if let Some(f) = &self.fate {
            f.settled.store(true, Ordering::Relaxed);
        }
    }

    /// Keep the path out of the log (it carries a secret), here and in the guard's line.
    pub fn redact_path(&mut self) {
        self.path = REDACTED.into();
        if let Some(f) = &self.fate {
            f.redacted.store(true, Ordering::Relaxed);
        }
    }

    /// The outcome; `counter` is read when the line is written.
    pub fn decided(
        mut self,
        decision: Decision,
        reason: &str,
        status: u16,
        counter: Option<Arc<AtomicU64>>,
    ) -> Self {
        self.decision = Some(decision);
        self.reason = reason.chars().take(1024).collect();
        self.status = status;
        self.counter = counter;
        self
    }
}

/// Lines waiting to be written, in the order they were made.
static PENDING: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());
/// Written out once this much is waiting.
const WRITE_AT: usize = 32 * 1024;
/// A line waits at most this long, however little is waiting.
const WRITE_EVERY: std::time::Duration = std::time::Duration::from_millis(10);
/// Told when a line comes to an empty [`PENDING`]: the writer sleeps until then, so an idle
/// egress wakes no thread at all.
static LINE_WAITS: std::sync::Condvar = std::sync::Condvar::new();

/// Write out whatever is waiting (under the lock, so lines stay in order).
fn write_pending(pending: &mut Vec<u8>) {
    if pending.is_empty() {
        return;
    }
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(pending);
    let _ = out.flush();
    pending.clear();
}

/// Add `line` (a newline is added) to what is waiting; write it all out once enough waits.
fn send(line: String) {
    static TIMER: std::sync::Once = std::sync::Once::new();
    static NO_TIMER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    TIMER.call_once(|| {
        // Without the timer, lines would wait for the next full buffer: said once, and every
        // line is written at once instead.
        let started = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(|| {
                loop {
                    let mut pending = PENDING.lock().unwrap_or_else(|p| p.into_inner());
                    while pending.is_empty() {
                        pending = LINE_WAITS.wait(pending).unwrap_or_else(|p| p.into_inner());
                    }
                    drop(pending);
                    // The lines that come meanwhile go out with it, in one write.
                    std::thread::sleep(WRITE_EVERY);
                    write_pending(&mut PENDING.lock().unwrap_or_else(|p| p.into_inner()));
                }
            });
        if let Err(e) = started {
            eprintln!(
                "egress: cannot start the access log's timer ({e}); writing each line at once"
            );
            NO_TIMER.store(true, Ordering::Relaxed);
        }
    });
    /// Lines numbered so far; taken under [`PENDING`]'s lock, so numbers follow the output.
    static NUMBERED: AtomicU64 = AtomicU64::new(0);
    let mut pending = PENDING.lock().unwrap_or_else(|p| p.into_inner());
    let first = pending.is_empty();
    let seq = NUMBERED.fetch_add(1, Ordering::Relaxed) + 1;
    pending.extend_from_slice(bottle_contract::logline::numbered(seq, &line).as_bytes());
    pending.push(b'\n');
    if pending.len() >= WRITE_AT || NO_TIMER.load(Ordering::Relaxed) {
        write_pending(&mut pending);
    } else if first {
        LINE_WAITS.notify_one();
    }
}

/// Where lines go.
#[derive(Clone)]
pub struct AccessLog {
    on: bool,
}

impl AccessLog {
    /// A log that writes (`on`) or drops every line (benchmarks).
    pub fn new(on: bool) -> Self {
        AccessLog { on }
    }

    /// Write out every line made so far (before exiting, and after a line a reader waits
    /// for).
    pub fn flush(&self) {
        write_pending(&mut PENDING.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Write one request's line.
    pub fn write(&self, r: &Record) {
        r.settle();
        if !self.on {
            return;
        }
        let mut r = r.clone();
        if let Some(c) = &r.counter {
            r.bytes = c.load(Ordering::Relaxed);
        }
        if let Some(s) = r.started {
            r.duration_ms = (s.elapsed().as_secs_f64() * 1e6).round() / 1e3;
        }
        if let Ok(line) = serde_json::to_string(&r) {
            send(line);
        }
    }

    /// A line about the daemon itself (start, reload, a failed upgrade).
    pub fn event(&self, event: &str, message: &str) {
        let line = serde_json::json!({
            "time": time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            "event": event,
            "message": message,
        });
        send(line.to_string());
        // Rare, and read by people and tests as they happen.
        self.flush();
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A body that adds up the bytes it passes on.
pub struct Counted<B> {
    inner: B,
    counted: Arc<AtomicU64>,
}

impl<B> Counted<B> {
    /// Wrap `inner`.
    pub fn new(inner: B, counted: Arc<AtomicU64>) -> Self {
        Counted { inner, counted }
    }
}

impl<B> Body for Counted<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    this.counted.fetch_add(d.len() as u64, Ordering::Relaxed);
                }
                Poll::Ready(Some(Ok(f)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A body that writes its request's log line when it ends or is dropped.
pub struct Logged<B> {
    inner: B,
    log: AccessLog,
    record: Option<Record>,
}

impl<B> Logged<B> {
    /// Wrap `inner`; `record` is written once.
    pub fn new(inner: B, log: AccessLog, record: Record) -> Self {
        record.settle();
        Logged {
            inner,
            log,
            record: Some(record),
        }
    }
}

impl<B> Drop for Logged<B> {
    fn drop(&mut self) {
        if let Some(r) = self.record.take() {
            self.log.write(&r);
        }
    }
}

impl<B> Body for Logged<B>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Err(e))) = &polled
            && let Some(r) = &mut this.record
        {
            r.decision = Some(Decision::Block);
            r.reason = format!("response cut: {e}");
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
