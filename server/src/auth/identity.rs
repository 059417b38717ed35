//! Who wrote it: the rights an append needs, and the identity the server
//! writes into session events.
//!
//! In `sessions/*` the server, not the client, decides identity: the
//! `author` of a `user_message` and the `by` of a `cancel` / `steer` are the
//! token's `sub` (filled in when absent; a different value is refused), and
//! run events need the `agent` right. Elsewhere an append needs `append`.
//! Closing a stream for good needs `delete`.
//!
//! ```
//! use bytes::Bytes;
//! use durable_session_server::auth::{Access, Principal, Right, identity::authorize_append};
//! let ada = Access::Token(Principal::new("ada", u64::MAX, vec![("sessions/a".into(), vec![Right::Append])]));
//! let body = Bytes::from_static(br#"{"type":"user_message","id":"m1","text":"hi"}"#);
//! let stored = authorize_append(&ada, "sessions/a", body, false, true).unwrap();
//! assert_eq!(&stored[..], br#"{"author":"ada","type":"user_message","id":"m1","text":"hi"}"#);
//! let forged = Bytes::from_static(br#"{"type":"user_message","id":"m2","author":"bob","text":"hi"}"#);
//! assert!(authorize_append(&ada, "sessions/a", forged, false, true).is_err());
//! ```

use bytes::Bytes;
use durable_session_protocol::json::{self, Json, Value};
use durable_session_protocol::session::SESSIONS_PREFIX;

use super::{Access, Denied, Principal, Right};

/// Event types only an agent (the `agent` right) may write.
pub const RUN_EVENT_TYPES: [&str; 8] = [
    "run_started",
    "text_delta",
    "progress",
    "steer_applied",
    "run_finished",
    "tool_call",
    "tool_result",
    "reasoning_delta",
];

/// What one session event needs: a right, and the field that names its
/// writer, if any.
fn rule_for(event_type: Option<&str>) -> (Right, Option<&'static str>) {
    match event_type {
        Some("user_message") => (Right::Append, Some("author")),
        Some("cancel" | "steer") => (Right::Control, Some("by")),
        Some(t) if RUN_EVENT_TYPES.contains(&t) => (Right::Agent, None),
        _ => (Right::Append, None),
    }
}

/// Checks that `access` may append `body` (and close the stream when
/// `close`) to `path`, and returns the body to store: in sessions, with the
/// writer's identity filled in. `json` says the body is JSON.
pub fn authorize_append(access: &Access, path: &str, body: Bytes, close: bool, json: bool) -> Result<Bytes, Denied> {
    let principal = match access {
        Access::Open => return Ok(body),
        Access::Anonymous => return access.check(path, Right::Append).map(|()| body),
        Access::Token(p) => p,
    };
    if close {
        access.check(path, Right::Delete)?;
    }
    if body.is_empty() {
        return Ok(body);
    }
    if !path.starts_with(SESSIONS_PREFIX) {
        access.check(path, Right::Append)?;
        return Ok(body);
    }
    if !json {
        return Err(Denied::BadRequest("session streams hold JSON events".into()));
    }
    let text = std::str::from_utf8(&body).map_err(|_| Denied::BadRequest("the body is not UTF-8".into()))?;
    let value = json::parse(text).map_err(|e| Denied::BadRequest(format!("invalid JSON: {e}")))?;
    let rewritten = match &value.value {
        Value::Array(items) => {
            let mut changed = false;
            let mut pieces = Vec::with_capacity(items.len());
            for item in items {
                let piece = authorize_event(access, principal, path, item)?;
                changed |= piece.is_some();
                pieces.push(piece.unwrap_or_else(|| item.raw.to_owned()));
            }
            changed.then(|| json::array(pieces.iter().map(String::as_str)))
        }
        _ => authorize_event(access, principal, path, &value)?,
    };
    Ok(rewritten.map_or(body, Bytes::from))
}

