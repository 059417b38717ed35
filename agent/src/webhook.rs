//! The webhook-woken agent (`--webhook-listen`): no connection to the server
//! while idle. The server's subscription (PROTOCOL.md §6–7, a `webhook`
//! subscription on `sessions/*`) POSTs a wake when a session has new events;
//! the agent checks the `Webhook-Signature` against the server's JWKS,
//! answers `202` at once, answers the waiting messages of each woken session
//! with the ordinary runner ([`crate::runner::answer_pending`], its own
//! connection, closed afterwards), keeps the wake's lease alive with
//! callbacks, and finally acks the wake's offsets with `done: true`.
//!
//! Refused with `401`, before anything else is done: no or a malformed
//! signature, a timestamp more than five minutes off, a key the server does
//! not publish, a signature that does not verify against the exact body.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, VerifyingKey};
use serde::Deserialize;
use tokio::sync::Semaphore;

use crate::runner::{AgentConfig, answer_pending};

/// Largest webhook body accepted.
const MAX_BODY_BYTES: usize = 1024 * 1024;
/// The JWKS is fetched again for an unknown `kid` at most this often.
const JWKS_REFRESH: Duration = Duration::from_secs(10);

/// How the webhook-woken agent behaves.
#[derive(Debug, Clone)]
pub struct WebhookOptions {
    /// The agent itself (its server and token).
    pub agent: AgentConfig,
    /// Where the server publishes its webhook keys
    /// (`{server}/v1/stream/__ds/jwks.json`).
    pub jwks_url: String,
    /// If set, wakes of other subscriptions are refused (`403`).
    pub subscription: Option<String>,
    /// Interval of the lease-extending callbacks while answering (well
    /// under the subscription's `lease_ttl_ms`).
    pub heartbeat: Duration,
    /// Accepted clock difference of a signature's timestamp.
    pub replay_window: Duration,
    /// Wakes handled at once; one more is answered `503` (the server retries
    /// it with backoff).
    pub max_wakes: usize,
}

impl WebhookOptions {
    /// Defaults for an agent of `server` (`http://host:port`): its JWKS at
    /// the protocol's place, a 5 s heartbeat, a 5 min replay window, 16
    /// wakes at once.
    ///
    /// ```
    /// use durable_session_agent::{AgentConfig, webhook::WebhookOptions};
    /// let options = WebhookOptions::new(AgentConfig::new("ws://127.0.0.1:4437/v1/ws"), "http://127.0.0.1:4437");
    /// assert_eq!(options.jwks_url, "http://127.0.0.1:4437/v1/stream/__ds/jwks.json");
    /// ```
    pub fn new(agent: AgentConfig, server: &str) -> Self {
        Self {
            agent,
            jwks_url: format!("{}/v1/stream/__ds/jwks.json", server.trim_end_matches('/')),
            subscription: None,
            heartbeat: Duration::from_secs(5),
            replay_window: Duration::from_secs(300),
            max_wakes: 16,
        }
    }
}

struct Shared {
    options: WebhookOptions,
    http: reqwest::Client,
    keys: tokio::sync::Mutex<Keys>,
    wakes: Arc<Semaphore>,
}

#[derive(Default)]
struct Keys {
    by_kid: HashMap<String, VerifyingKey>,
    fetched: Option<Instant>,
}

/// A wake, as the server sends it.
#[derive(Debug, Deserialize)]
struct Wake {
    subscription_id: String,
    wake_id: String,
    generation: u64,
    streams: Vec<WakeStream>,
    callback_url: String,
    callback_token: String,
}

#[derive(Debug, Deserialize)]
struct WakeStream {
    path: String,
    tail_offset: String,
    #[serde(default)]
    has_pending: bool,
}

/// Serves webhooks on `listener` until `shutdown` completes (wakes being
/// answered are then dropped: the server wakes again once their lease
/// ends).
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// use durable_session_agent::{AgentConfig, webhook::{WebhookOptions, serve}};
/// let options = WebhookOptions::new(AgentConfig::new("ws://127.0.0.1:4437/v1/ws"), "http://127.0.0.1:4437");
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:4500").await?;
/// serve(listener, options, std::future::pending()).await
/// # }
/// ```
pub async fn serve(
    listener: tokio::net::TcpListener,
    options: WebhookOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(std::io::Error::other)?;
    let shared = Arc::new(Shared {
        wakes: Arc::new(Semaphore::new(options.max_wakes.max(1))),
        options,
        http,
        keys: tokio::sync::Mutex::default(),
    });
    let app = Router::new()
        .fallback(handle)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(shared);
    let addr: SocketAddr = listener.local_addr()?;
    tracing::info!(%addr, "waiting for webhooks");
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

fn refuse(status: StatusCode, reason: &str) -> Response {
    tracing::warn!(%status, reason, "webhook refused");
    (status, axum::Json(serde_json::json!({ "error": reason }))).into_response()
}

async fn handle(State(shared): State<Arc<Shared>>, method: Method, headers: HeaderMap, body: Bytes) -> Response {
    if method != Method::POST {
        return refuse(StatusCode::METHOD_NOT_ALLOWED, "webhooks are POSTed");
    }
    let signature = headers.get("webhook-signature").and_then(|v| v.to_str().ok());
    if let Err(reason) = shared.verify(signature, &body).await {
        return refuse(StatusCode::UNAUTHORIZED, &reason);
    }
    let wake: Wake = match serde_json::from_slice(&body) {
        Ok(w) => w,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, &format!("not a wake: {e}")),
    };
    if shared
        .options
        .subscription
        .as_ref()
        .is_some_and(|s| *s != wake.subscription_id)
    {
        return refuse(StatusCode::FORBIDDEN, "a wake of another subscription");
    }
    let Ok(permit) = shared.wakes.clone().try_acquire_owned() else {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "busy: too many wakes at once");
    };
    tracing::info!(subscription = %wake.subscription_id, generation = wake.generation, "woken");
    tokio::spawn(async move {
        work(&shared, wake).await;
        drop(permit);
    });
    (StatusCode::ACCEPTED, axum::Json(serde_json::json!({}))).into_response()
}

