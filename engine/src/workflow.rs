//! Workflows: Rust code registered by name, run through a [`Context`] that journals every step.
//!
//! Authors implement [`Workflow`], whose input and output are types; the [`Registry`] keeps each
//! one behind [`DynWorkflow`], the JSON face the engine, the API and the workers call. That face
//! is derived from the types: validation deserializes the input (locating a problem with a JSON
//! pointer) and the input's JSON Schema comes from [`JsonSchema`].

use crate::context::Context;
use crate::engine::same_type;
use crate::error::{WorkflowError, WorkflowResult};
use async_trait::async_trait;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::value::RawValue;
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
    const NAME: &'static str;

    /// What a mission is submitted with. An input that does not deserialize is refused at
    /// submission, each problem at its JSON pointer; its JSON Schema is published
    /// (`GET /api/v1/workflows`).
    type Input: DeserializeOwned + JsonSchema + Send;

    /// What a finished mission records as its output.
    type Output: Serialize + Send + 'static;

    /// Rules the input's type cannot say (unique names, references to earlier steps), checked
    /// at submission after it deserialized, so a bad input is refused with a 4xx instead of
    /// failing later. The default: none.
    fn check(&self, _input: &Self::Input) -> Result<(), Vec<InputProblem>> {
        Ok(())
    }

    /// The server-side secrets a valid input references, each with the pointer of the string
    /// that names it. [`Engine::submit`](crate::Engine::submit) refuses an input naming a secret
    /// that does not exist. The default: none.
    fn secrets_in(&self, _input: &Self::Input) -> Vec<(String, String)> {
        Vec::new()
    }

    /// Whether only the engine starts this workflow (a schedule, a webhook, the healer):
    /// [`Engine::submit`](crate::Engine::submit) refuses it. The default: callers may submit it.
    fn internal(&self) -> bool {
        false
    }

    /// The workflow itself.
    async fn run(&self, ctx: &mut Context, input: Self::Input) -> WorkflowResult<Self::Output>;
}

/// A [`Workflow`] seen through JSON: what the registry stores and its callers use. Every
/// `Workflow` is one; implement `Workflow`, not this.
#[async_trait]
pub trait DynWorkflow: sealed::Sealed + Send + Sync {
    /// The name missions are submitted under.
    fn name(&self) -> &'static str;

    /// Check an input at submission: it deserializes into the workflow's input type and passes
    /// [`Workflow::check`].
    fn validate(&self, input: &Value) -> Result<(), Vec<InputProblem>>;

    /// The input type's JSON Schema (draft 2020-12), for clients and tooling.
    fn input_schema(&self) -> Value;

    /// The secrets a valid input references ([`Workflow::secrets_in`]); none for an invalid one.
    fn secrets_referenced(&self, input: &Value) -> Vec<(String, String)>;

    /// Whether only the engine starts it ([`Workflow::internal`]).
    fn is_internal(&self) -> bool;

    /// Run the workflow on a stored input, given as its JSON text; its output as JSON.
    async fn run(&self, ctx: &mut Context, input: &RawValue) -> WorkflowResult<Value>;
}

mod sealed {
    /// Only the blanket implementation makes a [`DynWorkflow`](super::DynWorkflow).
    pub trait Sealed {}
    impl<W: super::Workflow> Sealed for W {}
}

#[async_trait]
impl<W: Workflow> DynWorkflow for W {
    fn name(&self) -> &'static str {
        W::NAME
    }

    fn validate(&self, input: &Value) -> Result<(), Vec<InputProblem>> {
        self.check(&parse_input::<W::Input>(input)?)
    }

    fn input_schema(&self) -> Value {
        schemars::schema_for!(W::Input).to_value()
    }

    fn secrets_referenced(&self, input: &Value) -> Vec<(String, String)> {
        parse_input::<W::Input>(input)
            .map(|input| self.secrets_in(&input))
            .unwrap_or_default()
    }

    fn is_internal(&self) -> bool {
        Workflow::internal(self)
    }

    async fn run(&self, ctx: &mut Context, input: &RawValue) -> WorkflowResult<Value> {
        // Inputs are validated at submission; one that no longer deserializes (the type changed
        // under a stored mission) fails the mission rather than guessing.
        let input = decode_input::<W::Input>(input).map_err(|problems| {
            WorkflowError::failed(format!(
                "invalid input: {}",
                serde_json::to_string(&problems).unwrap_or_default()
            ))
        })?;
        let output = Workflow::run(self, ctx, input).await?;
        into_json(output)
    }
}

