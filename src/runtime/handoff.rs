//! Cross-core hand-off: running a piece of work on the core that owns an auction and getting its
//! result back.
//!
//! Each core has one [`Inbox`]: a bounded crossbeam channel of jobs plus an `AtomicWaker` so the
//! owning core's event loop sleeps until work arrives. The reply travels back on a oneshot channel,
//! which wakes the waiting core (monoio's `sync` feature makes cross-thread wakers work). Nothing here
//! holds a lock on the request path.
//!
//! Cancellation rule: work handed to a core always runs as its own task on that core, also when the
//! target is the core the request arrived on. hyper drops a connection's future when the client
//! hangs up, and a state change (an auction, a delivery, an admin change) must never stop half-way
//! because of that: the connection only awaits the answer, and a dropped connection merely drops
//! the receiving end. Each such task is counted in [`super::Shared::live_jobs`], so shutdown waits
//! for it as it waits for connections.
//!
//! Admission: request work carries an [`Admit`] class and passes [`admission::admit`] when its
//! task first runs on the owning core, so an overloaded core refuses it (503, nothing done)
//! instead of starting it late; the owner counts it in flight while it runs. Gavel's own
//! bookkeeping ([`ask`]) is never refused.

use std::future::{poll_fn, Future};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use futures::task::AtomicWaker;

use super::admission::{self, Admit};
use super::{App, Core};
use crate::error::ApiError;
use crate::http::Reply;

/// Work to run on another core. It receives that core's state and may spawn tasks there.
pub type Job<A> = Box<dyn FnOnce(Rc<Core<A>>) + Send>;

pub struct Inbox<A: App> {
    tx: Sender<Job<A>>,
    rx: Receiver<Job<A>>,
    waker: AtomicWaker,
    /// Set once to stop the core. A flag beside the channel rather than a job in it, so a full
    /// inbox can never lose the request to stop.
    stop: AtomicBool,
}

impl<A: App> Inbox<A> {
    pub fn new(capacity: usize) -> Inbox<A> {
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        Inbox {
            tx,
            rx,
            waker: AtomicWaker::new(),
            stop: AtomicBool::new(false),
        }
    }

    // Architecture Invariant [stop-never-queued]: a stop is a flag beside the inbox, never a
    // message in it, so a full inbox cannot lose it.
    /// Asks the owning core to stop accepting and finish its work. Never fails, whatever the
    /// inbox holds.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Queues a job and wakes the owning core. Fails when the inbox is full.
    pub fn send(&self, job: Job<A>) -> Result<(), Job<A>> {
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
pub async fn drain<A: App>(core: Rc<Core<A>>) {
    let shared = core.shared.clone();
    let inbox = &shared.inboxes[core.id];
    poll_fn(|cx| {
        // Register before draining so a job sent between the drain and the return is not missed.
        inbox.waker.register(cx.waker());
        while let Ok(job) = inbox.rx.try_recv() {
            job(core.clone());
        }
        if inbox.stop.load(Ordering::Acquire) && !core.shutdown.is_fired() {
            core.shutdown.fire();
        }
        Poll::<()>::Pending
    })
    .await
}

// Architecture Invariant [hang-up-changes-nothing]: the work is a task of its own on the owner
// core, so a client that hangs up (dropping the awaiting connection) changes nothing.
/// Runs `work` on core `target` and returns its reply. When `target` is this core, runs it here.
pub async fn on_core<A: App, F, Fut>(
    core: &Rc<Core<A>>,
    target: usize,
    request_id: &str,
    admit: Admit,
    work: F,
) -> Reply
where
    F: FnOnce(Rc<Core<A>>) -> Fut + Send + 'static,
    Fut: Future<Output = Reply> + 'static,
{
    match run_on(core, target, admit, work).await {
        Ok(reply) => reply,
        Err(e) => Reply::error(&e, request_id),
    }
}

/// Runs `work` on core `target` and returns what it produced; counted as a hand-off. Fails with
/// 503 when the target's inbox is full or the target sheds it ([`admission`]), and with 500 when
/// the target stopped before answering.
pub async fn run_on<A: App, T, F, Fut>(
    core: &Rc<Core<A>>,
    target: usize,
    admit: Admit,
    work: F,
) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(Rc<Core<A>>) -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    send_work(core, target, work, Some(admit)).await
}

/// For work already running as a task of its own on `core` (see the cancellation rule above):
/// runs `work` right here when `target` is this core, else hands it to `target` as [`run_on`]
/// does (this core admitted the work already; `target` admits it again).
pub async fn continue_on<A: App, T, F, Fut>(
    core: &Rc<Core<A>>,
    target: usize,
    admit: Admit,
    work: F,
) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(Rc<Core<A>>) -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    if target == core.id {
        return Ok(work(core.clone()).await);
    }
    send_work(core, target, work, Some(admit)).await
}

