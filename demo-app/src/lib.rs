//! The durable-sessions demo: a Leptos chat app built only on the SDK's
//! public Leptos API (`use_session_with_options`).
//!
//! Open `/?session=<id>` in two tabs (or on a phone) and both show the same
//! answer being written; cut the network and watch it resume without losing
//! a word; stop or steer the agent from either tab.

use durable_sessions::core::chat::{ChatItem, Lane, Run, RunState};
use durable_sessions::core::state::ConnectionState;
use durable_sessions::leptos::{UseSessionOptions, UseSessionReturn, use_session_with_options};
use durable_sessions::protocol::session::RunMode;
use std::cell::RefCell;
use std::rc::Rc;

use durable_sessions::core::ClientError;
use durable_sessions::web::{WebClient, WebOptions, random_id};
use leptos::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

/// Mounts the app on the page, once the app's backend said who we are.
#[wasm_bindgen(start)]
pub fn start() {
    wasm_bindgen_futures::spawn_local(async {
        let id = session_id();
        let backend = match fetch_token(&id).await {
            Ok(grant) => grant,
            Err(e) => {
                web_sys::console::error_1(&format!("token endpoint: {}", e.message).into());
                None
            }
        };
        leptos::mount::mount_to_body(move || view! { <App id=id.clone() backend=backend.clone() /> });
    });
}

/// What the app's backend (`scripts/demo-app-server.mjs`) hands this
/// visitor for one session.
#[derive(Clone)]
struct Grant {
    token: String,
    /// Who the token says we are: the author of our messages.
    sub: String,
    /// The durable-session server's URL.
    server: String,
    /// Further nodes of the same cluster (servers on one Redis), tried in
    /// turn when the connection fails.
    fallbacks: Vec<String>,
}

/// Asks the app's backend for a token for session `id` (`GET /token`).
/// `None` when there is no token endpoint: the page is then served by the
/// durable-session server itself, without access control.
async fn fetch_token(id: &str) -> Result<Option<Grant>, ClientError> {
    let failed = |what: &str| ClientError::new("token_failed", what);
    let window = web_sys::window().ok_or_else(|| failed("no window"))?;
    let url = format!("/token?session={}", js_sys::encode_uri_component(id));
    let response: web_sys::Response = JsFuture::from(window.fetch_with_str(&url))
        .await
        .map_err(|_| failed("the token endpoint is unreachable"))?
        .unchecked_into();
    if response.status() == 404 {
        return Ok(None);
    }
    if !response.ok() {
        return Err(failed(&format!("the token endpoint answered {}", response.status())));
    }
    let json = JsFuture::from(response.json().map_err(|_| failed("no body"))?)
        .await
        .map_err(|_| failed("the token endpoint's answer is not JSON"))?;
    let field = |key: &str| {
        js_sys::Reflect::get(&json, &JsValue::from_str(key))
            .ok()
            .and_then(|v| v.as_string())
            .ok_or_else(|| failed(&format!("the token endpoint's answer has no {key}")))
    };
    // `servers` (optional): every node in order, the first being `server`.
    let fallbacks = js_sys::Reflect::get(&json, &JsValue::from_str("servers"))
        .ok()
        .filter(js_sys::Array::is_array)
        .map(|list| {
            js_sys::Array::from(&list)
                .iter()
                .skip(1)
                .filter_map(|v| v.as_string())
                .collect()
        })
        .unwrap_or_default();
    Ok(Some(Grant {
        token: field("token")?,
        sub: field("sub")?,
        server: field("server")?,
        fallbacks,
    }))
}

/// The session id from `?session=…`; without one, a new id written into the
/// URL, so copying the URL joins the same session.
fn session_id() -> String {
    let window = web_sys::window().expect("a browser window");
    let search = window.location().search().unwrap_or_default();
    let found = search
        .trim_start_matches('?')
        .split('&')
        .find_map(|pair| pair.strip_prefix("session="))
        .map(|v| {
            js_sys::decode_uri_component(v)
                .map(String::from)
                .unwrap_or_else(|_| v.to_owned())
        })
        .filter(|id| !id.is_empty() && !id.contains('/'));
    found.unwrap_or_else(|| {
        let id = random_id("s");
        if let Ok(history) = window.history() {
            let _ = history.replace_state_with_url(&JsValue::NULL, "", Some(&format!("/?session={id}")));
        }
        id
    })
}

