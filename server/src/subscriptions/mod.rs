//! Durable Streams Subscriptions (PROTOCOL.md §6–7): durable cursors over
//! streams that wake a worker — by a signed webhook, or by a wake event in a
//! pull-wake stream that workers claim — when a linked stream has data past
//! its cursor.
//!
//! - [`spec`]: the configuration a client sends, validated and hashed.
//! - [`glob`]: patterns over stream paths.
//! - [`signing`]: the Ed25519 keys that sign webhooks, and their JWKS.
//! - [`target`]: where webhooks may go (SSRF rules).
//! - [`observed`]: the storage wrapper that tells subscriptions about every
//!   create and append, whichever API made it.
//! - `delivery`: the webhook POST and its retries.
//!
//! State: every subscription's configuration, stream links with their
//! acknowledged offsets, and wake generation are stored in the [`Storage`]
//! ([`Storage::put_subscription`]) and loaded at start-up, so cursors and
//! fencing survive restarts. Wakes, leases and retry timers live in memory:
//! after a restart every subscription with pending work is woken again with
//! a new generation (at-least-once delivery). One node runs the deliveries
//! of the appends it stores (docs/protocol.md §13).

mod delivery;
pub mod glob;
pub mod observed;
pub mod signing;
pub mod spec;
pub mod target;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::offset::{Pos, format_offset, offset_at, parse_offset, split};
use crate::storage::{Append, Storage};
use signing::WebhookKeys;
use spec::{Kind, Spec};
use target::TargetPolicy;

/// How subscriptions behave (flags `--max-subscriptions`,
/// `--max-subscription-streams`, `--webhook-*`, `--public-url`).
#[derive(Debug, Clone)]
pub struct SubscriptionConfig {
    /// Subscriptions stored at once; one more is refused with
    /// `TOO_MANY_SUBSCRIPTIONS`.
    pub max_subscriptions: usize,
    /// Streams linked to one subscription; a request past it is refused with
    /// `TOO_MANY_STREAMS`, and streams a pattern would link past it are not
    /// linked (logged).
    pub max_streams: usize,
    /// The keys webhooks are signed with.
    pub keys: Arc<WebhookKeys>,
    /// Where webhooks may go.
    pub targets: TargetPolicy,
    /// How long one webhook request may take.
    pub webhook_timeout: Duration,
    /// The server's public base URL (`https://api.example`), for the
    /// `callback_url` and `jwks_url` it hands out; `None`: `http://` and
    /// the request's `Host`.
    pub public_url: Option<String>,
}

impl SubscriptionConfig {
    /// Defaults with these keys: 10 000 subscriptions of 1 000 streams,
    /// public https targets only, 10 s per webhook request.
    ///
    /// ```
    /// use durable_session_server::subscriptions::{SubscriptionConfig, signing::WebhookKeys};
    /// let keys = WebhookKeys::from_keys(vec![ed25519_dalek::SigningKey::from_bytes(&[1; 32])]);
    /// let config = SubscriptionConfig::new(std::sync::Arc::new(keys));
    /// assert_eq!(config.max_subscriptions, 10_000);
    /// ```
    pub fn new(keys: Arc<WebhookKeys>) -> Self {
        Self {
            max_subscriptions: 10_000,
            max_streams: 1_000,
            keys,
            targets: TargetPolicy::default(),
            webhook_timeout: Duration::from_secs(10),
            public_url: None,
        }
    }
}

/// How long a request waits for its change to be stored.
pub const STORE_WAIT: Duration = Duration::from_secs(10);

/// Backfill asks the store for at most this many times
/// [`SubscriptionConfig::max_streams`] streams under a pattern's prefix.
pub const BACKFILL_SCAN: usize = 4;

/// An error of the subscription API: a status and a Durable Streams error
/// code, answered as `{"error":{"code":…,"message":…}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Extra members of the `error` object (`current_holder`, `generation`).
    pub extra: Option<serde_json::Value>,
}

impl SubError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            extra: None,
        }
    }

    /// `400 BAD_REQUEST`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", message)
    }

    /// `400 WEBHOOK_URL_REJECTED`.
    pub fn url_rejected(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "WEBHOOK_URL_REJECTED", message)
    }

    /// `400 TOO_MANY_STREAMS`.
    pub fn too_many_streams(max: usize) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "TOO_MANY_STREAMS",
            format!("a subscription links at most {max} streams (--max-subscription-streams)"),
        )
    }

    /// `404 NOT_FOUND`.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such subscription")
    }

    /// `404 NOT_FOUND` with a message.
    pub fn not_found_with(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
    }

    /// `401 UNAUTHORIZED`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message)
    }

    /// `409 FENCED`: a stale wake.
    pub fn fenced() -> Self {
        Self::new(StatusCode::CONFLICT, "FENCED", "this wake is no longer current")
    }

    /// `500 INTERNAL`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", message)
    }
}

