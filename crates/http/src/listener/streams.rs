//! What hyper's HTTP/2 server leaves unbounded: a connection with no exchange in progress (hyper has no
//! idle timer for HTTP/2), and a stream whose answer cannot be sent because the client grants it no
//! flow-control window (the socket then stays writable, so the send deadline on the socket never
//! fires). The listener counts each connection's exchanges and watches its streams' answers.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use http_body::Frame;
use tokio::sync::Notify;
use tokio::time::Instant;

/// The exchanges in progress on one HTTP/2 connection.
#[derive(Debug)]
pub(super) struct Activity {
    open: AtomicUsize,
    /// Told when the last exchange in progress ends.
    quiet: Notify,
    /// Per exchange in progress, since when its answer has waited for room to be sent: milliseconds
    /// since `epoch`, 0 while it does not wait. Weak: an exchange that ended leaves a dead entry, pruned
    /// as new ones come.
    waiting: Mutex<Vec<Weak<AtomicU64>>>,
    epoch: Instant,
}

impl Default for Activity {
    fn default() -> Self {
        Self { open: AtomicUsize::new(0), quiet: Notify::new(), waiting: Mutex::default(), epoch: Instant::now() }
    }
}

impl Activity {
    /// An exchange begins; it is in progress until the returned value is dropped.
    pub(super) fn begin(self: &Arc<Self>) -> Open {
        self.open.fetch_add(1, Ordering::AcqRel);
        let since = Arc::new(AtomicU64::new(0));
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        // Dead entries are dropped once they would double the table (amortised: each is looked at
        // about once).
        if waiting.len() >= 16 && waiting.len() >= 2 * self.open.load(Ordering::Acquire) {
            waiting.retain(|w| w.strong_count() > 0);
        }
        waiting.push(Arc::downgrade(&since));
        drop(waiting);
        Open { activity: self.clone(), since }
    }

    /// Completes once no exchange has been in progress for `period`.
    pub(super) async fn idle_for(&self, period: Duration) {
        loop {
            if self.open.load(Ordering::Acquire) != 0 {
                self.quiet.notified().await;
                continue;
            }
            tokio::select! {
                biased;
                // An exchange ended meanwhile (so one began): the quiet spell starts again.
                () = self.quiet.notified() => continue,
                () = tokio::time::sleep(period) => {
                    if self.open.load(Ordering::Acquire) == 0 {
                        return;
                    }
                }
            }
        }
    }

    /// Completes once an answer has waited `limit` for room to be sent (noticed within half as long
    /// again).
    pub(super) async fn stalled_for(&self, limit: Duration) {
        let limit_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        loop {
            tokio::time::sleep(limit / 2).await;
            let now = self.now_ms();
            let waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
            let stalled = waiting.iter().filter_map(Weak::upgrade).any(|since| {
                let since = since.load(Ordering::Relaxed);
                since != 0 && now.saturating_sub(since) >= limit_ms
            });
            if stalled {
                return;
            }
        }
    }

    /// Milliseconds since `epoch`, plus one: 0 means "not waiting".
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX).saturating_add(1)
    }
}

/// One exchange in progress; ends when dropped.
#[derive(Debug)]
pub(super) struct Open {
    activity: Arc<Activity>,
    since: Arc<AtomicU64>,
}

impl Drop for Open {
    fn drop(&mut self) {
        if self.activity.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            // A stored permit when nobody waits: the idle timer then sees it on its next wait.
            self.activity.quiet.notify_one();
        }
    }
}

/// A response body that keeps its exchange in progress until it is dropped, and tells when hyper holds
/// data of it that it cannot send: hyper asks for the next frame only once the last one found room in
/// the stream's window, so from the moment a data frame is handed over until the next poll, the answer
/// waits for the client.
pub(super) struct Counted {
    pub(super) inner: Body,
    pub(super) open: Open,
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let handed = matches!(&polled, Poll::Ready(Some(Ok(frame))) if frame.is_data());
        let since = if handed { self.open.activity.now_ms() } else { 0 };
        self.open.since.store(since, Ordering::Relaxed);
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_counts_from_the_end_of_the_last_exchange() {
        let activity = Arc::new(Activity::default());
        let open = activity.begin();
        let started = Instant::now();
        let ends = async {
            tokio::time::sleep(Duration::from_secs(20)).await;
            drop(open);
        };
        tokio::join!(activity.idle_for(Duration::from_secs(5)), ends);
        assert_eq!(started.elapsed(), Duration::from_secs(25));
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_handed_over_and_not_asked_for_again_is_stalled() {
        use http_body_util::BodyExt;
        let activity = Arc::new(Activity::default());
        let mut body = Counted { inner: Body::from("answer"), open: activity.begin() };
        let started = Instant::now();
        let handed = async {
            body.frame().await.unwrap().unwrap();
            body
        };
        let (_, mut body) = tokio::join!(activity.stalled_for(Duration::from_secs(10)), handed);
        // Seen at the second look, 10 s after the answer was handed over.
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        // A body asked for its next frame (here: its end) is no longer waiting.
        assert!(body.frame().await.is_none());
        assert!(
            tokio::time::timeout(Duration::from_secs(60), activity.stalled_for(Duration::from_secs(10))).await.is_err()
        );
    }
}
