//! A per-core shutdown signal: fired once, awaited by many tasks of the same core.
//!
//! It is deliberately single-threaded (`Rc`, `Cell`): the cross-thread part of shutdown is a job
//! sent through each core's inbox, which then fires this local signal. Waiters keep one slot each,
//! so a long-lived connection that polls it many times does not grow the waiter list.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

#[derive(Clone, Default)]
pub struct Shutdown {
    inner: Rc<Inner>,
}

#[derive(Default)]
struct Inner {
    fired: Cell<bool>,
    next_id: Cell<u64>,
    waiters: RefCell<HashMap<u64, Waker>>,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn fire(&self) {
        self.inner.fired.set(true);
        for (_, w) in self.inner.waiters.borrow_mut().drain() {
            w.wake();
        }
    }

    pub fn is_fired(&self) -> bool {
        self.inner.fired.get()
    }

    /// Resolves once [`Shutdown::fire`] has been called.
    pub fn wait(&self) -> Wait {
        let id = self.inner.next_id.get();
        self.inner.next_id.set(id + 1);
        Wait {
            inner: self.inner.clone(),
            id,
        }
    }
}

pub struct Wait {
    inner: Rc<Inner>,
    id: u64,
}

impl Future for Wait {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.inner.fired.get() {
            return Poll::Ready(());
        }
        self.inner
            .waiters
            .borrow_mut()
            .insert(self.id, cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        self.inner.waiters.borrow_mut().remove(&self.id);
    }
}