/// A workflow's output as JSON. One that is a [`Value`] already (a plan's, whose output names
/// every step) is taken as it is: serializing it into a new tree would copy all of it.
fn into_json<O: Serialize + 'static>(output: O) -> WorkflowResult<Value> {
    same_type(output).or_else(|output: O| {
        serde_json::to_value(&output)
            .map_err(|e| WorkflowError::failed(format!("the output is not JSON: {e}")))
    })
}

/// Most problems [`parse_input`] reports at once.
const MAX_DECODE_PROBLEMS: usize = 20;

/// Deserialize `input` into `T`, or say what is wrong, located by JSON pointers: what
/// [`DynWorkflow::validate`] does before [`Workflow::check`].
///
/// Deserialization stops at the first error, but a person fixing a plan wants every problem at
/// once. So after each error inside an array element (a plan's step), that element is taken
/// out of a working copy and the rest is read again, up to [`MAX_DECODE_PROBLEMS`] times; each
/// problem's pointer is mapped back to the original input's indices.
pub fn parse_input<T: DeserializeOwned>(input: &Value) -> Result<T, Vec<InputProblem>> {
    let mut error = match serde_path_to_error::deserialize(input) {
        Ok(value) => return Ok(value),
        Err(error) => error,
    };
    let mut problems = Vec::new();
    let mut working = input.clone();
    let mut removed = Removed::default();
    loop {
        let (original, element) = locate(&working, &pointer(error.path()), &removed);
        problems.push(InputProblem::new(original, error.inner().to_string()));
        let Some(element) = element else { break };
        if problems.len() >= MAX_DECODE_PROBLEMS || !element.remove_from(&mut working) {
            break;
        }
        removed.push((element.original_array, element.original_index));
        match serde_path_to_error::deserialize::<_, T>(&working) {
            Ok(_) => break,
            Err(next) => error = next,
        }
    }
    Err(problems)
}

/// [`parse_input`] on an input's JSON text: decoded straight into `T`, with no [`Value`] tree in
/// between (for a long plan, building that tree cost as much again as the decoding itself).
/// Text that does not decode is read into a `Value` and handed to [`parse_input`], so the
/// problems reported are exactly its own.
fn decode_input<T: DeserializeOwned>(input: &RawValue) -> Result<T, Vec<InputProblem>> {
    if let Ok(value) = serde_json::from_str(input.get()) {
        return Ok(value);
    }
    let tree: Value = serde_json::from_str(input.get())
        .map_err(|e| vec![InputProblem::new("", e.to_string())])?;
    parse_input(&tree)
}

/// Array elements taken out of the working copy: (the array's pointer in the original input,
/// the element's index there).
type Removed = Vec<(String, usize)>;

/// The innermost array element an error lies in.
struct Element {
    /// The array's pointer in the working copy.
    working_array: String,
    /// The element's index in the working copy.
    working_index: usize,
    original_array: String,
    original_index: usize,
}

impl Element {
    fn remove_from(&self, working: &mut Value) -> bool {
        match working.pointer_mut(&self.working_array) {
            Some(Value::Array(items)) if self.working_index < items.len() => {
                items.remove(self.working_index);
                true
            }
            _ => false,
        }
    }
}

/// Walk `at` (a pointer into the working copy): its pointer in the original input, and the
/// innermost array element on the way.
fn locate(working: &Value, at: &str, removed: &Removed) -> (String, Option<Element>) {
    let mut node = Some(working);
    let (mut working_path, mut original_path) = (String::new(), String::new());
    let mut element = None;
    for token in at.split('/').skip(1) {
        match node {
            Some(Value::Array(items)) => {
                let Ok(index) = token.parse::<usize>() else {
                    break;
                };
                let original_index = original_index(&original_path, index, removed);
                element = Some(Element {
                    working_array: working_path.clone(),
                    working_index: index,
                    original_array: original_path.clone(),
                    original_index,
                });
                node = items.get(index);
                working_path = format!("{working_path}/{index}");
                original_path = format!("{original_path}/{original_index}");
            }
            _ => {
                let key = token.replace("~1", "/").replace("~0", "~");
                node = node.and_then(|n| n.get(&key));
                working_path = format!("{working_path}/{token}");
                original_path = format!("{original_path}/{token}");
            }
        }
    }
    (original_path, element)
}

/// The original index of the `index`-th element still in the array at `array` (original
/// pointer).
fn original_index(array: &str, index: usize, removed: &Removed) -> usize {
    let mut left = index;
    let mut i = 0;
    loop {
        let gone = removed.iter().any(|(a, r)| a == array && *r == i);
        if !gone {
            if left == 0 {
                return i;
            }
            left -= 1;
        }
        i += 1;
    }
}

