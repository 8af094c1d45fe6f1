//! The `hypercode` binary: migrations, the API server, the workers and key management, wired
//! from the library crates, and `mission ...` and `secrets ...`, clients of the HTTP API. This is the only place
//! `anyhow` is used. `mcp` serves the MCP gateway on stdio, also as a client of the HTTP API;
//! `agent serve` is the reference agent.

mod agent;
mod client;
mod config;
mod database;
mod healthcheck;
mod metrics;
mod telemetry;

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};
use config::Settings;
use database::Use;
use hypercode_agents::AgentRegistry;
use hypercode_api::rate_limit::RateLimiter;
use hypercode_api::{keys, AppState, PaymentsState};
use hypercode_engine::{postgres::PgStore, Engine, EngineConfig};
use hypercode_healer::{Healer, Toolkit};
use hypercode_payments::checkout::Checkout;
use hypercode_payments::Payments;
use hypercode_workers::{queue, reconciler, worker};
use hypercode_workflows::deploy_agent::DeployAgentWorkflow;
use hypercode_workflows::egress::{EgressClient, EgressPolicy};
use hypercode_workflows::Dependencies;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "hypercode",
    version,
    about = "HyperCode: a durable mission runner",
    after_help = client::EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply the database migrations to DATABASE_URL (idempotent).
    Migrate,
    /// Serve the HTTP API; also runs the reconciler, timers and schedules.
    Serve {
        /// Also execute missions in this process (a worker pool beside the API).
        #[arg(long)]
        worker: bool,
        /// Missions in flight at once when --worker is given.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Address to listen on.
        #[arg(long, env = "HYPERCODE_LISTEN", default_value = "127.0.0.1:8000")]
        listen: String,
    },
    /// Run a worker pool that executes missions from the Redis queue.
    Worker {
        /// Missions in flight at once.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// The API server's listen address, which plans may not call (the egress policy).
        #[arg(long, env = "HYPERCODE_LISTEN", default_value = "127.0.0.1:8000")]
        server_address: String,
    },
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Submit, list, inspect, approve, cancel, retry and watch missions on a server over its HTTP API
    /// (HYPERCODE_URL, HYPERCODE_API_KEY; no database needed).
    #[command(after_help = client::EXIT_CODES)]
    Mission(client::MissionArgs),
    /// List the registered workflows with a JSON Schema of their input, over the HTTP API
    /// (HYPERCODE_URL, HYPERCODE_API_KEY).
    #[command(after_help = client::EXIT_CODES)]
    Workflows(client::WorkflowsArgs),
    /// Set, list and delete the server-side secrets plans reference as `{{secrets.NAME}}`,
    /// over the HTTP API with an admin key (HYPERCODE_URL, HYPERCODE_API_KEY).
    #[command(after_help = client::EXIT_CODES)]
    Secrets(client::SecretsArgs),
    /// List, create, show, pause, resume, trigger and delete cron schedules over the HTTP API
    /// (HYPERCODE_URL, HYPERCODE_API_KEY).
    #[command(after_help = client::EXIT_CODES)]
    Schedule(client::ScheduleArgs),
    /// Serve the MCP gateway (tools for AI assistants) on stdin/stdout, as a client of a
    /// running server over its HTTP API (HYPERCODE_URL, HYPERCODE_API_KEY).
    #[command(after_help = client::EXIT_CODES)]
    Mcp,
    /// The reference agent: an HTTP service that missions' agent steps call
    /// (`POST /execute`, `GET /health`), heartbeating to a server when given `--register`.
    Agent(agent::AgentArgs),
    /// Exit 0 when this machine's server answers `/healthz` (`--ready`: `/readyz`); the
    /// container image's healthcheck.
    Healthcheck(healthcheck::HealthcheckArgs),
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key; it is printed once, alone on the last line.
    Create {
        /// A name to recognise the key by (shown as the approver of decisions).
        #[arg(long)]
        name: String,
        /// admin, operator, agent or viewer.
        #[arg(long)]
        role: keys::Role,
        /// With `--role agent`: the agent the key heartbeats for (it may beat for no other).
        #[arg(long)]
        agent: Option<String>,
    },
    /// List every key: id, name, role, creation time, whether revoked (never the secrets).
    List {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by id; it stops working with the next request.
    Revoke {
        /// The key's id (see `keys list`).
        id: String,
    },
}

