//! Response bodies on a credentialed route: passed on as they come (server-sent events must
//! not wait) and cut when the route's own credential shows up in them, even split across
//! chunks. (What the agent sends goes through [`crate::inspect`].)

use bottle_dlp::{Finding, Scanner};
use bytes::Bytes;
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
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref()
                    && let Some(f) = this.feed(data)
                {
                    this.failed = true;
                    return Poll::Ready(Some(Err(Box::new(SecretInBody(f.to_string())))));
                }
                if let Some(data) = frame.data_ref() {
                    this.counted.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
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
        assert!(!String::from_utf8_lossy(&out).contains("after"), "{out:?}");
    }
}
