//! One classification of errors for every transport.
//!
//! The WebSocket server sends error codes; the HTTP link turns a status (and
//! a few headers) into the code a WebSocket server would have sent
//! ([`ErrorCode::from_http_status`], the protocol's one mapping between
//! statuses and codes). Either way [`classify`] decides what the client
//! does, so a proxy's `503` over HTTP and an `internal` error over WebSocket
//! take the same path:
//!
//! | class | codes | what the client does |
//! |---|---|---|
//! | [`ErrorClass::Transient`] | `internal`, `too_many_connections`, `too_many_readers` (and over HTTP: 5xx, 429, 408, network errors) | drops the link, shows `disconnected` with the reason, retries with backoff (honouring `Retry-After`), resumes every subscription from its offset and resends unacknowledged appends with the same producer ids |
//! | [`ErrorClass::Reset`] | `gone`; and `not_found` for a subscription that has already read the stream (it was deleted under it) | restarts that subscription per its reset policy and emits `reset` |
//! | [`ErrorClass::Unauthorized`] | `unauthorized` | with a token function: a new token, a new connection, resume; without one: permanent |
//! | [`ErrorClass::Fenced`] | `stale_epoch`, `seq_gap` | the outbox starts a new producer epoch and resends |
//! | [`ErrorClass::Permanent`] | everything else (`forbidden`, `not_found`, `conflict`, `bad_request`, `too_large`, `closed`, `too_many_subscriptions`, …) | ends that subscription (`SubscriptionEvent::Error`) or fails that append, and nothing else |

use durable_session_protocol::ws::ErrorCode;

/// What the client does about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The server or the network failed for now: retry with backoff.
    Transient,
    /// The position is no longer there: restart per the reset policy.
    Reset,
    /// No valid token: get a fresh one and retry (final without a token
    /// function).
    Unauthorized,
    /// The idempotent producer was fenced: new epoch, resend.
    Fenced,
    /// Final for that subscription or request.
    Permanent,
}

/// The class of an error code.
///
/// ```
/// use durable_sessions::core::errors::{ErrorClass, classify};
/// use durable_sessions::protocol::ws::ErrorCode;
/// assert_eq!(classify(ErrorCode::Internal), ErrorClass::Transient);
/// assert_eq!(classify(ErrorCode::NotFound), ErrorClass::Permanent);
/// assert_eq!(classify(ErrorCode::StaleEpoch), ErrorClass::Fenced);
/// ```
pub fn classify(code: ErrorCode) -> ErrorClass {
    match code {
        ErrorCode::Internal | ErrorCode::TooManyConnections | ErrorCode::TooManyReaders => ErrorClass::Transient,
        ErrorCode::Gone => ErrorClass::Reset,
        ErrorCode::Unauthorized => ErrorClass::Unauthorized,
        ErrorCode::StaleEpoch | ErrorCode::SeqGap => ErrorClass::Fenced,
        ErrorCode::BadFrame
        | ErrorCode::UnknownOp
        | ErrorCode::TooLarge
        | ErrorCode::BadOffset
        | ErrorCode::BadRequest
        | ErrorCode::NotFound
        | ErrorCode::Conflict
        | ErrorCode::Closed
        | ErrorCode::Forbidden
        | ErrorCode::DuplicateSub
        | ErrorCode::UnknownSub
        | ErrorCode::TooManySubscriptions => ErrorClass::Permanent,
    }
}

/// The longest `Retry-After` the client honours, in milliseconds (a longer
/// one is cut to this: a misconfigured proxy must not stall a page for an
/// hour; the app can always retry at once with `check_connection`).
pub const MAX_RETRY_AFTER_MS: u64 = 60_000;

/// A `Retry-After` header in delay-seconds form, in milliseconds (at most
/// [`MAX_RETRY_AFTER_MS`]). The HTTP-date form is not read (`None`: the
/// backoff alone decides).
///
/// ```
/// use durable_sessions::core::errors::retry_after_ms;
/// assert_eq!(retry_after_ms(" 3 "), Some(3_000));
/// assert_eq!(retry_after_ms("86400"), Some(60_000));
/// assert_eq!(retry_after_ms("Wed, 21 Oct 2015 07:28:00 GMT"), None);
/// ```
pub fn retry_after_ms(value: &str) -> Option<u64> {
    let seconds: u64 = value.trim_ascii().parse().ok()?;
    Some(seconds.saturating_mul(1_000).min(MAX_RETRY_AFTER_MS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_one_class() {
        let transient: Vec<_> = ErrorCode::ALL
            .into_iter()
            .filter(|c| classify(*c) == ErrorClass::Transient)
            .collect();
        assert_eq!(
            transient,
            [
                ErrorCode::Internal,
                ErrorCode::TooManyConnections,
                ErrorCode::TooManyReaders
            ]
        );
        for code in [
            ErrorCode::Forbidden,
            ErrorCode::NotFound,
            ErrorCode::Conflict,
            ErrorCode::BadRequest,
            ErrorCode::TooLarge,
            ErrorCode::Closed,
            ErrorCode::BadOffset,
            ErrorCode::TooManySubscriptions,
        ] {
            assert_eq!(classify(code), ErrorClass::Permanent, "{code:?}");
        }
        assert_eq!(classify(ErrorCode::Gone), ErrorClass::Reset);
        assert_eq!(classify(ErrorCode::Unauthorized), ErrorClass::Unauthorized);
        assert_eq!(classify(ErrorCode::SeqGap), ErrorClass::Fenced);
        assert_eq!(classify(ErrorCode::StaleEpoch), ErrorClass::Fenced);
    }

    #[test]
    fn http_statuses_get_the_classes_of_the_websocket_codes() {
        use durable_session_protocol::ws::HttpHints;
        let none = HttpHints::default();
        let class = |status| classify(ErrorCode::from_http_status(status, none));
        for status in [500, 502, 503, 504, 429, 408, 599, 302] {
            assert_eq!(class(status), ErrorClass::Transient, "HTTP {status}");
        }
        // 413: too large for this server, final for that request.
        for status in [400, 403, 404, 405, 409, 413, 422] {
            assert_eq!(class(status), ErrorClass::Permanent, "HTTP {status}");
        }
        assert_eq!(class(410), ErrorClass::Reset);
        assert_eq!(class(401), ErrorClass::Unauthorized);
        let fenced = HttpHints {
            producer_epoch: true,
            ..none
        };
        assert_eq!(classify(ErrorCode::from_http_status(403, fenced)), ErrorClass::Fenced);
    }

    #[test]
    fn retry_after_in_seconds_is_read_and_bounded() {
        assert_eq!(retry_after_ms("0"), Some(0));
        assert_eq!(retry_after_ms("10"), Some(10_000));
        assert_eq!(retry_after_ms("99999999999999999"), Some(MAX_RETRY_AFTER_MS));
        assert_eq!(retry_after_ms("-1"), None);
        assert_eq!(retry_after_ms(""), None);
    }
}