impl IntoResponse for SubError {
    fn into_response(self) -> Response {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(serde_json::Value::Object(extra)) = self.extra {
            for (k, v) in extra {
                error[k] = v;
            }
        }
        let mut res = (self.status, axum::Json(json!({ "error": error }))).into_response();
        res.headers_mut().insert(
            axum::http::header::CACHE_CONTROL,
            axum::http::HeaderValue::from_static("no-store"),
        );
        res
    }
}

/// One linked stream.
#[derive(Debug, Clone, Default)]
struct Link {
    glob: bool,
    explicit: bool,
    /// Last processed offset, inclusive; `None`: nothing yet (the stream's
    /// whole data is pending).
    acked: Option<Pos>,
    /// The tail last seen; `None`: no such stream seen.
    tail: Option<Pos>,
}

impl Link {
    fn pending(&self) -> bool {
        self.tail.is_some_and(|t| t > self.acked.unwrap_or(0))
    }

    fn view(&self, path: &str, with_tail: bool) -> serde_json::Value {
        let mut v = json!({
            "path": path,
            "link_type": if self.explicit { "explicit" } else { "glob" },
            "acked_offset": self.acked.map_or_else(|| "-1".to_owned(), format_offset),
        });
        if with_tail {
            v["tail_offset"] = json!(format_offset(self.tail.or(self.acked).unwrap_or(0)));
            v["has_pending"] = json!(self.pending());
        }
        v
    }
}

/// A wake in flight.
#[derive(Debug, Clone)]
struct Wake {
    id: String,
    /// Pull-wake: the worker that claimed it.
    holder: Option<String>,
    /// When the lease ends (`None`: not started — a webhook being sent, or a
    /// pull-wake not claimed yet).
    lease_until: Option<Instant>,
    /// Each stream's tail when the wake was issued (`{"done":true}` from a
    /// webhook acks these).
    snapshot: Vec<(String, Pos)>,
}

struct Sub {
    spec: Spec,
    hash: String,
    created_at: String,
    /// Where `callback_url` and `jwks_url` point.
    base_url: String,
    links: BTreeMap<String, Link>,
    generation: u64,
    wake: Option<Wake>,
    /// Webhook retries after failed deliveries (0: delivering normally).
    failures: u32,
    retry_at: Option<Instant>,
}

impl Sub {
    fn pending(&self) -> bool {
        self.links.values().any(Link::pending)
    }

    fn jwks_url(&self) -> String {
        format!("{}/v1/stream/__ds/jwks.json", self.base_url)
    }

    fn callback_url(&self, id: &str) -> String {
        format!("{}/v1/stream/__ds/subscriptions/{id}/callback", self.base_url)
    }

    fn streams_view(&self, with_tail: bool) -> Vec<serde_json::Value> {
        self.links.iter().map(|(p, l)| l.view(p, with_tail)).collect()
    }

    fn view(&self, id: &str, keys: &WebhookKeys) -> serde_json::Value {
        let webhook = self.spec.webhook.as_ref().map(|w| {
            json!({
                "url": w.url,
                "signing": { "alg": "ed25519", "kid": keys.kid(), "jwks_url": self.jwks_url() },
            })
        });
        json!({
            "id": id,
            "subscription_id": id,
            "type": self.spec.kind,
            "pattern": self.spec.pattern,
            "streams": self.streams_view(false),
            "webhook": webhook,
            "wake_stream": self.spec.wake_stream,
            "lease_ttl_ms": self.spec.lease_ttl_ms,
            "created_at": self.created_at,
            "status": if self.failures > 0 { "failed" } else { "active" },
            "description": self.spec.description,
            "generation": self.generation,
        })
    }

    fn doc(&self) -> Doc {
        Doc {
            spec: self.spec.clone(),
            created_at: self.created_at.clone(),
            base_url: self.base_url.clone(),
            generation: self.generation,
            links: self
                .links
                .iter()
                .map(|(path, l)| DocLink {
                    path: path.clone(),
                    glob: l.glob,
                    explicit: l.explicit,
                    acked: l.acked.map(format_offset),
                })
                .collect(),
        }
    }
}

/// What is stored of a subscription.
#[derive(Debug, Serialize, Deserialize)]
struct Doc {
    spec: Spec,
    created_at: String,
    base_url: String,
    generation: u64,
    links: Vec<DocLink>,
}

#[derive(Debug, Serialize, Deserialize)]
struct DocLink {
    path: String,
    glob: bool,
    explicit: bool,
    acked: Option<String>,
}

