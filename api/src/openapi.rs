//! `GET /openapi.json`: the OpenAPI 3.1 description of the API, generated from the handlers'
//! `#[utoipa::path]` annotations and the views' `ToSchema` derives, so it cannot drift far from
//! the code (the contract test, `scripts/contract-test`, fuzzes the server against it).
//!
//! What every authenticated operation can answer besides its own responses (401, 403, 429 and
//! 503) is added here by [`CommonResponses`] rather than repeated on each handler.

use crate::error::{FieldError, PROBLEM_JSON};
use crate::views;
use crate::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use hypercode_engine::{MissionStatus, StepKind, StepStatus};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, ObjectBuilder, OpenApi as Document, RefOr, ResponseBuilder, Schema, Type,
};
use utoipa::{IntoResponses, Modify, OpenApi, ToSchema};

/// The name of the `X-API-Key` security scheme.
pub(crate) const API_KEY: &str = "api_key";
/// The name of the `Authorization: Bearer` security scheme.
pub(crate) const BEARER: &str = "bearer";

/// An RFC 9457 problem document: the body of every error response
/// (`application/problem+json`).
#[derive(Serialize, ToSchema)]
#[schema(as = Problem)]
#[allow(dead_code)] // Only described, never built: `ApiError` renders the real bodies.
pub(crate) struct ProblemDoc {
    /// A URI naming the class of problem, e.g. `https://hypercode.dev/problems/not-found`.
    #[serde(rename = "type")]
    kind: String,
    /// A short summary of the class, the same for every problem of that type.
    title: String,
    /// The HTTP status code.
    #[schema(minimum = 400, maximum = 599)]
    status: u16,
    /// What went wrong with this request.
    detail: String,
    /// For validation problems (422), each located problem in the request body.
    #[schema(required = false)]
    errors: Vec<FieldError>,
}

/// The whole API's description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "HyperCode API",
        description = "Submit, inspect, approve, cancel and retry durable missions. \
            Every error is an RFC 9457 problem document (`application/problem+json`).",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        crate::missions::submit,
        crate::missions::list,
        crate::missions::show,
        crate::missions::decide,
        crate::missions::cancel,
        crate::missions::signal,
        crate::missions::retry,
        crate::missions::history,
        crate::operations::approvals,
        crate::operations::workflows,
        crate::workers::workers,
        crate::events::events,
        crate::secrets::set,
        crate::secrets::list,
        crate::secrets::delete,
        crate::agents::register,
        crate::agents::list,
        crate::agents::deregister,
        crate::agents::heartbeat,
        crate::uplink::uplink,
        crate::incidents::list,
        crate::incidents::show,
        crate::incidents::resolve,
        crate::logs::logs,
        crate::logs::stream,
        crate::schedules::create,
        crate::schedules::list,
        crate::schedules::show,
        crate::schedules::update,
        crate::schedules::delete,
        crate::schedules::trigger,
        crate::payments::accounts::show,
        crate::payments::accounts::post_tokens,
        crate::payments::stripe::checkout,
        crate::payments::stripe::webhook,
        crate::payments::shop::list,
        crate::payments::shop::purchase,
        crate::health::healthz,
        crate::health::readyz,
        openapi_json,
    ),
    components(schemas(
        ProblemDoc,
        FieldError,
        views::MissionView,
        views::MissionDetail,
        views::StepView,
        views::MissionPage,
        views::ApprovalView,
        views::ApprovalInbox,
        views::WorkflowView,
        views::WorkflowList,
        views::EventView,
        views::HistoryPage,
        views::SecretView,
        views::SecretList,
        hypercode_agents::AgentInfo,
        views::AgentList,
        crate::agents::AgentBody,
        crate::agents::HeartbeatBody,
        hypercode_healer::Incident,
        crate::incident_views::IncidentList,
        crate::incident_views::LogList,
        crate::incidents::ResolveBody,
        views::ScheduleView,
        views::ScheduleDetail,
        views::ScheduleList,
        views::ScheduledMissionView,
        views::Triggered,
        views::WorkerView,
        views::WorkerList,
        crate::workers::WorkerState,
        views::LedgerEntryView,
        views::SubscriptionView,
        views::EntitlementView,
        views::AccountView,
        views::TokensPosted,
        views::CheckoutSessionView,
        views::WebhookReceived,
        views::ShopItemView,
        views::ShopList,
        views::PurchaseStarted,
        crate::payments::accounts::TokensBody,
        crate::payments::stripe::CheckoutBody,
        crate::payments::shop::PurchaseBody,
    )),
    security(("api_key" = []), ("bearer" = [])),
    modifiers(&SecuritySchemes, &CommonResponses),
    tags(
        (name = "missions", description = "Missions: submit, read, decide, cancel, retry"),
        (name = "operations", description = "Cross-mission views for operators"),
        (name = "events", description = "The live event stream"),
        (name = "secrets", description = "Server-side secrets that plans reference as `{{secrets.NAME}}` (admins only; values are never returned)"),
        (name = "agents", description = "The agent registry: external HTTP services that plan steps of kind `agent` are routed to by capability. The agent contract: `POST <url>/execute` with `{\"capability\", \"command\", \"input\", \"mission\", \"step\"}`, headers `Idempotency-Key: <mission>:<step>` and `Authorization: Bearer <call secret>`, answering `{\"output\": <any JSON>}` (2xx), 4xx for a permanent failure, 5xx or a timeout for a retryable one; and `GET <url>/health`. Agents heartbeat with `POST /api/v1/agents/{name}/heartbeat` (a key of role `agent` bound to the name) and are live for 30 s after each."),
        (name = "healer", description = "Incidents of the self-healing of labelled containers, and the log"),
        (name = "schedules", description = "Durable cron schedules: each tick starts one mission of a workflow"),
        (name = "payments", description = "The token economy: accounts and their ledger, Stripe Checkout and webhooks, the shop"),
        (name = "meta", description = "Health and this description; no key needed"),
    ),
)]
pub(crate) struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            API_KEY,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "An API key (`hypercode keys create`).",
            ))),
        );
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The same API key as `Authorization: Bearer <key>`."))
                    .build(),
            ),
        );
    }
}

