//! A browser WebSocket with its handlers, detached and closed on drop.

use wasm_bindgen::JsCast;
use wasm_bindgen::closure::Closure;
use web_sys::{CloseEvent, Event, MessageEvent, WebSocket};

/// What a socket reports.
pub(crate) enum SocketEvent {
    Open,
    Text(String),
    /// Closed or failed, with the close code when the server sent one.
    Closed {
        code: Option<u16>,
        reason: String,
    },
}

/// An open or opening WebSocket. Dropping it detaches the handlers and
/// closes the socket.
pub(crate) struct Socket {
    ws: WebSocket,
    _on_open: Closure<dyn FnMut(Event)>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
    _on_error: Closure<dyn FnMut(Event)>,
}

impl Socket {
    /// Opens `url`; `on_event` hears everything that happens to it.
    pub(crate) fn open(url: &str, on_event: impl Fn(SocketEvent) + Clone + 'static) -> Result<Self, String> {
        let ws = WebSocket::new(url).map_err(|e| format!("cannot open {url}: {}", js_error_text(&e)))?;
        let f = on_event.clone();
        let on_open = Closure::<dyn FnMut(Event)>::new(move |_| f(SocketEvent::Open));
        let f = on_event.clone();
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
            if let Some(text) = e.data().as_string() {
                f(SocketEvent::Text(text));
            }
        });
        let f = on_event.clone();
        let on_close = Closure::<dyn FnMut(CloseEvent)>::new(move |e: CloseEvent| {
            let event = if e.code() == 1006 {
                SocketEvent::Closed {
                    code: None,
                    reason: "connection lost".to_owned(),
                }
            } else {
                SocketEvent::Closed {
                    code: Some(e.code()),
                    reason: format!("closed by server (code {})", u64::from(e.code())),
                }
            };
            f(event);
        });
        let f = on_event;
        // An error is always followed by a close event; report it as one in
        // case the close never comes.
        let on_error = Closure::<dyn FnMut(Event)>::new(move |_| {
            f(SocketEvent::Closed {
                code: None,
                reason: "connection error".into(),
            })
        });
        ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        ws.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        Ok(Self {
            ws,
            _on_open: on_open,
            _on_message: on_message,
            _on_close: on_close,
            _on_error: on_error,
        })
    }

    /// Sends a text frame.
    pub(crate) fn send(&self, text: &str) -> Result<(), String> {
        self.ws.send_with_str(text).map_err(|e| js_error_text(&e))
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        self.ws.set_onerror(None);
        let _ = self.ws.close();
    }
}

/// The message of a thrown JS value.
pub(crate) fn js_error_text(e: &wasm_bindgen::JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| "unknown error".into())
}