impl Shared {
    /// Checks a `Webhook-Signature` (`t=…,kid=…,ed25519=…`) over the body.
    async fn verify(&self, header: Option<&str>, body: &[u8]) -> Result<(), String> {
        let header = header.ok_or("no Webhook-Signature")?;
        let (mut t, mut kid, mut sig) = (None, None, None);
        for part in header.split(',') {
            match part.split_once('=') {
                Some(("t", v)) => t = v.parse::<u64>().ok(),
                Some(("kid", v)) => kid = Some(v),
                Some(("ed25519", v)) => sig = Some(v),
                _ => {}
            }
        }
        let (Some(t), Some(kid), Some(sig)) = (t, kid, sig) else {
            return Err("malformed Webhook-Signature".into());
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if now.abs_diff(t) > self.options.replay_window.as_secs() {
            return Err("the signature's timestamp is outside the replay window".into());
        }
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .ok()
            .and_then(|b| Signature::from_slice(&b).ok())
            .ok_or("malformed signature")?;
        let key = self.key(kid).await?;
        let mut signed = format!("{t}.").into_bytes();
        signed.extend_from_slice(body);
        key.verify_strict(&signed, &sig)
            .map_err(|_| "the signature does not verify".to_owned())
    }

    /// The server's key `kid`, from its JWKS (fetched again for an unknown
    /// kid, at most every [`JWKS_REFRESH`]).
    async fn key(&self, kid: &str) -> Result<VerifyingKey, String> {
        let mut keys = self.keys.lock().await;
        if let Some(key) = keys.by_kid.get(kid) {
            return Ok(*key);
        }
        if keys.fetched.is_some_and(|at| at.elapsed() < JWKS_REFRESH) {
            return Err(format!("unknown key {kid}"));
        }
        keys.fetched = Some(Instant::now());
        let jwks: serde_json::Value = self
            .http
            .get(&self.options.jwks_url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| format!("cannot fetch the server's JWKS: {e}"))?
            .json()
            .await
            .map_err(|e| format!("the server's JWKS is not JSON: {e}"))?;
        keys.by_kid = parse_jwks(&jwks);
        keys.by_kid
            .get(kid)
            .copied()
            .ok_or_else(|| format!("unknown key {kid}"))
    }
}

/// The Ed25519 keys of a JWK Set, by `kid`.
fn parse_jwks(jwks: &serde_json::Value) -> HashMap<String, VerifyingKey> {
    let mut out = HashMap::new();
    for key in jwks["keys"].as_array().into_iter().flatten() {
        if key["kty"] != "OKP" || key["crv"] != "Ed25519" {
            continue;
        }
        let (Some(kid), Some(x)) = (key["kid"].as_str(), key["x"].as_str()) else {
            continue;
        };
        let Some(bytes) = URL_SAFE_NO_PAD
            .decode(x)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
        else {
            continue;
        };
        if let Ok(public) = VerifyingKey::from_bytes(&bytes) {
            out.insert(kid.to_owned(), public);
        }
    }
    out
}

/// Answers the woken sessions, extending the lease meanwhile, then acks
/// the wake's offsets with `done`. The acks are the tails the wake named:
/// what this process wrote while answering wakes it once more, and that
/// wake finds nothing to answer.
async fn work(shared: &Shared, wake: Wake) {
    let sessions: Vec<String> = wake
        .streams
        .iter()
        .filter(|s| s.has_pending)
        .filter_map(|s| s.path.strip_prefix("sessions/").map(str::to_owned))
        .collect();
    let answering = async {
        let tasks = sessions
            .into_iter()
            .map(|id| tokio::spawn(answer_pending(shared.options.agent.clone(), id)));
        for task in tasks.collect::<Vec<_>>() {
            let _ = task.await;
        }
    };
    let heartbeat = async {
        let mut tick = tokio::time::interval(shared.options.heartbeat);
        tick.tick().await;
        loop {
            tick.tick().await;
            let body = serde_json::json!({ "wake_id": wake.wake_id, "generation": wake.generation });
            if !callback(shared, &wake, body).await {
                // Fenced or gone: another wake owns the sessions now.
                return;
            }
        }
    };
    tokio::select! {
        () = answering => {}
        () = heartbeat => {}
    }
    let acks: Vec<serde_json::Value> = wake
        .streams
        .iter()
        .map(|s| serde_json::json!({ "stream": s.path, "offset": s.tail_offset }))
        .collect();
    let body = serde_json::json!({
        "wake_id": wake.wake_id,
        "generation": wake.generation,
        "acks": acks,
        "done": true,
    });
    callback(shared, &wake, body).await;
}

/// Posts to the wake's callback; whether it was accepted.
async fn callback(shared: &Shared, wake: &Wake, body: serde_json::Value) -> bool {
    let sent = shared
        .http
        .post(&wake.callback_url)
        .bearer_auth(&wake.callback_token)
        .json(&body)
        .send()
        .await;
    match sent {
        Ok(r) if r.status().is_success() => true,
        Ok(r) => {
            tracing::warn!(status = %r.status(), generation = wake.generation, "callback refused");
            false
        }
        Err(e) => {
            tracing::warn!(error = %e.without_url(), "callback failed");
            false
        }
    }
}
