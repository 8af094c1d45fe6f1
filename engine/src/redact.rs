//! What counts as a secret in mission data, and how it is hidden wherever data is shown or
//! logged. This is the one place that decides; the API views, the history and event stream,
//! the dashboard and the log lines that quote inputs or step errors all go through it.
//!
//! Stored data is never redacted: the worker needs the real header values and URLs to make its
//! calls. Redaction happens on the way out, at every read boundary.
//!
//! The rules, applied to a JSON value at every depth:
//! - **Header maps.** In an object that is the value of a `headers` member (any case), a member
//!   whose name contains `authorization`, `cookie`, `token`, `secret`, `password` or `key` (any
//!   case: `Authorization`, `Cookie`, `Set-Cookie`, `X-API-Key`, `X-Auth-Token`, ...) has its
//!   value replaced by `"[redacted]"`. The substring rule is kept to header maps on purpose: applied
//!   everywhere, "contains `key`" would hide a mission's `idempotency_key` or any `keys` list.
//! - **Secret fields.** Anywhere else, a member whose whole name is one of the well-known
//!   secret-bearing names in [`SECRET_FIELDS`] (`password`, `client_secret`, `access_token`,
//!   `api_key`, ...; any case, `-` and `_` alike) has its value replaced the same way. So does a
//!   query parameter of that name in a URL (`?api_key=...`).
//! - **URL userinfo.** In every string, each URL's userinfo is replaced: `http://user:pass@host/x`
//!   reads `http://[redacted]@host/x`, whether the string is the URL or a message quoting it.
//!
//! A `null` is left as is (there is nothing to hide, and "not set" stays visible).

use serde_json::Value;
use std::borrow::Cow;

/// What a hidden value reads as.
pub const REDACTED: &str = "[redacted]";

/// Substrings that make a header name sensitive (compared in lowercase).
const SENSITIVE_HEADER_PARTS: [&str; 6] = [
    "authorization",
    "cookie",
    "token",
    "secret",
    "password",
    "key",
];

/// Field (and query parameter) names that carry a secret wherever they appear, compared in
/// lowercase with `-` read as `_`.
pub const SECRET_FIELDS: [&str; 16] = [
    "access_token",
    "api_key",
    "apikey",
    "auth_token",
    "authorization",
    "client_secret",
    "cookie",
    "id_token",
    "passwd",
    "password",
    "private_key",
    "refresh_token",
    "secret",
    "secret_key",
    "session_token",
    "token",
];

/// Whether a header of this name carries a credential: `Authorization`, `Cookie`, `X-API-Key`,
/// and any name containing `token`, `secret`, `password` or `key`, in any case.
pub fn is_sensitive_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SENSITIVE_HEADER_PARTS
        .iter()
        .any(|part| name.contains(part))
}

/// Whether a JSON member or query parameter of this name carries a secret wherever it appears.
pub fn is_secret_field(name: &str) -> bool {
    let name = name.to_ascii_lowercase().replace('-', "_");
    SECRET_FIELDS.contains(&name.as_str())
}

/// A copy of `value` with every secret replaced (see the module documentation for the rules).
pub fn value(value: &Value) -> Value {
    let mut copy = value.clone();
    in_place(&mut copy);
    copy
}

