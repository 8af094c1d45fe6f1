//! Request extractors whose every rejection is an [`ApiError`] (problem+json), replacing axum's
//! own, which answer in plain text and say nothing about *where* a body is wrong.
//!
//! [`Json`] separates the two ways a body fails: bytes that are not JSON (400, with the line and
//! column) and JSON of the wrong shape (422, with an RFC 6901 pointer to the offending value,
//! taken from the path `serde_path_to_error` tracks while deserializing).

use crate::error::{ApiError, FieldError};
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts, HeaderMap};
use hypercode_engine::{nul_pointer, NUL_MESSAGE};
use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;

/// A JSON request body of type `T` (which should `deny_unknown_fields`).
#[derive(Debug, Clone)]
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        require_json_content_type(req.headers())?;
        // The body was read (and its size checked) by `body::read_body`; this cannot fail but
        // for a bug, which still deserves a problem answer.
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|rejection| ApiError::UnreadableBody(rejection.body_text()))?;
        parse(&bytes).map(Json)
    }
}

fn require_json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(ApiError::UnsupportedMediaType(
            "the request body must be JSON; send `Content-Type: application/json`".to_owned(),
        ));
    };
    let essence = value
        .to_str()
        .ok()
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    match essence {
        // `+json` covers structured-syntax types such as `application/merge-patch+json`.
        Some(mime) if mime == "application/json" || mime.ends_with("+json") => Ok(()),
        _ => Err(ApiError::UnsupportedMediaType(format!(
            "the request body must be JSON, not `{}`",
            String::from_utf8_lossy(value.as_bytes())
        ))),
    }
}

/// Deserialize a whole body, classifying failures as malformed (400) or invalid (422).
pub(crate) fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| classify(pointer(e.path()), e.into_inner()))?;
    // Trailing data after the value (`{} {}`) is a syntax error, like any other.
    de.end().map_err(|e| classify(String::new(), e))?;
    // PostgreSQL stores no U+0000 in text or jsonb: refuse it here (422) rather than fail the
    // write later (500). Rare, so the pointer is only looked for once one was seen.
    if escapes_nul(bytes) {
        let pointer = serde_json::from_slice::<serde_json::Value>(bytes)
            .ok()
            .and_then(|value| nul_pointer(&value))
            .unwrap_or_default();
        return Err(ApiError::InvalidBody(vec![FieldError::new(
            pointer,
            NUL_MESSAGE,
        )]));
    }
    Ok(value)
}

/// Whether valid JSON text spells U+0000 (`\u0000`) in a string or a key; it cannot appear
/// raw, and outside strings valid JSON has no backslash.
fn escapes_nul(bytes: &[u8]) -> bool {
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if bytes.get(i + 1) == Some(&b'u') && bytes.get(i + 2..i + 6) == Some(b"0000") {
                return true;
            }
            // Skip the escaped character, so `\\u0000` (a backslash, then text) is not a NUL.
            i += 2;
        } else {
            i += 1;
        }
    }
    false
}

/// `pointer` locates the value being deserialized when the error happened.
fn classify(pointer: String, error: serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    match error.classify() {
        Category::Data => ApiError::InvalidBody(vec![field_error(pointer, &error)]),
        // serde_json's message already ends with "at line L column C".
        Category::Syntax | Category::Eof | Category::Io => {
            ApiError::MalformedJson(format!("the request body is not valid JSON: {error}"))
        }
    }
}

/// Locate a shape error: the tracked path, plus the field's own name for a missing field (serde
/// reports those on the enclosing object, where the pointer alone would not say which).
fn field_error(mut pointer: String, error: &serde_json::Error) -> FieldError {
    let message = message(error);
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
    {
        push_token(&mut pointer, field);
    }
    FieldError::new(pointer, message)
}

/// The RFC 6901 pointer for a serde path; the root is the empty string.
fn pointer(path: &serde_path_to_error::Path) -> String {
    let mut pointer = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => push_token(&mut pointer, &index.to_string()),
            Segment::Map { key } => push_token(&mut pointer, key),
            Segment::Enum { variant } => push_token(&mut pointer, variant),
            // A non-string map key has no pointer token; the pointer stays at its parent.
            Segment::Unknown => {}
        }
    }
    pointer
}

fn push_token(pointer: &mut String, token: &str) {
    pointer.push('/');
    pointer.push_str(&token.replace('~', "~0").replace('/', "~1"));
}

/// serde_json's message without its " at line L column C" suffix, which means nothing to a
/// client once the pointer says where.
fn message(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    text.strip_suffix(&suffix).unwrap_or(&text).to_owned()
}

/// Path parameters, with a problem+json rejection.
#[derive(Debug, Clone)]
pub struct Path<T>(pub T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if let Ok(raw) = axum::extract::RawPathParams::from_request_parts(parts, state).await {
            refuse_nul("path parameter ", raw.iter())?;
        }
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Path(value))
            .map_err(|rejection| ApiError::InvalidParameter(rejection.body_text()))
    }
}

/// A 400 naming the first of these (name, value) parameters whose value holds U+0000 (`kind`
/// prefixes the name in the message). PostgreSQL stores no U+0000 in text: a name or id with
/// one matches nothing stored, and must not reach a query (which would fail with a 500).
fn refuse_nul<'a>(
    kind: &str,
    mut params: impl Iterator<Item = (&'a str, &'a str)>,
) -> Result<(), ApiError> {
    match params.find(|(_, value)| value.contains('\0')) {
        Some((name, _)) => Err(ApiError::InvalidParameter(format!(
            "{kind}`{name}` must not contain the NUL character (U+0000)"
        ))),
        None => Ok(()),
    }
}