/// Something to do once the state lock is released.
enum Effect {
    /// Send this webhook.
    Deliver(delivery::Job),
    /// Append a wake event to a pull-wake stream.
    WakeEvent { stream: String, event: Bytes },
}

/// The claims of a callback or claim token.
#[derive(Debug, Serialize, Deserialize)]
struct WakeClaims {
    /// Subscription id.
    sid: String,
    generation: u64,
    wake_id: String,
    exp: u64,
}

/// An ack request (`callback` for webhooks, `ack` for pull-wake).
#[derive(Debug, Deserialize)]
pub struct AckBody {
    pub wake_id: String,
    pub generation: u64,
    #[serde(default)]
    pub acks: Vec<AckItem>,
    #[serde(default)]
    pub done: bool,
}

/// One stream's new cursor.
#[derive(Debug, Deserialize)]
pub struct AckItem {
    pub stream: String,
    pub offset: String,
}

/// The subscriptions of a server. Cheap to clone.
#[derive(Clone)]
pub struct Subscriptions {
    inner: Arc<Inner>,
}

struct Inner {
    subs: Mutex<HashMap<String, Sub>>,
    /// The store itself (not the observing wrapper): wake events written
    /// here wake nobody.
    storage: Arc<dyn Storage>,
    config: SubscriptionConfig,
    http: reqwest::Client,
    /// Signs callback and claim tokens (HS256); new at every start, so
    /// tokens end with the process, like the leases they belong to.
    token_key: (jsonwebtoken::EncodingKey, jsonwebtoken::DecodingKey),
    /// Subscriptions whose document must be stored (or removed).
    dirty: Mutex<HashSet<String>>,
    dirty_notify: tokio::sync::Notify,
    /// Counts changes marked dirty; `stored` is the count up to which every
    /// change is stored.
    marked: std::sync::atomic::AtomicU64,
    stored: tokio::sync::watch::Sender<u64>,
}

