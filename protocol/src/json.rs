//! Minimal JSON: a strict parser that keeps each value's raw text, and an
//! escaping writer.
//!
//! The SDK ships as WebAssembly, where a general-purpose serialization
//! framework costs more bytes than everything else together. Frames and
//! session events have a small, fixed shape, so they are read and written
//! with this module instead (the server validates arbitrary JSON bodies with
//! `serde_json`). The parser follows RFC 8259 strictly. It breaks values down
//! to [`MAX_PARSE_DEPTH`] levels of nesting; a container nested deeper is
//! still checked, without recursion, and kept whole ([`Value::TooDeep`]), so
//! no input can exhaust the stack and one deep value never makes the text
//! around it unreadable.
//!
//! Depth limits: a message stored in a stream nests at most
//! [`MAX_MESSAGE_DEPTH`] arrays and objects (the server refuses deeper ones,
//! [`check_depth`]), so it is broken down whole by this parser even inside a
//! frame, and by any parser with the common limit of 128 (`serde_json`).
//!
//! ```
//! use durable_session_protocol::json::{parse, Obj};
//! let v = parse(r#"{"op":"ping","t":5,"data":{"a":[1,2]}}"#).unwrap();
//! assert_eq!(v.get("op").and_then(|v| v.str()), Some("ping"));
//! assert_eq!(v.get("t").and_then(|v| v.u64()), Some(5));
//! assert_eq!(v.get("data").map(|v| v.raw), Some(r#"{"a":[1,2]}"#));
//! let mut o = Obj::new();
//! o.str("op", "pong").u64("t", 5);
//! assert_eq!(o.finish(), r#"{"op":"pong","t":5}"#);
//! ```

use std::borrow::Cow;

/// Deepest nesting this parser breaks down into [`Value`]s: a container
/// nested deeper (at depth 128 or more, the top-level value being at depth 0)
/// is checked and kept whole as [`Value::TooDeep`].
pub const MAX_PARSE_DEPTH: usize = 128;

/// Deepest nesting of arrays and objects a message (one JSON value stored in
/// a JSON-mode stream) may have; the server refuses deeper ones with `400` /
/// `bad_request`. Half of [`MAX_PARSE_DEPTH`]: a message is broken down whole
/// even inside an `events` frame (three levels down) or an app's own
/// envelope, and by every reader whose parser stops at 128 levels (this one,
/// `serde_json`).
pub const MAX_MESSAGE_DEPTH: usize = 64;

/// The message of the error [`check_depth`] returns.
const TOO_DEEP: &str = "nesting too deep";

/// A parsed value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Null,
    Bool(bool),
    /// A number, as written.
    Number(&'a str),
    String(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    /// Members in document order.
    Object(Vec<(Cow<'a, str>, Json<'a>)>),
    /// An array or object nested [`MAX_PARSE_DEPTH`] levels deep: valid
    /// JSON, kept whole (its text is [`Json::raw`]) but not broken down.
    TooDeep,
}

/// A value and the exact text it was parsed from.
#[derive(Debug, Clone, PartialEq)]
pub struct Json<'a> {
    pub raw: &'a str,
    pub value: Value<'a>,
}

/// Why a text is not JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonError {
    /// Byte offset of the problem.
    pub offset: usize,
    pub message: &'static str,
}

impl std::fmt::Display for JsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at byte {}", self.message, self.offset)
    }
}

impl std::error::Error for JsonError {}

impl JsonError {
    /// Whether this is the error of [`check_depth`]: valid JSON, nested
    /// too deep.
    pub fn is_too_deep(&self) -> bool {
        self.message == TOO_DEEP
    }
}

