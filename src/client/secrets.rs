//! `hypercode secrets ...`: manage the server's secrets over its HTTP API (an admin key is
//! needed). A value is read from standard input or a file, never from the command line, where
//! it would sit in the shell's history and the process list; no command prints a value.

use super::{emit, encode_segment, render, with_client, Client, Failure, Outcome};
use clap::{Args, Subcommand};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::io::Read as _;
use std::process::ExitCode;

/// `hypercode secrets`: options shared by every secrets subcommand.
#[derive(Debug, Args)]
pub struct SecretsArgs {
    /// Print the server's raw JSON response instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: SecretsCommand,
}

/// The secrets subcommands.
#[derive(Debug, Subcommand)]
enum SecretsCommand {
    /// Create or replace a secret. The value is read from standard input (or --value-file);
    /// one trailing newline is dropped.
    Set {
        /// The secret's name, as plans reference it: `{{secrets.NAME}}`.
        name: String,
        /// Read the value from this file instead of standard input.
        #[arg(long)]
        value_file: Option<String>,
    },
    /// List the secrets' names and times (never their values).
    List,
    /// Delete a secret; missions that still reference it fail that step.
    Delete {
        /// The secret's name.
        name: String,
    },
}

/// Run a secrets subcommand; returns the process's exit code.
pub async fn run(args: SecretsArgs) -> ExitCode {
    with_client(|client| async move { execute(&client, args.command, args.json).await }).await
}

async fn execute(client: &Client, command: SecretsCommand, json: bool) -> Outcome<()> {
    match command {
        SecretsCommand::Set { name, value_file } => {
            let value = read_value(value_file.as_deref())?;
            let body = json!({ "value": value });
            let (status, secret) = client
                .call(Method::PUT, &secret_path(&name), &[], Some(&body))
                .await?;
            emit(json, &secret, || {
                let done = if status == StatusCode::CREATED {
                    "created"
                } else {
                    "replaced"
                };
                format!("{done} secret `{}`\n", name.trim())
            });
        }
        SecretsCommand::List => {
            let (_, list) = client
                .call(Method::GET, "/api/v1/secrets", &[], None)
                .await?;
            emit(json, &list, || render::secret_list(&list));
        }
        SecretsCommand::Delete { name } => {
            client
                .call(Method::DELETE, &secret_path(&name), &[], None)
                .await?;
            let deleted = json!({ "deleted": name.trim() });
            emit(json, &deleted, || {
                format!("deleted secret `{}`\n", name.trim())
            });
        }
    }
    Ok(())
}

/// `/api/v1/secrets/{name}`.
fn secret_path(name: &str) -> String {
    format!("/api/v1/secrets/{}", encode_segment(name.trim()))
}

/// The value from `file`, or from standard input, without one trailing newline (what `echo`
/// and most editors add); an empty value is refused as a likely mistake.
fn read_value(file: Option<&str>) -> Outcome<String> {
    let mut value = String::new();
    match file {
        Some(file) => {
            value = std::fs::read_to_string(file)
                .map_err(|e| Failure::Usage(format!("reading {file}: {e}")))?
        }
        None => {
            std::io::stdin()
                .read_to_string(&mut value)
                .map_err(|e| Failure::Usage(format!("reading standard input: {e}")))?;
        }
    }
    let trimmed = value
        .strip_suffix("\r\n")
        .or_else(|| value.strip_suffix('\n'))
        .unwrap_or(&value);
    if trimmed.is_empty() {
        return Err(Failure::Usage(
            "the secret's value is empty; pipe it on standard input or use --value-file".to_owned(),
        ));
    }
    Ok(trimmed.to_owned())
}