#[tokio::main]
async fn main() -> Result<ExitCode> {
    let telemetry = telemetry::init()?;
    let result = run(Cli::parse()).await;
    // The spans of the last requests and steps are exported before the process ends.
    tokio::task::block_in_place(|| telemetry.shutdown());
    result
}

async fn run(cli: Cli) -> Result<ExitCode> {
    // The client talks to a server over HTTP: it must not need the server's settings.
    if let Command::Mission(args) = cli.command {
        return Ok(client::run(args).await);
    }
    if let Command::Workflows(args) = cli.command {
        return Ok(client::run_workflows(args).await);
    }
    if let Command::Secrets(args) = cli.command {
        return Ok(client::run_secrets(args).await);
    }
    if let Command::Schedule(args) = cli.command {
        return Ok(client::run_schedules(args).await);
    }
    if let Command::Mcp = cli.command {
        return Ok(client::run_mcp(shutdown_signal()).await);
    }
    if let Command::Healthcheck(args) = cli.command {
        return Ok(healthcheck::run(args).await);
    }
    if let Command::Agent(args) = cli.command {
        agent::run(args, shutdown_signal()).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let settings = Settings::from_env()?;
    match cli.command {
        Command::Migrate => {
            let pool = database::connect(&settings, Use::Command).await?;
            hypercode_engine::postgres::MIGRATOR
                .run(&pool)
                .await
                .context("applying migrations")?;
            println!("migrations applied");
        }
        Command::Keys { command } => manage_keys(&settings, command).await?,
        Command::Serve {
            worker,
            concurrency,
            listen,
        } => serve(settings, worker.then_some(concurrency), &listen).await?,
        Command::Worker {
            concurrency,
            server_address,
        } => {
            let server = tokio::net::lookup_host(&server_address)
                .await
                .with_context(|| format!("resolving HYPERCODE_LISTEN={server_address}"))?;
            let pool = database::connect(&settings, Use::Worker).await?;
            let Runtime { engine, queue, .. } = engine(&settings, pool, server.collect()).await?;
            let shutdown = shutdown_signal();
            let handle = metrics::install()?;
            if let Some(listen) = metrics::listen_address() {
                let router = metrics::render_only(handle);
                let stop = shutdown.clone();
                tokio::spawn(async move {
                    if let Err(e) = metrics::serve(&listen, router, stop).await {
                        tracing::error!(error = %e, "metrics listener stopped");
                    }
                });
            }
            worker::run(engine, queue, concurrency, shutdown).await?;
        }
        Command::Mission(_)
        | Command::Workflows(_)
        | Command::Secrets(_)
        | Command::Schedule(_)
        | Command::Mcp
        | Command::Agent(_)
        | Command::Healthcheck(_) => {
            unreachable!("handled above")
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn manage_keys(settings: &Settings, command: KeysCommand) -> Result<()> {
    let pool = database::connect(settings, Use::Command).await?;
    match command {
        KeysCommand::Create { name, role, agent } => {
            let created = keys::create_bound(&pool, &name, role, agent.as_deref()).await?;
            println!(
                "created {} key `{}` ({})",
                created.role.as_str(),
                created.name,
                created.id
            );
            // The only place a key is ever shown.
            println!("{}", created.key);
        }
        KeysCommand::List { json } => {
            let listed = keys::list(&pool).await?;
            if json {
                println!("{}", keys::to_json(&listed));
            } else {
                print!("{}", keys::table(&listed));
            }
        }
        KeysCommand::Revoke { id: raw } => {
            // Not a UUID cannot be any key's id: the same answer as an unknown id.
            let outcome = match raw.trim().parse() {
                Ok(id) => keys::revoke(&pool, id).await?,
                Err(_) => keys::Revocation::Unknown,
            };
            match outcome {
                keys::Revocation::Revoked(name) => println!("revoked key `{name}` ({raw})"),
                keys::Revocation::AlreadyRevoked(at) => {
                    bail!("key {raw} was already revoked (at {at})")
                }
                keys::Revocation::Unknown => {
                    bail!("no API key has the id `{raw}` (see `hypercode keys list`)")
                }
            }
        }
    }
    Ok(())
}

/// What `engine` builds: the engine and the clients the API and the healer share with its
/// workflows.
struct Runtime {
    engine: Engine,
    queue: queue::QueueConfig,
    toolkit: Toolkit,
    agents: AgentRegistry,
    payments: Payments,
}

/// The engine on `pool`, whose plans may not call the API server at `server` (its listen
/// addresses).
async fn engine(
    settings: &Settings,
    pool: sqlx::PgPool,
    server: Vec<SocketAddr>,
) -> Result<Runtime> {
    let queue = queue::QueueConfig {
        redis_url: settings.redis_url()?.to_owned(),
        queue: settings.queue.clone(),
    };
    let wake = queue::RedisWake::connect(&queue, settings.queue_max_depth)
        .await
        .context("connecting to HYPERCODE_REDIS_URL")?;
    let mut policy = EgressPolicy::new(
        settings.egress_allow.clone(),
        settings.egress_deny.clone(),
        server,
    );
    if let Some(url) = &settings.internal_url {
        policy = policy.reached_at(url);
    }
    let http = EgressClient::new(
        reqwest::Client::builder().user_agent(concat!("hypercode/", env!("CARGO_PKG_VERSION"))),
        policy,
    )?;
    let config = EngineConfig {
        lease_ttl: settings.lease_ttl,
        max_payload_bytes: settings.max_payload_bytes,
        claim_hold: settings.claim_hold,
    };
    let store = Arc::new(PgStore::new(pool.clone()));
    let agents = AgentRegistry::new(pool.clone(), &queue.redis_url, settings.agents.clone())
        .context("HYPERCODE_REDIS_URL, for the agent heartbeats")?;
    let catalog = settings.catalog()?;
    // What workflows call outside the engine, built once; each takes what it needs.
    let deps = Dependencies {
        http,
        secrets: store.clone(),
        healer: Toolkit::new(pool.clone(), &queue.redis_url, &queue.queue)
            .context("HYPERCODE_REDIS_URL, for the log list")?,
        agents: Arc::new(agents.clone()),
        agent_routing: settings.agent_routing.clone(),
        payments: Payments::new(pool.clone(), catalog),
    };
    // Agent X issues keys through the API crate's key store, so it is added here.
    let provisioner = hypercode_api::AgentProvisioner::new(agents.clone(), pool);
    let deploy_agent = DeployAgentWorkflow::new(
        deps.healer.docker.clone(),
        Arc::new(provisioner),
        settings.agent_deploy.clone(),
    );
    let engine = Engine::new(
        store,
        hypercode_workflows::registry(&deps).register(deploy_agent),
        Arc::new(wake),
        config,
    );
    Ok(Runtime {
        engine,
        queue,
        toolkit: deps.healer,
        agents,
        payments: deps.payments,
    })
}

async fn serve(settings: Settings, worker: Option<usize>, listen: &str) -> Result<()> {
    // Bound first: plans must know the address actually bound (port 0 picks one).
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    // One pool for the engine and the API's own tables (keys, sessions): HYPERCODE_DB_POOL is
    // what the process may open, which the startup check compares with the server's limit.
    let pool = database::connect(&settings, Use::Serve).await?;
    let Runtime {
        engine,
        queue,
        toolkit,
        agents,
        payments,
    } = engine(&settings, pool.clone(), vec![listener.local_addr()?]).await?;
    let checkout = settings
        .stripe_secret_key
        .as_deref()
        .map(|key| Checkout::new(key, settings.stripe_api_url.as_deref()))
        .transpose()
        .context("STRIPE_SECRET_KEY / HYPERCODE_STRIPE_API_URL")?;
    let healer = config::healer()?;
    // Secrets registered before they were sealed at rest: sealed now (reads handle them until).
    if let Err(e) = agents.seal_plain_secrets().await {
        tracing::warn!(error = %e, "sealing the agents' plain call secrets failed");
    }
    let shutdown = shutdown_signal();
    let reconcile = reconciler::ReconcilerConfig {
        tick: settings.tick,
        redeliver_after: settings.redeliver_after,
        ..Default::default()
    };
    let mut tasks = tokio::task::JoinSet::new();
    let (reconciler_engine, reconciler_stop) = (engine.clone(), shutdown.clone());
    tasks.spawn(async move {
        reconciler::run(reconciler_engine, reconcile, reconciler_stop).await;
        Ok::<(), anyhow::Error>(())
    });
    let (ticker_engine, ticker_stop) = (engine.clone(), shutdown.clone());
    let schedule_tick = settings.schedule_tick;
    tasks.spawn(async move {
        ticker_engine
            .run_schedules(schedule_tick, ticker_stop)
            .await;
        Ok(())
    });
    if let Some(concurrency) = worker {
        let (worker_engine, worker_stop) = (engine.clone(), shutdown.clone());
        tasks.spawn(async move {
            Ok(worker::run(worker_engine, queue, concurrency, worker_stop).await?)
        });
    }
    if let Some(config) = healer {
        let (healer, healer_stop) = (
            Healer::new(engine.clone(), toolkit.clone(), config),
            shutdown.clone(),
        );
        tasks.spawn(async move {
            healer.run(healer_stop).await;
            Ok(())
        });
    }
    let limiter = RateLimiter::new(settings.redis_url()?, &settings.queue, settings.rate_limits)
        .context("HYPERCODE_REDIS_URL, for the rate limiter")?;
    let mut state = AppState::new(engine, pool, limiter, shutdown.clone())
        .with_logs(toolkit.logs)
        .with_agents(agents)
        .with_payments(PaymentsState {
            payments,
            checkout,
            webhook_secret: settings.stripe_webhook_secret.clone(),
        });
    if let Some(url) = settings.internal_url.clone() {
        state = state.reached_at(url);
    }
    // `/metrics` on its own listener when HYPERCODE_METRICS_LISTEN is set, else on the API's.
    let handle = metrics::install()?;
    let state = match metrics::listen_address() {
        Some(listen) => {
            let router = hypercode_api::metrics::router(state.clone().with_metrics(handle));
            let stop = shutdown.clone();
            tasks.spawn(async move { metrics::serve(&listen, router, stop).await });
            state
        }
        None => state.with_metrics(handle),
    };
    let app = hypercode_api::app(state);
    // Printed on stdout so scripts and tests that listen on port 0 can find the address.
    println!("listening on http://{}", listener.local_addr()?);
    let stop = shutdown.clone();
    // With the peer's address: failed authentication is rate-limited per client address.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { stop.cancelled().await })
    .await?;
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

/// The process's one shutdown path: a token cancelled on SIGTERM or SIGINT, which every
/// long-lived part (workers, the reconciler, the HTTP server and its event streams) stops on.
fn shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let fire = token.clone();
    tokio::spawn(async move {
        // A signal whose handler cannot be installed never fires (rather than stopping the
        // process at once).
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut term) => {
                    term.recv().await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "no SIGTERM handler");
                    std::future::pending::<()>().await;
                }
            }
        };
        let interrupt = async {
            if let Err(e) = tokio::signal::ctrl_c().await {
                tracing::warn!(error = %e, "no SIGINT handler");
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = terminate => {}
            () = interrupt => {}
        }
        tracing::info!("shutdown signal received");
        fire.cancel();
    });
    token
}
