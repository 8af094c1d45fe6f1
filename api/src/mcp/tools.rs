//! The nine tools: each is one REST request made as the caller, its answer returned as JSON
//! text content and as `structuredContent`.
//!
//! Inputs are typed structs whose JSON Schemas (`inputSchema`) are derived with `schemars`; a
//! refusal by the API (a role it lacks, an unknown mission, an invalid input) is a tool result
//! with `isError: true` whose text is the problem's detail, and whose `structuredContent` is
//! the problem itself, so a model reads why and can act on it.

use super::backend::{mission_path, ApiRequest, CallError};
use super::server::{caller, McpServer};
use crate::missions::Verdict;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock};
use rmcp::service::RequestContext;
use rmcp::{tool, tool_router, ErrorData as McpError, RoleServer};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};

/// Largest page `list_missions` returns.
const LIST_LIMIT_MAX: u32 = 100;

/// `submit_mission`'s input.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubmitMission {
    /// The workflow to run: a `name` from `list_workflows` (`plan` runs a list of steps).
    workflow: String,
    /// The workflow's input, matching its `input_schema` from `list_workflows`.
    input: Value,
    /// Submitting again with the same key returns the mission it first created instead of
    /// starting another (at most 255 characters).
    idempotency_key: Option<String>,
    /// Missions sharing this key (1 to 200 characters) run one at a time, in submission order.
    concurrency_key: Option<String>,
}

/// A mission, by id.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MissionRef {
    /// The mission's id (a UUID).
    id: String,
}

/// `list_missions`' input.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListMissions {
    /// Only missions in this status: pending, running, waiting, succeeded, failed or cancelled.
    status: Option<String>,
    /// Only missions of this workflow.
    workflow: Option<String>,
    /// Missions per page, 1 to 100 (default 50).
    #[schemars(range(min = 1, max = 100))]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// `mission_history`'s input.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MissionHistory {
    /// The mission's id (a UUID).
    id: String,
    /// Only events after this `seq` (the previous page's `next_after`; default 0).
    #[schemars(range(min = 0))]
    after: Option<i64>,
    /// Events per page, 1 to 10000 (default 1000).
    #[schemars(range(min = 1, max = 10000))]
    limit: Option<u32>,
}

/// `decide_approval`'s input.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DecideApproval {
    /// The mission's id (a UUID).
    id: String,
    /// The approval step's name (`step` in `list_approvals`).
    step: String,
    /// `approve` lets the mission go on; `reject` fails it and undoes its completed steps.
    decision: Verdict,
    /// Recorded with the decision.
    comment: Option<String>,
}

/// `send_signal`'s input.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SendSignal {
    /// The mission's id (a UUID).
    id: String,
    /// The signal's name: a plan's signal step waits for the signal named after it.
    name: String,
    /// Any JSON, delivered to the waiting step as `{"payload": ...}` (default null).
    payload: Option<Value>,
}