impl Subscriptions {
    /// Subscriptions over `storage` (the store itself, not the
    /// [`observed::Observed`] wrapper).
    pub fn new(storage: Arc<dyn Storage>, config: SubscriptionConfig) -> Result<Self, String> {
        let policy = Arc::new(config.targets.clone());
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.webhook_timeout)
            .dns_resolver(Arc::new(target::Resolver { policy }))
            .user_agent(concat!("durable-session-server/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the webhook client: {e}"))?;
        let secret: [u8; 32] = rand::random();
        let bad = |e: jsonwebtoken::errors::Error| format!("cannot make the callback token key: {e}");
        let token_key = (
            jsonwebtoken::EncodingKey::from_secret(&secret).map_err(bad)?,
            jsonwebtoken::DecodingKey::from_secret(&secret).map_err(bad)?,
        );
        Ok(Self {
            inner: Arc::new(Inner {
                subs: Mutex::default(),
                storage,
                config,
                http,
                token_key,
                dirty: Mutex::default(),
                dirty_notify: tokio::sync::Notify::new(),
                marked: std::sync::atomic::AtomicU64::new(0),
                stored: tokio::sync::watch::channel(0).0,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Sub>> {
        self.inner.subs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The signing keys' JWK Set.
    pub fn jwks(&self) -> serde_json::Value {
        self.inner.config.keys.jwks()
    }

    /// The configuration.
    pub fn config(&self) -> &SubscriptionConfig {
        &self.inner.config
    }

    /// Loads the stored subscriptions and starts the background work (the
    /// store writer and the lease/retry timer, until `stopping` turns
    /// `true`); then wakes every subscription with pending work. Call once,
    /// inside the runtime.
    pub async fn start(&self, stopping: tokio::sync::watch::Receiver<bool>) -> Result<(), String> {
        let docs = self.inner.storage.subscriptions().await.map_err(|e| e.to_string())?;
        let mut loaded = Vec::new();
        for (id, raw) in docs {
            let doc: Doc = match serde_json::from_slice(&raw) {
                Ok(doc) => doc,
                Err(e) => {
                    tracing::error!(%id, error = %e, "stored subscription is unreadable; skipped");
                    continue;
                }
            };
            let mut links = BTreeMap::new();
            for l in doc.links {
                let tail = self.inner.storage.head(&l.path).await.ok().map(|i| i.tail);
                let acked = l.acked.as_deref().and_then(|a| parse_offset(a).ok());
                let link = Link {
                    glob: l.glob,
                    explicit: l.explicit,
                    acked,
                    tail,
                };
                links.insert(l.path, link);
            }
            let hash = doc.spec.hash();
            loaded.push((
                id,
                Sub {
                    spec: doc.spec,
                    hash,
                    created_at: doc.created_at,
                    base_url: doc.base_url,
                    links,
                    generation: doc.generation,
                    wake: None,
                    failures: 0,
                    retry_at: None,
                },
            ));
        }
        let count = loaded.len();
        let effects = {
            let mut subs = self.lock();
            let mut effects = Vec::new();
            for (id, sub) in loaded {
                subs.insert(id.clone(), sub);
                self.kick(&mut subs, &id, &mut effects);
            }
            effects
        };
        if count > 0 {
            tracing::info!(subscriptions = count, "subscriptions loaded");
        }
        tokio::spawn(self.clone().store_writer(stopping.clone()));
        tokio::spawn(self.clone().timer(stopping));
        self.run(effects);
        Ok(())
    }

    /// A `PUT` of an id that exists: the same configuration answers `200`
    /// with it, another one `409 CONFLICT`.
    fn put_again(&self, existing: &Sub, id: &str, hash: &str) -> Result<(StatusCode, serde_json::Value), SubError> {
        if existing.hash == hash {
            Ok((StatusCode::OK, existing.view(id, &self.inner.config.keys)))
        } else {
            Err(SubError::new(
                StatusCode::CONFLICT,
                "CONFLICT",
                "a subscription with this id exists with another configuration",
            ))
        }
    }

    /// Creates (`201`) or re-confirms (`200`) a subscription.
    pub async fn put(
        &self,
        id: &str,
        spec: Spec,
        base_url: String,
    ) -> Result<(StatusCode, serde_json::Value), SubError> {
        let hash = spec.hash();
        if let Some(existing) = self.lock().get(id) {
            return self.put_again(existing, id, &hash);
        }
        // Explicit streams are linked at their current tails, and so are the
        // existing streams the pattern matches (backfill).
        let mut links = BTreeMap::new();
        for path in &spec.streams {
            links.insert(path.clone(), self.explicit_link(path).await);
        }
        if let Some(pattern) = &spec.pattern {
            self.backfill(pattern, &mut links).await?;
        }
        let created_at = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let mut subs = self.lock();
        if let Some(existing) = subs.get(id) {
            // Created meanwhile by a concurrent request.
            return self.put_again(existing, id, &hash);
        }
        if subs.len() >= self.inner.config.max_subscriptions {
            return Err(SubError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TOO_MANY_SUBSCRIPTIONS",
                format!(
                    "the server holds {} subscriptions, its limit (--max-subscriptions)",
                    self.inner.config.max_subscriptions
                ),
            ));
        }
        let sub = Sub {
            spec,
            hash,
            created_at,
            base_url,
            links,
            generation: 0,
            wake: None,
            failures: 0,
            retry_at: None,
        };
        let view = sub.view(id, &self.inner.config.keys);
        subs.insert(id.to_owned(), sub);
        let mut effects = Vec::new();
        self.kick(&mut subs, id, &mut effects);
        drop(subs);
        self.mark_dirty(id);
        self.run(effects);
        Ok((StatusCode::CREATED, view))
    }

    /// Links the existing streams `pattern` matches at their tails, up to
    /// the subscription's bound. The store is asked for the streams under
    /// the pattern's literal prefix, at most [`BACKFILL_SCAN`] times the
    /// bound of them; a matching stream past that is linked at its next
    /// append instead, before it (the same cursor for wake purposes).
    async fn backfill(&self, pattern: &str, links: &mut BTreeMap<String, Link>) -> Result<(), SubError> {
        let max = self.inner.config.max_streams;
        let found = self
            .inner
            .storage
            .list_streams(&glob::literal_prefix(pattern), max.saturating_mul(BACKFILL_SCAN))
            .await
            .map_err(|e| SubError::internal(e.to_string()))?;
        for (path, info) in found {
            if links.len() >= max && !links.contains_key(&path) {
                break;
            }
            if crate::http::reserved(&path) || !glob::matches(pattern, &path) {
                continue;
            }
            links.entry(path).and_modify(|l| l.glob = true).or_insert(Link {
                glob: true,
                explicit: false,
                acked: Some(info.tail),
                tail: Some(info.tail),
            });
        }
        Ok(())
    }

    async fn explicit_link(&self, path: &str) -> Link {
        let tail = self.inner.storage.head(path).await.ok().map(|i| i.tail);
        Link {
            glob: false,
            explicit: true,
            acked: tail,
            tail,
        }
    }

    /// The subscription's configuration, if it exists.
    pub fn spec(&self, id: &str) -> Option<Spec> {
        self.lock().get(id).map(|s| s.spec.clone())
    }

    /// `GET`: the subscription as JSON.
    pub fn get(&self, id: &str) -> Result<serde_json::Value, SubError> {
        self.lock()
            .get(id)
            .map(|s| s.view(id, &self.inner.config.keys))
            .ok_or_else(SubError::not_found)
    }

    /// `DELETE`: removes the subscription; its wake's callbacks fail from
    /// now on.
    pub fn delete(&self, id: &str) -> Result<(), SubError> {
        self.lock().remove(id).ok_or_else(SubError::not_found)?;
        self.mark_dirty(id);
        Ok(())
    }

    /// Adds explicit links (at the streams' current tails).
    pub async fn add_streams(&self, id: &str, streams: &[String]) -> Result<(), SubError> {
        let mut new = Vec::new();
        for path in streams {
            new.push((path.clone(), self.explicit_link(path).await));
        }
        let mut subs = self.lock();
        let sub = subs.get_mut(id).ok_or_else(SubError::not_found)?;
        let added = new.iter().filter(|(p, _)| !sub.links.contains_key(p)).count();
        if sub.links.len() + added > self.inner.config.max_streams {
            return Err(SubError::too_many_streams(self.inner.config.max_streams));
        }
        for (path, link) in new {
            sub.links.entry(path).and_modify(|l| l.explicit = true).or_insert(link);
        }
        drop(subs);
        self.mark_dirty(id);
        Ok(())
    }

    /// Removes an explicit link (a glob link of the same stream stays).
    pub fn remove_stream(&self, id: &str, path: &str) -> Result<(), SubError> {
        let mut subs = self.lock();
        let sub = subs.get_mut(id).ok_or_else(SubError::not_found)?;
        let globbed = sub.spec.globbed(path);
        if let Some(link) = sub.links.get_mut(path) {
            link.explicit = false;
            if !(link.glob || globbed) {
                sub.links.remove(path);
            }
        }
        drop(subs);
        self.mark_dirty(id);
        Ok(())
    }

    /// Whether an append to `path` needs the stream's tail from before it:
    /// a subscription's pattern matches the path and has no link for it yet.
    pub fn wants_tail_before(&self, path: &str) -> bool {
        self.lock()
            .values()
            .any(|s| !s.links.contains_key(path) && s.spec.globbed(path))
    }

    /// A stream was created (or appended to): `before` is its tail before
    /// the change (`None`: the stream is new), `tail` after it.
    pub fn observe(&self, path: &str, before: Option<Pos>, tail: Pos) {
        let mut effects = Vec::new();
        let mut changed = Vec::new();
        {
            let mut subs = self.lock();
            let ids: Vec<String> = subs
                .iter()
                .filter(|(_, s)| s.links.contains_key(path) || s.spec.globbed(path))
                .map(|(id, _)| id.clone())
                .collect();
            for id in ids {
                let Some(sub) = subs.get_mut(&id) else { continue };
                let max = self.inner.config.max_streams;
                if !sub.links.contains_key(path) {
                    if sub.links.len() >= max {
                        tracing::warn!(subscription = %id, %path, max, "stream not linked: the subscription links the most streams it may (--max-subscription-streams)");
                        continue;
                    }
                    // A new stream: linked before its first data; an
                    // existing one: at its tail before this append.
                    let acked = before.or_else(|| Some(offset_at(split(tail).0, 0)));
                    sub.links.insert(
                        path.to_owned(),
                        Link {
                            glob: true,
                            acked,
                            ..Link::default()
                        },
                    );
                    changed.push(id.clone());
                }
                if let Some(link) = sub.links.get_mut(path) {
                    if before.is_none() && link.tail.is_some_and(|t| split(t).0 != split(tail).0) {
                        // Created again: the old incarnation's cursor means
                        // nothing in the new one.
                        link.acked = Some(offset_at(split(tail).0, 0));
                    }
                    link.tail = Some(link.tail.map_or(tail, |t| t.max(tail)));
                    if before.is_none() && link.acked.is_none() {
                        link.acked = Some(offset_at(split(tail).0, 0));
                        changed.push(id.clone());
                    }
                }
                self.kick(&mut subs, &id, &mut effects);
            }
        }
        for id in changed {
            self.mark_dirty(&id);
        }
        self.run(effects);
    }

    /// Starts a wake if the subscription is idle, has pending work and no
    /// retry is scheduled. Runs under the state lock.
    fn kick(&self, subs: &mut HashMap<String, Sub>, id: &str, effects: &mut Vec<Effect>) -> bool {
        let Some(sub) = subs.get_mut(id) else { return false };
        if sub.wake.is_some() || !sub.pending() || sub.retry_at.is_some_and(|at| at > Instant::now()) {
            return false;
        }
        sub.retry_at = None;
        sub.generation += 1;
        let wake_id = format!("w_{}", random_id());
        let snapshot: Vec<(String, Pos)> = sub
            .links
            .iter()
            .filter_map(|(p, l)| l.tail.map(|t| (p.clone(), t)))
            .collect();
        sub.wake = Some(Wake {
            id: wake_id.clone(),
            holder: None,
            lease_until: None,
            snapshot,
        });
        match sub.spec.kind {
            Kind::Webhook => {
                let token = self.token(id, sub.generation, &wake_id);
                let body = json!({
                    "subscription_id": id,
                    "wake_id": wake_id,
                    "generation": sub.generation,
                    "streams": sub.streams_view(true),
                    "callback_url": sub.callback_url(id),
                    "callback_token": token,
                });
                let url = sub.spec.webhook.as_ref().map(|w| w.url.clone()).unwrap_or_default();
                effects.push(Effect::Deliver(delivery::Job {
                    id: id.to_owned(),
                    generation: sub.generation,
                    wake_id,
                    url,
                    body: serde_json::to_vec(&body).unwrap_or_default(),
                }));
            }
            Kind::PullWake => {
                let stream = sub.links.iter().find(|(_, l)| l.pending()).map(|(p, _)| p.clone());
                let event = json!({
                    "type": "wake",
                    "subscription_id": id,
                    "stream": stream,
                    "generation": sub.generation,
                    "ts": crate::storage::rules::now_ms(),
                });
                if let Some(wake_stream) = sub.spec.wake_stream.clone() {
                    effects.push(Effect::WakeEvent {
                        stream: wake_stream,
                        event: Bytes::from(serde_json::to_vec(&event).unwrap_or_default()),
                    });
                }
            }
        }
        self.mark_dirty(id);
        true
    }

    /// Runs effects outside the lock.
    fn run(&self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Deliver(job) => {
                    tokio::spawn(delivery::deliver(self.clone(), job));
                }
                Effect::WakeEvent { stream, event } => {
                    let storage = self.inner.storage.clone();
                    tokio::spawn(async move {
                        let append = Append {
                            path: stream.clone(),
                            content_type: Some("application/json".into()),
                            body: event,
                            close: false,
                            stream_seq: None,
                            producer: None,
                        };
                        if let Err(e) = storage.append(append).await {
                            tracing::warn!(%stream, error = %e, "cannot write a wake event to the wake stream");
                        }
                    });
                }
            }
        }
    }

    fn token(&self, id: &str, generation: u64, wake_id: &str) -> String {
        let claims = WakeClaims {
            sid: id.to_owned(),
            generation,
            wake_id: wake_id.to_owned(),
            exp: crate::auth::now_s() + 86_400,
        };
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &self.inner.token_key.0).unwrap_or_default()
    }

    /// The claims of a callback/claim token issued for subscription `id`.
    fn verify(&self, id: &str, token: Option<&str>) -> Result<WakeClaims, SubError> {
        let token = token
            .ok_or_else(|| SubError::unauthorized("a callback or claim token is required (Authorization: Bearer)"))?;
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.validate_aud = false;
        let claims = jsonwebtoken::decode::<WakeClaims>(token, &self.inner.token_key.1, &validation)
            .map_err(|_| SubError::unauthorized("not a valid callback or claim token"))?
            .claims;
        if claims.sid != id {
            return Err(SubError::unauthorized("the token is for another subscription"));
        }
        Ok(claims)
    }

    /// A webhook delivery came back: `done` (the receiver answered
    /// `{"done":true}`) acks the wake's snapshot and ends it; otherwise the
    /// lease starts and the receiver calls back.
    fn delivered(&self, job: &delivery::Job, done: bool) {
        let mut effects = Vec::new();
        let mut subs = self.lock();
        let Some(sub) = subs.get_mut(&job.id) else { return };
        let Some(wake) = sub.wake.as_mut().filter(|w| w.id == job.wake_id) else {
            return;
        };
        sub.failures = 0;
        if done {
            let snapshot = std::mem::take(&mut wake.snapshot);
            sub.wake = None;
            for (path, tail) in snapshot {
                if let Some(link) = sub.links.get_mut(&path) {
                    link.acked = Some(link.acked.map_or(tail, |a| a.max(tail)));
                }
            }
            self.kick(&mut subs, &job.id, &mut effects);
            drop(subs);
            self.mark_dirty(&job.id);
        } else {
            wake.lease_until = Some(Instant::now() + Duration::from_millis(sub.spec.lease_ttl_ms));
            drop(subs);
        }
        self.run(effects);
    }

    /// A webhook delivery failed: the wake ends and the next one is
    /// scheduled after a backoff (1 s doubling to 60 s, ±20 %).
    fn delivery_failed(&self, job: &delivery::Job, reason: &str) {
        let mut subs = self.lock();
        let Some(sub) = subs.get_mut(&job.id) else { return };
        if sub.wake.as_ref().is_none_or(|w| w.id != job.wake_id) {
            return;
        }
        sub.wake = None;
        sub.failures = sub.failures.saturating_add(1);
        let delay = delivery::backoff(sub.failures);
        sub.retry_at = Some(Instant::now() + delay);
        tracing::warn!(subscription = %job.id, attempt = sub.failures, retry_in_ms = delay.as_millis() as u64, %reason, "webhook delivery failed");
    }

    /// `POST …/claim` (pull-wake): the lease for `worker`.
    pub fn claim(&self, id: &str, worker: &str) -> Result<serde_json::Value, SubError> {
        let mut subs = self.lock();
        let sub = subs.get_mut(id).ok_or_else(SubError::not_found)?;
        if sub.spec.kind != Kind::PullWake {
            return Err(SubError::bad_request("only pull-wake subscriptions are claimed"));
        }
        if let Some(Wake {
            holder: Some(holder), ..
        }) = &sub.wake
        {
            let mut e = SubError::new(
                StatusCode::CONFLICT,
                "ALREADY_CLAIMED",
                format!("{holder} holds the lease"),
            );
            e.extra = Some(json!({ "current_holder": holder, "generation": sub.generation }));
            return Err(e);
        }
        if sub.wake.is_none() {
            // Nothing offered (or nothing pending): a wake of its own, taken
            // at once (no wake event).
            sub.retry_at = None;
            if !self.kick(&mut subs, id, &mut Vec::new()) {
                let sub = subs.get_mut(id).ok_or_else(SubError::not_found)?;
                sub.generation += 1;
                sub.wake = Some(Wake {
                    id: format!("w_{}", random_id()),
                    holder: None,
                    lease_until: None,
                    snapshot: Vec::new(),
                });
            }
        }
        let sub = subs.get_mut(id).ok_or_else(SubError::not_found)?;
        let ttl = sub.spec.lease_ttl_ms;
        let generation = sub.generation;
        let wake = sub.wake.as_mut().ok_or_else(|| SubError::internal("no wake"))?;
        wake.holder = Some(worker.to_owned());
        wake.lease_until = Some(Instant::now() + Duration::from_millis(ttl));
        let wake_id = wake.id.clone();
        let streams = sub.streams_view(true);
        let token = self.token(id, generation, &wake_id);
        drop(subs);
        Ok(json!({
            "wake_id": wake_id,
            "generation": generation,
            "token": token,
            "streams": streams,
            "lease_ttl_ms": ttl,
        }))
    }

    /// `POST …/callback` (webhook) and `POST …/ack` (pull-wake): applies the
    /// acks; `done` ends the wake (`next_wake`: a new one started), else
    /// the lease is extended.
    pub fn ack(&self, id: &str, token: Option<&str>, body: AckBody) -> Result<serde_json::Value, SubError> {
        let claims = self.verify(id, token)?;
        let mut effects = Vec::new();
        let mut subs = self.lock();
        let sub = subs.get_mut(id).ok_or_else(SubError::not_found)?;
        current_wake(sub, &claims, &body.wake_id, body.generation)?;
        let mut acks = Vec::with_capacity(body.acks.len());
        for item in &body.acks {
            let offset = parse_offset(&item.offset).map_err(|e| SubError::bad_request(e.0))?;
            let link = sub
                .links
                .get(&item.stream)
                .ok_or_else(|| SubError::bad_request(format!("{} is not linked to this subscription", item.stream)))?;
            if link.tail.is_none_or(|t| offset > t) {
                return Err(SubError::bad_request(format!(
                    "{} is beyond the tail of {}",
                    item.offset, item.stream
                )));
            }
            acks.push((item.stream.clone(), offset));
        }
        for (stream, offset) in acks {
            if let Some(link) = sub.links.get_mut(&stream) {
                link.acked = Some(link.acked.map_or(offset, |a| a.max(offset)));
            }
        }
        let next_wake = if body.done {
            sub.wake = None;
            sub.failures = 0;
            self.kick(&mut subs, id, &mut effects)
        } else {
            if let Some(wake) = sub.wake.as_mut() {
                wake.lease_until = Some(Instant::now() + Duration::from_millis(sub.spec.lease_ttl_ms));
            }
            false
        };
        drop(subs);
        self.mark_dirty(id);
        self.run(effects);
        Ok(json!({ "ok": true, "next_wake": next_wake }))
    }

    /// `POST …/release` (pull-wake): gives the lease up without acking; a
    /// new wake follows if work is pending.
    pub fn release(&self, id: &str, token: Option<&str>, wake_id: &str, generation: u64) -> Result<(), SubError> {
        let claims = self.verify(id, token)?;
        let mut effects = Vec::new();
        let mut subs = self.lock();
        let sub = subs.get_mut(id).ok_or_else(SubError::not_found)?;
        current_wake(sub, &claims, wake_id, generation)?;
        sub.wake = None;
        self.kick(&mut subs, id, &mut effects);
        drop(subs);
        self.run(effects);
        Ok(())
    }

    /// Ends expired leases and starts due retries, every 100 ms.
    async fn timer(self, mut stopping: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stopping.wait_for(|s| *s) => return,
            }
            let now = Instant::now();
            let mut effects = Vec::new();
            let mut subs = self.lock();
            let due: Vec<String> = subs
                .iter_mut()
                .filter_map(|(id, sub)| {
                    let expired = sub
                        .wake
                        .as_ref()
                        .is_some_and(|w| w.lease_until.is_some_and(|at| at <= now));
                    if expired {
                        tracing::info!(subscription = %id, generation = sub.generation, "lease expired");
                        sub.wake = None;
                    }
                    let retry = sub.retry_at.is_some_and(|at| at <= now);
                    (expired || retry).then(|| id.clone())
                })
                .collect();
            for id in due {
                self.kick(&mut subs, &id, &mut effects);
            }
            drop(subs);
            self.run(effects);
        }
    }

    fn mark_dirty(&self, id: &str) {
        self.inner
            .dirty
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_owned());
        self.inner.marked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.dirty_notify.notify_one();
    }

    /// Completes once every change made before the call is stored; an
    /// error if the store has not taken it within [`STORE_WAIT`].
    pub async fn persisted(&self) -> Result<(), SubError> {
        let wanted = self.inner.marked.load(std::sync::atomic::Ordering::SeqCst);
        let mut stored = self.inner.stored.subscribe();
        match tokio::time::timeout(STORE_WAIT, stored.wait_for(|n| *n >= wanted)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(SubError::internal(
                "the subscription could not be stored (the store is failing)",
            )),
        }
    }

    /// Stores the documents of changed subscriptions, one at a time, always
    /// their latest state (so writes never land out of order), until the
    /// server stops — after a last round.
    async fn store_writer(self, mut stopping: tokio::sync::watch::Receiver<bool>) {
        loop {
            let stop = tokio::select! {
                () = self.inner.dirty_notify.notified() => false,
                _ = stopping.wait_for(|s| *s) => true,
            };
            self.write_dirty(stop).await;
            if stop {
                return;
            }
        }
    }

    /// Writes every dirty document; on a store failure, tries again every
    /// second (once only when `last`).
    async fn write_dirty(&self, last: bool) {
        loop {
            let epoch = self.inner.marked.load(std::sync::atomic::Ordering::SeqCst);
            let ids: Vec<String> = {
                let mut dirty = self.inner.dirty.lock().unwrap_or_else(|e| e.into_inner());
                dirty.drain().collect()
            };
            let mut failed = false;
            for id in ids {
                let doc = self
                    .lock()
                    .get(&id)
                    .map(|s| serde_json::to_vec(&s.doc()).unwrap_or_default());
                let result = match doc {
                    Some(doc) => self.inner.storage.put_subscription(&id, Bytes::from(doc)).await,
                    None => self.inner.storage.delete_subscription(&id).await,
                };
                if let Err(e) = result {
                    tracing::error!(subscription = %id, error = %e, "cannot store the subscription");
                    failed = true;
                    self.inner.dirty.lock().unwrap_or_else(|e| e.into_inner()).insert(id);
                }
            }
            if failed {
                if last {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            self.inner.stored.send_if_modified(|n| {
                let grew = epoch > *n;
                *n = (*n).max(epoch);
                grew
            });
            if self.inner.dirty.lock().unwrap_or_else(|e| e.into_inner()).is_empty() {
                return;
            }
        }
    }
}

/// Checks that a token's and a request's wake are the subscription's
/// current one: `409 FENCED` otherwise.
fn current_wake(sub: &Sub, claims: &WakeClaims, wake_id: &str, generation: u64) -> Result<(), SubError> {
    let wake = sub.wake.as_ref().ok_or_else(SubError::fenced)?;
    let current = claims.generation == sub.generation
        && generation == sub.generation
        && claims.wake_id == wake.id
        && wake_id == wake.id
        && (sub.spec.kind == Kind::Webhook || wake.holder.is_some());
    if current { Ok(()) } else { Err(SubError::fenced()) }
}

/// 16 random bytes, hex.
fn random_id() -> String {
    rand::random::<[u8; 16]>().iter().map(|b| format!("{b:02x}")).collect()
}
