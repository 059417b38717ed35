//! A subscription's configuration as a client sends it (`PUT`, PROTOCOL.md
//! §6.2), validated and normalized, and its hash for idempotent
//! re-confirmation.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::SubError;
use super::glob;
use super::target::TargetPolicy;

/// Lease bounds (PROTOCOL.md §6.2): 1 second to 10 minutes.
pub const LEASE_TTL_MS: std::ops::RangeInclusive<u64> = 1_000..=600_000;
/// The default lease.
pub const DEFAULT_LEASE_TTL_MS: u64 = 30_000;
/// Longest subscription id, pattern, description or webhook URL, in bytes.
pub const MAX_FIELD_BYTES: usize = 1024;

/// How a subscription is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    #[serde(rename = "webhook")]
    Webhook,
    #[serde(rename = "pull-wake")]
    PullWake,
}

/// The webhook target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    pub url: String,
}

/// A normalized subscription configuration: `streams` sorted without
/// duplicates. Its JSON (fields in this order) is what is hashed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    #[serde(rename = "type")]
    pub kind: Kind,
    pub pattern: Option<String>,
    pub streams: Vec<String>,
    pub webhook: Option<Webhook>,
    pub wake_stream: Option<String>,
    pub lease_ttl_ms: u64,
    pub description: Option<String>,
}

/// The body of `PUT …/__ds/subscriptions/{id}`.
#[derive(Debug, Deserialize)]
struct Body {
    #[serde(rename = "type")]
    kind: Kind,
    pattern: Option<String>,
    streams: Option<Vec<String>>,
    webhook: Option<Webhook>,
    wake_stream: Option<String>,
    lease_ttl_ms: Option<u64>,
    description: Option<String>,
}

impl Spec {
    /// Parses and validates a `PUT` body. `max_streams` bounds `streams`.
    pub fn parse(body: &[u8], targets: &TargetPolicy, max_streams: usize) -> Result<Spec, SubError> {
        let body: Body =
            serde_json::from_slice(body).map_err(|e| SubError::bad_request(format!("bad subscription: {e}")))?;
        if body.pattern.is_none() && body.streams.as_ref().is_none_or(Vec::is_empty) {
            return Err(SubError::bad_request("a subscription needs a pattern or streams"));
        }
        if let Some(pattern) = &body.pattern {
            check_len("pattern", pattern)?;
            glob::check(pattern).map_err(SubError::bad_request)?;
        }
        let mut streams = body.streams.unwrap_or_default();
        check_streams(&streams, max_streams)?;
        streams.sort();
        streams.dedup();
        if let Some(d) = &body.description {
            check_len("description", d)?;
        }
        let lease_ttl_ms = body.lease_ttl_ms.unwrap_or(DEFAULT_LEASE_TTL_MS);
        if !LEASE_TTL_MS.contains(&lease_ttl_ms) {
            return Err(SubError::bad_request("lease_ttl_ms must be from 1000 to 600000"));
        }
        let (webhook, wake_stream) = match body.kind {
            Kind::Webhook => {
                let Some(webhook) = body.webhook else {
                    return Err(SubError::bad_request("a webhook subscription needs webhook.url"));
                };
                check_len("webhook.url", &webhook.url)?;
                targets.check(&webhook.url).map_err(SubError::url_rejected)?;
                (Some(webhook), None)
            }
            Kind::PullWake => {
                let Some(wake) = body.wake_stream else {
                    return Err(SubError::bad_request("a pull-wake subscription needs wake_stream"));
                };
                check_stream(&wake)?;
                (None, Some(wake))
            }
        };
        Ok(Spec {
            kind: body.kind,
            pattern: body.pattern,
            streams,
            webhook,
            wake_stream,
            lease_ttl_ms,
            description: body.description,
        })
    }

    /// The hash of the normalized configuration (hex SHA-256 of its JSON).
    pub fn hash(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        Sha256::digest(&json).iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Whether `path` is linked by the pattern.
    pub fn globbed(&self, path: &str) -> bool {
        self.pattern.as_deref().is_some_and(|p| glob::matches(p, path))
    }
}

fn check_len(field: &str, value: &str) -> Result<(), SubError> {
    if value.len() > MAX_FIELD_BYTES {
        return Err(SubError::bad_request(format!(
            "{field} is longer than {MAX_FIELD_BYTES} bytes"
        )));
    }
    Ok(())
}

/// A stream path named in a subscription.
pub fn check_stream(path: &str) -> Result<(), SubError> {
    crate::http::validate_path(path).map_err(|e| SubError::bad_request(e.message))?;
    if crate::http::reserved(path) {
        return Err(SubError::bad_request("__ds paths are not streams"));
    }
    Ok(())
}

/// The `streams` of a request: valid paths, at most `max`.
pub fn check_streams(streams: &[String], max: usize) -> Result<(), SubError> {
    if streams.len() > max {
        return Err(SubError::too_many_streams(max));
    }
    streams.iter().try_for_each(|s| check_stream(s))
}

/// A subscription id: 1 to 256 of `A-Z a-z 0-9 . _ : -`.
pub fn check_id(id: &str) -> Result<(), SubError> {
    let ok = (1..=256).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(SubError::bad_request(
            "a subscription id is 1 to 256 of A-Z a-z 0-9 . _ : -",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev() -> TargetPolicy {
        TargetPolicy {
            allow_hosts: vec![],
            allow_loopback: true,
        }
    }

    #[test]
    fn hash_ignores_stream_order() {
        let a = Spec::parse(
            br#"{"type":"webhook","streams":["b","a"],"webhook":{"url":"http://127.0.0.1:1/h"}}"#,
            &dev(),
            10,
        )
        .unwrap();
        let b = Spec::parse(
            br#"{"type":"webhook","streams":["a","b","a"],"webhook":{"url":"http://127.0.0.1:1/h"}}"#,
            &dev(),
            10,
        )
        .unwrap();
        assert_eq!(a.hash(), b.hash());
        let c = Spec::parse(
            br#"{"type":"webhook","streams":["a"],"webhook":{"url":"http://127.0.0.1:1/h"}}"#,
            &dev(),
            10,
        )
        .unwrap();
        assert_ne!(a.hash(), c.hash());
    }

    #[test]
    fn refusals() {
        let p = |body: &str| Spec::parse(body.as_bytes(), &dev(), 2).unwrap_err().code;
        assert_eq!(p(r#"{"type":"webhook","pattern":"a/*"}"#), "BAD_REQUEST");
        assert_eq!(
            p(r#"{"type":"webhook","pattern":"a/*","webhook":{"url":"http://10.0.0.1/"}}"#),
            "WEBHOOK_URL_REJECTED"
        );
        assert_eq!(
            p(r#"{"type":"pull-wake","streams":["a","b","c"],"wake_stream":"w"}"#),
            "TOO_MANY_STREAMS"
        );
        assert_eq!(
            p(r#"{"type":"pull-wake","pattern":"a","wake_stream":"w","lease_ttl_ms":10}"#),
            "BAD_REQUEST"
        );
        assert_eq!(
            p(r#"{"type":"pull-wake","pattern":"a","wake_stream":"__ds/x"}"#),
            "BAD_REQUEST"
        );
        assert_eq!(p(r#"{"type":"other","pattern":"a"}"#), "BAD_REQUEST");
    }
}
