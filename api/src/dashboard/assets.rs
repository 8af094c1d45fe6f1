//! The dashboard's stylesheet, script and favicon, compiled into the binary. Pages link them under a
//! URL that carries a hash of their content, so browsers may cache them for good and still
//! never run a stale script after an upgrade.

use crate::error::ApiError;
use axum::extract::Path;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

const STYLESHEET: &str = include_str!("../../assets/app.css");
const SCRIPT: &str = include_str!("../../assets/app.js");
const FAVICON: &str = include_str!("../../assets/favicon.svg");

/// `/assets/<name>.<hash>.<ext>`.
fn versioned(name: &str, ext: &str, content: &str) -> String {
    let digest = Sha256::digest(content.as_bytes());
    let hash: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("/assets/{name}.{hash}.{ext}")
}

static STYLESHEET_URL: LazyLock<String> = LazyLock::new(|| versioned("app", "css", STYLESHEET));
static SCRIPT_URL: LazyLock<String> = LazyLock::new(|| versioned("app", "js", SCRIPT));

/// The stylesheet's current URL.
pub(crate) fn stylesheet_url() -> &'static str {
    &STYLESHEET_URL
}

/// The script's current URL.
pub(crate) fn script_url() -> &'static str {
    &SCRIPT_URL
}

/// `GET /assets/{file}`: only the current versions exist; an old hash is a 404 (its page is
/// stale and a reload fetches the new one).
pub(crate) async fn serve(Path(file): Path<String>) -> Response {
    let requested = format!("/assets/{file}");
    let (content, media_type) = if requested == *STYLESHEET_URL {
        (STYLESHEET, "text/css; charset=utf-8")
    } else if requested == *SCRIPT_URL {
        (SCRIPT, "text/javascript; charset=utf-8")
    } else {
        return ApiError::NotFound(format!("no asset `{file}`")).into_response();
    };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(media_type)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            ),
        ],
        content,
    )
        .into_response()
}

/// `GET /favicon.ico` and `/favicon.svg`: the diamond of the brand, as SVG (browsers read it
/// by its content type whatever the name). Cached for a day: its URL has no version.
pub(crate) async fn favicon() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("image/svg+xml"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=86400"),
            ),
        ],
        FAVICON,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asset_urls_change_with_their_content() {
        assert_ne!(versioned("app", "css", "a"), versioned("app", "css", "b"));
        assert!(stylesheet_url().starts_with("/assets/app."));
        assert!(stylesheet_url().ends_with(".css"));
        assert!(script_url().ends_with(".js"));
    }
}
