//! `hypercode schedule ...`: manage cron schedules over the server's HTTP API (viewers list and
//! show; operators and admins create, pause, resume, trigger and delete). An unknown schedule is
//! the server's 404, so it exits 1 like every refused request.

use super::{emit, encode_segment, read_input, render, with_client, Client, Failure, Outcome};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Value};
use std::process::ExitCode;

/// `hypercode schedule`: options shared by every schedule subcommand.
#[derive(Debug, Args)]
pub struct ScheduleArgs {
    /// Print the server's raw JSON response instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: ScheduleCommand,
}

/// The schedule subcommands.
#[derive(Debug, Subcommand)]
enum ScheduleCommand {
    /// List every schedule: its cron, workflow, state and next tick.
    List,
    /// Create a schedule from a JSON file (`-` for standard input): the body of
    /// `POST /api/v1/schedules` (`name`, `cron`, `timezone`, `workflow`, `input`, `overlap`,
    /// `catchup`, `enabled`).
    Create {
        /// The schedule's JSON.
        #[arg(long)]
        file: String,
    },
    /// Show a schedule, its skipped ticks and its newest missions.
    Show {
        /// The schedule's name.
        name: String,
    },
    /// Pause a schedule: no tick fires until it is resumed.
    Pause {
        /// The schedule's name.
        name: String,
    },
    /// Resume a paused schedule from its next tick (ticks passed while paused are not caught up).
    Resume {
        /// The schedule's name.
        name: String,
    },
    /// Start one mission of the schedule now, whatever its cron, state and overlap policy.
    Trigger {
        /// The schedule's name.
        name: String,
    },
    /// Delete a schedule; the missions it started stay.
    Delete {
        /// The schedule's name.
        name: String,
    },
}

/// Run a schedule subcommand; returns the process's exit code.
pub async fn run(args: ScheduleArgs) -> ExitCode {
    with_client(|client| async move { execute(&client, args.command, args.json).await }).await
}

async fn execute(client: &Client, command: ScheduleCommand, json: bool) -> Outcome<()> {
    match command {
        ScheduleCommand::List => {
            let (_, list) = client
                .call(Method::GET, "/api/v1/schedules", &[], None)
                .await?;
            emit(json, &list, || render::schedule_list(&list));
        }
        ScheduleCommand::Create { file } => {
            let body: Value = serde_json::from_str(&read_input(&file)?)
                .map_err(|e| Failure::Usage(format!("the schedule is not valid JSON: {e}")))?;
            let (_, created) = client
                .call(Method::POST, "/api/v1/schedules", &[], Some(&body))
                .await?;
            emit(json, &created, || render::schedule(&created));
        }
        ScheduleCommand::Show { name } => {
            let (_, schedule) = client
                .call(Method::GET, &schedule_path(&name, ""), &[], None)
                .await?;
            emit(json, &schedule, || render::schedule(&schedule));
        }
        ScheduleCommand::Pause { name } => set_enabled(client, &name, false, json).await?,
        ScheduleCommand::Resume { name } => set_enabled(client, &name, true, json).await?,
        ScheduleCommand::Trigger { name } => {
            let (_, started) = client
                .call(Method::POST, &schedule_path(&name, "/trigger"), &[], None)
                .await?;
            emit(json, &started, || {
                format!("{}\n", render::text(&started["id"]))
            });
        }
        ScheduleCommand::Delete { name } => {
            client
                .call(Method::DELETE, &schedule_path(&name, ""), &[], None)
                .await?;
            let deleted = json!({ "deleted": name });
            emit(json, &deleted, || format!("deleted schedule `{name}`\n"));
        }
    }
    Ok(())
}

/// Pause or resume through `PATCH`.
async fn set_enabled(client: &Client, name: &str, enabled: bool, json: bool) -> Outcome<()> {
    let body = json!({ "enabled": enabled });
    let (_, schedule) = client
        .call(Method::PATCH, &schedule_path(name, ""), &[], Some(&body))
        .await?;
    emit(json, &schedule, || render::schedule(&schedule));
    Ok(())
}

/// `/api/v1/schedules/{name}{rest}`.
fn schedule_path(name: &str, rest: &str) -> String {
    format!("/api/v1/schedules/{}{rest}", encode_segment(name))
}
