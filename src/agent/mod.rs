//! `hypercode agent serve`: the reference agent, an HTTP service speaking the agent contract
//! (see `server`) that heartbeats to a HyperCode server when given `--register`. Tests, the
//! README and Agent X's default image run it.
//!
//! - `server`: `POST /execute` and `GET /health`, and the capabilities it implements.
//! - `heartbeat`: the loop that keeps the agent live in the server's registry.

mod heartbeat;
mod server;

use crate::config;
use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// `hypercode agent ...`.
#[derive(Args)]
pub struct AgentArgs {
    #[command(subcommand)]
    command: AgentCommand,
}

#[derive(Subcommand)]
enum AgentCommand {
    /// Serve the reference agent: `POST /execute` (capabilities `echo`: the input back, and
    /// `upper`: the command upper-cased; any other capability it is given answers what it was
    /// asked) and `GET /health`. The call secret comes from --call-secret-file or
    /// HYPERCODE_AGENT_CALL_SECRET (or HYPERCODE_AGENT_CALL_SECRET_FILE).
    Serve(ServeArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// The agent's name, as registered.
    #[arg(long, env = "HYPERCODE_AGENT_NAME")]
    name: String,
    /// A capability it serves; repeat the flag (or list them) for several.
    #[arg(long = "capability", env = "HYPERCODE_AGENT_CAPABILITIES", value_delimiter = ',', num_args = 1.., required = true)]
    capabilities: Vec<String>,
    /// The address to listen on (port 0 picks one; the address is printed).
    #[arg(long, env = "HYPERCODE_AGENT_LISTEN", default_value = "127.0.0.1:9000")]
    listen: String,
    /// A file holding the call secret callers must present as `Authorization: Bearer ...`.
    #[arg(long)]
    call_secret_file: Option<std::path::PathBuf>,
    /// A HyperCode server to heartbeat to, with the agent key in HYPERCODE_API_KEY.
    #[arg(long, env = "HYPERCODE_AGENT_API_URL")]
    register: Option<String>,
    /// Seconds between heartbeats.
    #[arg(long, default_value_t = 10.0)]
    heartbeat_s: f64,
}

/// Run the subcommand until `shutdown`.
pub async fn run(args: AgentArgs, shutdown: CancellationToken) -> Result<()> {
    let AgentCommand::Serve(args) = args.command;
    for capability in &args.capabilities {
        if !hypercode_agents::valid_capability(capability) {
            bail!("`{capability}` is not a valid capability (1 to 64 of A-Z a-z 0-9 _ - .)");
        }
    }
    let secret = match &args.call_secret_file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading --call-secret-file {}", path.display()))?
            .trim_end()
            .to_owned(),
        None => config::required_secret("HYPERCODE_AGENT_CALL_SECRET")?,
    };
    if secret.is_empty() {
        bail!("the call secret is empty");
    }
    let agent = Arc::new(server::Agent::new(
        args.name.clone(),
        args.capabilities.clone(),
        secret,
    ));
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(url) = args.register {
        let key = config::required_secret("HYPERCODE_API_KEY")
            .context("--register needs the agent's key")?;
        let beat = heartbeat::Heartbeat {
            url: url.trim_end_matches('/').to_owned(),
            name: args.name.clone(),
            key,
            every: Duration::from_secs_f64(args.heartbeat_s.max(0.1)),
        };
        let (agent, stop) = (agent.clone(), shutdown.clone());
        tasks.spawn(async move { beat.run(agent, stop).await });
    }
    println!("listening on http://{}", listener.local_addr()?);
    tracing::info!(agent = %args.name, capabilities = ?args.capabilities, "agent serving");
    let stop = shutdown.clone();
    axum::serve(listener, server::router(agent))
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await?;
    shutdown.cancel();
    while tasks.join_next().await.is_some() {}
    Ok(())
}