/// The client, with a short heartbeat so a dead link is noticed within
/// seconds: to the server and with the tokens of the app's backend, or to
/// the page's own origin without tokens.
fn client(id: &str, backend: Option<Grant>) -> Option<WebClient> {
    let mut options = WebOptions::new(backend.as_ref().map_or("", |b| b.server.as_str()));
    if let Some(grant) = backend {
        options.fallback_urls = grant.fallbacks;
        // The first token is the one the page started with; later ones are
        // fetched when the SDK asks (before expiry, or when refused).
        let first = Rc::new(RefCell::new(Some(grant.token)));
        let id = id.to_owned();
        options.token = Some(Rc::new(move || {
            let (first, id) = (first.clone(), id.clone());
            Box::pin(async move {
                if let Some(token) = first.borrow_mut().take() {
                    return Ok(token);
                }
                match fetch_token(&id).await? {
                    Some(grant) => Ok(grant.token),
                    None => Err(ClientError::new("token_failed", "the token endpoint is gone")),
                }
            })
        }));
    }
    options.core.ping_interval_ms = 2_000;
    options.core.heartbeat_timeout_ms = 5_000;
    options.core.probe_timeout_ms = 2_000;
    options.core.backoff.min_ms = 300;
    options.core.backoff.max_ms = 5_000;
    options.core.suspend_after_ms = 30_000;
    WebClient::new(options).ok()
}

#[component]
fn App(id: String, backend: Option<Grant>) -> impl IntoView {
    let author = backend.as_ref().map_or_else(|| random_id("guest"), |b| b.sub.clone());
    let session = use_session_with_options(
        id.as_str(),
        UseSessionOptions {
            client: client(&id, backend),
            author: Some(author.clone()),
            ..UseSessionOptions::default()
        },
    );
    let link = web_sys::window()
        .and_then(|w| w.location().href().ok())
        .unwrap_or_default();
    view! {
        <div class="app">
            <header class="top">
                <div class="brand">
                    <span class="logo">"◆"</span>
                    <div>
                        <h1>"Durable sessions"</h1>
                        <p class="sub">
                            "Session " <code data-testid="session-id">{id.clone()}</code>
                            " · you are " <code>{author}</code>
                        </p>
                    </div>
                </div>
                <ConnectionBadge session=session />
            </header>
            <p class="hint">
                "Open this page in another tab or device to join the same session: "
                <a href=link.clone() target="_blank">"open a second tab"</a>
            </p>
            <Transcript session=session />
            <RunControls session=session />
            <Composer session=session />
            <StatusPanel session=session />
        </div>
    }
}

/// connected / reconnecting in N s / offline / suspended.
#[component]
fn ConnectionBadge(session: UseSessionReturn) -> impl IntoView {
    let state = session.state;
    let class = move || format!("badge badge-{}", state.get().as_str());
    let retry = move || match (state.get(), session.retry_in_ms.get()) {
        (ConnectionState::Disconnected | ConnectionState::Suspended, Some(ms)) => {
            format!("reconnecting in {:.1} s", ms as f64 / 1000.0)
        }
        (ConnectionState::Connecting, _) => "connecting…".into(),
        _ => String::new(),
    };
    view! {
        <div class=class title=move || session.state_reason.get()>
            <span class="dot"></span>
            <span data-testid="connection-status">{move || state.get().as_str()}</span>
            <span class="retry" data-testid="connection-retry">{retry}</span>
        </div>
    }
}

#[component]
fn Transcript(session: UseSessionReturn) -> impl IntoView {
    let items = session.items;
    view! {
        <main class="transcript" data-testid="transcript">
            <Show when=move || items.with(Vec::is_empty)>
                <p class="empty">"Ask something — the agent answers here, in every tab at once."</p>
            </Show>
            {move || items.get().into_iter().map(|item| match item {
                ChatItem::User(m) => view! {
                    <article class="message user" data-testid="message" data-role="user">
                        <div class="meta">{m.author}</div>
                        <div class="text">{m.text}</div>
                    </article>
                }.into_any(),
                ChatItem::Run(run) => view! { <RunView run=run /> }.into_any(),
                // Events of other types (an app's own): the demo has none to show.
                ChatItem::Event(_) => ().into_any(),
            }).collect_view()}
        </main>
    }
}

