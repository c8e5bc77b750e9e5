//! One agent connection as egress holds it: a slot of the connection limit for as long as
//! the socket lives (a CONNECT tunnel or a WebSocket outlives the HTTP exchange that opened
//! it, and keeps its slot), an idle timeout, and a cap on the bytes the agent sends through it.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

/// The limits of one connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Closed after this long with no byte either way.
    pub idle: Duration,
    /// Closed once the agent has sent this many bytes through it.
    pub max_bytes_in: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            idle: Duration::from_secs(600),
            max_bytes_in: 8 << 30,
        }
    }
}

/// An agent's connection: its IO, its slot, its limits.
pub struct Conn<IO> {
    io: IO,
    _slot: OwnedSemaphorePermit,
    limits: Limits,
    bytes_in: u64,
    /// When a byte last went either way.
    last: Instant,
    idle: Pin<Box<tokio::time::Sleep>>,
}

impl<IO> Conn<IO> {
    /// `io`, holding `slot` until it is dropped.
    pub fn new(io: IO, slot: OwnedSemaphorePermit, limits: Limits) -> Conn<IO> {
        Conn {
            io,
            _slot: slot,
            limits,
            bytes_in: 0,
            last: Instant::now(),
            idle: Box::pin(tokio::time::sleep(limits.idle)),
        }
    }

    fn touch(&mut self) {
        self.last = Instant::now();
    }

    /// When idle, the error that closes it; otherwise the idle timer re-armed.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Option<std::io::Error> {
        loop {
            if self.idle.as_mut().poll(cx).is_pending() {
                return None;
            }
            let due = self.last + self.limits.idle;
            if Instant::now() >= due {
                return Some(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("idle for {:?}", self.limits.idle),
                ));
            }
            self.idle.as_mut().reset(due);
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Conn<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = (buf.filled().len() - before) as u64;
                if n > 0 {
                    self.touch();
                    self.bytes_in += n;
                    if self.bytes_in > self.limits.max_bytes_in {
                        return Poll::Ready(Err(std::io::Error::other(format!(
                            "the agent sent more than {} bytes through one connection",
                            self.limits.max_bytes_in
                        ))));
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match self.poll_idle(cx) {
                Some(e) => Poll::Ready(Err(e)),
                None => Poll::Pending,
            },
            other => other,
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Conn<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// What egress answers a connection it has no slot for, before closing it.
pub fn full_answer(open: usize) -> Vec<u8> {
    let body = format!(
        "egress: {open} connections are open, the most this bottle's egress serves at once (tunnels and WebSockets count); close some and try again\n"
    );
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nX-Bottle-Block: connection-limit\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use std::sync::Arc;

    fn slot() -> OwnedSemaphorePermit {
        Arc::new(tokio::sync::Semaphore::new(1))
            .try_acquire_owned()
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_closed_and_a_busy_one_is_not() {
        let limits = Limits {
            idle: Duration::from_secs(10),
            max_bytes_in: 1 << 20,
        };
        let (a, mut b) = tokio::io::duplex(64);
        let mut c = Conn::new(a, slot(), limits);
        // Busy: a byte every 5 s keeps it open past the idle time.
        for _ in 0..4 {
            tokio::time::advance(Duration::from_secs(5)).await;
            b.write_all(b"x").await.unwrap();
            let mut one = [0u8; 1];
            c.read_exact(&mut one).await.unwrap();
        }
        let err = c.read(&mut [0u8; 1]).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn a_connection_that_sends_too_much_is_cut() {
        let limits = Limits {
            idle: Duration::from_secs(60),
            max_bytes_in: 100,
        };
        let (a, mut b) = tokio::io::duplex(1024);
        let mut c = Conn::new(a, slot(), limits);
        b.write_all(&[0u8; 200]).await.unwrap();
        let mut buf = vec![0u8; 200];
        let err = c.read_exact(&mut buf).await.unwrap_err();
        assert!(err.to_string().contains("more than 100 bytes"), "{err}");
    }
}
