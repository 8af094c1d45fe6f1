//! HyperCode's durable execution core.
//!
//! A *mission* is one run of a *workflow*: Rust code registered by name ([`Workflow`]) that
//! runs through a [`Context`]. Every `ctx.step(..)`, `ctx.approval(..)` and `ctx.sleep(..)` takes
//! the next position in the mission's *journal*; after any interruption the workflow re-runs
//! from the top and recorded entries return their recorded results, so only unrecorded work
//! executes (durable execution in the style of DBOS and Temporal).
//!
//! How the layers stack (the modules are private; what callers need is re-exported here):
//! - `store` is the storage contract (narrow traits, public as [`store`]); [`postgres`]
//!   implements it. Nothing above it sees SQL.
//! - `context` journals calls ([`Context`]); `runner` claims a mission's lease, replays the
//!   workflow and settles the result (finish, compensate in reverse, park on a timer or
//!   approval, release).
//! - `engine` is the facade the API and workers use ([`Engine`]); it wakes workers through
//!   [`Wake`], which the `workers` crate implements on Redis. This crate never depends on the
//!   queue.
//! - [`schedule`] computes cron timing: which ticks of a schedule are due.
//! - `workflow` is what authors implement ([`Workflow`], typed input and output) and what the
//!   [`Registry`] stores ([`DynWorkflow`], the same seen through JSON).
//!
//! Exactly one worker advances a mission at a time: a claim takes a lease with a fencing token,
//! every write carries that token, and a stale worker's write is refused ([`StoreError::LeaseLost`]).
//!
//! [`redact`] decides what in mission data is a secret; every read boundary (API views, history,
//! dashboard, log lines quoting inputs or step errors) hides those through it.
//!
//! # Writing a workflow
//!
//! A workflow declares its input and output types; submissions are validated by deserializing
//! the input (each problem located by a JSON pointer), and its JSON Schema is derived from the
//! type. Each step is journaled: after a crash the workflow re-runs from the top and a recorded
//! step returns its recorded output instead of running again.
//!
//! ```no_run
//! use async_trait::async_trait;
//! use hypercode_engine::postgres::PgStore;
//! use hypercode_engine::{
//!     Context, Engine, EngineConfig, InputProblem, Registry, RetryPolicy, Step, StepError, Wake,
//!     Workflow, WorkflowResult,
//! };
//! use schemars::JsonSchema;
//! use serde::{Deserialize, Serialize};
//! use std::sync::Arc;
//!
//! /// What a `greet` mission is submitted with.
//! #[derive(Deserialize, JsonSchema)]
//! #[serde(deny_unknown_fields)]
//! struct Greeting {
//!     /// Who is greeted.
//!     name: String,
//! }
//!
//! /// What it records when it finishes.
//! #[derive(Serialize)]
//! struct Greeted {
//!     message: String,
//! }
//!
//! struct Greet;
//!
//! #[async_trait]
//! impl Workflow for Greet {
//!     const NAME: &'static str = "greet";
//!     type Input = Greeting;
//!     type Output = Greeted;
//!
//!     // A rule the type cannot say; problems are refused at submission with a 422.
//!     fn check(&self, input: &Greeting) -> Result<(), Vec<InputProblem>> {
//!         match input.name.is_empty() {
//!             true => Err(vec![InputProblem::new("/name", "must not be empty")]),
//!             false => Ok(()),
//!         }
//!     }
//!
//!     async fn run(&self, ctx: &mut Context, input: Greeting) -> WorkflowResult<Greeted> {
//!         // Retried up to 5 times with backoff when it fails retryably; its output is typed.
//!         let step = Step::new("compose")
//!             .input(&input.name)?
//!             .retry(RetryPolicy { max_attempts: 5, ..RetryPolicy::default() });
//!         let message: String = ctx
//!             .step(step, || async move {
//!                 // A call to a service goes here, its errors classified with `.retryable()?`
//!                 // or `.fatal()?` (`ResultExt`).
//!                 Ok::<_, StepError>(format!("hello, {}", input.name))
//!             })
//!             .await?;
//!         Ok(Greeted { message })
//!     }
//! }
//!
//! async fn start(pool: sqlx::PgPool, wake: Arc<dyn Wake>) -> Result<(), Box<dyn std::error::Error>> {
//!     let registry = Registry::new().register(Greet);
//!     let engine = Engine::new(Arc::new(PgStore::new(pool)), registry, wake, EngineConfig::default());
//!     let submitted = engine.submit("greet", serde_json::json!({ "name": "Ada" }), None).await?;
//!     // What a worker does when woken for the mission.
//!     engine.run_mission(submitted.mission.id).await?;
//!     Ok(())
//! }
//! ```

mod context;
mod engine;
mod error;
mod event;
mod ids;
pub mod metrics;
pub mod postgres;
pub mod redact;
mod retry;
mod runner;
pub mod schedule;
mod scheduler;
mod status;
pub mod store;
mod workflow;

pub use context::{Approval, Compensation, Context, Step};
pub use engine::{
    nul_pointer, unsafe_integers, Engine, EngineConfig, Submission, SubmitError, Wake, WakeError,
    MAX_CONCURRENCY_KEY_CHARS, MAX_IDEMPOTENCY_KEY_CHARS, MAX_SAFE_INTEGER, NUL_MESSAGE,
    WORKER_HEARTBEAT,
};
pub use error::{
    CompensationSummary, DatabaseError, FailedCompensation, FailureCause, MissionError, ResultExt,
    Retry, StepError, StepFailure, StoreError, StoreResult, WorkflowError, WorkflowResult,
};
pub use event::{Event, EventType, NewEvent, UnknownEventType};
pub use ids::{host_name, LeaseToken, MissionId, WorkerId};
pub use retry::RetryPolicy;
pub use runner::RunOutcome;
pub use scheduler::TICK_INTERVAL;
pub use status::{MissionStatus, StepKind, StepStatus};
pub use workflow::{parse_input, DynWorkflow, InputProblem, Registry, Workflow};