/// Checks one event; returns its new text when the writer's identity had
/// to be filled in.
fn authorize_event(
    access: &Access,
    principal: &Principal,
    path: &str,
    event: &Json<'_>,
) -> Result<Option<String>, Denied> {
    let Value::Object(members) = &event.value else {
        access.check(path, Right::Append)?;
        return Ok(None);
    };
    for (i, (key, _)) in members.iter().enumerate() {
        if members[..i].iter().any(|(k, _)| k == key) {
            return Err(Denied::BadRequest(format!(
                "a session event must not repeat a field (\"{key}\")"
            )));
        }
    }
    let event_type = event.get("type").and_then(Json::str);
    let (right, identity) = rule_for(event_type);
    access.check(path, right)?;
    let Some(field) = identity else {
        return Ok(None);
    };
    match event.get(field) {
        None => Ok(Some(with_field(event.raw, field, &principal.sub))),
        Some(v) if v.str() == Some(principal.sub.as_str()) => Ok(None),
        Some(_) => Err(Denied::Forbidden(format!(
            "\"{field}\" of a {} must be the token's sub ({}); leave it out and the server fills it in",
            event_type.unwrap_or("event"),
            principal.sub
        ))),
    }
}

/// `{"field":"value",…rest}` from an object's text.
fn with_field(object: &str, field: &str, value: &str) -> String {
    let rest = &object[1..];
    let mut out = String::with_capacity(object.len() + field.len() + value.len() + 6);
    out.push('{');
    json::push_str(&mut out, field);
    out.push(':');
    json::push_str(&mut out, value);
    if !rest.trim_start().starts_with('}') {
        out.push(',');
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(rights: &[Right]) -> Access {
        Access::Token(Principal::new(
            "ada",
            u64::MAX,
            vec![("sessions/*".into(), rights.to_vec())],
        ))
    }

    fn check(access: &Access, body: &str) -> Result<String, Denied> {
        authorize_append(access, "sessions/s", Bytes::from(body.to_owned()), false, true)
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
    }

    #[test]
    fn identity_is_filled_in_or_must_match() {
        let ada = token(&[Right::Append, Right::Control]);
        assert_eq!(check(&ada, r#"{ }"#).unwrap(), r#"{ }"#);
        assert_eq!(
            check(&ada, r#"{"type":"cancel","run_id":"r"}"#).unwrap(),
            r#"{"by":"ada","type":"cancel","run_id":"r"}"#
        );
        assert_eq!(
            check(&ada, r#"{"type":"steer","run_id":"r","text":"x","by":"ada"}"#).unwrap(),
            r#"{"type":"steer","run_id":"r","text":"x","by":"ada"}"#
        );
        assert!(matches!(
            check(&ada, r#"{"type":"steer","run_id":"r","text":"x","by":"bob"}"#),
            Err(Denied::Forbidden(_))
        ));
        assert_eq!(
            check(&ada, r#"[{"type":"user_message","id":"1","text":"a"},{"type":"x"}]"#).unwrap(),
            r#"[{"author":"ada","type":"user_message","id":"1","text":"a"},{"type":"x"}]"#
        );
        // Repeated fields could mean different things to different parsers.
        assert!(check(&ada, r#"{"type":"user_message","author":"ada","author":"bob"}"#).is_err());
        assert!(check(&ada, r#"{"type":"user_message","type":"text_delta"}"#).is_err());
    }

    #[test]
    fn rights_per_event_type() {
        let user = token(&[Right::Append]);
        assert!(matches!(
            check(&user, r#"{"type":"cancel","run_id":"r"}"#),
            Err(Denied::Forbidden(_))
        ));
        for t in RUN_EVENT_TYPES {
            let body = format!(r#"{{"type":"{t}","run_id":"r"}}"#);
            assert!(matches!(check(&user, &body), Err(Denied::Forbidden(_))), "{t}");
            assert!(check(&token(&[Right::Agent]), &body).is_ok(), "{t}");
        }
        // An agent is not a user: messages still need `append`.
        assert!(
            check(
                &token(&[Right::Agent]),
                r#"{"type":"user_message","id":"1","text":"a"}"#
            )
            .is_err()
        );
        // One bad event refuses the whole batch.
        assert!(
            check(
                &user,
                r#"[{"type":"user_message","id":"1","text":"a"},{"type":"text_delta"}]"#
            )
            .is_err()
        );
        // Closing needs `delete`.
        assert!(authorize_append(&user, "sessions/s", Bytes::new(), true, true).is_err());
        assert!(authorize_append(&token(&[Right::Delete]), "sessions/s", Bytes::new(), true, true).is_ok());
    }

    #[test]
    fn open_access_changes_nothing() {
        let body = r#"{"type":"user_message","author":"anyone"}"#;
        assert_eq!(check(&Access::Open, body).unwrap(), body);
    }
}
