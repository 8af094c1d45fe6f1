//! Workflows: Rust code registered by name, run through a [`Context`] that journals every step.

use crate::context::Context;
use crate::error::WorkflowResult;
use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// One problem with a submitted input, located by a JSON pointer into it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InputProblem {
    /// RFC 6901 pointer into the input (`/steps/2/http/url`).
    pub pointer: String,
    /// What is wrong there.
    pub message: String,
}

impl InputProblem {
    /// A problem at `pointer`.
    pub fn new(pointer: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            pointer: pointer.into(),
            message: message.into(),
        }
    }
}

/// Durable workflow code. `run` must be deterministic given its input and the results of its
/// steps: it is re-run from the top after every wake-up, and recorded steps return their
/// recorded results instead of running again.
#[async_trait]
pub trait Workflow: Send + Sync + 'static {
    /// The name missions are submitted under.
    fn name(&self) -> &'static str;

    /// Check an input at submission, so a bad one is refused with a 4xx instead of failing later.
    fn validate(&self, input: &Value) -> Result<(), Vec<InputProblem>>;

    /// A JSON Schema of the input, for clients and tooling (`GET /api/v1/workflows`). The
    /// default, `{}`, accepts anything; `validate` stays the authority on what is accepted.
    fn input_schema(&self) -> Value {
        Value::Object(serde_json::Map::new())
    }

    /// The server-side secrets a valid input references, each with the pointer of the string
    /// that names it. [`Engine::submit`](crate::Engine::submit) refuses an input naming a secret
    /// that does not exist. The default: none.
    fn secrets_referenced(&self, _input: &Value) -> Vec<(String, String)> {
        Vec::new()
    }

    /// The workflow itself.
    async fn run(&self, ctx: &mut Context, input: Value) -> WorkflowResult<Value>;
}

/// The workflows a process knows, by name.
#[derive(Default, Clone)]
pub struct Registry {
    workflows: BTreeMap<&'static str, Arc<dyn Workflow>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a workflow; a later one with the same name replaces the earlier.
    pub fn register(mut self, workflow: impl Workflow) -> Self {
        self.workflows.insert(workflow.name(), Arc::new(workflow));
        self
    }

    /// The workflow registered under `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Workflow>> {
        self.workflows.get(name).cloned()
    }

    /// Registered names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.workflows.keys().copied()
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.workflows.keys()).finish()
    }
}
