//! A client connection whose writes must make progress: a client that stops reading fills the socket's
//! send buffer, and every write then waits. Past `limit` of waiting with no byte accepted, the write
//! fails with [`SendTimeout`] and hyper ends the connection, which gives back its slot and cancels the
//! upstream request behind it. A quiet stream writes nothing and is never bounded by this.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// A write to a client that made no progress within the send deadline.
#[derive(Debug, thiserror::Error)]
#[error("the client read nothing for {0} ms")]
pub struct SendTimeout(pub u128);

pub(super) struct SendDeadline<T> {
    inner: T,
    limit: Duration,
    /// Made at the first write that has to wait, and reset at each wait after a write went through:
    /// connections whose writes never wait (almost all) never allocate it.
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether the timer runs for the current wait.
    waiting: bool,
}

impl<T> SendDeadline<T> {
    pub(super) fn new(inner: T, limit: Duration) -> Self {
        Self { inner, limit, timer: None, waiting: false }
    }

    /// `polled`, or [`SendTimeout`] when the write has been waiting for longer than the limit.
    fn bounded<R>(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if polled.is_ready() {
            self.waiting = false;
            return polled;
        }
        let deadline = Instant::now() + self.limit;
        let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.waiting {
            timer.as_mut().reset(deadline);
            self.waiting = true;
        }
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, SendTimeout(self.limit.as_millis()))))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for SendDeadline<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for SendDeadline<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.bounded(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.bounded(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.bounded(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.bounded(cx, polled)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_write_that_waits_past_the_limit_fails_and_progress_restarts_the_clock() {
        // A pipe with room for 8 bytes, read by nobody.
        let (client, mut server) = tokio::io::duplex(8);
        let mut bounded = SendDeadline::new(client, Duration::from_secs(5));
        bounded.write_all(b"12345678").await.unwrap();
        // Room appears after 4 s: the wait was within the limit.
        let reader = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(4)).await;
            let mut buf = [0u8; 8];
            tokio::io::AsyncReadExt::read_exact(&mut server, &mut buf).await.unwrap();
            server
        });
        bounded.write_all(b"abcdefgh").await.unwrap();
        let _server = reader.await.unwrap();
        // Nobody reads again: 5 s later the write fails, however long the earlier waits were.
        let started = Instant::now();
        let err = bounded.write_all(b"more").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(err.get_ref().is_some_and(|e| e.is::<SendTimeout>()), "{err:?}");
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }
}
