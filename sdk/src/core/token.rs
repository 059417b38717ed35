//! Access tokens: what the client knows of its token and when to ask the app
//! for a fresh one.
//!
//! The SDK never verifies a token (the server does). It only reads the
//! JWT's `exp` (and `iat`, when present) to refresh the token before it
//! expires. A token it cannot read is used as is: it is then replaced only
//! when the server says it is no longer good (`unauthorized`, close code
//! 4003).
//!
//! ```
//! use durable_sessions::core::token::Claims;
//! // {"sub":"ada","exp":1800000000,"iat":1799999000}
//! let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZGEiLCJleHAiOjE4MDAwMDAwMDAsImlhdCI6MTc5OTk5OTAwMH0.sig";
//! let claims = Claims::read(jwt).unwrap();
//! assert_eq!(claims.exp_ms, 1_800_000_000_000);
//! assert_eq!(claims.iat_ms, Some(1_799_999_000_000));
//! assert_eq!(Claims::read("not a jwt"), None);
//! ```

/// Base64url as JWTs use it (no padding; padding tolerated) to bytes;
/// `None` for anything else. Written out rather than taken from the
/// `base64` crate, whose decoder is about 3.5 KB of the npm package's Wasm
/// for the few bytes of a JWT payload; the tests hold it to that crate.
fn base64url(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3 + 2);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // What is left must be padding bits: fewer than a character's, all zero.
    (bits < 6 && acc == 0).then_some(out)
}

/// Never ask for a new token more often than this (milliseconds).
pub const MIN_REFRESH_INTERVAL_MS: u64 = 500;
/// Ask at least this long before the token expires (milliseconds).
pub const REFRESH_BEFORE_EXPIRY_MS: u64 = 1_000;

/// The claims of a JWT the SDK uses, read without verifying the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claims {
    /// `exp`, in milliseconds since the Unix epoch.
    pub exp_ms: u64,
    /// `iat`, in milliseconds since the Unix epoch, when present.
    pub iat_ms: Option<u64>,
}

impl Claims {
    /// The claims of `token` (a JWT: `header.payload.signature`), or `None`
    /// when it is not a JWT whose payload has a numeric `exp`.
    pub fn read(token: &str) -> Option<Self> {
        let mut parts = token.split('.');
        let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let bytes = base64url(payload)?;
        let text = std::str::from_utf8(&bytes).ok()?;
        let json = durable_session_protocol::json::parse(text).ok()?;
        let seconds = |key| json.get(key).and_then(|v| v.u64()).map(|s| s.saturating_mul(1_000));
        Some(Self {
            exp_ms: seconds("exp")?,
            iat_ms: seconds("iat"),
        })
    }

    /// When to ask for the next token, given that this one arrived at
    /// `received` (ms since the Unix epoch): at 75 % of its remaining
    /// lifetime, at least [`REFRESH_BEFORE_EXPIRY_MS`] before `exp`, and never
    /// sooner than [`MIN_REFRESH_INTERVAL_MS`] after `received`.
    ///
    /// The remaining lifetime is `exp - received` by the local clock, but no
    /// more than `exp - iat` (the lifetime the token was minted with), which
    /// keeps a local clock running behind from delaying the refresh past
    /// the expiry.
    ///
    /// ```
    /// use durable_sessions::core::token::Claims;
    /// let c = Claims { exp_ms: 10_000, iat_ms: None };
    /// assert_eq!(c.refresh_at(2_000), 8_000); // 2 000 + 8 000 · 3/4
    /// let short = Claims { exp_ms: 3_000, iat_ms: None };
    /// assert_eq!(short.refresh_at(0), 2_000); // 1 s before exp
    /// let expired = Claims { exp_ms: 1_000, iat_ms: None };
    /// assert_eq!(expired.refresh_at(5_000), 5_500);
    /// ```
    pub fn refresh_at(&self, received: u64) -> u64 {
        let mut remaining = self.exp_ms.saturating_sub(received);
        if let Some(iat) = self.iat_ms {
            remaining = remaining.min(self.exp_ms.saturating_sub(iat));
        }
        let wait = (remaining / 4 * 3).min(remaining.saturating_sub(REFRESH_BEFORE_EXPIRY_MS));
        received + wait.max(MIN_REFRESH_INTERVAL_MS)
    }
}

/// The token a client holds and the state of its requests for a new one.
#[derive(Debug, Default)]
pub(crate) struct TokenState {
    token: Option<String>,
    claims: Option<Claims>,
    /// When to ask for a new token while connected (`None`: only when the
    /// server refuses this one).
    refresh_at: Option<u64>,
    /// The server refused this token (`unauthorized`, close 4003).
    stale: bool,
    /// When the outstanding request for a token was made.
    requested_at: Option<u64>,
    /// Proactive refreshes that failed in a row.
    failures: u32,
}

impl TokenState {
    pub(crate) fn get(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Whether a connection may be opened with the token held: there is one,
    /// the server has not refused it, it is not past its refresh point and
    /// not about to expire.
    pub(crate) fn usable(&self, now: u64) -> bool {
        self.token.is_some()
            && !self.stale
            && self.refresh_at.is_none_or(|at| now < at)
            && self.claims.is_none_or(|c| now + REFRESH_BEFORE_EXPIRY_MS < c.exp_ms)
    }

    /// Why a new token is needed (for [`super::client::Output::NeedToken`]).
    pub(crate) fn why(&self) -> &'static str {
        match (&self.token, self.stale) {
            (None, _) => "no token yet",
            (Some(_), true) => "token refused by the server",
            (Some(_), false) => "token expiring",
        }
    }

