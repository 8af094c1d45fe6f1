//! Concrete workflows built on the engine. Each module owns one workflow; [`registry`] lists
//! them all so the API (validation) and the workers (execution) agree on what exists.
//!
//! Workflows here never touch SQL or Redis: they only call the engine's [`Context`].
//!
//! [`Context`]: hypercode_engine::Context

pub mod egress;
pub mod plan;

use egress::EgressClient;
use hypercode_engine::Registry;

/// Every workflow this build ships, ready to run with `http` as the outbound HTTP client.
pub fn registry(http: EgressClient) -> Registry {
    Registry::new().register(plan::PlanWorkflow::new(http))
}
