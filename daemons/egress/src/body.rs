//! Response bodies on a credentialed route: passed on as they come (server-sent events must
//! not wait) and cut when the route's own credential shows up in them, even split across
//! chunks: bytes at a chunk's end that begin the credential are held back until the next
//! chunk shows what follows them. (What the agent sends goes through [`crate::inspect`].)

use bottle_dlp::{Finding, Scanner};
use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

/// The error a response yields when it echoes the credential.
#[derive(Debug, thiserror::Error)]
#[error("the body carries {0}")]
pub struct SecretInBody(pub String);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response body watched for the route's credential.
pub struct Scanned<B> {
    inner: B,
    scanner: Arc<Scanner>,
    /// The last bytes seen, which a match could still start in.
    tail: Vec<u8>,
    /// Stream offset of `tail[0]`, for findings.
    offset: usize,
    /// Scanned bytes not passed on yet: they begin the credential.
    held: Vec<u8>,
    /// The origin's trailers, passed on once `held` is.
    trailers: Option<HeaderMap>,
    /// The origin's body has ended (what is held is passed on, then the end).
    ended: bool,
    /// Bytes passed on, shared with the access log.
    counted: Arc<AtomicU64>,
    failed: bool,
}

impl<B> Scanned<B> {
    /// Wrap `inner`; `counted` adds up the bytes passed on.
    pub fn new(inner: B, scanner: Arc<Scanner>, counted: Arc<AtomicU64>) -> Self {
        Scanned {
            inner,
            scanner,
            tail: Vec::new(),
            offset: 0,
            held: Vec::new(),
            trailers: None,
            ended: false,
            counted,
            failed: false,
        }
    }

    /// Scan `chunk` after the tail; the finding, if the two hold one.
    fn feed(&mut self, chunk: &[u8]) -> Option<Finding> {
        let mut window = std::mem::take(&mut self.tail);
        let scanned = window.len();
        window.extend_from_slice(chunk);
        if let Some(mut f) = self.scanner.scan_after(&window, scanned) {
            f.start += self.offset;
            f.end += self.offset;
            return Some(f);
        }
        // The tail keeps a whole match's length: a credential split here is found with the
        // next chunk, and the byte before it is still there for the scanner's edge check.
        let keep = self.scanner.max_match_len().min(window.len());
        let cut = window.len() - keep;
        self.offset += cut;
        self.tail = window.split_off(cut);
        None
    }

    /// `chunk` scanned: what may be passed on now (the rest is held), or the finding.
    fn pass(&mut self, chunk: Bytes) -> Result<Bytes, Finding> {
        if let Some(f) = self.feed(&chunk) {
            return Err(f);
        }
        // Usually nothing was held and nothing is: the chunk goes on as it came, uncopied.
        let whole = if self.held.is_empty() {
            chunk
        } else {
            let mut joined = std::mem::take(&mut self.held);
            joined.extend_from_slice(&chunk);
            Bytes::from(joined)
        };
        let hold = self
            .scanner
            .known_prefix_at_end(&self.tail)
            .min(whole.len());
        let now = whole.len() - hold;
        self.held = whole[now..].to_vec();
        Ok(whole.slice(..now))
    }

    /// What is held, as a frame to pass on now, if anything is.
    fn release(&mut self) -> Option<Frame<Bytes>> {
        (!self.held.is_empty()).then(|| Frame::data(Bytes::from(std::mem::take(&mut self.held))))
    }

