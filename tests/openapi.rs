//! `GET /openapi.json`: served without a key, OpenAPI 3.1, and describing every route the
//! router serves, with the problem schema and both security schemes. (The contract test,
//! `scripts/contract-test`, fuzzes the server against this document.)

mod common;

use common::*;
use serde_json::Value;

/// Every route the router serves, with its methods (keep in step with `api/src/*.rs`).
const ROUTES: &[(&str, &[&str])] = &[
    ("/api/v1/missions", &["get", "post"]),
    ("/api/v1/missions/{id}", &["get"]),
    ("/api/v1/missions/{id}/approvals/{step}", &["post"]),
    ("/api/v1/missions/{id}/cancel", &["post"]),
    ("/api/v1/missions/{id}/retry", &["post"]),
    ("/api/v1/missions/{id}/signals/{name}", &["post"]),
    ("/api/v1/missions/{id}/history", &["get"]),
    ("/api/v1/approvals", &["get"]),
    ("/api/v1/workflows", &["get"]),
    ("/api/v1/workers", &["get"]),
    ("/api/v1/events", &["get"]),
    ("/api/v1/secrets", &["get"]),
    ("/api/v1/secrets/{name}", &["put", "delete"]),
    ("/api/v1/agents", &["get", "post"]),
    ("/api/v1/agents/{name}", &["delete"]),
    ("/api/v1/agents/{name}/heartbeat", &["post"]),
    ("/ws/uplink", &["get"]),
    ("/api/v1/incidents", &["get"]),
    ("/api/v1/incidents/{id}", &["get"]),
    ("/api/v1/incidents/{id}/resolve", &["post"]),
    ("/api/v1/logs", &["get"]),
    ("/api/v1/logs/stream", &["get"]),
    ("/api/v1/schedules", &["get", "post"]),
    ("/api/v1/schedules/{name}", &["get", "patch", "delete"]),
    ("/api/v1/schedules/{name}/trigger", &["post"]),
    ("/api/v1/accounts/{account}", &["get"]),
    ("/api/v1/accounts/{account}/tokens", &["post"]),
    ("/api/v1/shop", &["get"]),
    ("/api/v1/shop/purchases", &["post"]),
    ("/api/stripe/checkout", &["post"]),
    ("/api/stripe/webhook", &["post"]),
    ("/healthz", &["get"]),
    ("/readyz", &["get"]),
    ("/openapi.json", &["get"]),
];

#[tokio::test]
async fn the_description_covers_every_route_and_needs_no_key() {
    let h = Harness::with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;

    // No key: the document is public.
    let response = h
        .http
        .get(h.url("/openapi.json"))
        .send()
        .await
        .expect("the API answered");
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let doc: Value = response.json().await.expect("a JSON document");

    let version = doc["openapi"].as_str().unwrap_or_default();
    assert!(version.starts_with("3.1"), "openapi = {version}");

    let paths = doc["paths"].as_object().expect("paths");
    for (path, methods) in ROUTES {
        let item = paths
            .get(*path)
            .unwrap_or_else(|| panic!("{path} is missing from paths: {:?}", paths.keys()));
        for method in *methods {
            let operation = &item[*method];
            assert!(operation.is_object(), "{method} {path} is not described");
            assert!(
                operation["responses"]
                    .as_object()
                    .is_some_and(|r| !r.is_empty()),
                "{method} {path} has no responses"
            );
        }
    }
    assert_eq!(paths.len(), ROUTES.len(), "paths: {:?}", paths.keys());

    // Errors are problem documents, and both ways of presenting a key are described.
    let problem = &doc["components"]["schemas"]["Problem"];
    for field in ["type", "title", "status", "detail", "errors"] {
        assert!(
            problem["properties"][field].is_object(),
            "Problem.{field}: {problem}"
        );
    }
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["api_key"]["type"], "apiKey");
    assert_eq!(schemes["api_key"]["in"], "header");
    assert_eq!(schemes["api_key"]["name"], "X-API-Key");
    assert_eq!(schemes["bearer"]["type"], "http");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    let not_found = &paths["/api/v1/missions/{id}"]["get"]["responses"]["404"];
    assert!(
        not_found["content"]["application/problem+json"]["schema"]["$ref"]
            .as_str()
            .is_some_and(|r| r.ends_with("/Problem")),
        "{not_found}"
    );
    let sse = &paths["/api/v1/events"]["get"]["responses"]["200"]["content"];
    assert!(sse["text/event-stream"].is_object(), "{sse}");
    // Open routes say so; the others require a key (401 described).
    assert_eq!(
        paths["/healthz"]["get"]["security"],
        serde_json::json!([{}])
    );
    assert!(paths["/api/v1/workflows"]["get"]["responses"]["401"].is_object());

    // The submission body is described per registered workflow, with its input schema.
    let submit = &doc["components"]["schemas"]["SubmitBody"]["oneOf"];
    let plan = submit
        .as_array()
        .and_then(|variants| {
            variants
                .iter()
                .find(|v| v["properties"]["workflow"]["const"] == "plan")
        })
        .unwrap_or_else(|| panic!("no `plan` variant in SubmitBody: {submit}"));
    assert_eq!(
        plan["properties"]["input"]["$ref"],
        "#/components/schemas/planInput"
    );
    assert!(doc["components"]["schemas"]["planInput.step"].is_object());

    // /healthz needs no key either.
    let health = h
        .http
        .get(h.url("/healthz"))
        .send()
        .await
        .expect("the API answered");
    assert_eq!(health.status().as_u16(), 200);
}
