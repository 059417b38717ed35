//! Subscription patterns (PROTOCOL.md §6.2): globs over stream paths where
//! a `*` segment matches one path segment and a `**` segment matches zero or
//! more. Every other segment matches itself.

/// Whether `path` matches `pattern`.
///
/// ```
/// use durable_session_server::subscriptions::glob::matches;
/// assert!(matches("events/*", "events/abc"));
/// assert!(!matches("events/*", "events/a/b"));
/// assert!(matches("events/**", "events/a/b"));
/// assert!(matches("sessions/**/log", "sessions/log"));
/// assert!(!matches("events/*", "other/abc"));
/// ```
pub fn matches(pattern: &str, path: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('/').collect();
    let path: Vec<&str> = path.split('/').collect();
    matches_segments(&pattern, &path)
}

fn matches_segments(pattern: &[&str], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((&"**", rest)) => (0..=path.len()).any(|skip| matches_segments(rest, &path[skip..])),
        Some((segment, rest)) => match path.split_first() {
            Some((first, path_rest)) => (*segment == "*" || segment == first) && matches_segments(rest, path_rest),
            None => false,
        },
    }
}

/// The literal part of a pattern before its first wildcard segment: every
/// path it matches starts with it.
///
/// ```
/// use durable_session_server::subscriptions::glob::literal_prefix;
/// assert_eq!(literal_prefix("sessions/*"), "sessions/");
/// assert_eq!(literal_prefix("a/b/**/c"), "a/b/");
/// assert_eq!(literal_prefix("**"), "");
/// assert_eq!(literal_prefix("a/b"), "a/b");
/// ```
pub fn literal_prefix(pattern: &str) -> String {
    let mut out = String::new();
    for (i, segment) in pattern.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        if segment == "*" || segment == "**" {
            return out;
        }
        out.push_str(segment);
    }
    out
}

/// Most `**` segments in one pattern (each one multiplies the work of a
/// match).
pub const MAX_DOUBLE_STARS: usize = 2;

/// Why a pattern is refused, if it is.
///
/// ```
/// use durable_session_server::subscriptions::glob::check;
/// assert!(check("events/*").is_ok());
/// assert!(check("events//x").is_err());
/// assert!(check("**/a/**/b/**").is_err());
/// ```
pub fn check(pattern: &str) -> Result<(), String> {
    if pattern.split('/').any(str::is_empty) {
        return Err("pattern must not have empty segments".into());
    }
    if pattern.split('/').filter(|s| *s == "**").count() > MAX_DOUBLE_STARS {
        return Err(format!("pattern may have at most {MAX_DOUBLE_STARS} ** segments"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments() {
        assert!(matches("a/*/c", "a/b/c"));
        assert!(!matches("a/*/c", "a/c"));
        assert!(matches("**", "a/b/c"));
        assert!(matches("a/**", "a"));
        assert!(matches("a/**/z", "a/b/c/z"));
        assert!(!matches("a*", "ab"));
        assert!(matches("a*", "a*"));
    }
}