    /// `frame` counted and passed on.
    fn out(&self, frame: Frame<Bytes>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(data) = frame.data_ref() {
            self.counted.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn cut(&mut self, f: impl ToString) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.failed = true;
        self.held.clear();
        Poll::Ready(Some(Err(Box::new(SecretInBody(f.to_string())))))
    }
}

impl<B> Body for Scanned<B>
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
        loop {
            if this.failed {
                return Poll::Ready(None);
            }
            if this.ended || this.trailers.is_some() {
                if let Some(frame) = this.release() {
                    return this.out(frame);
                }
                return match this.trailers.take() {
                    Some(t) => {
                        this.ended = true;
                        this.out(Frame::trailers(t))
                    }
                    None => Poll::Ready(None),
                };
            }
            let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => frame,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(None) => {
                    this.ended = true;
                    continue;
                }
                Poll::Pending => return Poll::Pending,
            };
            let frame = match frame.into_data() {
                Ok(data) => match this.pass(data) {
                    Ok(now) if now.is_empty() => continue,
                    Ok(now) => return this.out(Frame::data(now)),
                    Err(f) => return this.cut(f),
                },
                Err(frame) => frame,
            };
            match frame.into_trailers() {
                Ok(trailers) => {
                    let echoed = trailers
                        .iter()
                        .find_map(|(_, v)| this.scanner.scan(v.as_bytes()));
                    if let Some(f) = echoed {
                        return this.cut(format!("{f} (in a trailer)"));
                    }
                    this.trailers = Some(trailers);
                }
                // A frame of a kind http-body does not know yet: not passed on unread.
                Err(_) => continue,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed
            || (self.inner.is_end_stream() && self.held.is_empty() && self.trailers.is_none())
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        let held = self.held.len() as u64;
        let mut hint = SizeHint::new();
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + held);
        }
        hint.set_lower(inner.lower() + held);
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    type Frames =
        futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, std::io::Error>>>;

    fn chunks(parts: Vec<&'static [u8]>) -> StreamBody<Frames> {
        let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = parts
            .into_iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    fn scanner() -> Arc<Scanner> {
        Arc::new(Scanner::known_only(&[bottle_dlp::KnownSecret {
            name: "EGRESS_TOKEN_0".into(),
            value: b"s3cr3t-t0ken-value".to_vec(),
        }]))
    }

    #[tokio::test]
    async fn a_clean_body_passes_chunk_by_chunk() {
        let counted = Arc::new(AtomicU64::new(0));
        let body = Scanned::new(
            chunks(vec![b"hello ", b"world", b""]),
            scanner(),
            counted.clone(),
        );
        let all = body.collect().await.unwrap().to_bytes();
        assert_eq!(&all[..], b"hello world");
        assert_eq!(counted.load(Ordering::Relaxed), 11);
    }

    #[tokio::test]
    async fn an_echoed_credential_split_across_chunks_cuts_the_body() {
        let counted = Arc::new(AtomicU64::new(0));
        let mut body = Scanned::new(
            chunks(vec![b"data=s3cr3t-t0", b"ken-value&more", b"after"]),
            scanner(),
            counted,
        );
        let mut out = Vec::new();
        let mut err = None;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => out.extend_from_slice(f.data_ref().unwrap()),
                Err(e) => err = Some(e.to_string()),
            }
        }
        assert!(err.unwrap().contains("EGRESS_TOKEN_0"));
        let out = String::from_utf8_lossy(&out);
        assert!(!out.contains("after"), "{out:?}");
        // Not even its first part got out: the chunk's end that began it was held.
        assert_eq!(out, "data=");
    }

    #[tokio::test]
    async fn what_only_looked_like_the_start_of_it_is_passed_on_whole() {
        let counted = Arc::new(AtomicU64::new(0));
        let mut body = Scanned::new(
            chunks(vec![b"event: a\ndata: s3cr3t", b"-t0ad\n\n", b"data: s3"]),
            scanner(),
            counted.clone(),
        );
        let mut frames = Vec::new();
        while let Some(frame) = body.frame().await {
            frames.push(frame.unwrap().into_data().unwrap());
        }
        // A chunk that ends clean goes on whole, at once (an event is never held).
        assert_eq!(frames[0], "event: a\ndata: ");
        assert_eq!(frames[1], "s3cr3t-t0ad\n\n");
        assert_eq!(frames.concat(), b"event: a\ndata: s3cr3t-t0ad\n\ndata: s3");
        assert_eq!(
            counted.load(Ordering::Relaxed),
            frames.concat().len() as u64
        );
    }

    #[tokio::test]
    async fn trailers_are_checked_and_come_after_what_was_held() {
        let scanner = scanner();
        let with_trailers = |value: &'static str| {
            let mut t = HeaderMap::new();
            t.insert("x-echo", http::HeaderValue::from_static(value));
            let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
                Ok(Frame::data(Bytes::from_static(b"ok s3cr3t"))),
                Ok(Frame::trailers(t)),
            ];
            StreamBody::new(futures_util::stream::iter(frames))
        };
        let body = Scanned::new(
            with_trailers("fine"),
            scanner.clone(),
            Arc::new(AtomicU64::new(0)),
        );
        let all = body.collect().await.unwrap();
        assert_eq!(all.trailers().unwrap()["x-echo"], "fine");
        assert_eq!(&all.to_bytes()[..], b"ok s3cr3t");
        let body = Scanned::new(
            with_trailers("s3cr3t-t0ken-value"),
            scanner,
            Arc::new(AtomicU64::new(0)),
        );
        let err = body.collect().await.unwrap_err().to_string();
        assert!(err.contains("in a trailer"), "{err}");
    }
}