    /// Whether a new request may be made: none is outstanding, or the
    /// outstanding one is older than `lost_after` (then taken as lost).
    pub(crate) fn may_request(&self, now: u64, lost_after: u64) -> bool {
        self.requested_at.is_none_or(|at| now >= at + lost_after)
    }

    pub(crate) fn requested(&mut self, now: u64) {
        self.requested_at = Some(now);
    }

    /// When a proactive refresh (or the re-ask of a lost request) is due.
    pub(crate) fn due_at(&self, lost_after: u64) -> Option<u64> {
        match self.requested_at {
            Some(at) => Some(at + lost_after),
            None => self.refresh_at,
        }
    }

    /// Stores a token received at `now`. Returns whether it differs from the
    /// one held. The same token again is not refreshed proactively (the app
    /// has nothing newer); it is replaced when the server refuses it.
    pub(crate) fn set(&mut self, now: u64, token: String) -> bool {
        let changed = self.token.as_deref() != Some(token.as_str());
        self.requested_at = None;
        self.failures = 0;
        if changed {
            self.claims = Claims::read(&token);
            self.refresh_at = self.claims.map(|c| c.refresh_at(now));
            self.stale = false;
            self.token = Some(token);
        } else {
            self.refresh_at = None;
        }
        changed
    }

    /// The server refused the token.
    pub(crate) fn refused(&mut self) {
        self.stale = true;
    }

    /// Requests that failed in a row.
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }

    /// A request failed; a proactive refresh is retried after `delay` (at
    /// least [`MIN_REFRESH_INTERVAL_MS`]).
    pub(crate) fn failed(&mut self, now: u64, delay: u64) {
        self.requested_at = None;
        self.failures = self.failures.saturating_add(1);
        if self.token.is_some() {
            self.refresh_at = Some(now + delay.max(MIN_REFRESH_INTERVAL_MS));
        }
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};

    use super::*;

    fn jwt(payload: &str) -> String {
        format!("e30.{}.c2ln", URL_SAFE_NO_PAD.encode(payload))
    }

    #[test]
    fn base64url_decodes_what_the_base64_crate_does() {
        for len in 0..64usize {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + len * 11) as u8).collect();
            for text in [URL_SAFE_NO_PAD.encode(&bytes), URL_SAFE.encode(&bytes)] {
                assert_eq!(base64url(&text), Some(bytes.clone()), "{text}");
            }
        }
        for bad in ["a", "abcde", "ab+c", "ab/c", "a b", "aB", "abc=d", "é"] {
            assert_eq!(base64url(bad), None, "{bad}");
            assert!(URL_SAFE_NO_PAD.decode(bad).is_err(), "the crate refuses {bad} too");
        }
    }

    #[test]
    fn reads_exp_and_iat_without_verifying() {
        let c = Claims::read(&jwt(r#"{"sub":"ada","exp":1800000000,"grants":[]}"#)).unwrap();
        assert_eq!(c.exp_ms, 1_800_000_000_000);
        assert_eq!(c.iat_ms, None);
        // Padding is tolerated.
        let padded = format!("e30.{}.x", URL_SAFE.encode(r#"{"exp":5,"iat":1}"#));
        assert!(padded.contains('='));
        assert_eq!(
            Claims::read(&padded),
            Some(Claims {
                exp_ms: 5_000,
                iat_ms: Some(1_000)
            })
        );
    }

    #[test]
    fn unreadable_tokens_have_no_claims() {
        for bad in [
            "opaque-token".to_owned(),
            "a.b".into(),
            "a.b.c.d".into(),
            "e30.!!!.x".into(),
            jwt("not json"),
            jwt(r#"{"sub":"ada"}"#),
            jwt(r#"{"exp":"soon"}"#),
            jwt(r#"{"exp":-5}"#),
        ] {
            assert_eq!(Claims::read(&bad), None, "{bad}");
        }
    }

    #[test]
    fn refresh_at_three_quarters_of_the_remaining_lifetime() {
        let c = Claims {
            exp_ms: 100_000,
            iat_ms: None,
        };
        assert_eq!(c.refresh_at(20_000), 80_000);
        // A clock running behind: `iat` bounds the lifetime.
        let minted = Claims {
            exp_ms: 100_000,
            iat_ms: Some(96_000),
        };
        assert_eq!(minted.refresh_at(20_000), 23_000);
        // Short-lived: 1 s before exp at the latest, 500 ms apart at least.
        let short = Claims {
            exp_ms: 1_600,
            iat_ms: None,
        };
        assert_eq!(short.refresh_at(0), 600);
        assert_eq!(short.refresh_at(1_000), 1_500);
    }

    #[test]
    fn the_same_token_again_is_not_refreshed_proactively() {
        let mut t = TokenState::default();
        let token = jwt(r#"{"exp":100}"#);
        assert!(t.set(0, token.clone()));
        assert_eq!(t.due_at(10_000), Some(75_000));
        assert!(!t.set(80_000, token));
        assert_eq!(t.due_at(10_000), None);
        assert!(t.usable(80_000));
        assert!(!t.usable(99_000), "about to expire");
    }
}
