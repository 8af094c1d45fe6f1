//! Concrete workflows built on the engine. Each module owns one workflow; [`registry`] lists
//! them all so the API (validation) and the workers (execution) agree on what exists.
//!
//! Workflows here never touch SQL or Redis: they only call the engine's [`Context`] and the
//! clients handed to them in [`Dependencies`] (the egress-checked HTTP client, the engine's
//! [`SecretStore`] contract, the agent directory, the payments ledger).
//!
//! [`SecretStore`]: hypercode_engine::store::SecretStore
//!
//! [`Context`]: hypercode_engine::Context

pub mod agent_command;
pub mod deploy_agent;
pub mod egress;
pub mod heal;
pub mod payments;
pub mod payments_shop;
pub mod plan;

use egress::EgressClient;
use hypercode_agents::AgentDirectory;
use hypercode_engine::store::SecretStore;
use hypercode_engine::Registry;
use std::sync::Arc;

/// What the workflows of this build call outside the engine, built once by the binary. Each
/// workflow takes the clients it needs from it, so a workflow that needs a new one adds a field
/// here rather than a parameter to [`registry`] and to every caller's call.
#[derive(Clone)]
pub struct Dependencies {
    /// Outbound HTTP, checked against the egress policy.
    pub http: EgressClient,
    /// Where plans' `{{secrets.NAME}}` are read from.
    pub secrets: Arc<dyn SecretStore>,
    /// Docker, the incident store and the alert log, for the `heal` workflow.
    pub healer: hypercode_healer::Toolkit,
    /// The live agents plan steps of kind `agent` and `agent_command` missions are routed to.
    pub agents: Arc<dyn AgentDirectory>,
    /// How `agent_command` routes a command without a capability, and which need approval.
    pub agent_routing: agent_command::CommandRouting,
    /// The catalogue, the token ledger and the stored Stripe events, for the `stripe_event`
    /// and `shop_purchase` workflows.
    pub payments: hypercode_payments::Payments,
}

impl std::fmt::Debug for Dependencies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dependencies")
            .field("http", &self.http)
            .finish_non_exhaustive()
    }
}

/// Every workflow this build ships, each given what it needs from `deps`. The binary adds
/// [`deploy_agent::DeployAgentWorkflow`] to it, which needs the key store of the API crate
/// (its [`hypercode_agents::AgentProvisioner`]); the API and the workers share that registry,
/// so they still agree on what exists.
pub fn registry(deps: &Dependencies) -> Registry {
    Registry::new()
        .register(plan::PlanWorkflow::new(deps))
        .register(heal::HealWorkflow::new(deps))
        .register(agent_command::AgentCommandWorkflow::new(deps))
        .register(payments::StripeEventWorkflow::new(deps))
        .register(payments_shop::ShopPurchaseWorkflow::new(deps))
}
