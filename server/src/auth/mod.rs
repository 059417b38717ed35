//! Access control: who may do what to which stream.
//!
//! The app's own backend mints JWTs; this server only verifies them
//! ([`jwt`]). A verified token is a [`Principal`]: a subject (`sub`), an
//! expiry, and grants of [`Right`]s on stream paths. Every HTTP route and
//! every WebSocket frame asks [`Access::check`] before it touches storage;
//! appends to sessions additionally go through [`identity`], which makes the
//! token's `sub` the author of what a client writes and reserves run events
//! for agents. `docs/security.md` is the description for operators.
//!
//! ```
//! use durable_session_server::auth::{Access, Principal, Right};
//! let ada = Principal::new("ada", u64::MAX, vec![("sessions/abc".into(), vec![Right::Read, Right::Append])]);
//! let access = Access::Token(ada);
//! assert!(access.check("sessions/abc", Right::Read).is_ok());
//! assert!(access.check("sessions/xyz", Right::Read).is_err());
//! assert!(Access::Open.check("sessions/xyz", Right::Delete).is_ok());
//! ```

pub mod identity;
pub mod jwt;

use durable_session_protocol::ws::ErrorCode;

/// Streams under this prefix are written by the server only (the session
/// index); with auth on, no token may write them.
pub const RESERVED_PREFIX: &str = "_index/";

/// Longest token accepted, in bytes (header or `auth` frame), checked
/// before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Most grants one token may carry.
pub const MAX_GRANTS: usize = 256;

/// A right a grant gives on a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Right {
    /// Read (catch-up, long-poll, SSE, HEAD, WebSocket subscribe).
    Read,
    /// Append data; in sessions, write `user_message`s (and app events).
    Append,
    /// In sessions: write `cancel` and `steer`.
    Control,
    /// Create the stream (`PUT`, WebSocket `create`), fork into it.
    Create,
    /// Delete the stream, or close it for good.
    Delete,
    /// In sessions: write run events (`run_started`, `text_delta`, …).
    Agent,
}

impl Right {
    /// Every right.
    pub const ALL: [Right; 6] = [
        Right::Read,
        Right::Append,
        Right::Control,
        Right::Create,
        Right::Delete,
        Right::Agent,
    ];

    /// The name used in tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            Right::Read => "read",
            Right::Append => "append",
            Right::Control => "control",
            Right::Create => "create",
            Right::Delete => "delete",
            Right::Agent => "agent",
        }
    }

    /// The right named `name`.
    ///
    /// ```
    /// use durable_session_server::auth::Right;
    /// assert_eq!(Right::parse("control"), Some(Right::Control));
    /// assert_eq!(Right::parse("admin"), None);
    /// ```
    pub fn parse(name: &str) -> Option<Right> {
        Right::ALL.into_iter().find(|r| r.as_str() == name)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// The paths a grant covers: one exact path, every path under a prefix
/// (`sessions/*`), or every path (`*`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum PathPattern {
    Exact(String),
    /// The prefix including its trailing `/`.
    Prefix(String),
    All,
}

impl PathPattern {
    fn parse(pattern: &str) -> PathPattern {
        if pattern == "*" {
            PathPattern::All
        } else if let Some(prefix) = pattern.strip_suffix('*').filter(|p| p.ends_with('/')) {
            PathPattern::Prefix(prefix.to_owned())
        } else {
            PathPattern::Exact(pattern.to_owned())
        }
    }

    fn covers(&self, path: &str) -> bool {
        match self {
            PathPattern::Exact(p) => p == path,
            PathPattern::Prefix(prefix) => path.len() > prefix.len() && path.starts_with(prefix.as_str()),
            PathPattern::All => true,
        }
    }
}

/// Rights on a path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Grant {
    pattern: PathPattern,
    rights: u8,
}

/// The verified holder of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's `sub`: who this is. In sessions it becomes the `author`
    /// of their messages and the `by` of their control events.
    pub sub: String,
    /// The token's `exp`, in seconds since the Unix epoch.
    pub exp: u64,
    grants: Vec<Grant>,
}

impl Principal {
    /// A principal with grants of `(path pattern, rights)`; a pattern is an
    /// exact path, a prefix ending in `/*`, or `*`.
    ///
    /// ```
    /// use durable_session_server::auth::{Principal, Right};
    /// let p = Principal::new("agent-1", u64::MAX, vec![("sessions/*".into(), vec![Right::Agent])]);
    /// assert!(p.allows("sessions/abc", Right::Agent));
    /// assert!(!p.allows("sessions/abc", Right::Delete));
    /// assert!(!p.allows("sessions", Right::Agent));
    /// ```
    pub fn new(sub: impl Into<String>, exp: u64, grants: Vec<(String, Vec<Right>)>) -> Self {
        Self {
            sub: sub.into(),
            exp,
            grants: grants
                .into_iter()
                .map(|(pattern, rights)| Grant {
                    pattern: PathPattern::parse(&pattern),
                    rights: rights.into_iter().fold(0, |bits, r| bits | r.bit()),
                })
                .collect(),
        }
    }

