//! Cross-core hand-off: running a piece of work on the core that owns an auction and getting its
//! result back.
//!
//! Each core has one [`Inbox`]: a bounded crossbeam channel of jobs plus an `AtomicWaker` so the
//! owning core's event loop sleeps until work arrives. The reply travels back on a oneshot channel,
//! which wakes the waiting core (monoio's `sync` feature makes cross-thread wakers work). Nothing here
//! holds a lock on the request path.

use std::future::{poll_fn, Future};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::task::Poll;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use futures::task::AtomicWaker;

use super::Core;
use crate::error::ApiError;
use crate::http::Reply;

/// Work to run on another core. It receives that core's state and may spawn tasks there.
pub type Job = Box<dyn FnOnce(Rc<Core>) + Send>;

pub struct Inbox {
    tx: Sender<Job>,
    rx: Receiver<Job>,
    waker: AtomicWaker,
}

impl Inbox {
    pub fn new(capacity: usize) -> Inbox {
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        Inbox {
            tx,
            rx,
            waker: AtomicWaker::new(),
        }
    }

    /// Queues a job and wakes the owning core. Fails when the inbox is full.
    pub fn send(&self, job: Job) -> Result<(), Job> {
        match self.tx.try_send(job) {
            Ok(()) => {
                self.waker.wake();
                Ok(())
            }
            Err(TrySendError::Full(j)) | Err(TrySendError::Disconnected(j)) => Err(j),
        }
    }
}

/// The task on each core that runs jobs from its inbox, forever.
pub async fn drain(core: Rc<Core>) {
    let shared = core.shared.clone();
    let inbox = &shared.inboxes[core.id];
    poll_fn(|cx| {
        // Register before draining so a job sent between the drain and the return is not missed.
        inbox.waker.register(cx.waker());
        while let Ok(job) = inbox.rx.try_recv() {
            job(core.clone());
        }
        Poll::<()>::Pending
    })
    .await
}

/// Runs `work` on core `target` and returns its reply. When `target` is this core, runs it here.
pub async fn on_core<F, Fut>(core: &Rc<Core>, target: usize, request_id: &str, work: F) -> Reply
where
    F: FnOnce(Rc<Core>) -> Fut + Send + 'static,
    Fut: Future<Output = Reply> + 'static,
{
    if target == core.id {
        return work(core.clone()).await;
    }
    let (tx, rx) = futures::channel::oneshot::channel::<Reply>();
    let job: Job = Box::new(move |owner: Rc<Core>| {
        owner.stats().handoffs_in.fetch_add(1, Ordering::Relaxed);
        monoio::spawn(async move {
            let reply = work(owner).await;
            let _ = tx.send(reply);
        });
    });
    if core.shared.inboxes[target].send(job).is_err() {
        return Reply::error(
            &ApiError::overloaded(format!("Core {target} is too busy to take this request.")),
            request_id,
        );
    }
    core.stats().handoffs_out.fetch_add(1, Ordering::Relaxed);
    match rx.await {
        Ok(reply) => reply,
        Err(_) => Reply::error(
            &ApiError::internal("The owning core stopped before answering."),
            request_id,
        ),
    }
}
