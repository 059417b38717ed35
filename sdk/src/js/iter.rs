//! `Session.events()`: an async iterator fed by the session.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use js_sys::{Function, Object, Promise, Reflect};
use wasm_bindgen::prelude::*;

#[derive(Default)]
struct State {
    queue: VecDeque<JsValue>,
    waiting: Option<(Function, Function)>,
    error: Option<JsValue>,
    done: bool,
}

/// The feeding end of one iterator.
pub(super) struct Feed(Rc<RefCell<State>>);

fn result(value: &JsValue, done: bool) -> JsValue {
    let obj = Object::new();
    let _ = Reflect::set(&obj, &"value".into(), value);
    let _ = Reflect::set(&obj, &"done".into(), &done.into());
    obj.into()
}

impl Feed {
    /// A feed and its JS iterator object.
    pub(super) fn new() -> (Self, JsValue) {
        let state: Rc<RefCell<State>> = Rc::default();
        let iterator = Object::new();
        let s = state.clone();
        let next = Closure::<dyn FnMut() -> Promise>::new(move || {
            let mut st = s.borrow_mut();
            if let Some(value) = st.queue.pop_front() {
                return Promise::resolve(&result(&value, false));
            }
            if let Some(err) = &st.error {
                return Promise::reject(err);
            }
            if st.done {
                return Promise::resolve(&result(&JsValue::UNDEFINED, true));
            }
            drop(st);
            let s = s.clone();
            Promise::new(&mut |resolve, reject| {
                s.borrow_mut().waiting = Some((resolve, reject));
            })
        });
        let s = state.clone();
        let ret = Closure::<dyn FnMut() -> Promise>::new(move || {
            let mut st = s.borrow_mut();
            st.done = true;
            st.queue.clear();
            Promise::resolve(&result(&JsValue::UNDEFINED, true))
        });
        let _ = Reflect::set(&iterator, &"next".into(), &next.into_js_value());
        let _ = Reflect::set(&iterator, &"return".into(), &ret.into_js_value());
        let this = iterator.clone();
        let own = Closure::<dyn FnMut() -> JsValue>::new(move || this.clone().into());
        let _ = Reflect::set(&iterator, &js_sys::Symbol::async_iterator(), &own.into_js_value());
        (Self(state), iterator.into())
    }

    /// Hands a value to the iterator. `false` once the iterator is finished.
    pub(super) fn push(&self, value: JsValue) -> bool {
        let mut st = self.0.borrow_mut();
        if st.done {
            return false;
        }
        match st.waiting.take() {
            Some((resolve, _)) => {
                drop(st);
                let _ = resolve.call1(&JsValue::NULL, &result(&value, false));
            }
            None => st.queue.push_back(value),
        }
        true
    }

    /// Ends the iterator with an error (after what was queued).
    pub(super) fn fail(&self, err: JsValue) -> bool {
        let mut st = self.0.borrow_mut();
        match st.waiting.take() {
            Some((_, reject)) => {
                drop(st);
                let _ = reject.call1(&JsValue::NULL, &err);
            }
            None => st.error = Some(err),
        }
        false
    }

    /// Ends the iterator (after what was queued).
    pub(super) fn end(&self) {
        let mut st = self.0.borrow_mut();
        st.done = true;
        if let Some((resolve, _)) = st.waiting.take() {
            drop(st);
            let _ = resolve.call1(&JsValue::NULL, &result(&JsValue::UNDEFINED, true));
        }
    }
}
