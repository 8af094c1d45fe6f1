//! The `agent_command` workflow: a free-text command routed to an agent. The capability is the
//! one the input names, or else the one [`CommandRouting`]'s prefix table gives for the
//! command's first word (`deploy ...` → `devops`); a command that matches one of the approval
//! patterns (`deploy`, `delete`, `drop`, `payment` by default) waits for an approval first.
//! Steps: `route` (the decision, recorded so a change of configuration cannot change a running
//! mission), `approve` when needed, then `execute`, an agent step like a plan's.
//!
//! It is what the CognitiveUplink's `execute` frames submit.

use crate::plan::{run_agent_step, AgentCaller, AgentSpec, Scope};
use crate::Dependencies;
use async_trait::async_trait;
use hypercode_engine::{
    Approval, Context, InputProblem, RetryPolicy, Step, StepError, Workflow, WorkflowResult,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Longest accepted command, in bytes.
const MAX_COMMAND_BYTES: usize = 4096;

/// Agent calls are retried a few times: enough to fail over to another live agent.
const EXECUTE_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 5,
    initial_backoff_ms: 500,
    max_backoff_ms: 5_000,
};

/// How commands are routed: `HYPERCODE_AGENT_ROUTES` and `HYPERCODE_AGENT_APPROVAL_PATTERNS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRouting {
    /// `(first word, capability)`, tried in order; words compare case-insensitively.
    pub prefixes: Vec<(String, String)>,
    /// A command any word of which starts with one of these (case-insensitively) needs an
    /// approval.
    pub approval_patterns: Vec<String>,
}

impl Default for CommandRouting {
    fn default() -> Self {
        let pairs = [("deploy", "devops"), ("echo", "echo"), ("upper", "upper")];
        Self {
            prefixes: pairs
                .iter()
                .map(|(p, c)| ((*p).to_owned(), (*c).to_owned()))
                .collect(),
            approval_patterns: ["deploy", "delete", "drop", "payment"]
                .map(str::to_owned)
                .to_vec(),
        }
    }
}

impl CommandRouting {
    /// Parse a prefix table, `word=capability,word=capability`.
    pub fn parse_prefixes(list: &str) -> Result<Vec<(String, String)>, String> {
        list.split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                let (word, capability) = entry
                    .split_once('=')
                    .ok_or_else(|| format!("`{entry}` is not `word=capability`"))?;
                let (word, capability) = (word.trim(), capability.trim());
                if word.is_empty() || word.contains(char::is_whitespace) {
                    return Err(format!("`{entry}`: the word must be one word"));
                }
                if !hypercode_agents::valid_capability(capability) {
                    return Err(format!(
                        "`{entry}`: `{capability}` is not a valid capability"
                    ));
                }
                Ok((word.to_lowercase(), capability.to_owned()))
            })
            .collect()
    }

    /// Parse a list of approval patterns, `deploy,delete`.
    pub fn parse_patterns(list: &str) -> Vec<String> {
        list.split(',')
            .map(|p| p.trim().to_lowercase())
            .filter(|p| !p.is_empty())
            .collect()
    }

    /// The capability the prefix table gives `command`.
    pub fn capability_for(&self, command: &str) -> Option<&str> {
        let first = command.split_whitespace().next()?.to_lowercase();
        self.prefixes
            .iter()
            .find(|(word, _)| *word == first)
            .map(|(_, capability)| capability.as_str())
    }

    /// Whether `command` needs an approval.
    pub fn needs_approval(&self, command: &str) -> bool {
        let lower = command.to_lowercase();
        lower
            .split(|c: char| !c.is_alphanumeric())
            .any(|word| self.approval_patterns.iter().any(|p| word.starts_with(p)))
    }
}

/// The input of an `agent_command` mission.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "agent_command",
    description = "A free-text command for an agent: routed to the capability named, or by the server's prefix table (the command's first word); commands matching the approval patterns (deploy, delete, drop, payment by default) wait for an approval first."
)]
pub struct CommandInput {
    /// The command, free text.
    #[schemars(length(min = 1, max = MAX_COMMAND_BYTES))]
    pub command: String,
    /// The capability to route to; without one, the prefix table decides.
    pub capability: Option<String>,
}

/// What `route` decided.
#[derive(Debug, Serialize, Deserialize)]
struct Route {
    capability: String,
    approval: bool,
}

