//! Concrete workflows built on the engine. Each module owns one workflow; [`registry`] lists
//! them all so the API (validation) and the workers (execution) agree on what exists.
//!
//! Workflows here never touch SQL or Redis: they only call the engine's [`Context`] (and, for
//! the secrets plans reference, the engine's [`SecretStore`] contract).
//!
//! [`SecretStore`]: hypercode_engine::store::SecretStore
//!
//! [`Context`]: hypercode_engine::Context

pub mod egress;
pub mod plan;

use egress::EgressClient;
use hypercode_engine::store::SecretStore;
use hypercode_engine::Registry;
use std::sync::Arc;

/// Every workflow this build ships, ready to run with `http` as the outbound HTTP client and
/// `secrets` as where plans' `{{secrets.NAME}}` are read from.
pub fn registry(http: EgressClient, secrets: Arc<dyn SecretStore>) -> Registry {
    Registry::new().register(plan::PlanWorkflow::new(http, secrets))
}