/// Query parameters, with a problem+json rejection. Handlers take strings and parse them
/// themselves, so a bad value is reported with the parameter's name and the rule it broke.
#[derive(Debug, Clone)]
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if let Ok(axum::extract::Query(pairs)) =
            axum::extract::Query::<Vec<(String, String)>>::from_request_parts(parts, state).await
        {
            refuse_nul(
                "",
                pairs
                    .iter()
                    .map(|(name, value)| (name.as_str(), value.as_str())),
            )?;
        }
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Query(value))
            .map_err(|rejection| ApiError::InvalidParameter(rejection.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        workflow: String,
        #[serde(default)]
        steps: Vec<Step>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Step {
        name: String,
        #[serde(default)]
        retries: u32,
    }

    fn shape_errors(body: &str) -> Vec<FieldError> {
        match parse::<Body>(body.as_bytes()) {
            Err(ApiError::InvalidBody(errors)) => errors,
            other => panic!("expected InvalidBody for {body}, got {other:?}"),
        }
    }

    fn malformed(body: &str) -> String {
        match parse::<Body>(body.as_bytes()) {
            Err(ApiError::MalformedJson(detail)) => detail,
            other => panic!("expected MalformedJson for {body}, got {other:?}"),
        }
    }

    #[test]
    fn nul_characters_are_refused_with_a_pointer() {
        let errors = shape_errors(r#"{"workflow": "a\u0000b"}"#);
        assert_eq!(errors[0].pointer, "/workflow");
        assert!(errors[0].message.contains("NUL"), "{errors:?}");
        let errors = shape_errors(r#"{"workflow": "p", "steps": [{"name": "x\u0000"}]}"#);
        assert_eq!(errors[0].pointer, "/steps/0/name");
        // An escaped backslash followed by the text `u0000` is no NUL.
        assert!(parse::<Body>(br#"{"workflow": "a\\u0000"}"#).is_ok());
    }

    #[test]
    fn wrong_type_points_at_the_field() {
        let errors = shape_errors(r#"{"workflow": 5}"#);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].pointer, "/workflow");
        assert!(
            errors[0].message.contains("expected a string"),
            "{errors:?}"
        );
        assert!(!errors[0].message.contains("line"), "{errors:?}");
    }

    #[test]
    fn unknown_field_points_at_the_field() {
        let errors = shape_errors(r#"{"workflow": "plan", "extra": true}"#);
        assert_eq!(errors[0].pointer, "/extra");
        assert!(errors[0].message.contains("unknown field `extra`"));
    }

    #[test]
    fn nested_array_index_is_in_the_pointer() {
        let errors = shape_errors(r#"{"workflow": "plan", "steps": [{"name": "a"}, {"name": 7}]}"#);
        assert_eq!(errors[0].pointer, "/steps/1/name");
        let errors = shape_errors(r#"{"workflow": "p", "steps": [{"name": "a", "retries": -1}]}"#);
        assert_eq!(errors[0].pointer, "/steps/0/retries");
        let errors = shape_errors(r#"{"workflow": "p", "steps": [{"name": "a", "a/b~c": 1}]}"#);
        assert_eq!(errors[0].pointer, "/steps/0/a~1b~0c");
    }

    #[test]
    fn missing_field_points_at_the_missing_field() {
        assert_eq!(shape_errors("{}")[0].pointer, "/workflow");
        let errors = shape_errors(r#"{"workflow": "p", "steps": [{}]}"#);
        assert_eq!(errors[0].pointer, "/steps/0/name");
        assert_eq!(errors[0].message, "missing field `name`");
    }

    #[test]
    fn wrong_root_type_points_at_the_root() {
        assert_eq!(shape_errors("[]")[0].pointer, "");
    }

    #[test]
    fn syntax_errors_are_malformed_with_a_position() {
        assert!(malformed(r#"{"workflow": "plan",}"#).contains("line 1 column"));
        assert!(malformed("{\n\"workflow\": ").contains("line 2"));
        assert!(malformed("").contains("line 1 column 0"));
        assert!(malformed(r#"{"workflow": "plan"} x"#).contains("trailing characters"));
    }

    #[test]
    fn valid_bodies_parse() {
        let body: Body = match parse(br#"{"workflow": "plan", "steps": [{"name": "a"}]}"#) {
            Ok(body) => body,
            Err(e) => panic!("{e:?}"),
        };
        assert_eq!(body.workflow, "plan");
        assert_eq!(body.steps.len(), 1);
        assert_eq!(
            (body.steps[0].name.as_str(), body.steps[0].retries),
            ("a", 0)
        );
    }

    #[test]
    fn content_type_must_be_json() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            if let Ok(value) = value.parse() {
                headers.insert(header::CONTENT_TYPE, value);
            }
            require_json_content_type(&headers).is_ok()
        };
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=utf-8"));
        assert!(with("application/merge-patch+json"));
        assert!(!with("text/plain"));
        assert!(!with("application/jsonx"));
        assert!(!with(""));
        assert!(require_json_content_type(&HeaderMap::new()).is_err());
    }
}
