//! Request bodies judged as the server will read them, before they go on.
//!
//! A body up to [`WHOLE_LIMIT`] is read whole before anything is dialled ([`read_whole`]),
//! its `Content-Encoding` undone (bounded), its multipart parts split out, and every layer
//! peeled by [`bottle_dlp::Scanner::inspect`] ([`judge_whole`]): a refused request never reaches the
//! origin, not even its headers. A larger body streams through [`Inspected`], judged in
//! windows of [`WINDOW`] with [`CONTEXT`] bytes of the window before kept for context and
//! [`HOLD`] bytes held back, so no secret straddling two windows leaves half-seen; a larger
//! *encoded* body is refused, since it cannot be decoded within the bounds.

use crate::dlp::DlpScope;
use bottle_dlp::content::{decode_content_into, multipart_boundary, multipart_parts};
use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

/// Bodies up to this size are judged whole, encodings and parts undone.
pub const WHOLE_LIMIT: usize = 8 << 20;
/// What a body's `Content-Encoding` may decode to.
pub const DECODED_LIMIT: usize = 64 << 20;
/// Past [`WHOLE_LIMIT`], how much new data each judged window holds.
pub const WINDOW: usize = 1 << 20;
/// Bytes already passed on that the next window still sees, for context.
pub const CONTEXT: usize = 64 << 10;
/// Bytes of each window held back for the next one: a secret cut by the window's end.
pub const HOLD: usize = 64 << 10;

/// The error a refused body yields; the proxy finds it in the error chain.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How the server will read a body: its encodings and its multipart boundary.
#[derive(Debug, Clone, Default)]
pub struct BodyShape {
    /// `Content-Encoding`, if any but identity.
    pub encoding: Option<String>,
    /// The boundary of a `multipart/*` body.
    pub boundary: Option<String>,
}