/// Adds the responses every authenticated operation may give.
struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut Document) {
        let common = [
            (
                "401",
                "No API key, or one that is unknown, malformed or revoked",
            ),
            ("403", "The key's role does not allow this operation"),
            (
                "429",
                "The key's rate limit is exhausted; see `Retry-After`",
            ),
            (
                "503",
                "The server is overloaded or timed out; retry after `Retry-After`",
            ),
        ];
        for item in openapi.paths.paths.values_mut() {
            for operation in [
                item.get.as_mut(),
                item.post.as_mut(),
                item.put.as_mut(),
                item.delete.as_mut(),
                item.patch.as_mut(),
            ]
            .into_iter()
            .flatten()
            {
                // Open operations say so with an empty security requirement.
                let open = operation.security.as_ref().is_some_and(|s| {
                    s.iter()
                        .all(|r| serde_json::to_value(r).is_ok_and(|v| v == serde_json::json!({})))
                });
                if open {
                    continue;
                }
                for (status, description) in common {
                    operation
                        .responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| problem_response(description));
                }
            }
        }
    }
}

/// A response whose body is a problem document.
fn problem_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            PROBLEM_JSON,
            ContentBuilder::new()
                .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                    "Problem",
                ))))
                .build(),
        )
        .build()
        .into()
}

/// The problem responses `statuses` (status, description), for [`IntoResponses`] sets.
fn problem_responses(
    statuses: &[(&str, &str)],
) -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
    statuses
        .iter()
        .map(|(status, description)| ((*status).to_owned(), problem_response(description)))
        .collect()
}

/// Declares a set of problem responses that several operations give, described once; an
/// operation lists the set by name in its `responses(...)` beside its own responses.
macro_rules! problem_set {
    ($($(#[$doc:meta])* $name:ident { $($status:literal => $description:literal),+ $(,)? })+) => {$(
        $(#[$doc])*
        pub(crate) struct $name;

        impl IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
                problem_responses(&[$(($status, $description)),+])
            }
        }
    )+};
}

problem_set! {
    /// A path's mission `{id}` that is not a UUID, or names no mission.
    MissionIdProblems { "400" => "The id is not a UUID", "404" => "No such mission" }
    /// A mission that does not exist.
    NoSuchMission { "404" => "No such mission" }
    /// A schedule that does not exist.
    NoSuchSchedule { "404" => "No such schedule" }
    /// A query parameter that cannot be parsed.
    ParameterProblems { "400" => "A parameter is invalid; the detail names it" }
    /// A body that is not JSON.
    MalformedJson { "400" => "The body is not valid JSON" }
    /// A body over the size limit.
    BodyTooLarge { "413" => "The body is too large" }
    /// A body not declared as JSON.
    NotJson { "415" => "The body is not declared as JSON" }
    /// What any JSON body can fail with before the handler reads it: not JSON, over the size
    /// limit, not declared as JSON.
    JsonBodyProblems {
        "400" => "The body is not valid JSON",
        "413" => "The body is too large",
        "415" => "The body is not declared as JSON",
    }
}

/// A string schema with the given values.
pub(crate) fn string_enum(values: impl IntoIterator<Item = &'static str>) -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values))
        .build()
        .into()
}

/// A mission's status.
pub(crate) fn mission_status() -> Schema {
    string_enum(MissionStatus::ALL.map(MissionStatus::as_str))
}

