//! A single-threaded one-shot channel: the smallest way for a callback to
//! resolve a future on the browser's one thread.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

struct State<T> {
    value: Option<T>,
    waker: Option<Waker>,
    /// The sending side is gone.
    closed: bool,
}

/// Resolves the paired [`Receiver`] once.
pub(crate) struct Sender<T>(Rc<RefCell<State<T>>>);

/// A future of the value sent, or `None` if the sender was dropped unused.
pub(crate) struct Receiver<T>(Rc<RefCell<State<T>>>);

/// A sender and its receiver.
pub(crate) fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let state = Rc::new(RefCell::new(State {
        value: None,
        waker: None,
        closed: false,
    }));
    (Sender(state.clone()), Receiver(state))
}

impl<T> Sender<T> {
    pub(crate) fn send(self, value: T) {
        self.0.borrow_mut().value = Some(value);
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut st = self.0.borrow_mut();
            st.closed = true;
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Future for Receiver<T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut st = self.0.borrow_mut();
        if let Some(v) = st.value.take() {
            return Poll::Ready(Some(v));
        }
        if st.closed {
            return Poll::Ready(None);
        }
        st.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}
