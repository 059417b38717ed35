//! The one encoding of stream paths, shared by every transport and the
//! server.
//!
//! A stream path is a Unicode string such as `sessions/café/ß` — that string
//! *is* the stream's identity, whichever transport names it. The WebSocket
//! extension carries it as is, in JSON. In an HTTP URL each `/`-separated
//! segment is percent-encoded (every byte of its UTF-8 except the RFC 3986
//! unreserved characters `A-Z a-z 0-9 - . _ ~`), and the server decodes the
//! URL path back to the same string. So `café/ß` over HTTP and over the
//! WebSocket name one stream.
//!
//! ```
//! use durable_session_protocol::path::{decode, encode};
//! assert_eq!(encode("sessions/café/ß"), "sessions/caf%C3%A9/%C3%9F");
//! assert_eq!(decode("sessions/caf%C3%A9/%C3%9F").unwrap(), "sessions/café/ß");
//! // Other spellings of the same path decode to the same string.
//! assert_eq!(decode("sessions/caf%c3%a9/ß").unwrap(), "sessions/café/ß");
//! assert!(decode("sessions/%FF").is_err());
//! ```

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// Bytes encoded in a URL path segment: all but the unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// The URL form of a stream path (its segments percent-encoded, `/` kept).
pub fn encode(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.extend(utf8_percent_encode(segment, SEGMENT));
    }
    out
}

/// A value for a URL query parameter (an offset, a cursor), percent-encoded
/// so it survives any characters a server puts in it.
///
/// ```
/// use durable_session_protocol::path::encode_query_value;
/// assert_eq!(encode_query_value("0000_0012"), "0000_0012");
/// assert_eq!(encode_query_value("a&b=c d"), "a%26b%3Dc%20d");
/// ```
pub fn encode_query_value(value: &str) -> String {
    utf8_percent_encode(value, SEGMENT).collect()
}

/// A URL path (as sent) decoded to the stream path it names.
pub fn decode(url_path: &str) -> Result<String, PathError> {
    percent_decode_str(url_path)
        .decode_utf8()
        .map(|p| p.into_owned())
        .map_err(|_| PathError)
}

/// A URL path whose percent-escapes are not UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathError;

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the stream path's percent-escapes are not UTF-8")
    }
}

impl std::error::Error for PathError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for p in [
            "a",
            "sessions/abc",
            "a b/c?d#e%f",
            "sessions/日本/🙂",
            "x/../y",
            "a//b",
            "-._~!*'()",
        ] {
            assert_eq!(decode(&encode(p)).unwrap(), p, "{p}");
        }
        assert_eq!(encode("a b"), "a%20b");
        assert_eq!(encode("q?x#y"), "q%3Fx%23y");
    }
}
