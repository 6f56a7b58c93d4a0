//! Per-connection timers hyper's HTTP/1 server does not have: an idle keep-alive timeout, and a
//! header-read timeout that starts with the first byte of a request head instead of when the
//! previous answer went out.
//!
//! hyper 1 starts its own `header_read_timeout` as soon as it waits for the next head, so a quiet
//! keep-alive connection is cut after the header timeout, and nothing separates "idle" from "slow
//! to send its head". [`Watched`] wraps the connection's IO and notes reads and writes in an
//! [`Activity`]; the service wrapper marks requests in progress; [`watch`] sleeps until the
//! earlier of the two deadlines and says which one passed. A connection with a request in progress
//! is never timed out here (its body read and its handler have their own limits).

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// What one connection has been doing, written by its IO wrapper and service wrapper and read by
/// its [`watch`] task; all on the same core, so plain cells.
#[derive(Debug)]
pub struct Activity {
    /// Last time bytes moved either way, or a request finished.
    last_active: Cell<Instant>,
    /// Requests handed to the service and not finished yet.
    in_progress: Cell<u32>,
    /// When the first byte of the head now being read arrived; `None` between requests.
    head_started: Cell<Option<Instant>>,
}

impl Activity {
    /// A fresh connection: it owes its first request head from now on, so a client that connects
    /// and stays silent is held to the header-read timeout, not the longer idle timeout.
    pub fn new() -> Rc<Activity> {
        let now = Instant::now();
        Rc::new(Activity {
            last_active: Cell::new(now),
            in_progress: Cell::new(0),
            head_started: Cell::new(Some(now)),
        })
    }

    fn on_read(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        let now = Instant::now();
        self.last_active.set(now);
        if self.in_progress.get() == 0 && self.head_started.get().is_none() {
            self.head_started.set(Some(now));
        }
    }

    fn on_write(&self, bytes: usize) {
        if bytes > 0 {
            self.last_active.set(Instant::now());
        }
    }

    /// A request head was parsed and handed to the service; held until the returned guard drops.
    pub fn begin(self: &Rc<Self>) -> InProgress {
        self.in_progress.set(self.in_progress.get() + 1);
        self.head_started.set(None);
        InProgress(self.clone())
    }
}

/// Marks one request in progress; dropping it (the handler finished or was dropped) ends it.
pub struct InProgress(Rc<Activity>);

impl Drop for InProgress {
    fn drop(&mut self) {
        let a = &self.0;
        a.in_progress.set(a.in_progress.get().saturating_sub(1));
        a.last_active.set(Instant::now());
    }
}

/// Why [`watch`] gave up on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// No request in progress and nothing received for the idle timeout.
    Idle,
    /// A request head started (or the connection opened) and did not complete in time.
    Head,
}

/// Resolves when the connection has been idle for `idle`, or has spent `header_read` on one
/// request head. Never resolves while a request is in progress. It never fires early: each wake
/// recomputes the deadline from what happened since.
pub async fn watch(activity: Rc<Activity>, idle: Duration, header_read: Duration) -> Expired {
    loop {
        let (deadline, why) = if activity.in_progress.get() > 0 {
            // The request's own limits bound it; look again after one idle period at the latest.
            (Instant::now() + idle, None)
        } else if let Some(started) = activity.head_started.get() {
            (started + header_read, Some(Expired::Head))
        } else {
            (activity.last_active.get() + idle, Some(Expired::Idle))
        };
        let now = Instant::now();
        match why {
            Some(why) if deadline <= now => return why,
            _ => monoio::time::sleep(deadline.saturating_duration_since(now)).await,
        }
    }
}

pin_project_lite::pin_project! {
    /// Connection IO that records every read and write in an [`Activity`].
    pub struct Watched<T> {
        #[pin]
        inner: T,
        activity: Rc<Activity>,
    }
}

impl<T> Watched<T> {
    pub fn new(inner: T, activity: Rc<Activity>) -> Self {
        Watched { inner, activity }
    }
}

impl<T: hyper::rt::Read> hyper::rt::Read for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        // The inner reader fills a buffer over our cursor's unfilled part, so the bytes it read
        // can be counted, and then the cursor is advanced past them.
        // SAFETY: nothing is uninitialized here; the inner reader only writes into the slice.
        let unfilled = unsafe { buf.as_mut() };
        let mut local = hyper::rt::ReadBuf::uninit(unfilled);
        let res = this.inner.poll_read(cx, local.unfilled());
        let n = local.filled().len();
        if let Poll::Ready(Ok(())) = res {
            // SAFETY: the inner reader filled (so initialized) exactly `n` bytes of the slice.
            unsafe { buf.advance(n) };
            this.activity.on_read(n);
        }
        res
    }
}

impl<T: hyper::rt::Write> hyper::rt::Write for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let res = this.inner.poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = res {
            this.activity.on_write(n);
        }
        res
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let res = this.inner.poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = res {
            this.activity.on_write(n);
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}
