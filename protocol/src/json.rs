//! Minimal JSON: a strict parser that keeps each value's raw text, and an
//! escaping writer.
//!
//! The SDK ships as WebAssembly, where a general-purpose serialization
//! framework costs more bytes than everything else together. Frames and
//! session events have a small, fixed shape, so they are read and written
//! with this module instead (the server validates arbitrary JSON bodies with
//! `serde_json`). The parser follows RFC 8259 strictly and limits nesting
//! depth.
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

/// Deepest nesting accepted.
const MAX_DEPTH: usize = 128;

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
        if depth > MAX_DEPTH {
            return Err(self.err("nesting too deep"));
        }
        let start = self.i;
        let value = match self.b.get(self.i) {
            None => return Err(self.err("unexpected end")),
            Some(b'{') => self.object(depth)?,
            Some(b'[') => self.array(depth)?,
            Some(b'"') => Value::String(self.string()?),
            Some(b't') => self.word("true", Value::Bool(true))?,
            Some(b'f') => self.word("false", Value::Bool(false))?,
            Some(b'n') => self.word("null", Value::Null)?,
            Some(b'-' | b'0'..=b'9') => self.number()?,
            Some(_) => return Err(self.err("unexpected character")),
        };
        Ok(Json {
            raw: self.slice(start, self.i),
            value,
        })
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
            if self.b.get(self.i) != Some(&b'"') {
                return Err(self.err("expected a key"));
            }
            let key = self.string()?;
            self.ws();
            if !self.eat(b':') {
                return Err(self.err("expected :"));
            }
            self.ws();
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

    #[test]
    fn limits_depth() {
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert_eq!(parse(&deep).unwrap_err().message, "nesting too deep");
        let ok = "[".repeat(100) + &"]".repeat(100);
        assert!(parse(&ok).is_ok());
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

    #[test]
    fn agrees_with_serde_json_on_mutated_documents() {
        let seeds = [
            r#"{"op":"append","req":"r1","path":"sessions/a","data":{"type":"x","n":[1,2.5e3,-0,true,null]},"producer":{"id":"p","epoch":0,"seq":3}}"#,
            r#"[{"a":"\u00e9\ud83d\ude00\\\"\n"},[],{},"",0.1]"#,
            r#"{"type":"text_delta","run_id":"r","agent":"sim","delta":" hello"}"#,
        ];
        let alphabet = br#"{}[]:,"\ 0123456789.eE+-truefalsnu\/bfnrtx"#;
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut checked = 0;
        for _ in 0..20_000 {
            let seed = seeds[(next() % seeds.len() as u64) as usize].as_bytes();
            let mut doc = seed.to_vec();
            for _ in 0..(1 + next() % 3) {
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
            let Ok(text) = std::str::from_utf8(&doc) else { continue };
            let ours = super::parse(text).is_ok();
            let theirs = serde_json::from_str::<serde_json::Value>(text).is_ok();
            assert_eq!(ours, theirs, "disagree on {text:?}");
            checked += 1;
        }
        assert!(checked > 10_000);
    }
}
