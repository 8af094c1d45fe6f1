//! The plan input's JSON Schema (draft 2020-12), written by hand to mirror `spec.rs`: served by
//! `GET /api/v1/workflows` for clients and editors. `Plan::parse` stays the authority (it also
//! checks what a schema cannot say well: templates referencing earlier steps, unique names).

use super::spec::{MAX_ATTEMPTS, MAX_TIMEOUT_MS, MAX_WAIT_S, METHODS};
use hypercode_engine::Approval;
use serde_json::{json, Value};

/// The schema of a `plan` mission's input.
pub fn input_schema() -> Value {
    let retry = json!({
        "type": "object",
        "description": "Exponential backoff with jitter. 5xx, 408, 429, timeouts and connection errors are retried; other 4xx fail at once.",
        "properties": {
            "max_attempts": { "type": "integer", "minimum": 1, "maximum": MAX_ATTEMPTS, "default": 3, "description": "Total attempts, the first one included." },
            "initial_backoff_ms": { "type": "integer", "minimum": 0, "default": 200, "description": "Backoff before the second attempt; doubled for each further one. At most max_backoff_ms." },
            "max_backoff_ms": { "type": "integer", "minimum": 0, "maximum": 86_400_000, "default": 10_000 }
        },
        "additionalProperties": false
    });
    let http = json!({
        "type": "object",
        "description": "An HTTP call; 2xx succeeds with output {\"status\", \"body\"}. Strings in url, headers and body may reference earlier outputs: {{steps.NAME.output.PATH}} and {{mission.id}}.",
        "required": ["url"],
        "properties": {
            "method": { "enum": METHODS, "default": "GET" },
            "url": { "type": "string", "description": "An http or https URL with a host." },
            "headers": {
                "type": "object",
                "description": "Names are HTTP tokens; values have no control characters but tab (no CR, LF or NUL), also once their templates are resolved: a resolved value that does fails the step for good.",
                "propertyNames": { "pattern": "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$" },
                "additionalProperties": { "type": "string", "pattern": "^[^\\u0000-\\u0008\\u000A-\\u001F\\u007F]*$" }
            },
            "body": { "description": "A JSON body (any JSON)." },
            "timeout_ms": { "type": "integer", "minimum": 1, "maximum": MAX_TIMEOUT_MS, "default": 10_000 }
        },
        "additionalProperties": false
    });
    let max_wait_ms = (MAX_WAIT_S * 1000.0) as u64;
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://hypercode.dev/schemas/workflows/plan/input.json",
        "title": "plan",
        "description": "A declarative mission: steps run in order, each with exactly one action (http, approval, sleep or noop).",
        "type": "object",
        "required": ["steps"],
        "properties": {
            "steps": { "type": "array", "minItems": 1, "items": { "$ref": "#/$defs/step" } }
        },
        "additionalProperties": false,
        "$defs": {
            "retry": retry,
            "http": http,
            "step": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": { "type": "string", "pattern": "^[A-Za-z0-9_-]{1,100}$", "description": "Unique within the plan." },
                    "http": { "$ref": "#/$defs/http" },
                    "approval": {
                        "type": "object",
                        "description": "Waits for a human decision; a timeout counts as a rejection.",
                        "properties": {
                            "message": { "type": "string", "default": "", "maxLength": Approval::MAX_MESSAGE_BYTES, "description": format!("At most {} bytes of UTF-8 (maxLength counts characters: the byte limit is the one enforced).", Approval::MAX_MESSAGE_BYTES) },
                            "timeout_s": { "type": "number", "exclusiveMinimum": 0, "maximum": MAX_WAIT_S }
                        },
                        "additionalProperties": false
                    },
                    "sleep": {
                        "type": "object",
                        "description": "A durable sleep.",
                        "required": ["ms"],
                        "properties": { "ms": { "type": "integer", "minimum": 0, "maximum": max_wait_ms } },
                        "additionalProperties": false
                    },
                    "noop": { "not": { "type": "null" }, "description": "Any JSON but null: recorded as the step's output." },
                    "retry": { "$ref": "#/$defs/retry" },
                    "compensate": {
                        "type": "object",
                        "description": "Undoes the step if the mission later fails or is cancelled; may reference the step's own output.",
                        "required": ["http"],
                        "properties": {
                            "http": { "$ref": "#/$defs/http" },
                            "retry": { "$ref": "#/$defs/retry" }
                        },
                        "additionalProperties": false
                    }
                },
                "additionalProperties": false,
                "oneOf": [
                    { "required": ["http"] },
                    { "required": ["approval"] },
                    { "required": ["sleep"] },
                    { "required": ["noop"] }
                ],
                "dependentSchemas": {
                    "retry": { "required": ["http"] },
                    "compensate": { "required": ["http"] }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_steps_with_exactly_one_action() {
        let schema = input_schema();
        assert_eq!(
            schema["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
        let step = &schema["$defs"]["step"];
        let actions: Vec<&str> = step["oneOf"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|one| one["required"][0].as_str())
            .collect();
        assert_eq!(actions, ["http", "approval", "sleep", "noop"]);
        for key in [
            "name",
            "http",
            "approval",
            "sleep",
            "noop",
            "retry",
            "compensate",
        ] {
            assert!(step["properties"].get(key).is_some(), "{key}");
        }
        assert_eq!(
            schema["$defs"]["http"]["properties"]["method"]["enum"][0],
            "GET"
        );
        assert_eq!(
            schema["$defs"]["retry"]["properties"]["max_attempts"]["maximum"],
            100
        );
    }
}