#[tool_router(vis = "pub(super)")]
impl McpServer {
    #[tool(
        description = "List the workflows a mission can be submitted for, each with the JSON Schema of its input. Call this before submit_mission to learn what `input` a workflow takes.",
        annotations(read_only_hint = true)
    )]
    async fn list_workflows(
        &self,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let listed = self
            .call(&context, ApiRequest::get("/api/v1/workflows".to_owned()))
            .await
            .map(|mut listed| {
                // Internal workflows are started by the engine only; submitting one is refused.
                if let Some(workflows) = listed["workflows"].as_array_mut() {
                    workflows.retain(|w| w["internal"] != true);
                }
                listed
            });
        Ok(result(listed))
    }

    #[tool(
        description = "Start a mission: run `workflow` with `input`. Returns the mission (`id`, `status`, steps); it runs in the background, so follow it with get_mission. Needs an operator or admin key."
    )]
    async fn submit_mission(
        &self,
        Parameters(submission): Parameters<SubmitMission>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let body = json!({
            "workflow": submission.workflow,
            "input": submission.input,
            "idempotency_key": submission.idempotency_key,
            "concurrency_key": submission.concurrency_key,
        });
        let request = ApiRequest::post("/api/v1/missions".to_owned(), body);
        Ok(result(self.call(&context, request).await))
    }

    #[tool(
        description = "Get one mission by id with its steps: status (pending, running, waiting, succeeded, failed, cancelled), input, output or error, and each step's status, output and error.",
        annotations(read_only_hint = true)
    )]
    async fn get_mission(
        &self,
        Parameters(mission): Parameters<MissionRef>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let request = ApiRequest::get(mission_path(&mission.id, ""));
        Ok(result(self.call(&context, request).await))
    }

    #[tool(
        description = "List missions, newest first, optionally only those of one status or workflow. Returns `{missions, next_cursor}`; pass `next_cursor` as `cursor` for the next page (null on the last).",
        annotations(read_only_hint = true)
    )]
    async fn list_missions(
        &self,
        Parameters(list): Parameters<ListMissions>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        if let Some(limit) = list.limit.filter(|l| !(1..=LIST_LIMIT_MAX).contains(l)) {
            return Ok(refusal(format!(
                "`limit` must be from 1 to {LIST_LIMIT_MAX}; got {limit}"
            )));
        }
        let request = ApiRequest::get("/api/v1/missions".to_owned())
            .param("status", list.status)
            .param("workflow", list.workflow)
            .param("limit", list.limit)
            .param("cursor", list.cursor);
        Ok(result(self.call(&context, request).await))
    }

    #[tool(
        description = "Read a mission's history: every event (step started, succeeded, failed, waiting for approval, decided...) in order, a page at a time. Returns `{events, next_after}`; pass `next_after` as `after` for the next page.",
        annotations(read_only_hint = true)
    )]
    async fn mission_history(
        &self,
        Parameters(history): Parameters<MissionHistory>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let request = ApiRequest::get(mission_path(&history.id, "/history"))
            .param("after", history.after)
            .param("limit", history.limit);
        Ok(result(self.call(&context, request).await))
    }

    #[tool(
        description = "List the approvals waiting for a decision across all missions, oldest first: each with its mission id, step name and the question asked. Decide one with decide_approval.",
        annotations(read_only_hint = true)
    )]
    async fn list_approvals(
        &self,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let request = ApiRequest::get("/api/v1/approvals".to_owned());
        Ok(result(self.call(&context, request).await))
    }

    #[tool(
        description = "Approve or reject a mission's step that is waiting for approval. Approving lets the mission go on; rejecting fails it and undoes its completed steps. Returns the mission. Needs an operator or admin key."
    )]
    async fn decide_approval(
        &self,
        Parameters(decision): Parameters<DecideApproval>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let path = mission_path(
            &decision.id,
            &format!("/approvals/{}", super::encode_segment(&decision.step)),
        );
        let body = json!({ "decision": decision.decision, "comment": decision.comment });
        Ok(result(
            self.call(&context, ApiRequest::post(path, body)).await,
        ))
    }

    #[tool(
        description = "Send a named signal with an optional JSON payload to a mission; a step waiting for that signal receives it (now, or when the mission gets there). Returns the mission. Needs an operator, admin or agent key."
    )]
    async fn send_signal(
        &self,
        Parameters(signal): Parameters<SendSignal>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let path = mission_path(
            &signal.id,
            &format!("/signals/{}", super::encode_segment(&signal.name)),
        );
        let request = ApiRequest::post(path, signal.payload.unwrap_or(Value::Null));
        Ok(result(self.call(&context, request).await))
    }

    #[tool(
        description = "Cancel a mission that has not finished; the undo actions of its completed steps run. Returns the mission. Needs an operator or admin key.",
        annotations(destructive_hint = true)
    )]
    async fn cancel_mission(
        &self,
        Parameters(mission): Parameters<MissionRef>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let request = ApiRequest::post(mission_path(&mission.id, "/cancel"), Value::Null);
        Ok(result(self.call(&context, request).await))
    }
}

impl McpServer {
    /// Make `request` as the caller of this MCP request.
    async fn call(
        &self,
        context: &RequestContext<RoleServer>,
        request: ApiRequest,
    ) -> Result<Value, CallError> {
        self.backend().call(caller(context), request).await
    }
}

/// The tool result of an answer: its JSON, or an error result saying why there is none.
fn result(answer: Result<Value, CallError>) -> CallToolResult {
    match answer {
        Ok(value) => CallToolResult::structured(value),
        Err(error) => {
            let mut result = CallToolResult::error(vec![ContentBlock::text(error.to_string())]);
            if let CallError::Refused { problem, .. } = error {
                result.structured_content = Some(problem);
            }
            result
        }
    }
}

/// An error result for an input the tool refuses before asking the API.
fn refusal(detail: String) -> CallToolResult {
    result(Err(CallError::Refused {
        status: 400,
        problem: json!({ "title": "Invalid parameter", "status": 400, "detail": detail }),
    }))
}