impl BodyShape {
    /// The shape the request's headers declare.
    pub fn of(headers: &HeaderMap) -> BodyShape {
        let get = |h: http::header::HeaderName| {
            headers
                .get(h)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        // Every Content-Encoding header, as the server applies them all, in order.
        let encoding: Vec<&str> = headers
            .get_all(http::header::CONTENT_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let encoding = encoding.join(", ");
        BodyShape {
            encoding: Some(encoding).filter(|e| {
                e.split(',')
                    .any(|c| !c.trim().is_empty() && !c.trim().eq_ignore_ascii_case("identity"))
            }),
            boundary: get(http::header::CONTENT_TYPE)
                .as_deref()
                .and_then(multipart_boundary),
        }
    }
}

/// The largest decode buffer a thread keeps for its next body: a worker's share of egress's
/// memory stays small while the usual body (a model call, a few hundred KiB) reuses it.
const DECODED_KEPT_MAX: usize = 2 << 20;

thread_local! {
    /// This thread's decode buffer from its last encoded body: the bundle's allocator (musl's)
    /// gives a large buffer back to the kernel when it is freed, so a fresh one per body costs
    /// a page fault per 4 KiB.
    static DECODED: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Why a whole body may not go, if it may not.
pub fn judge_whole(scanner: &DlpScope, body: &[u8], shape: &BodyShape) -> Option<String> {
    let Some(encoding) = &shape.encoding else {
        return judge_plain(scanner, body, shape);
    };
    match decode_content_into(body, encoding, DECODED_LIMIT, DECODED.take()) {
        Ok(decoded) => {
            let why = judge_plain(scanner, &decoded, shape);
            if decoded.capacity() <= DECODED_KEPT_MAX {
                DECODED.set(decoded);
            }
            why
        }
        Err(e) => Some(format!("the body cannot be scanned: {e}")),
    }
}

/// Why a body, its encoding undone, may not go, if it may not.
fn judge_plain(scanner: &DlpScope, plain: &[u8], shape: &BodyShape) -> Option<String> {
    if let Some(f) = scanner.inspect(plain) {
        return Some(format!("the body carries {f}"));
    }
    if let Some(boundary) = &shape.boundary {
        let parts = match multipart_parts(plain, boundary, DECODED_LIMIT) {
            Ok(p) => p,
            Err(e) => return Some(format!("the body cannot be scanned: {e}")),
        };
        for part in parts {
            if let Some(f) = scanner.inspect(&part) {
                return Some(format!("a multipart part carries {f}"));
            }
        }
    }
    None
}

/// A body read up to a limit.
pub enum ReadBody<B> {
    /// All of it, within the limit.
    Whole(Bytes),
    /// More than the limit: what was read, and the rest still to come.
    Large(Vec<u8>, B),
    /// Reading more would take egress past [`BODY_BUDGET`].
    OverBudget,
}

/// The request bytes egress holds at once across every connection, read and not yet judged:
/// one HTTP/2 connection alone may carry hundreds of streams of [`WHOLE_LIMIT`] each, and a
/// request past the budget is refused (waiting for room instead would leave HTTP/2's shared
/// window full of the waiting streams' data, and every stream stuck).
pub const BODY_BUDGET: usize = 256 << 20;

/// The bytes of request bodies held, counted against [`BODY_BUDGET`] until dropped.
pub struct Held {
    budget: &'static tokio::sync::Semaphore,
    permit: Option<tokio::sync::SemaphorePermit<'static>>,
    /// The bytes counted so far (the permit holds them rounded up to KiB).
    bytes: usize,
}

impl Held {
    /// Hold nothing yet, of egress's one budget.
    pub fn none() -> Held {
        static BUDGET: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
        // Counted in KiB: a permit count is a u32.
        Held {
            budget: BUDGET.get_or_init(|| tokio::sync::Semaphore::new(BODY_BUDGET >> 10)),
            permit: None,
            bytes: 0,
        }
    }

    /// Count `n` more bytes, if the budget has room for them.
    fn take(&mut self, n: usize) -> bool {
        // The KiB the total reaches, less those held: a body sent in tiny frames counts what
        // it is, not a KiB a frame.
        let total = self.bytes.saturating_add(n);
        let kib = total.div_ceil(1024) - self.bytes.div_ceil(1024);
        self.bytes = total;
        if kib == 0 {
            return true;
        }
        match self
            .budget
            .try_acquire_many(u32::try_from(kib).unwrap_or(u32::MAX))
        {
            Ok(p) => {
                match &mut self.permit {
                    Some(held) => held.merge(p),
                    None => self.permit = Some(p),
                }
                true
            }
            Err(_) => false,
        }
    }
}

/// Read `body` whole if it ends within `limit` bytes, counting what is read in `held`.
pub async fn read_whole<B>(
    mut body: B,
    limit: usize,
    held: &mut Held,
) -> Result<ReadBody<B>, B::Error>
where
    B: Body<Data = Bytes> + Unpin,
{
    use http_body_util::BodyExt;
    // Sized once from Content-Length where there is one: growing by doubling copied a 1 MiB
    // body about twice more (and, under musl, mapped fresh pages for each size). Only up to
    // a MiB: a length the agent merely claims reserves no more than that.
    let expected = body.size_hint().lower().min(limit as u64 + 1).min(1 << 20);
    let mut buf = Vec::with_capacity(usize::try_from(expected).unwrap_or(0));
    while let Some(frame) = body.frame().await {
        // Trailers would carry unscanned text; they are dropped.
        if let Ok(data) = frame?.into_data() {
            if !held.take(data.len()) {
                return Ok(ReadBody::OverBudget);
            }
            buf.extend_from_slice(&data);
            if buf.len() > limit {
                return Ok(ReadBody::Large(buf, body));
            }
        }
    }
    Ok(ReadBody::Whole(Bytes::from(buf)))
}

/// The rest of a large request body, passed on window by window once inspected.
pub struct Inspected<B> {
    inner: B,
    scanner: DlpScope,
    /// Context already passed on (`context` bytes), then what is not passed on yet.
    window: Vec<u8>,
    context: usize,
    /// Stream offset of `window[0]`, for findings.
    offset: usize,
    counted: Arc<AtomicU64>,
    refused: Arc<OnceLock<String>>,
    done: bool,
}

impl<B> Inspected<B> {
    /// `inner`, of which `read` was already read; `counted` adds up the bytes passed on.
    pub fn after(read: Vec<u8>, inner: B, scanner: DlpScope, counted: Arc<AtomicU64>) -> Self {
        Inspected {
            inner,
            scanner,
            window: read,
            context: 0,
            offset: 0,
            counted,
            refused: Arc::new(OnceLock::new()),
            done: false,
        }
    }

    /// Set to the reason when the body is refused (an HTTP/2 reset would hide the error).
    pub fn refused(&self) -> Arc<OnceLock<String>> {
        self.refused.clone()
    }

    /// Judge the window; pass on all but what is held back (or all, at the end).
    fn judge_window(&mut self, end: bool) -> Result<Bytes, String> {
        if let Some(mut f) = self.scanner.inspect_after(&self.window, self.context) {
            f.start += self.offset;
            f.end += self.offset;
            let why = format!("the body carries {f}");
            if self.scanner.refuses(&why) {
                return Err(why);
            }
        }
        let upto = if end {
            self.window.len()
        } else {
            self.window.len().saturating_sub(HOLD).max(self.context)
        };
        let out = Bytes::copy_from_slice(&self.window[self.context..upto]);
        let keep_from = upto.saturating_sub(CONTEXT);
        self.window.drain(..keep_from);
        self.offset += keep_from;
        self.context = upto - keep_from;
        Ok(out)
    }

    fn step(&mut self, end: bool) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.done = end;
        match self.judge_window(end) {
            Ok(out) if out.is_empty() => Poll::Ready(None),
            Ok(out) => {
                self.counted.fetch_add(out.len() as u64, Ordering::Relaxed);
                Poll::Ready(Some(Ok(Frame::data(out))))
            }
            Err(why) => {
                self.done = true;
                let _ = self.refused.set(why.clone());
                Poll::Ready(Some(Err(Box::new(Refused(why)))))
            }
        }
    }
}

impl<B> Body for Inspected<B>
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
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            if this.window.len() - this.context >= WINDOW + HOLD {
                return this.step(false);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        this.window.extend_from_slice(&data);
                    }
                }
                Poll::Ready(None) => return this.step(true),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};
    use std::io::Write;

    type Frames =
        futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, std::io::Error>>>;

    fn body(parts: Vec<Vec<u8>>) -> StreamBody<Frames> {
        let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = parts
            .into_iter()
            .map(|p| Ok(Frame::data(Bytes::from(p))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    fn token() -> String {
        format!("{}_{}", "ghp", "Zx9".repeat(12))
    }

    async fn run(parts: Vec<Vec<u8>>) -> Result<Bytes, String> {
        let counted = Arc::new(AtomicU64::new(0));
        let scanner = DlpScope::defaults(crate::log::AccessLog::new(false));
        let (read, rest) = match read_whole(body(parts), WHOLE_LIMIT, &mut Held::none())
            .await
            .unwrap()
        {
            ReadBody::OverBudget => return Err("over the budget".into()),
            ReadBody::Whole(b) => {
                return match judge_whole(&scanner, &b, &BodyShape::default()) {
                    Some(why) => Err(why),
                    None => Ok(b),
                };
            }
            ReadBody::Large(read, rest) => (read, rest),
        };
        let b = Inspected::after(read, rest, scanner, counted.clone());
        let refused = b.refused();
        match b.collect().await {
            Ok(c) => {
                let bytes = c.to_bytes();
                assert_eq!(counted.load(Ordering::Relaxed), bytes.len() as u64);
                Ok(bytes)
            }
            Err(_) => Err(refused.get().cloned().unwrap_or_default()),
        }
    }

    #[test]
    fn a_gzipped_secret_is_refused_and_a_clean_gzip_passes() {
        let gz = |text: &[u8]| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(text).unwrap();
            e.finish().unwrap()
        };
        let scanner = DlpScope::defaults(crate::log::AccessLog::new(false));
        let shape = BodyShape {
            encoding: Some("gzip".into()),
            boundary: None,
        };
        let bad = gz(format!("{{\"t\":\"{}\"}}", token()).as_bytes());
        let why = judge_whole(&scanner, &bad, &shape).unwrap();
        assert!(why.contains("github-pat"), "{why}");
        // Decoded into the buffer the secret was decoded into: none of it may be seen again.
        assert_eq!(
            judge_whole(&scanner, &gz(b"{\"hello\":\"world\"}"), &shape),
            None
        );
        let why = judge_whole(&scanner, b"not gzip", &shape).unwrap();
        assert!(why.contains("cannot be scanned"), "{why}");
        // A body too large for the thread to keep its buffer, then small ones again.
        let big = gz(&b"{\"hello\":\"world\"}\n".repeat(200_000));
        assert_eq!(judge_whole(&scanner, &big, &shape), None);
        assert!(judge_whole(&scanner, &bad, &shape).is_some());
        assert_eq!(judge_whole(&scanner, &gz(b"{}"), &shape), None);
    }

    #[test]
    fn every_content_encoding_header_counts() {
        let mut h = HeaderMap::new();
        h.append(http::header::CONTENT_ENCODING, "identity".parse().unwrap());
        h.append(http::header::CONTENT_ENCODING, "gzip".parse().unwrap());
        assert_eq!(
            BodyShape::of(&h).encoding.as_deref(),
            Some("identity, gzip")
        );
        let mut plain = HeaderMap::new();
        plain.append(http::header::CONTENT_ENCODING, "identity".parse().unwrap());
        assert_eq!(BodyShape::of(&plain).encoding, None);
    }

    #[tokio::test]
    async fn a_large_body_is_judged_in_windows_and_a_secret_across_them_is_found() {
        let big = vec![b'a'; WHOLE_LIMIT + 3 * WINDOW];
        let clean = run(big.chunks(100_000).map(<[u8]>::to_vec).collect())
            .await
            .unwrap();
        assert_eq!(clean.len(), big.len());
        let t = token();
        for at in [
            100,
            WHOLE_LIMIT + WINDOW - 10,
            WHOLE_LIMIT + 2 * WINDOW + HOLD - 5,
            big.len() - 45,
        ] {
            let mut hay = big.clone();
            hay[at..at + 1].copy_from_slice(b" ");
            hay[at + 1..at + 1 + t.len()].copy_from_slice(t.as_bytes());
            hay[at + 1 + t.len()] = b' ';
            let why = run(hay.chunks(65_536).map(<[u8]>::to_vec).collect())
                .await
                .unwrap_err();
            assert!(why.contains("github-pat"), "at {at}: {why}");
        }
    }
    #[tokio::test]
    async fn a_body_past_the_budget_is_refused_and_its_bytes_given_back() {
        // A budget of 3 MiB of its own (egress's one is shared by every test here).
        let budget: &'static tokio::sync::Semaphore =
            Box::leak(Box::new(tokio::sync::Semaphore::new(3 << 10)));
        let held = || Held {
            budget,
            permit: None,
            bytes: 0,
        };
        let two = || vec![vec![b'b'; 1 << 20], vec![b'b'; 1 << 20]];
        let mut first = held();
        assert!(matches!(
            read_whole(body(two()), WHOLE_LIMIT, &mut first)
                .await
                .unwrap(),
            ReadBody::Whole(_)
        ));
        // Two of the three MiB are held: a second body of two does not fit.
        let mut second = held();
        assert!(matches!(
            read_whole(body(two()), WHOLE_LIMIT, &mut second)
                .await
                .unwrap(),
            ReadBody::OverBudget
        ));
        drop((first, second));
        assert!(matches!(
            read_whole(body(two()), WHOLE_LIMIT, &mut held())
                .await
                .unwrap(),
            ReadBody::Whole(_)
        ));
        // Four KiB in one-byte frames count as four KiB, not as four thousand (past the three
        // MiB of this budget).
        let tiny = vec![vec![b'c'; 1]; 4096];
        assert!(matches!(
            read_whole(body(tiny), WHOLE_LIMIT, &mut held())
                .await
                .unwrap(),
            ReadBody::Whole(_)
        ));
    }
}
