//! Authentication and authorization, as extractors: a handler that takes [`Reader`] or
//! [`Operator`] cannot run for a caller without a live key (401) or the right role (403).
//! Being extractors placed before the body and path, they also decide first, so an anonymous
//! caller learns nothing about which ids exist or what a valid body looks like.
//!
//! | role     | read missions | submit, decide, cancel |
//! |----------|---------------|------------------------|
//! | admin    | yes           | yes                    |
//! | operator | yes           | yes                    |
//! | agent    | yes           | no                     |
//! | viewer   | yes           | no                     |

use crate::error::ApiError;
use crate::keys::{self, Principal, Role};
use crate::AppState;
use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts, HeaderMap};

/// The header carrying a bare key.
const API_KEY_HEADER: &str = "x-api-key";

/// Proof that the caller may read missions and their history (reads are not attributed, so
/// the key itself is not kept).
#[derive(Debug, Clone, Copy)]
pub struct Reader;

/// A caller allowed to change missions: submit, decide approvals, cancel.
#[derive(Debug, Clone)]
pub struct Operator(pub Principal);

/// What a route does, for the role check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Operate,
}

impl Access {
    fn allows(self, role: Role) -> bool {
        match self {
            Self::Read => true,
            Self::Operate => matches!(role, Role::Admin | Role::Operator),
        }
    }

    /// The roles to name in a 403, so the caller knows what key to ask for.
    fn required(self) -> &'static str {
        match self {
            Self::Read => "viewer, agent, operator or admin",
            Self::Operate => "operator or admin",
        }
    }
}

impl FromRequestParts<AppState> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        authorize(parts, state, Access::Read).await.map(|_| Self)
    }
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        authorize(parts, state, Access::Operate).await.map(Self)
    }
}

async fn authorize(parts: &Parts, state: &AppState, access: Access) -> Result<Principal, ApiError> {
    let presented = presented_key(&parts.headers)?;
    let principal = keys::authenticate(&state.pool, presented)
        .await?
        .ok_or(ApiError::Unauthorized("the API key is invalid or revoked"))?;
    if !access.allows(principal.role) {
        return Err(ApiError::Forbidden(format!(
            "this action requires the {} role; key `{}` has the {} role",
            access.required(),
            principal.name,
            principal.role
        )));
    }
    Ok(principal)
}

/// The key from `X-API-Key: <key>` or `Authorization: Bearer <key>` (`X-API-Key` wins if both
/// are sent).
fn presented_key(headers: &HeaderMap) -> Result<&str, ApiError> {
    const MALFORMED: ApiError = ApiError::Unauthorized(
        "the credentials are malformed; send `X-API-Key: <key>` or `Authorization: Bearer <key>`",
    );
    if let Some(value) = headers.get(API_KEY_HEADER) {
        return value.to_str().map(str::trim).map_err(|_| MALFORMED);
    }
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::Unauthorized(
            "an API key is required; send `X-API-Key: <key>` or `Authorization: Bearer <key>`",
        ));
    };
    let value = value.to_str().map_err(|_| MALFORMED)?;
    // The scheme name is case-insensitive (RFC 9110, section 11.1).
    match value.split_once(' ') {
        Some((scheme, key)) if scheme.eq_ignore_ascii_case("bearer") => Ok(key.trim()),
        _ => Err(MALFORMED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(pairs: &[(&'static str, &str)]) -> Option<String> {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            if let Ok(value) = value.parse() {
                headers.insert(*name, value);
            }
        }
        presented_key(&headers).ok().map(str::to_owned)
    }

    #[test]
    fn keys_come_from_either_header() {
        assert_eq!(key(&[("x-api-key", "hc_a")]).as_deref(), Some("hc_a"));
        assert_eq!(
            key(&[("authorization", "Bearer hc_b")]).as_deref(),
            Some("hc_b")
        );
        assert_eq!(
            key(&[("authorization", "bearer  hc_c")]).as_deref(),
            Some("hc_c")
        );
        assert_eq!(key(&[("authorization", "Basic abc")]), None);
        assert_eq!(key(&[("authorization", "hc_d")]), None);
        assert_eq!(key(&[]), None);
    }

    #[test]
    fn only_operators_and_admins_operate() {
        for role in Role::ALL {
            assert!(Access::Read.allows(role));
        }
        assert!(Access::Operate.allows(Role::Admin));
        assert!(Access::Operate.allows(Role::Operator));
        assert!(!Access::Operate.allows(Role::Agent));
        assert!(!Access::Operate.allows(Role::Viewer));
    }
}
