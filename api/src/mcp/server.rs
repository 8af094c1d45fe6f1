//! The MCP server of one session: its capabilities, its tools (see `tools`), resources and
//! subscriptions, over either transport.

use super::backend::{ApiRequest, Backend, CallError};
use super::resources::{self, MissionResource, JSON};
use super::subscriptions::{Subscriptions, Watch};
use crate::keys::Principal;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::model::{
    Implementation, ListResourceTemplatesResult, ListResourcesResult, PaginatedRequestParams,
    ProtocolVersion, ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, Resource,
    ResourceContents, ServerCapabilities, ServerConfig, SubscribeRequestParams,
    UnsubscribeRequestParams,
};
use rmcp::service::RequestContext;
use rmcp::{tool_handler, ErrorData as McpError, RoleServer, ServerHandler};
use std::borrow::Cow;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Missions `resources/list` names: the newest.
const LISTED_MISSIONS: u32 = 20;

/// What the server tells a client about itself at `initialize`.
const INSTRUCTIONS: &str = "HyperCode runs missions: durable multi-step workflows. \
Call list_workflows to see what can run and the input each takes, submit_mission to start one, \
get_mission or the hypercode://missions/{id} resource to follow it (subscribe to be told when \
its status changes), list_approvals and decide_approval to sign off steps that wait for a human, \
send_signal to deliver what a step waits for, and cancel_mission to stop one.";

/// One MCP session's server. Cheap to clone: clones share the backend and the session's
/// subscriptions.
#[derive(Clone)]
pub struct McpServer {
    backend: Arc<dyn Backend>,
    subscriptions: Arc<Subscriptions>,
    /// The process's shutdown, which ends every subscription.
    shutdown: CancellationToken,
    tool_router: ToolRouter<Self>,
}

impl McpServer {
    /// A session's server on `backend`; its subscriptions end at `shutdown` at the latest.
    pub fn new(backend: Arc<dyn Backend>, shutdown: CancellationToken) -> Self {
        Self {
            backend,
            subscriptions: Arc::default(),
            shutdown,
            tool_router: Self::tool_router(),
        }
    }

    pub(super) fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }
}

/// The key that authenticated this MCP request: over HTTP, the route layer left it in the
/// HTTP request's extensions, which rmcp hands over; over stdio there is none (the backend
/// holds its key).
pub(super) fn caller(context: &RequestContext<RoleServer>) -> Option<Principal> {
    context
        .extensions
        .get::<axum::http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<Principal>())
        .cloned()
}

/// A refused resource request as a protocol error (resources have no `isError` result).
fn resource_error(error: CallError) -> McpError {
    match &error {
        CallError::Refused { status: 404, .. } => {
            McpError::resource_not_found(error.to_string(), None)
        }
        CallError::Refused { problem, .. } => {
            McpError::invalid_request(error.to_string(), Some(problem.clone()))
        }
        CallError::Unreachable(_) => McpError::internal_error(error.to_string(), None),
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .enable_resources_subscribe()
                .build(),
        )
        .with_server_info(Implementation::new("hypercode", env!("CARGO_PKG_VERSION")))
        .with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE)
        .with_instructions(INSTRUCTIONS)
    }

    /// The handshake-era revisions: resource subscriptions are `resources/subscribe` there,
    /// which this server implements (2026-07-28 replaced them with `subscriptions/listen`).
    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(ProtocolVersion::known_up_to(
            &ProtocolVersion::LATEST_WITH_INITIALIZE,
        ))
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        let page = self
            .backend
            .call(
                caller(&context),
                ApiRequest::get("/api/v1/missions".to_owned())
                    .param("limit", Some(LISTED_MISSIONS)),
            )
            .await
            .map_err(resource_error)?;
        let resources = page["missions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|mission| {
                let id = mission["id"].as_str()?;
                Some(
                    Resource::new(resources::mission_uri(id), format!("mission {id}"))
                        .with_description(format!(
                            "A `{}` mission, {}",
                            mission["workflow"].as_str().unwrap_or("?"),
                            mission["status"].as_str().unwrap_or("?")
                        ))
                        .with_mime_type(JSON),
                )
            })
            .collect();
        Ok(ListResourcesResult::with_all_items(resources))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        Ok(ListResourceTemplatesResult::with_all_items(
            resources::templates(),
        ))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let resource = MissionResource::parse(&request.uri)?;
        let value = self
            .backend
            .call(caller(&context), resource.request())
            .await
            .map_err(resource_error)?;
        let text = serde_json::to_string_pretty(&value).unwrap_or_default();
        Ok(ReadResourceResult::new(vec![
            ResourceContents::text(text, request.uri).with_mime_type(JSON)
        ])
        .into())
    }

    #[allow(deprecated)] // resources/subscribe is the handshake-era subscription this serves.
    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let resource = MissionResource::parse(&request.uri)?;
        let mission = resource.id().parse().map_err(|e| {
            McpError::invalid_params(
                format!("`{}` does not name a mission id (a UUID): {e}", request.uri),
                None,
            )
        })?;
        let watch = Watch {
            backend: self.backend.clone(),
            caller: caller(&context),
            peer: context.peer.clone(),
            resource,
            uri: request.uri.clone(),
            mission,
        };
        // Answered now, so a subscription to a mission the key may not read, or that does not
        // exist, fails rather than stays silent.
        let standing = watch.standing().await.map_err(resource_error)?;
        let task = self.shutdown.child_token();
        self.subscriptions.insert(request.uri, task.clone());
        tokio::spawn(watch.run(standing, task));
        Ok(())
    }

    #[allow(deprecated)]
    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.subscriptions.remove(&request.uri);
        Ok(())
    }
}
