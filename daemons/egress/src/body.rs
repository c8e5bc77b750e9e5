//! Bodies that stream through egress: scanned for secrets chunk by chunk, never buffered whole.
//!
//! A request body (the agent's data going out) is held back by the scanner's longest match,
//! so no secret leaves even when it is split across chunks. A response body is
//! passed on as it comes (server-sent events must not wait), and cut when the route's own
//! credential shows up in it.

use bottle_dlp::{Finding, Scanner};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

/// The error a body yields when it carries a secret; the proxy looks for it in error chains.
#[derive(Debug, thiserror::Error)]
#[error("the body carries {0}")]
pub struct SecretInBody(pub String);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A body passed through a scanner.
pub struct Scanned<B> {
    inner: B,
    scanner: Arc<Scanner>,
    /// Hold back the tail (requests) or pass every byte at once (responses).
    hold_back: bool,
    /// The bytes seen last that a match could still start in.
    tail: Vec<u8>,
    /// Bytes of `tail` not yet passed on (only when holding back).
    held: usize,
    /// Stream offset of `tail[0]`, for findings.
    offset: usize,
    /// Bytes passed on, shared with the access log.
    counted: Arc<AtomicU64>,
    /// What was found, for whoever sent the body: an HTTP/2 peer's reset hides the error.
    found: Arc<OnceLock<String>>,
    failed: bool,
}

impl<B> Scanned<B> {
    /// Wrap `inner`; `counted` adds up the bytes passed on.
    pub fn new(inner: B, scanner: Arc<Scanner>, hold_back: bool, counted: Arc<AtomicU64>) -> Self {
        Scanned {
            inner,
            scanner,
            hold_back,
            tail: Vec::new(),
            held: 0,
            offset: 0,
            counted,
            found: Arc::new(OnceLock::new()),
            failed: false,
        }
    }

    /// Set to the finding when the body is cut.
    pub fn found(&self) -> Arc<OnceLock<String>> {
        self.found.clone()
    }

    /// Scan `chunk` after the tail; the bytes that may go on now, or the finding.
    fn feed(&mut self, chunk: &[u8]) -> Result<Bytes, Finding> {
        let mut window = std::mem::take(&mut self.tail);
        let scanned = window.len();
        let already_sent = scanned - self.held;
        window.extend_from_slice(chunk);
        if let Some(mut f) = self.scanner.scan_after(&window, scanned) {
            f.start += self.offset;
            f.end += self.offset;
            return Err(f);
        }
        // The tail keeps a whole match's length: a secret split here is found with the next
        // chunk, and the byte before it is still there for the scanner's edge check.
        let keep = self.scanner.max_match_len().min(window.len());
        let cut = window.len() - keep;
        let out = if self.hold_back {
            let out = Bytes::copy_from_slice(&window[already_sent..cut.max(already_sent)]);
            self.held = window.len() - cut.max(already_sent);
            out
        } else {
            Bytes::copy_from_slice(chunk)
        };
        self.offset += cut;
        self.tail = window.split_off(cut);
        Ok(out)
    }

    /// What is still held back, at the end of the stream.
    fn release(&mut self) -> Bytes {
        let start = self.tail.len() - self.held;
        self.held = 0;
        Bytes::copy_from_slice(&self.tail[start..])
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
        if this.failed {
            return Poll::Ready(None);
        }
        loop {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(None) => {
                    if this.held == 0 {
                        return Poll::Ready(None);
                    }
                    let rest = this.release();
                    this.counted.fetch_add(rest.len() as u64, Ordering::Relaxed);
                    return Poll::Ready(Some(Ok(Frame::data(rest))));
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => match this.feed(&data) {
                        Err(f) => {
                            this.failed = true;
                            let _ = this.found.set(f.to_string());
                            return Poll::Ready(Some(Err(Box::new(SecretInBody(f.to_string())))));
                        }
                        Ok(out) if out.is_empty() => continue,
                        Ok(out) => {
                            this.counted.fetch_add(out.len() as u64, Ordering::Relaxed);
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    },
                    Err(trailers) => {
                        // Trailers end the data: what is held goes first, the trailers are
                        // dropped (they would carry unscanned text; HTTP/1.1 rarely has them).
                        let _ = trailers;
                        if this.held > 0 {
                            let rest = this.release();
                            this.counted.fetch_add(rest.len() as u64, Ordering::Relaxed);
                            return Poll::Ready(Some(Ok(Frame::data(rest))));
                        }
                        continue;
                    }
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held == 0 && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
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
        Arc::new(Scanner::new(&[bottle_dlp::KnownSecret {
            name: "EGRESS_TOKEN_0".into(),
            value: b"s3cr3t-t0ken-value".to_vec(),
        }]))
    }

    #[tokio::test]
    async fn a_clean_body_passes_whole_in_both_modes() {
        for hold in [true, false] {
            let counted = Arc::new(AtomicU64::new(0));
            let body = Scanned::new(
                chunks(vec![b"hello ", b"world", b""]),
                scanner(),
                hold,
                counted.clone(),
            );
            let all = body.collect().await.unwrap().to_bytes();
            assert_eq!(&all[..], b"hello world");
            assert_eq!(counted.load(Ordering::Relaxed), 11);
        }
    }

    #[tokio::test]
    async fn a_secret_split_across_chunks_never_leaves_a_held_back_body() {
        let counted = Arc::new(AtomicU64::new(0));
        let mut body = Scanned::new(
            chunks(vec![b"data=s3cr3t-t0", b"ken-value&more"]),
            scanner(),
            true,
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
        assert!(!String::from_utf8_lossy(&out).contains("s3cr3t"), "{out:?}");
    }
}