/// Turn a serde path (`steps[0].http.url`) into an RFC 6901 JSON pointer (`/steps/0/http/url`).
fn pointer(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    path.iter()
        .filter_map(|segment| match segment {
            Segment::Seq { index } => Some(index.to_string()),
            Segment::Map { key } => Some(key.replace('~', "~0").replace('/', "~1")),
            Segment::Enum { variant } => Some(variant.clone()),
            Segment::Unknown => None,
        })
        .fold(String::new(), |acc, part| format!("{acc}/{part}"))
}

/// The workflows a process knows, by name.
#[derive(Default, Clone)]
pub struct Registry {
    workflows: BTreeMap<&'static str, Arc<dyn DynWorkflow>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a workflow; a later one with the same name replaces the earlier.
    pub fn register<W: Workflow>(mut self, workflow: W) -> Self {
        self.workflows.insert(W::NAME, Arc::new(workflow));
        self
    }

    /// The workflow registered under `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn DynWorkflow>> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    struct Greeting {
        names: Vec<String>,
        #[serde(rename = "a/b~c")]
        odd: Option<u8>,
    }

    struct Greet;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // read by serde only: the test is about its errors
    struct Plan {
        steps: Vec<Step>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Step {
        name: String,
        tags: Option<Vec<u8>>,
    }

    #[test]
    fn every_element_with_a_problem_is_reported_at_its_original_index() {
        let input = json!({ "steps": [
            { "name": 1 },
            { "name": "ok" },
            { "name": "b", "tags": [1, 300] },
            { "nme": "c" },
            { "name": "d" },
        ]});
        let problems = parse_input::<Plan>(&input).err().unwrap_or_default();
        let pointers: Vec<&str> = problems.iter().map(|p| p.pointer.as_str()).collect();
        assert_eq!(
            pointers,
            ["/steps/0/name", "/steps/2/tags/1", "/steps/3/nme"]
        );
        assert!(
            problems[2].message.contains("nme"),
            "{}",
            problems[2].message
        );
        let fine = json!({ "steps": [{ "name": "a" }] });
        assert!(parse_input::<Plan>(&fine).is_ok());
        let not_an_array = json!({ "steps": 3 });
        assert_eq!(
            parse_input::<Plan>(&not_an_array).err().map(|p| p.len()),
            Some(1)
        );
    }

    #[test]
    fn decoding_the_text_agrees_with_parsing_the_tree() {
        let inputs = [
            json!({ "steps": [{ "name": "a" }, { "name": "b", "tags": [1, 2] }] }),
            json!({ "steps": [{ "name": 1 }, { "name": "ok" }, { "nme": "c" }] }),
            json!({ "steps": 3 }),
            json!([]),
        ];
        for input in inputs {
            let text = serde_json::value::to_raw_value(&input).expect("JSON");
            let decoded = decode_input::<Plan>(&text).map(|plan| format!("{plan:?}"));
            let parsed = parse_input::<Plan>(&input).map(|plan| format!("{plan:?}"));
            assert_eq!(decoded, parsed, "{input}");
        }
    }

    #[async_trait]
    impl Workflow for Greet {
        const NAME: &'static str = "greet";
        type Input = Greeting;
        type Output = usize;

        fn check(&self, input: &Greeting) -> Result<(), Vec<InputProblem>> {
            match input.names.is_empty() {
                true => Err(vec![InputProblem::new("/names", "greet someone")]),
                false => Ok(()),
            }
        }

        async fn run(&self, _: &mut Context, input: Greeting) -> WorkflowResult<usize> {
            Ok(input.names.len() + usize::from(input.odd.unwrap_or_default()))
        }
    }

    #[test]
    fn validation_points_at_what_does_not_deserialize_then_checks() {
        let greet: &dyn DynWorkflow = &Greet;
        assert_eq!(greet.validate(&json!({"names": ["ada"]})), Ok(()));
        let wrong = greet.validate(&json!({"names": ["ada", 7]})).unwrap_err();
        assert_eq!(wrong[0].pointer, "/names/1");
        let escaped = greet
            .validate(&json!({"names": ["ada"], "a/b~c": 300}))
            .unwrap_err();
        assert_eq!(escaped[0].pointer, "/a~1b~0c");
        let unknown = greet.validate(&json!({"names": [], "x": 1})).unwrap_err();
        assert!(unknown[0].message.contains("unknown field"), "{unknown:?}");
        let checked = greet.validate(&json!({"names": []})).unwrap_err();
        assert_eq!(checked, [InputProblem::new("/names", "greet someone")]);
    }

    #[test]
    fn the_schema_is_derived_from_the_input_type() {
        let schema = Greet.input_schema();
        assert_eq!(
            schema["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
        assert_eq!(schema["required"], json!(["names"]));
        assert_eq!(schema["additionalProperties"], false);
        let registry = Registry::new().register(Greet);
        assert_eq!(registry.names().collect::<Vec<_>>(), ["greet"]);
    }
}
