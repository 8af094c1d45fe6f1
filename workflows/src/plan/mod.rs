//! The `plan` workflow: a declarative mission submitted as JSON. Its steps run in order; each
//! is an HTTP call, an approval gate, a durable sleep or a no-op, and an HTTP step may register an HTTP
//! compensation. Strings in a request may reference earlier outputs with `{{steps.a.output...}}`.
//!
//! Each call carries `Idempotency-Key: <mission>:<step>` (`<mission>:compensate:<step>` for an
//! undo): the same for every automatic attempt of one run, so the callee can deduplicate them.
//! After a manual retry (`POST /missions/{id}/retry`) the mission's retry generation N is
//! appended, `<mission>:<step>:rN`, so a callee that caches answers per key (Stripe does, for a
//! day) runs the call again instead of replaying the failure the retry means to get past.

mod http;
mod schema;
mod spec;
mod template;

pub use spec::{Action, Compensate, HttpRequest, Plan, PlanStep};

use crate::egress::EgressClient;
use async_trait::async_trait;
use hypercode_engine::{
    Approval, Context, InputProblem, RetryPolicy, Step, StepError, Workflow, WorkflowError,
    WorkflowResult,
};
use serde_json::{json, Map, Value};
use std::time::Duration;
use template::Scope;

/// The `plan` workflow.
#[derive(Debug, Clone)]
pub struct PlanWorkflow {
    http: EgressClient,
}

impl PlanWorkflow {
    /// A plan runner that makes its calls with `http`.
    pub fn new(http: EgressClient) -> Self {
        Self { http }
    }
}

#[async_trait]
impl Workflow for PlanWorkflow {
    fn name(&self) -> &'static str {
        "plan"
    }

    fn validate(&self, input: &Value) -> Result<(), Vec<InputProblem>> {
        Plan::parse(input).map(|_| ())
    }

    fn input_schema(&self) -> Value {
        schema::input_schema()
    }

    async fn run(&self, ctx: &mut Context, input: Value) -> WorkflowResult<Value> {
        let plan = Plan::parse(&input).map_err(|problems| {
            WorkflowError::failed(format!(
                "invalid plan: {}",
                serde_json::to_string(&problems).unwrap_or_default()
            ))
        })?;
        let mut scope = Scope::new(ctx.mission_id());
        for step in plan.steps {
            let name = step.name;
            let output = match step.action {
                Action::Http(request) => {
                    let resolved = scope
                        .resolve_request(&request)
                        .map_err(|e| WorkflowError::failed(format!("step `{name}`: {e}")))?;
                    let key = idempotency_key(ctx, &name);
                    let mut options = Step::new(&name)
                        .input(&resolved)?
                        .retry(step.retry.unwrap_or_default());
                    if let Some(undo) = step.compensate {
                        // The undo keeps only the outputs it references (shared, not copied);
                        // its own step's output is handed to it from the journal when it runs.
                        let (client, scope, own) = (
                            self.http.clone(),
                            scope.narrowed_to(&undo.http),
                            name.clone(),
                        );
                        let key = idempotency_key(ctx, &format!("compensate:{name}"));
                        options =
                            options.compensate(undo.retry.unwrap_or_default(), move |output| {
                                let resolved = scope
                                    .clone()
                                    .with_output(&own, output)
                                    .resolve_request(&undo.http);
                                let (client, key) = (client.clone(), key.clone());
                                async move {
                                    let resolved =
                                        resolved.map_err(|e| StepError::fatal(e.to_string()))?;
                                    send(&client, &resolved, &key).await
                                }
                            });
                    }
                    let client = self.http.clone();
                    ctx.step(
                        options,
                        || async move { send(&client, &resolved, &key).await },
                    )
                    .await?
                }
                Action::Approval { message, timeout_s } => {
                    let timeout = timeout_s.map(Duration::from_secs_f64);
                    ctx.approval(&name, Approval { message, timeout }).await?
                }
                Action::Noop(value) => {
                    let options = Step::new(&name).retry(RetryPolicy::NONE).local();
                    ctx.step(options, || async { Ok::<_, StepError>(value) })
                        .await?
                }
                Action::Sleep { ms } => {
                    ctx.sleep(&name, Duration::from_millis(ms)).await?;
                    Value::Null
                }
            };
            scope = scope.with_output(&name, output);
        }
        Ok(json!({ "steps": scope.into_outputs().collect::<Map<String, Value>>() }))
    }
}

/// The `Idempotency-Key` of `call` (a step's name, or `compensate:<step>`) in this run.
fn idempotency_key(ctx: &Context, call: &str) -> String {
    match ctx.retry_generation() {
        0 => format!("{}:{call}", ctx.mission_id()),
        generation => format!("{}:{call}:r{generation}", ctx.mission_id()),
    }
}

/// Make one attempt of a resolved request. One that its templates made invalid (a header value
/// with a line break, a URL that is no longer http) fails for good: every attempt would be the
/// same.
async fn send(client: &EgressClient, request: &HttpRequest, key: &str) -> Result<Value, StepError> {
    request.check_resolved().map_err(StepError::fatal)?;
    http::call(client, request, key).await
}
