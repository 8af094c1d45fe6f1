//! The resources: `hypercode://missions/{id}` (the mission with its steps, as `get_mission`
//! returns it) and `hypercode://missions/{id}/history` (its history, as `mission_history`
//! returns its first page of up to 10 000 events), both `application/json`.

use super::backend::{mission_path, ApiRequest};
use rmcp::model::ResourceTemplate;
use rmcp::ErrorData as McpError;

/// What every resource URI starts with.
const PREFIX: &str = "hypercode://missions/";

/// The media type of every resource.
pub(crate) const JSON: &str = "application/json";

/// Events in the history resource.
const HISTORY_PAGE: u32 = 10_000;

/// A resource, parsed from its URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MissionResource {
    /// The mission with its steps.
    Mission(String),
    /// The mission's history.
    History(String),
}

impl MissionResource {
    /// Parse a resource URI; an unknown one is an invalid-params error naming the forms.
    pub(crate) fn parse(uri: &str) -> Result<Self, McpError> {
        let unknown = || {
            McpError::resource_not_found(
                format!(
                    "no such resource `{uri}`: resources are {PREFIX}{{id}} and {PREFIX}{{id}}/history"
                ),
                None,
            )
        };
        let rest = uri.strip_prefix(PREFIX).ok_or_else(unknown)?;
        let resource = match rest.split_once('/') {
            None => Self::Mission(rest.to_owned()),
            Some((id, "history")) => Self::History(id.to_owned()),
            Some(_) => return Err(unknown()),
        };
        if resource.id().is_empty() {
            return Err(unknown());
        }
        Ok(resource)
    }

    /// The mission's id, as written in the URI.
    pub(crate) fn id(&self) -> &str {
        match self {
            Self::Mission(id) | Self::History(id) => id,
        }
    }

    /// The REST request that reads it.
    pub(crate) fn request(&self) -> ApiRequest {
        match self {
            Self::Mission(id) => ApiRequest::get(mission_path(id, "")),
            Self::History(id) => {
                ApiRequest::get(mission_path(id, "/history")).param("limit", Some(HISTORY_PAGE))
            }
        }
    }
}

/// The URI of a mission's resource.
pub(crate) fn mission_uri(id: &str) -> String {
    format!("{PREFIX}{id}")
}

/// The two resource templates.
pub(crate) fn templates() -> Vec<ResourceTemplate> {
    vec![
        ResourceTemplate::new(format!("{PREFIX}{{id}}"), "mission")
            .with_title("Mission")
            .with_description(
                "A mission with its steps: status, input, output or error, and each step's status and output. Subscribe to be told when its status changes.",
            )
            .with_mime_type(JSON),
        ResourceTemplate::new(format!("{PREFIX}{{id}}/history"), "mission-history")
            .with_title("Mission history")
            .with_description(
                "Every event of a mission, in order (the first 10 000; page further with the mission_history tool). Subscribe to be told when an event is recorded.",
            )
            .with_mime_type(JSON),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_are_parsed() {
        let id = "0190a7c4-7bde-7cc2-9a5e-3f1b2c3d4e5f";
        assert_eq!(
            MissionResource::parse(&format!("hypercode://missions/{id}")).ok(),
            Some(MissionResource::Mission(id.to_owned()))
        );
        assert_eq!(
            MissionResource::parse(&format!("hypercode://missions/{id}/history")).ok(),
            Some(MissionResource::History(id.to_owned()))
        );
        for bad in [
            "hypercode://missions/",
            "hypercode://missions//history",
            "hypercode://missions/x/steps",
            "file:///etc/passwd",
        ] {
            assert!(MissionResource::parse(bad).is_err(), "{bad}");
        }
    }
}
