//! The `plan` workflow: a declarative mission submitted as JSON. Its steps run in order; each
//! is an HTTP call, a call to a live agent with a capability (see `agent`), an approval gate, a wait for a signal, a durable sleep or a no-op, and an
//! HTTP step may register an HTTP compensation. Strings in a request may reference earlier outputs with `{{steps.a.output...}}`
//! and server-side secrets with `{{secrets.NAME}}`.
//!
//! A secret's value never enters the journal: a step records its request with the
//! `{{secrets.NAME}}` text in place, the values are read from the store only when the call is
//! made (a secret deleted since submission fails the step for good), and any occurrence of a
//! value in the call's output or error (a callee may echo it) is replaced by `[redacted]` before
//! they are recorded.
//!
//! Each call carries `Idempotency-Key: <mission>:<step>` (`<mission>:compensate:<step>` for an
//! undo): the same for every automatic attempt of one run, so the callee can deduplicate them.
//! After a manual retry (`POST /missions/{id}/retry`) the mission's retry generation N is
//! appended, `<mission>:<step>:rN`, so a callee that caches answers per key (Stripe does, for a
//! day) runs the call again instead of replaying the failure the retry means to get past.

mod agent;
mod http;
mod spec;
mod template;

pub(crate) use agent::AgentCaller;
pub use agent::AgentSpec;

pub use spec::{
    Action, ApprovalSpec, Compensate, HttpRequest, Method, Plan, PlanSpec, PlanStep, SleepSpec,
    StepSpec, SubmittedMethod,
};

use crate::egress::EgressClient;
use crate::Dependencies;
use async_trait::async_trait;
use hypercode_engine::store::SecretStore;
use hypercode_engine::{
    Approval, Context, InputProblem, RetryPolicy, Step, StepError, Workflow, WorkflowError,
    WorkflowResult,
};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
pub(crate) use template::Scope;
use template::Secrets;

/// The `plan` workflow.
#[derive(Clone)]
pub struct PlanWorkflow {
    http: EgressClient,
    secrets: Arc<dyn SecretStore>,
    agents: AgentCaller,
}

impl PlanWorkflow {
    /// A plan runner that makes its calls with the egress-checked HTTP client, reading the
    /// secrets plans reference from the secret store.
    pub fn new(deps: &Dependencies) -> Self {
        Self {
            http: deps.http.clone(),
            secrets: deps.secrets.clone(),
            agents: AgentCaller::new(deps.agents.clone()),
        }
    }

    /// How this run makes the call whose idempotency key is `key`.
    fn caller(&self, key: String) -> Caller {
        Caller {
            http: self.http.clone(),
            secrets: self.secrets.clone(),
            key,
        }
    }
}