/// The `agent_command` workflow.
#[derive(Debug, Clone)]
pub struct AgentCommandWorkflow {
    agents: AgentCaller,
    routing: CommandRouting,
}

impl AgentCommandWorkflow {
    /// Routes with `deps.agent_routing` to the agents of `deps.agents`.
    pub fn new(deps: &Dependencies) -> Self {
        Self {
            agents: AgentCaller::new(deps.agents.clone()),
            routing: deps.agent_routing.clone(),
        }
    }
}

#[async_trait]
impl Workflow for AgentCommandWorkflow {
    const NAME: &'static str = "agent_command";
    type Input = CommandInput;
    type Output = Value;

    fn check(&self, input: &CommandInput) -> Result<(), Vec<InputProblem>> {
        let mut problems = Vec::new();
        if input.command.trim().is_empty() || input.command.len() > MAX_COMMAND_BYTES {
            problems.push(InputProblem::new(
                "/command",
                format!("a command is 1 to {MAX_COMMAND_BYTES} bytes, not blank"),
            ));
        }
        if let Some(capability) = &input.capability {
            if !hypercode_agents::valid_capability(capability) {
                problems.push(InputProblem::new(
                    "/capability",
                    "a capability is 1 to 64 letters, digits, `_`, `-` or `.`",
                ));
            }
        }
        match problems.is_empty() {
            true => Ok(()),
            false => Err(problems),
        }
    }

    async fn run(&self, ctx: &mut Context, input: CommandInput) -> WorkflowResult<Value> {
        let route = Step::new("route")
            .input(&input)?
            .retry(RetryPolicy::NONE)
            .local();
        let route: Route = ctx
            .step(route, || async {
                let capability = match &input.capability {
                    Some(capability) => capability.clone(),
                    None => self
                        .routing
                        .capability_for(&input.command)
                        .map(str::to_owned)
                        .ok_or_else(|| {
                            StepError::fatal(format!(
                                "no capability handles the command `{}`: name one, or start it \
                                 with a word of the routing table ({})",
                                input.command,
                                self.routing
                                    .prefixes
                                    .iter()
                                    .map(|(w, c)| format!("{w} → {c}"))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ))
                        })?,
                };
                let approval = self.routing.needs_approval(&input.command);
                Ok::<_, StepError>(Route {
                    capability,
                    approval,
                })
            })
            .await?;
        if route.approval {
            let message = format!(
                "Run `{}` on an agent with capability `{}`?",
                input.command, route.capability
            );
            let message = truncated(message, Approval::MAX_MESSAGE_BYTES);
            ctx.approval(
                "approve",
                Approval {
                    message,
                    timeout: None,
                },
            )
            .await?;
        }
        let spec = AgentSpec {
            capability: route.capability.clone(),
            command: input.command,
            input: Value::Null,
            timeout_s: 60.0,
        };
        let scope = Scope::new(ctx.mission_id());
        let answered =
            run_agent_step(ctx, &self.agents, &scope, "execute", &spec, EXECUTE_RETRY).await?;
        Ok(json!({
            "capability": route.capability,
            "agent": answered["agent"],
            "output": answered["output"],
        }))
    }
}

/// `text` cut to at most `max` bytes on a character boundary.
pub(crate) fn truncated(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_first_word_and_asks_for_dangerous_ones() {
        let routing = CommandRouting::default();
        assert_eq!(routing.capability_for("Deploy web to prod"), Some("devops"));
        assert_eq!(routing.capability_for("upper hello"), Some("upper"));
        assert_eq!(routing.capability_for("deployment"), None);
        assert_eq!(routing.capability_for("   "), None);
        assert!(routing.needs_approval("please DROP table users"));
        assert!(routing.needs_approval("deploy web"));
        assert!(routing.needs_approval("refund payments"));
        assert!(!routing.needs_approval("upper hello"));
    }

    #[test]
    fn parses_the_tables() {
        assert_eq!(
            CommandRouting::parse_prefixes("deploy=devops, Ship = devops,"),
            Ok(vec![
                ("deploy".to_owned(), "devops".to_owned()),
                ("ship".to_owned(), "devops".to_owned())
            ])
        );
        assert!(CommandRouting::parse_prefixes("deploy").is_err());
        assert!(CommandRouting::parse_prefixes("a b=c").is_err());
        assert!(CommandRouting::parse_prefixes("a=c/d").is_err());
        assert_eq!(CommandRouting::parse_patterns(" Wipe ,, x"), ["wipe", "x"]);
    }
}