/// A step's kind (compensation entries are never shown).
pub(crate) fn step_kind() -> Schema {
    string_enum(
        StepKind::ALL
            .into_iter()
            .filter(|kind| *kind != StepKind::Compensation)
            .map(StepKind::as_str),
    )
}

/// A step's status.
pub(crate) fn step_status() -> Schema {
    string_enum(StepStatus::ALL.map(StepStatus::as_str))
}

/// The document for a server with these workflows (name, JSON Schema of the input): the
/// submission body is described per workflow, so clients (and the contract test's fuzzer) see
/// exactly which inputs are accepted.
pub(crate) fn document(workflows: &[(String, Value)]) -> Value {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let mut doc = serde_json::to_value(doc).unwrap_or_default();
    let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    else {
        return doc;
    };
    let mut variants = Vec::new();
    for (name, input) in workflows {
        let prefix = format!("{}Input", component_name(name));
        let mut input = input.clone();
        // The input schema's own definitions become components, its pointers pointing there.
        if let Some(Value::Object(defs)) = input.as_object_mut().and_then(|o| o.remove("$defs")) {
            for (def, mut schema) in defs {
                rebase_refs(&mut schema, &prefix);
                schemas.insert(format!("{prefix}.{}", component_name(&def)), schema);
            }
        }
        if let Some(object) = input.as_object_mut() {
            // A standalone document's identity would make its pointers resolve elsewhere.
            object.remove("$id");
            object.remove("$schema");
        }
        rebase_refs(&mut input, &prefix);
        schemas.insert(prefix.clone(), input);
        variants.push(json!({
            "type": "object",
            "description": format!("A mission of the `{name}` workflow."),
            "required": ["workflow", "input"],
            "properties": {
                "workflow": { "const": name },
                "input": { "$ref": format!("#/components/schemas/{prefix}") },
                "idempotency_key": {
                    "type": ["string", "null"],
                    "description": "Submitting again with the same key returns the first mission (200)."
                }
            },
            "additionalProperties": false
        }));
    }
    if !variants.is_empty() {
        schemas.insert(
            "SubmitBody".to_owned(),
            json!({ "description": "A mission to start.", "oneOf": variants }),
        );
    }
    doc
}

/// A component name (`^[a-zA-Z0-9._-]+$`) for `raw`.
fn component_name(raw: &str) -> String {
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Point `#/$defs/X` references at the hoisted `#/components/schemas/PREFIX.X`.
fn rebase_refs(schema: &mut Value, prefix: &str) {
    let mut stack = vec![schema];
    while let Some(value) = stack.pop() {
        match value {
            Value::Object(fields) => {
                for (key, field) in fields.iter_mut() {
                    if key == "$ref" {
                        if let Some(def) = field.as_str().and_then(|r| r.strip_prefix("#/$defs/")) {
                            *field = Value::String(format!(
                                "#/components/schemas/{prefix}.{}",
                                component_name(def)
                            ));
                        }
                    } else {
                        stack.push(field);
                    }
                }
            }
            Value::Array(items) => stack.extend(items.iter_mut()),
            _ => {}
        }
    }
}

/// `GET /openapi.json`: this API's OpenAPI 3.1 description.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object)),
)]
pub(crate) async fn openapi_json(State(state): State<AppState>) -> Response {
    let registry = state.engine.registry();
    let workflows: Vec<(String, Value)> = registry
        .names()
        .filter_map(|name| registry.get(name))
        .map(|workflow| (workflow.name().to_owned(), workflow.input_schema()))
        .collect();
    let body = serde_json::to_vec(&document(&workflows)).unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workflow_inputs_become_components_with_rebased_pointers() {
        let input = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": "https://example.com/input.json",
            "type": "object",
            "properties": { "steps": { "type": "array", "items": { "$ref": "#/$defs/step" } } },
            "$defs": { "step": { "properties": { "next": { "$ref": "#/$defs/step" } } } }
        });
        let doc = document(&[("my flow".to_owned(), input)]);
        assert!(doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")));
        let schemas = &doc["components"]["schemas"];
        let input = &schemas["my_flowInput"];
        assert!(input.get("$id").is_none() && input.get("$defs").is_none());
        assert_eq!(
            input["properties"]["steps"]["items"]["$ref"],
            "#/components/schemas/my_flowInput.step"
        );
        assert_eq!(
            schemas["my_flowInput.step"]["properties"]["next"]["$ref"],
            "#/components/schemas/my_flowInput.step"
        );
        assert_eq!(
            schemas["SubmitBody"]["oneOf"][0]["properties"]["workflow"]["const"],
            "my flow"
        );
        assert!(schemas["Problem"]["properties"]["errors"].is_object());
    }
}