/// Checks that the JSON text `text` nests at most `max` arrays and objects
/// (`1` has depth 0, `[]` 1, `{"a":[1]}` 2), in one pass without recursion
/// or allocation. It only counts brackets outside strings: it says nothing
/// about whether `text` is JSON.
///
/// ```
/// use durable_session_protocol::json::check_depth;
/// assert!(check_depth(r#"{"a":[1,"]]]["]}"#, 2).is_ok());
/// let deep = "[".repeat(100_000) + &"]".repeat(100_000);
/// let e = check_depth(&deep, 64).unwrap_err();
/// assert!(e.is_too_deep());
/// assert_eq!(e.offset, 64);
/// ```
pub fn check_depth(text: &str, max: usize) -> Result<(), JsonError> {
    let mut depth = 0usize;
    let mut bytes = text.bytes().enumerate();
    while let Some((i, c)) = bytes.next() {
        match c {
            b'"' => {
                while let Some((_, c)) = bytes.next() {
                    match c {
                        b'\\' => {
                            bytes.next();
                        }
                        b'"' => break,
                        _ => {}
                    }
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Err(JsonError {
                        offset: i,
                        message: TOO_DEEP,
                    });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Parses a text holding exactly one JSON value (surrounding whitespace allowed).
pub fn parse(text: &str) -> Result<Json<'_>, JsonError> {
    let mut p = Parser {
        s: text,
        b: text.as_bytes(),
        i: 0,
    };
    p.ws();
    let v = p.value(0)?;
    p.ws();
    if p.i != p.b.len() {
        return Err(p.err("trailing characters"));
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Parser<'a> {
    /// The text between two positions. They always sit on ASCII
    /// delimiters, hence on char boundaries; `get` keeps the panic path
    /// (and its formatting code) out of the Wasm build.
    fn slice(&self, start: usize, end: usize) -> &'a str {
        self.s.get(start..end).unwrap_or_default()
    }

    fn err(&self, message: &'static str) -> JsonError {
        JsonError {
            offset: self.i,
            message,
        }
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Result<Json<'a>, JsonError> {
        let start = self.i;
        let value = match self.b.get(self.i) {
            Some(b'{' | b'[') if depth >= MAX_PARSE_DEPTH => {
                self.skip_container()?;
                Value::TooDeep
            }
            Some(b'{') => self.object(depth)?,
            Some(b'[') => self.array(depth)?,
            _ => self.scalar()?,
        };
        Ok(Json {
            raw: self.slice(start, self.i),
            value,
        })
    }

    /// A value that is neither an array nor an object.
    fn scalar(&mut self) -> Result<Value<'a>, JsonError> {
        match self.b.get(self.i) {
            None => Err(self.err("unexpected end")),
            Some(b'"') => Ok(Value::String(self.string()?)),
            Some(b't') => self.word("true", Value::Bool(true)),
            Some(b'f') => self.word("false", Value::Bool(false)),
            Some(b'n') => self.word("null", Value::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.err("unexpected character")),
        }
    }

    /// An object member's key and its colon; the cursor is then at the value.
    fn key(&mut self) -> Result<Cow<'a, str>, JsonError> {
        if self.b.get(self.i) != Some(&b'"') {
            return Err(self.err("expected a key"));
        }
        let key = self.string()?;
        self.ws();
        if !self.eat(b':') {
            return Err(self.err("expected :"));
        }
        self.ws();
        Ok(key)
    }

    /// Checks the array or object at the cursor and moves past it, without
    /// recursion: the closing brackets still expected are kept on a heap
    /// stack (one byte per level) instead of the call stack.
    fn skip_container(&mut self) -> Result<(), JsonError> {
        let mut open: Vec<u8> = Vec::new();
        loop {
            // At the start of a value.
            match self.b.get(self.i) {
                Some(b'[') => {
                    self.i += 1;
                    self.ws();
                    if !self.eat(b']') {
                        open.push(b']');
                        continue;
                    }
                }
                Some(b'{') => {
                    self.i += 1;
                    self.ws();
                    if !self.eat(b'}') {
                        open.push(b'}');
                        self.key()?;
                        continue;
                    }
                }
                _ => {
                    self.scalar()?;
                }
            }
            // After a value: close what ends here, then go on to the next
            // element, or stop when nothing is open.
            loop {
                let Some(&close) = open.last() else {
                    return Ok(());
                };
                self.ws();
                if self.eat(close) {
                    open.pop();
                    continue;
                }
                if !self.eat(b',') {
                    return Err(self.err(if close == b']' {
                        "expected , or ]"
                    } else {
                        "expected , or }"
                    }));
                }
                self.ws();
                if close == b'}' {
                    self.key()?;
                }
                break;
            }
        }
    }

    fn word(&mut self, word: &'static str, value: Value<'a>) -> Result<Value<'a>, JsonError> {
        if self
            .b
            .get(self.i..)
            .is_some_and(|rest| rest.starts_with(word.as_bytes()))
        {
            self.i += word.len();
            Ok(value)
        } else {
            Err(self.err("invalid literal"))
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.b.get(self.i) {
            self.i += 1;
        }
        self.i - start
    }

    fn number(&mut self) -> Result<Value<'a>, JsonError> {
        let start = self.i;
        self.eat(b'-');
        if self.eat(b'0') {
            if let Some(b'0'..=b'9') = self.b.get(self.i) {
                return Err(self.err("leading zero"));
            }
        } else if self.digits() == 0 {
            return Err(self.err("invalid number"));
        }
        if self.eat(b'.') && self.digits() == 0 {
            return Err(self.err("invalid fraction"));
        }
        if self.eat(b'e') || self.eat(b'E') {
            if !self.eat(b'+') {
                self.eat(b'-');
            }
            if self.digits() == 0 {
                return Err(self.err("invalid exponent"));
            }
        }
        Ok(Value::Number(self.slice(start, self.i)))
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let h = self
            .b
            .get(self.i..self.i + 4)
            .ok_or_else(|| self.err("short \\u escape"))?;
        let mut n = 0;
        for c in h {
            n = n * 16
                + (*c as char)
                    .to_digit(16)
                    .ok_or_else(|| self.err("invalid \\u escape"))?;
        }
        self.i += 4;
        Ok(n)
    }

    fn string(&mut self) -> Result<Cow<'a, str>, JsonError> {
        self.i += 1; // opening quote
        let start = self.i;
        // Fast path: no escapes.
        loop {
            match self.b.get(self.i) {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => {
                    let s = self.slice(start, self.i);
                    self.i += 1;
                    return Ok(Cow::Borrowed(s));
                }
                Some(b'\\') => break,
                Some(c) if *c < 0x20 => return Err(self.err("control character in string")),
                Some(_) => self.i += 1,
            }
        }
        let mut out = String::from(self.slice(start, self.i));
        loop {
            match self.b.get(self.i) {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(Cow::Owned(out));
                }
                Some(b'\\') => {
                    self.i += 1;
                    let c = match self.b.get(self.i) {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            self.i += 1;
                            let hi = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&hi) {
                                if !(self.eat(b'\\') && self.eat(b'u')) {
                                    return Err(self.err("lone surrogate"));
                                }
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err(self.err("lone surrogate"));
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else if (0xDC00..0xE000).contains(&hi) {
                                return Err(self.err("lone surrogate"));
                            } else {
                                hi
                            };
                            out.push(char::from_u32(code).ok_or_else(|| self.err("invalid code point"))?);
                            continue;
                        }
                        _ => return Err(self.err("invalid escape")),
                    };
                    self.i += 1;
                    out.push(c);
                }
                Some(c) if *c < 0x20 => return Err(self.err("control character in string")),
                Some(_) => {
                    // Copy a run of plain characters (UTF-8 safe: stops at ASCII).
                    let run = self.i;
                    while let Some(c) = self.b.get(self.i) {
                        if *c == b'"' || *c == b'\\' || *c < 0x20 {
                            break;
                        }
                        self.i += 1;
                    }
                    out.push_str(self.slice(run, self.i));
                }
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value<'a>, JsonError> {
        self.i += 1;
        let mut items = Vec::new();
        self.ws();
        if self.eat(b']') {
            return Ok(Value::Array(items));
        }
        loop {
            self.ws();
            items.push(self.value(depth + 1)?);
            self.ws();
            if self.eat(b']') {
                return Ok(Value::Array(items));
            }
            if !self.eat(b',') {
                return Err(self.err("expected , or ]"));
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value<'a>, JsonError> {
        self.i += 1;
        let mut members = Vec::new();
        self.ws();
        if self.eat(b'}') {
            return Ok(Value::Object(members));
        }
        loop {
            self.ws();
            let key = self.key()?;
            let value = self.value(depth + 1)?;
            members.push((key, value));
            self.ws();
            if self.eat(b'}') {
                return Ok(Value::Object(members));
            }
            if !self.eat(b',') {
                return Err(self.err("expected , or }"));
            }
        }
    }
}

impl<'a> Json<'a> {
    /// The member `key` of an object (the first, if repeated).
    pub fn get(&self, key: &str) -> Option<&Json<'a>> {
        match &self.value {
            Value::Object(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The value as a string.
    pub fn str(&self) -> Option<&str> {
        match &self.value {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as a non-negative integer (no fraction, no exponent).
    pub fn u64(&self) -> Option<u64> {
        match self.value {
            Value::Number(n) if n.bytes().all(|b| b.is_ascii_digit()) => n.parse().ok(),
            _ => None,
        }
    }

    /// The value as a boolean.
    pub fn bool(&self) -> Option<bool> {
        match self.value {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The elements of an array.
    pub fn array(&self) -> Option<&[Json<'a>]> {
        match &self.value {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }

    /// Whether the value is an object.
    pub fn is_object(&self) -> bool {
        matches!(self.value, Value::Object(_))
    }

    /// Whether the value is `null`.
    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }
}

/// Writes `s` as a JSON string literal.
pub fn push_str(out: &mut String, s: &str) {
    out.push('"');
    let mut run = 0;
    for (i, c) in s.char_indices() {
        let escape = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            c if (c as u32) < 0x20 => "",
            _ => continue,
        };
        out.push_str(s.get(run..i).unwrap_or_default());
        if escape.is_empty() {
            out.push_str("\\u00");
            let b = c as u8;
            for nibble in [b >> 4, b & 0xf] {
                out.push(char::from_digit(u32::from(nibble), 16).unwrap_or('0'));
            }
        } else {
            out.push_str(escape);
        }
        run = i + c.len_utf8();
    }
    out.push_str(s.get(run..).unwrap_or_default());
    out.push('"');
}

/// Builds a JSON object member by member.
#[derive(Debug, Default)]
pub struct Obj {
    buf: String,
}

impl Obj {
    /// An empty object.
    pub fn new() -> Self {
        Self { buf: String::from("{") }
    }

    fn key(&mut self, key: &str) -> &mut String {
        if self.buf.len() > 1 {
            self.buf.push(',');
        }
        push_str(&mut self.buf, key);
        self.buf.push(':');
        &mut self.buf
    }

    /// A string member.
    pub fn str(&mut self, key: &str, value: &str) -> &mut Self {
        push_str(self.key(key), value);
        self
    }

    /// A string member, when present.
    pub fn opt_str(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        if let Some(v) = value {
            self.str(key, v);
        }
        self
    }

    /// An integer member.
    pub fn u64(&mut self, key: &str, value: u64) -> &mut Self {
        let n = value.to_string();
        self.key(key).push_str(&n);
        self
    }

    /// A boolean member.
    pub fn bool(&mut self, key: &str, value: bool) -> &mut Self {
        self.key(key).push_str(if value { "true" } else { "false" });
        self
    }

    /// A member whose value is JSON text already.
    pub fn raw(&mut self, key: &str, json: &str) -> &mut Self {
        self.key(key).push_str(json);
        self
    }

    /// The object's text.
    pub fn finish(&mut self) -> String {
        let mut out = std::mem::take(&mut self.buf);
        out.push('}');
        out
    }
}

/// Joins JSON texts into an array.
pub fn array<'s>(items: impl IntoIterator<Item = &'s str>) -> String {
    let mut out = String::from("[");
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(item);
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_rfc_8259_accepts() {
        for ok in [
            "0",
            "-0",
            "1.5e10",
            "-1.25E-3",
            "true",
            "false",
            "null",
            r#""""#,
            "[]",
            "{}",
            r#"{"a":[1,{"b":null}],"c":"\u00e9\ud83d\ude00\n"}"#,
            " \t\n[ 1 , 2 ]\r\n",
        ] {
            assert!(parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_what_it_does_not() {
        for bad in [
            "",
            " ",
            "01",
            "1.",
            ".5",
            "1e",
            "+1",
            "-",
            "tru",
            "nul",
            "[1,]",
            "[,1]",
            "{\"a\"}",
            "{\"a\":}",
            "{a:1}",
            "{\"a\":1,}",
            "[1 2]",
            "\"\\x\"",
            "\"\\ud800\"",
            "\"\\udc00x\"",
            "\"a\nb\"",
            "\"abc",
            "[1]]",
            "1 2",
            "'a'",
            "[\"\\u12\"]",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    /// `levels` nested arrays around `inner`.
    fn nested(levels: usize, inner: &str) -> String {
        "[".repeat(levels) + inner + &"]".repeat(levels)
    }

    #[test]
    fn values_past_the_parse_depth_are_checked_and_kept_whole() {
        let text = nested(MAX_PARSE_DEPTH + 2, "1");
        let v = parse(&text).unwrap();
        let mut at = &v;
        for _ in 0..MAX_PARSE_DEPTH {
            at = &at.array().unwrap()[0];
        }
        assert_eq!(at.value, Value::TooDeep);
        assert_eq!(at.raw, "[[1]]");
        assert!(parse(&nested(MAX_PARSE_DEPTH - 1, "1")).unwrap().array().is_some());

        // 100,000 levels: no stack overflow, the text around is read.
        let deep = nested(100_000, r#"{"a":[1,{"b":"]"}]}"#);
        let frame = format!(r#"{{"op":"append","data":{deep},"req":"r1"}}"#);
        let v = parse(&frame).unwrap();
        assert_eq!(v.get("req").and_then(Json::str), Some("r1"));
        assert_eq!(v.get("data").unwrap().raw, deep);

        // Invalid JSON deep down is still invalid.
        for bad in [
            nested(200, "1,"),
            nested(200, "{\"a\"}"),
            nested(200, "{\"a\":1,}"),
            nested(200, "tru"),
            "[".repeat(200),
            "[".repeat(200) + &"}".repeat(200),
            nested(200, "[1 2]"),
        ] {
            assert!(parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn depth_is_counted_outside_strings() {
        assert!(check_depth("1", 0).is_ok());
        assert!(check_depth("[]", 0).unwrap_err().is_too_deep());
        assert!(check_depth(&nested(64, "1"), 64).is_ok());
        assert_eq!(check_depth(&nested(65, "1"), 64).unwrap_err().offset, 64);
        assert!(check_depth(r#"[{"k":"[[[{{{\"[[","v":[]}]"#, 3).is_ok());
        assert!(check_depth(r#"[{"k":"\\","v":[[]]}]"#, 3).unwrap_err().is_too_deep());
        assert!(!parse("{").unwrap_err().is_too_deep());
    }

    #[test]
    fn decodes_strings_and_keeps_raw_text() {
        let v = parse(r#"{"s":"a\"b\\c\/d\u0041\ud83d\ude00","n":[1, 2]}"#).unwrap();
        assert_eq!(v.get("s").unwrap().str(), Some("a\"b\\c/dA😀"));
        assert_eq!(v.get("n").unwrap().raw, "[1, 2]");
        assert_eq!(v.get("missing"), None);
    }

    #[test]
    fn numbers() {
        assert_eq!(parse("42").unwrap().u64(), Some(42));
        assert_eq!(parse("-1").unwrap().u64(), None);
        assert_eq!(parse("1.0").unwrap().u64(), None);
        assert_eq!(parse("18446744073709551616").unwrap().u64(), None, "too large");
    }

    #[test]
    fn strings_round_trip_through_the_writer() {
        for s in [
            "",
            "plain",
            "quote\" back\\ slash",
            "ctl \u{1} \u{1f} \t\n\r",
            "ünïcödé 😀",
            "</script>",
        ] {
            let mut out = String::new();
            push_str(&mut out, s);
            assert_eq!(parse(&out).unwrap().str(), Some(s), "{out}");
        }
    }

    #[test]
    fn objects_and_arrays_are_built_in_order() {
        let mut o = Obj::new();
        o.str("a", "x")
            .u64("b", 7)
            .bool("c", false)
            .raw("d", "[1]")
            .opt_str("e", None)
            .opt_str("f", Some("y"));
        assert_eq!(o.finish(), r#"{"a":"x","b":7,"c":false,"d":[1],"f":"y"}"#);
        assert_eq!(Obj::new().finish(), "{}");
        assert_eq!(array(["1", "{}"]), "[1,{}]");
        assert_eq!(array([]), "[]");
    }
}

#[cfg(test)]
mod differential {
    //! The parser agrees with `serde_json` on what is JSON, over many
    //! mutated documents.

    /// A small deterministic generator (xorshift64).
    fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        }
    }

    /// `edits` random replacements, removals or insertions of bytes of
    /// `alphabet`.
    fn mutate(doc: &mut Vec<u8>, edits: u64, alphabet: &[u8], next: &mut impl FnMut() -> u64) {
        for _ in 0..edits {
            let at = (next() % (doc.len() as u64 + 1)) as usize;
            let c = alphabet[(next() % alphabet.len() as u64) as usize];
            match next() % 3 {
                0 if at < doc.len() => doc[at] = c,
                1 if at < doc.len() => {
                    doc.remove(at);
                }
                _ => doc.insert(at, c),
            }
        }
    }

    #[test]
    fn agrees_with_serde_json_on_mutated_documents() {
        let seeds = [
            r#"{"op":"append","req":"r1","path":"sessions/a","data":{"type":"x","n":[1,2.5e3,-0,true,null]},"producer":{"id":"p","epoch":0,"seq":3}}"#,
            r#"[{"a":"\u00e9\ud83d\ude00\\\"\n"},[],{},"",0.1]"#,
            r#"{"type":"text_delta","run_id":"r","agent":"sim","delta":" hello"}"#,
        ];
        let alphabet = br#"{}[]:,"\ 0123456789.eE+-truefalsnu\/bfnrtx"#;
        let mut next = xorshift(0x2545_F491_4F6C_DD1D);
        let mut checked = 0;
        for _ in 0..20_000 {
            let seed = seeds[(next() % seeds.len() as u64) as usize].as_bytes();
            let mut doc = seed.to_vec();
            mutate(&mut doc, 1 + next() % 3, alphabet, &mut next);
            let Ok(text) = std::str::from_utf8(&doc) else { continue };
            let ours = super::parse(text).is_ok();
            let theirs = serde_json::from_str::<serde_json::Value>(text).is_ok();
            assert_eq!(ours, theirs, "disagree on {text:?}");
            checked += 1;
        }
        assert!(checked > 10_000);
    }

    /// Past the parse depth, the parser checks without recursion:
    /// `serde_json`'s `RawValue` (which checks without a depth limit) is the
    /// reference.
    #[test]
    fn agrees_with_serde_json_on_mutated_deep_documents() {
        let levels = super::MAX_PARSE_DEPTH + 3;
        let seed = format!(
            r#"{{"op":"append","data":{}}}"#,
            "[{\"a\":".repeat(levels) + r#"[1,"x\"y",{"b":null}]"# + &"}]".repeat(levels)
        );
        let alphabet = br#"{}[]:,"\ 01.e-tfnu"#;
        let mut next = xorshift(0x9E37_79B9_7F4A_7C15);
        let (mut valid, mut invalid) = (0, 0);
        for _ in 0..5_000 {
            let mut doc = seed.clone().into_bytes();
            mutate(&mut doc, 1 + next() % 2, alphabet, &mut next);
            let Ok(text) = std::str::from_utf8(&doc) else { continue };
            let ours = super::parse(text).is_ok();
            let theirs = serde_json::from_str::<&serde_json::value::RawValue>(text).is_ok();
            assert_eq!(ours, theirs, "disagree on {text:?}");
            if ours { valid += 1 } else { invalid += 1 }
        }
        assert!(valid > 100 && invalid > 1_000, "{valid} valid, {invalid} invalid");
    }
}