/// Redact `value` itself, for a caller that owns it and needs no copy.
pub fn in_place(value: &mut Value) {
    // An explicit stack rather than recursion: a value read back from a step's output may nest
    // as deeply as its parser allowed, and no value should be able to exhaust a thread's stack.
    // The flag says whether the value is a header map's member.
    let mut stack = vec![(value, false)];
    while let Some((value, in_headers)) = stack.pop() {
        match value {
            Value::String(text) => {
                if let Cow::Owned(redacted) = url(text) {
                    *text = redacted;
                }
            }
            Value::Array(items) => stack.extend(items.iter_mut().map(|item| (item, false))),
            Value::Object(members) => {
                for (name, member) in members.iter_mut() {
                    let sensitive =
                        is_secret_field(name) || (in_headers && is_sensitive_header(name));
                    if sensitive && !member.is_null() {
                        *member = Value::String(REDACTED.to_owned());
                    } else {
                        let is_header_map =
                            member.is_object() && name.eq_ignore_ascii_case("headers");
                        stack.push((member, is_header_map));
                    }
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
}

/// `text` with the userinfo of every URL in it replaced by `[redacted]`, and the values of
/// query parameters with a secret field's name too. `text` may be a URL or a message quoting
/// one or several; it is borrowed back unchanged when there is nothing to hide.
pub fn url(text: &str) -> Cow<'_, str> {
    let mut out = String::new();
    // How much of `text` has been copied to `out`.
    let mut copied = 0;
    let mut from = 0;
    while let Some(found) = text[from..].find("://") {
        let separator = from + found;
        let authority_start = separator + 3;
        from = authority_start;
        if scheme_before(text, separator).is_none() {
            continue;
        }
        let authority_len = text[authority_start..]
            .find(|c: char| matches!(c, '/' | '?' | '#' | '\\') || ends_url(c))
            .unwrap_or(text.len() - authority_start);
        let authority = &text[authority_start..authority_start + authority_len];
        // The host follows the last `@`, as URL parsers read it.
        if let Some(at) = authority.rfind('@') {
            out.push_str(&text[copied..authority_start]);
            out.push_str(REDACTED);
            copied = authority_start + at;
        }
        let rest_start = authority_start + authority_len;
        let rest_len = text[rest_start..]
            .find(ends_url)
            .unwrap_or(text.len() - rest_start);
        let rest = &text[rest_start..rest_start + rest_len];
        if let Some(query_start) = rest.find('?') {
            let query_end = rest.find('#').unwrap_or(rest.len()).max(query_start);
            let mut offset = rest_start + query_start + 1;
            for pair in rest[query_start + 1..query_end].split('&') {
                if let Some((name, secret)) = pair.split_once('=') {
                    if is_secret_field(name) && !secret.is_empty() {
                        let value_start = offset + name.len() + 1;
                        out.push_str(&text[copied..value_start]);
                        out.push_str(REDACTED);
                        copied = value_start + secret.len();
                    }
                }
                offset += pair.len() + 1;
            }
        }
        from = rest_start + rest_len;
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

/// The scheme ending at byte `end` (where its `://` begins): a letter, then letters, digits,
/// `+`, `-` or `.`.
fn scheme_before(text: &str, end: usize) -> Option<&str> {
    let start = text[..end]
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
        .map_or(0, |i| i + 1);
    let scheme = &text[start..end];
    scheme
        .starts_with(|c: char| c.is_ascii_alphabetic())
        .then_some(scheme)
}

/// Characters that end a URL quoted in a message or in JSON text.
fn ends_url(c: char) -> bool {
    c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn userinfo_is_hidden_in_urls_and_in_messages_quoting_them() {
        assert_eq!(
            url("http://user:pass@127.0.0.1:8080/x?y=1"),
            "http://[redacted]@127.0.0.1:8080/x?y=1"
        );
        assert_eq!(
            url("https://token@example.com"),
            "https://[redacted]@example.com"
        );
        assert_eq!(
            url("GET http://a:b@h/p answered 500; then redis://:pw@r:6379/0 too"),
            "GET http://[redacted]@h/p answered 500; then redis://[redacted]@r:6379/0 too"
        );
        // The host follows the last `@`.
        assert_eq!(url("http://u:p@ss@h/"), "http://[redacted]@h/");
        assert_eq!(url("http://u:p@[::1]:80/"), "http://[redacted]@[::1]:80/");
    }

    #[test]
    fn text_without_secrets_is_borrowed_unchanged() {
        for text in [
            "",
            "plain words",
            "http://example.com/path@v2?x=1#a@b",
            "mail me at a@b.example",
            "://nothing@before",
            "1://digit@scheme",
            "http://h/?sort_key=name&next_token=",
        ] {
            assert!(matches!(url(text), Cow::Borrowed(t) if t == text), "{text}");
        }
    }

    #[test]
    fn secret_query_parameters_are_hidden() {
        assert_eq!(
            url("https://api.example/v1?api_key=abc&q=1&Access-Token=xyz#api_key=frag"),
            "https://api.example/v1?api_key=[redacted]&q=1&Access-Token=[redacted]#api_key=frag"
        );
        assert_eq!(
            url("\"https://u:p@h/?token=t\""),
            "\"https://[redacted]@h/?token=[redacted]\""
        );
    }

    #[test]
    fn header_maps_lose_their_credentials_and_keep_the_rest() {
        let request = json!({
            "method": "POST",
            "url": "http://user:pass@127.0.0.1:9/x",
            "headers": {
                "Authorization": "Bearer a", "X-API-Key": "k", "x-auth-token": "t",
                "Cookie": "c=1", "Set-Cookie": ["s=1"], "X-Client-Secret": "s",
                "X-Password": "p", "Idempotency-Key": "m:s", "X-Custom": "visible",
                "Accept": "application/json"
            },
            "body": { "keys": ["a"], "idempotency_key": "k1", "token_count": 3 },
        });
        assert_eq!(
            value(&request),
            json!({
                "method": "POST",
                "url": "http://[redacted]@127.0.0.1:9/x",
                "headers": {
                    "Authorization": REDACTED, "X-API-Key": REDACTED, "x-auth-token": REDACTED,
                    "Cookie": REDACTED, "Set-Cookie": REDACTED, "X-Client-Secret": REDACTED,
                    "X-Password": REDACTED, "Idempotency-Key": REDACTED, "X-Custom": "visible",
                    "Accept": "application/json"
                },
                "body": { "keys": ["a"], "idempotency_key": "k1", "token_count": 3 },
            })
        );
    }

    #[test]
    fn secret_fields_are_hidden_at_any_depth_and_nulls_stay() {
        let output = json!({
            "status": 200,
            "body": {
                "access_token": "at", "refresh_token": null, "token_type": "bearer",
                "nested": [{ "password": { "old": "x" } }, { "Client-Secret": 42 }],
                "echo": { "HEADERS": { "authorization": "Basic dTpw", "host": "h" } },
                "headers": "not a map: kept",
                "authorization_url": "https://auth.example/authorize",
            }
        });
        assert_eq!(
            value(&output),
            json!({
                "status": 200,
                "body": {
                    "access_token": REDACTED, "refresh_token": null, "token_type": "bearer",
                    "nested": [{ "password": REDACTED }, { "Client-Secret": REDACTED }],
                    "echo": { "HEADERS": { "authorization": REDACTED, "host": "h" } },
                    "headers": "not a map: kept",
                    "authorization_url": "https://auth.example/authorize",
                }
            })
        );
    }

    #[test]
    fn a_deep_value_does_not_exhaust_the_stack() {
        let mut deep = json!("http://u:p@h/");
        for _ in 0..100_000 {
            deep = Value::Array(vec![deep]);
        }
        in_place(&mut deep);
        let mut inner = &deep;
        while let Value::Array(items) = inner {
            inner = &items[0];
        }
        assert_eq!(inner, &json!("http://[redacted]@h/"));
        // Dropping a Value recurses; unwind it iteratively.
        while let Value::Array(mut items) = deep {
            deep = items.pop().unwrap_or(Value::Null);
        }
    }
}
