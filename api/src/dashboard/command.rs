//! The command panel (`/command`): a chat-like page on the CognitiveUplink. People type a
//! command (optionally naming a capability); the page's script sends it as an `execute` frame
//! on `/ws/uplink` (authenticated by the session cookie and this origin) and shows the
//! mission's progress, an inline approval prompt when the command needs one, and the agent's
//! answer. Without the script the page says so: the panel needs the WebSocket.

use super::session::SignedIn;
use super::{render, Chrome, PageError};
use crate::AppState;
use askama::Template;
use axum::extract::State;
use axum::response::Response;

/// The page.
#[derive(Template)]
#[template(path = "command.html")]
pub(crate) struct CommandPage {
    chrome: Chrome,
    /// Every capability of a registered agent, for the picker.
    capabilities: Vec<String>,
}

/// `GET /command`.
pub(crate) async fn page(
    SignedIn(session): SignedIn,
    State(state): State<AppState>,
) -> Result<Response, PageError> {
    let mut capabilities: Vec<String> = match &state.agents {
        Some(registry) => registry
            .list()
            .await
            .map_err(crate::error::ApiError::from)?
            .into_iter()
            .flat_map(|agent| agent.capabilities)
            .collect(),
        None => Vec::new(),
    };
    capabilities.sort();
    capabilities.dedup();
    render(&CommandPage {
        chrome: Chrome::new(&session, "Command", "command"),
        capabilities,
    })
}
