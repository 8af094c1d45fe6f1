//! The `plan` workflow: a declarative mission submitted as JSON. Its steps run in order; each
//! is an HTTP call, an approval gate, a durable sleep or a no-op, and an HTTP step may register an HTTP
//! compensation. Strings in a request may reference earlier outputs with `{{steps.a.output...}}`.

mod http;
mod schema;
mod spec;
mod template;

pub use spec::{Action, Compensate, HttpRequest, Plan, PlanStep};

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
    http: crate::egress::EgressClient,
}

impl PlanWorkflow {
    /// A plan runner that makes its calls with `http`.
    pub fn new(http: crate::egress::EgressClient) -> Self {
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
                    let key = format!("{}:{name}", ctx.mission_id());
                    let mut options = Step::new(&name)
                        .input(&resolved)?
                        .retry(step.retry.unwrap_or_default());
                    if let Some(undo) = step.compensate {
                        let (client, scope, own, mission) = (
                            self.http.clone(),
                            scope.clone(),
                            name.clone(),
                            ctx.mission_id(),
                        );
                        options =
                            options.compensate(undo.retry.unwrap_or_default(), move |output| {
                                let (client, request) = (client.clone(), undo.http.clone());
                                let resolved = scope
                                    .clone()
                                    .with_output(&own, output)
                                    .resolve_request(&request);
                                let key = format!("{mission}:compensate:{own}");
                                async move {
                                    let resolved =
                                        resolved.map_err(|e| StepError::fatal(e.to_string()))?;
                                    http::call(&client, &resolved, &key).await
                                }
                            });
                    }
                    let client = self.http.clone();
                    ctx.step(options, || async move {
                        http::call(&client, &resolved, &key).await
                    })
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
        Ok(
            json!({ "steps": scope.outputs().iter().map(|(k, v)| (k.clone(), v.clone())).collect::<Map<String, Value>>() }),
        )
    }
}