#[component]
fn RunView(run: Run) -> impl IntoView {
    let status = run.state.as_str();
    let streaming = run.state == RunState::Streaming;
    let label = match run.state {
        RunState::Streaming => "writing…".to_string(),
        RunState::Completed => "done".to_string(),
        RunState::Cancelled => match &run.cancel_requested_by {
            Some(by) => format!("stopped by {by}"),
            None => "stopped".to_string(),
        },
        RunState::Failed => format!(
            "failed{}",
            run.reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default()
        ),
    };
    let steers = run.steers.clone();
    let lanes = run.lanes.clone();
    view! {
        <article class=format!("message assistant status-{status}") data-testid="message" data-role="assistant"
            data-run-status=status data-run-id=run.run_id.clone()>
            <div class="meta">
                <span>{run.agent.clone()}</span>
                <span class=format!("chip chip-{status}") data-testid="run-status">{label}</span>
            </div>
            {(!lanes.is_empty()).then(|| view! { <Lanes lanes=lanes /> })}
            <div class="text">
                <span data-testid="run-text">{run.text.trim_start().to_owned()}</span>
                {streaming.then(|| view! { <span class="cursor">"▍"</span> })}
            </div>
            {steers.into_iter().map(|s| view! {
                <div class="steer" data-testid="steer-note">
                    {if s.applied { "↪ steered: " } else { "↪ steering: " }} {s.text}
                </div>
            }).collect_view()}
        </article>
    }
}

/// One lane per sub-agent (multi-agent mode).
#[component]
fn Lanes(lanes: Vec<Lane>) -> impl IntoView {
    view! {
        <div class="lanes">
            {lanes.into_iter().map(|lane| view! {
                <section class="lane" data-testid="lane" data-agent=lane.agent.clone()>
                    <h3>{lane.agent.clone()}</h3>
                    <p class="progress">{lane.progress.last().cloned().unwrap_or_default()}</p>
                    <p class="lane-text" data-testid="lane-text">{lane.text.clone()}</p>
                </section>
            }).collect_view()}
        </div>
    }
}

/// Stop and steer, shown while a run streams.
#[component]
fn RunControls(session: UseSessionReturn) -> impl IntoView {
    let items = session.items;
    let streaming = Memo::new(move |_| {
        items.with(|items| {
            items.iter().rev().find_map(|i| match i {
                ChatItem::Run(r) if r.state == RunState::Streaming => Some(r.run_id.clone()),
                _ => None,
            })
        })
    });
    let (steer_text, set_steer_text) = signal(String::new());
    let steer = move || {
        let text = steer_text.get_untracked();
        if let Some(run) = streaming.get_untracked()
            && !text.trim().is_empty()
        {
            session.steer.run((run, text));
            set_steer_text.set(String::new());
        }
    };
    view! {
        <Show when=move || streaming.get().is_some()>
            <div class="controls">
                <button class="stop" data-testid="stop-button"
                    on:click=move |_| { if let Some(run) = streaming.get_untracked() { session.cancel.run(run) } }>
                    "■ Stop"
                </button>
                <input class="steer-input" data-testid="steer-input" placeholder="Steer the answer, e.g. “make it shorter”"
                    prop:value=steer_text
                    on:input=move |ev| set_steer_text.set(event_target_value(&ev))
                    on:keydown=move |ev| { if ev.key() == "Enter" { steer() } } />
                <button class="steer" data-testid="steer-button" on:click=move |_| steer()>"Steer"</button>
            </div>
        </Show>
    }
}

#[component]
fn Composer(session: UseSessionReturn) -> impl IntoView {
    let (text, set_text) = signal(String::new());
    let (multi, set_multi) = signal(false);
    let send = move || {
        let t = text.get_untracked();
        if t.trim().is_empty() {
            return;
        }
        let mode = if multi.get_untracked() {
            RunMode::Multi
        } else {
            RunMode::Single
        };
        session.send.run((t, mode));
        set_text.set(String::new());
    };
    view! {
        <form class="composer" on:submit=move |ev| { ev.prevent_default(); send() }>
            <input data-testid="message-input" placeholder="Ask the agent something…" autocomplete="off"
                prop:value=text on:input=move |ev| set_text.set(event_target_value(&ev)) />
            <label class="team" title="An orchestrator with three sub-agents, one lane each">
                <input type="checkbox" data-testid="multi-agent" prop:checked=multi
                    on:change=move |ev| set_multi.set(event_target_checked(&ev)) />
                "team"
            </label>
            <button type="submit" data-testid="send-button">"Send"</button>
        </form>
    }
}

/// Where the tab stands: offset, events received, and a way to cut the link.
#[component]
fn StatusPanel(session: UseSessionReturn) -> impl IntoView {
    view! {
        <footer class="status">
            <div>"offset " <code data-testid="offset">{move || session.offset.get().unwrap_or_else(|| "—".into())}</code></div>
            <div>"events " <code data-testid="events-received">{move || session.received.get()}</code></div>
            <button class="drop" data-testid="drop-connection" on:click=move |_| session.drop_connection.run(())
                title="Kill the connection as a network failure would; the client reconnects and resumes by itself">
                "Drop connection"
            </button>
            {move || session.error.get().map(|e| view! { <div class="error" data-testid="error">{e.to_string()}</div> })}
        </footer>
    }
}