/// Like [`run_on`], for Gavel's own bookkeeping (e.g. collecting metrics for a scrape): not
/// counted as a request hand-off, never shed, not counted in flight.
pub async fn ask<A: App, T, F, Fut>(
    core: &Rc<Core<A>>,
    target: usize,
    work: F,
) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(Rc<Core<A>>) -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    send_work(core, target, work, None).await
}

/// Hands `work` to `target` (or spawns it here); `admit` is `None` for Gavel's own bookkeeping,
/// which is neither counted as a hand-off nor ever shed.
async fn send_work<A: App, T, F, Fut>(
    core: &Rc<Core<A>>,
    target: usize,
    work: F,
    admit: Option<Admit>,
) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(Rc<Core<A>>) -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    let counted = admit.is_some();
    // The request is ready to run from here on: its queue delay starts now.
    let queued = Instant::now();
    let (tx, rx) = futures::channel::oneshot::channel::<Result<T, ApiError>>();
    if target == core.id {
        spawn_detached(core.clone(), work, tx, admit, queued);
        return rx
            .await
            .map_err(|_| ApiError::internal("The core stopped before answering."))?;
    }
    let job: Job<A> = Box::new(move |owner: Rc<Core<A>>| {
        if counted {
            owner.stats().handoffs_in.fetch_add(1, Ordering::Relaxed);
        }
        spawn_detached(owner, work, tx, admit, queued);
    });
    if core.shared.inboxes[target].send(job).is_err() {
        if counted {
            admission::count_shed(core, admission::Shed::InboxFull);
        }
        return Err(admission::overloaded(target, admission::Shed::InboxFull));
    }
    if counted {
        core.stats().handoffs_out.fetch_add(1, Ordering::Relaxed);
    }
    rx.await
        .map_err(|_| ApiError::internal("The owning core stopped before answering."))?
}

/// Runs `work` as a task of its own on `core` and sends its result to `tx`. The task does not
/// depend on anyone awaiting `tx`: a client that hung up changes nothing about the outcome.
/// Request work (`admit` is `Some`) is admitted first; refused, it does nothing and sends the 503.
fn spawn_detached<A: App, T, F, Fut>(
    core: Rc<Core<A>>,
    work: F,
    tx: futures::channel::oneshot::Sender<Result<T, ApiError>>,
    admit: Option<Admit>,
    queued: Instant,
) where
    T: 'static,
    F: FnOnce(Rc<Core<A>>) -> Fut + 'static,
    Fut: Future<Output = T> + 'static,
{
    let live = LiveJob::new(&core);
    monoio::spawn(async move {
        // Decided when the task first runs, so the time it waited in the run queue counts.
        let in_flight = match admit.map(|a| admission::admit(&core, a, queued)) {
            Some(Err(e)) => {
                drop(live);
                let _ = tx.send(Err(e));
                return;
            }
            Some(Ok(guard)) => Some(guard),
            None => None,
        };
        let out = work(core).await;
        drop(in_flight);
        drop(live);
        let _ = tx.send(Ok(out));
    });
}

/// Counts a detached task in [`super::Shared::live_jobs`] while it runs (also if it is dropped
/// unfinished, e.g. when a core stops past its grace period).
struct LiveJob<A: App>(std::sync::Arc<super::Shared<A>>);

impl<A: App> LiveJob<A> {
    fn new(core: &Core<A>) -> LiveJob<A> {
        core.shared.live_jobs.fetch_add(1, Ordering::Relaxed);
        LiveJob(core.shared.clone())
    }
}

impl<A: App> Drop for LiveJob<A> {
    fn drop(&mut self) {
        self.0.live_jobs.fetch_sub(1, Ordering::Relaxed);
    }
}