impl std::fmt::Debug for PlanWorkflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlanWorkflow")
            .field("http", &self.http)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Workflow for PlanWorkflow {
    const NAME: &'static str = "plan";
    type Input = PlanSpec;
    type Output = Value;

    fn check(&self, input: &PlanSpec) -> Result<(), Vec<InputProblem>> {
        Plan::checked(input).map(drop)
    }

    fn secrets_in(&self, input: &PlanSpec) -> Vec<(String, String)> {
        let Ok(plan) = Plan::checked(input) else {
            return Vec::new();
        };
        let mut found = Vec::new();
        for (i, step) in plan.steps.iter().enumerate() {
            if let Action::Http(request) = &step.action {
                found.extend(template::secrets_in(request, &format!("/steps/{i}/http")));
            }
            if let Some(undo) = &step.compensate {
                let at = format!("/steps/{i}/compensate/http");
                found.extend(template::secrets_in(&undo.http, &at));
            }
        }
        found
    }

    async fn run(&self, ctx: &mut Context, input: PlanSpec) -> WorkflowResult<Value> {
        let plan = Plan::checked(&input).map_err(|problems| {
            WorkflowError::failed(format!(
                "invalid plan: {}",
                serde_json::to_string(&problems).unwrap_or_default()
            ))
        })?;
        let mut scope = Scope::new(ctx.mission_id());
        let last = plan.steps.len().saturating_sub(1);
        for (index, step) in plan.steps.into_iter().enumerate() {
            let name = step.name;
            let output = match step.action {
                Action::Http(request) => {
                    let recorded = scope
                        .resolve_request(&request, Secrets::Kept)
                        .map_err(|e| WorkflowError::failed(format!("step `{name}`: {e}")))?;
                    let mut options = Step::new(&name)
                        .input(&recorded)?
                        .retry(step.retry.unwrap_or_default());
                    if let Some(undo) = step.compensate {
                        // The undo keeps only the outputs it references (shared, not copied);
                        // its own step's output is handed to it from the journal when it runs.
                        let caller =
                            self.caller(idempotency_key(ctx, &format!("compensate:{name}")));
                        let (scope, own) = (scope.narrowed_to(&undo.http), name.clone());
                        options =
                            options.compensate(undo.retry.unwrap_or_default(), move |output| {
                                let scope = scope.clone().with_output(&own, output);
                                let (caller, request) = (caller.clone(), undo.http.clone());
                                async move { caller.call(&scope, &request).await }
                            });
                    }
                    if index == last {
                        // The plan's output is known once this call returns: the mission ends
                        // in the write that records it.
                        let (scope, own) = (scope.clone(), name.clone());
                        options = options.finishing(move |output| {
                            plan_output(scope.with_output(&own, output.clone()))
                        });
                    }
                    let caller = self.caller(idempotency_key(ctx, &name));
                    let narrowed = scope.narrowed_to(&request);
                    ctx.step(
                        options,
                        || async move { caller.call(&narrowed, &request).await },
                    )
                    .await?
                }
                Action::Agent(spec) => {
                    let retry = step.retry.unwrap_or_default();
                    run_agent_step(ctx, &self.agents, &scope, &name, &spec, retry).await?
                }
                Action::Approval { message, timeout_s } => {
                    let timeout = timeout_s.map(Duration::from_secs_f64);
                    ctx.approval(&name, Approval { message, timeout }).await?
                }
                Action::Signal { timeout_s } => {
                    let payload: Value = ctx
                        .signal(&name, Duration::from_secs_f64(timeout_s))
                        .await?;
                    json!({ "payload": payload })
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
        Ok(plan_output(scope))
    }
}

/// A plan's output: every step's output by name. Built as a tree directly: `json!` would
/// serialize the map of outputs into a copy of itself.
fn plan_output(scope: Scope) -> Value {
    let steps = scope.into_outputs().collect::<Map<String, Value>>();
    Value::Object(Map::from_iter([("steps".to_owned(), Value::Object(steps))]))
}

/// Run an agent step: its templates resolved in `scope` and recorded as its input, then
/// routed to a live agent on each attempt. Shared with the `agent_command` workflow.
pub(crate) async fn run_agent_step(
    ctx: &mut Context,
    agents: &AgentCaller,
    scope: &Scope,
    name: &str,
    spec: &AgentSpec,
    retry: RetryPolicy,
) -> WorkflowResult<Value> {
    let resolved = AgentSpec {
        command: match scope.resolve(&Value::String(spec.command.clone())) {
            Ok(Value::String(text)) => text,
            Ok(other) => other.to_string(),
            Err(e) => return Err(WorkflowError::failed(format!("step `{name}`: {e}"))),
        },
        input: scope
            .resolve(&spec.input)
            .map_err(|e| WorkflowError::failed(format!("step `{name}`: {e}")))?,
        ..spec.clone()
    };
    let options = Step::new(name).input(&resolved)?.retry(retry);
    let key = idempotency_key(ctx, name);
    let mission = ctx.mission_id().to_string();
    ctx.step(options, || async {
        agents.call(&resolved, &mission, name, &key).await
    })
    .await
}

/// The `Idempotency-Key` of `call` (a step's name, or `compensate:<step>`) in this run.
fn idempotency_key(ctx: &Context, call: &str) -> String {
    match ctx.retry_generation() {
        0 => format!("{}:{call}", ctx.mission_id()),
        generation => format!("{}:{call}:r{generation}", ctx.mission_id()),
    }
}

/// What one HTTP call of a run needs when it is made: the client, the secrets and its key.
#[derive(Clone)]
struct Caller {
    http: EgressClient,
    secrets: Arc<dyn SecretStore>,
    key: String,
}

impl Caller {
    /// Resolve `template` in `scope`, with the current values of the secrets it references,
    /// and make one attempt; those values are hidden in what the attempt returns.
    async fn call(&self, scope: &Scope, template: &HttpRequest) -> Result<Value, StepError> {
        let names = template::secret_names(template);
        let values = if names.is_empty() {
            HashMap::new()
        } else {
            self.secrets.secret_values(&names).await.map_err(|e| {
                StepError::retryable(format!("could not read the server-side secrets: {e}"))
            })?
        };
        let request = scope
            .resolve_request(template, Secrets::Values(&values))
            .map_err(|e| StepError::fatal(e.to_string()))?;
        let result = send(&self.http, &request, &self.key).await;
        if values.is_empty() {
            return result;
        }
        result
            .map(|output| template::hide_in_value(output, &values))
            .map_err(|mut error| {
                error.message = template::hide_in_text(&error.message, &values);
                error.details = template::hide_in_value(error.details, &values);
                error
            })
    }
}

/// Make one attempt of a resolved request. One that its templates made invalid (a header value
/// with a line break, a URL that is no longer http) fails for good: every attempt would be the
/// same.
async fn send(client: &EgressClient, request: &HttpRequest, key: &str) -> Result<Value, StepError> {
    request.check_resolved().map_err(StepError::fatal)?;
    http::call(client, request, key).await
}
