//! HyperCode's durable execution core.
//!
//! A *mission* is one run of a *workflow*: Rust code registered by name ([`Workflow`]) that
//! runs through a [`Context`]. Every `ctx.step(..)`, `ctx.approval(..)` and `ctx.sleep(..)` takes
//! the next position in the mission's *journal*; after any interruption the workflow re-runs
//! from the top and recorded entries return their recorded results, so only unrecorded work
//! executes (durable execution in the style of DBOS and Temporal).
//!
//! How the layers stack:
//! - [`store`] is the storage contract (narrow traits); [`postgres`] implements it. Nothing
//!   above it sees SQL.
//! - [`context`] journals calls; [`runner`] claims a mission's lease, replays the workflow and
//!   settles the result (finish, compensate in reverse, park on a timer or approval, release).
//! - [`engine`] is the facade the API and workers use; it wakes workers through [`Wake`], which
//!   the `workers` crate implements on Redis. This crate never depends on the queue.
//!
//! Exactly one worker advances a mission at a time: a claim takes a lease with a fencing token,
//! every write carries that token, and a stale worker's write is refused ([`StoreError::LeaseLost`]).
//!
//! [`redact`] decides what in mission data is a secret; every read boundary (API views, history,
//! dashboard, log lines quoting inputs or step errors) hides those through it.

pub mod context;
pub mod engine;
pub mod error;
pub mod event;
pub mod ids;
pub mod postgres;
pub mod redact;
pub mod retry;
pub mod runner;
pub mod schedule;
pub mod status;
pub mod store;
pub mod workflow;

pub use context::{Approval, Context, Step};
pub use engine::{Engine, EngineConfig, SubmitError, Wake, WakeError};
pub use error::{ResultExt, Retry, StepError, StoreError, WorkflowError, WorkflowResult};
pub use event::{Event, EventType};
pub use ids::{MissionId, WorkerId};
pub use retry::RetryPolicy;
pub use runner::RunOutcome;
pub use status::{MissionStatus, StepKind, StepStatus};
pub use workflow::{InputProblem, Registry, Workflow};