    /// Whether a grant gives `right` on `path`.
    pub fn allows(&self, path: &str, right: Right) -> bool {
        self.grants
            .iter()
            .any(|g| g.rights & right.bit() != 0 && g.pattern.covers(path))
    }

    /// Whether the token has expired at `now_s` (seconds since the epoch).
    pub fn expired_at(&self, now_s: u64) -> bool {
        now_s >= self.exp
    }
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// `--auth none`: everything is allowed and nobody is identified.
    Open,
    /// `--auth jwt` and no token (or none yet, on a WebSocket).
    Anonymous,
    /// A verified token.
    Token(Principal),
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No valid token: `401` / `unauthorized`.
    Unauthorized(String),
    /// The token does not cover this: `403` / `forbidden`.
    Forbidden(String),
    /// The request cannot be checked (a session body that is not JSON):
    /// `400` / `bad_request`.
    BadRequest(String),
}

impl Denied {
    /// The protocol error code of the refusal (over HTTP, its status is
    /// [`ErrorCode::http_status`]).
    pub fn code(&self) -> ErrorCode {
        match self {
            Denied::Unauthorized(_) => ErrorCode::Unauthorized,
            Denied::Forbidden(_) => ErrorCode::Forbidden,
            Denied::BadRequest(_) => ErrorCode::BadRequest,
        }
    }

    /// The one-line message.
    pub fn message(&self) -> &str {
        match self {
            Denied::Unauthorized(m) | Denied::Forbidden(m) | Denied::BadRequest(m) => m,
        }
    }
}

/// Seconds since the Unix epoch.
pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Access {
    /// Whether this request may use `right` on `path`.
    pub fn check(&self, path: &str, right: Right) -> Result<(), Denied> {
        match self {
            Access::Open => Ok(()),
            Access::Anonymous => Err(Denied::Unauthorized(
                "an access token is required (Authorization: Bearer …, or an auth frame first on a WebSocket)".into(),
            )),
            Access::Token(p) => {
                if p.expired_at(now_s()) {
                    return Err(Denied::Unauthorized("the access token has expired".into()));
                }
                if right != Right::Read && path.starts_with(RESERVED_PREFIX) {
                    return Err(Denied::Forbidden(format!("{path} is written by the server only")));
                }
                if p.allows(path, right) {
                    Ok(())
                } else {
                    Err(Denied::Forbidden(format!(
                        "the token of {} has no {} right on {path}",
                        p.sub,
                        right.as_str()
                    )))
                }
            }
        }
    }

    /// Whether auth is on (responses to authorized reads are then private).
    pub fn is_enforced(&self) -> bool {
        !matches!(self, Access::Open)
    }

    /// The principal, if a token was verified.
    pub fn principal(&self) -> Option<&Principal> {
        match self {
            Access::Token(p) => Some(p),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let p = Principal::new(
            "u",
            u64::MAX,
            vec![
                ("sessions/abc".into(), vec![Right::Read]),
                ("team/*".into(), vec![Right::Append]),
            ],
        );
        assert!(p.allows("sessions/abc", Right::Read));
        assert!(!p.allows("sessions/abcd", Right::Read));
        assert!(!p.allows("sessions/ab", Right::Read));
        assert!(!p.allows("sessions/abc", Right::Append));
        assert!(p.allows("team/x/y", Right::Append));
        assert!(!p.allows("team/", Right::Append));
        assert!(!p.allows("teams/x", Right::Append));
        let all = Principal::new("op", u64::MAX, vec![("*".into(), vec![Right::Read])]);
        assert!(all.allows("_index/sessions", Right::Read));
        // A `*` inside a path is not a wildcard.
        let literal = Principal::new("u", u64::MAX, vec![("a*".into(), vec![Right::Read])]);
        assert!(literal.allows("a*", Right::Read) && !literal.allows("ab", Right::Read));
    }

    #[test]
    fn access() {
        let p = Principal::new("ada", u64::MAX, vec![("*".into(), Right::ALL.to_vec())]);
        let a = Access::Token(p);
        assert!(a.check("_index/sessions", Right::Read).is_ok());
        assert!(matches!(
            a.check("_index/sessions", Right::Append),
            Err(Denied::Forbidden(_))
        ));
        assert!(matches!(
            Access::Anonymous.check("x", Right::Read),
            Err(Denied::Unauthorized(_))
        ));
        let expired = Access::Token(Principal::new("ada", 1, vec![("*".into(), vec![Right::Read])]));
        assert!(matches!(expired.check("x", Right::Read), Err(Denied::Unauthorized(_))));
    }
}

/// `docs/security.md`, whose Rust example runs as a doc test.
#[doc = include_str!("../../../docs/security.md")]
#[cfg(doctest)]
pub struct SecurityDoc;
