//! Each process's PostgreSQL pool: its size and time bounds, and the startup check that it fits
//! in the connections the server has left.
//!
//! Why the bounds differ by command: an API request has a client waiting and is answered 503
//! after 30 s (the API's request timeout), so `serve` gives up on a pooled connection after
//! [`SERVE_ACQUIRE_TIMEOUT`] and on a statement after [`SERVE_STATEMENT_TIMEOUT`]: while the
//! database is down or the pool is exhausted, requests fail fast with 503 and `Retry-After`
//! instead of hanging, and every database step of a request ends (done or rolled back) well
//! before the request timeout could answer for it. A worker has nobody waiting, and a run that
//! gives up on the database is only redelivered when its lease expires, so workers and the
//! one-shot commands keep sqlx's patient defaults.

use crate::config::Settings;
use anyhow::{Context as _, Result};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use std::time::Duration;

/// How long `serve` waits for a pooled connection.
const SERVE_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);

/// PostgreSQL's `statement_timeout` on `serve`'s connections.
const SERVE_STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a process does with its pool; this decides its defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// `serve`: requests wait on the pool, and the event feed holds one connection more.
    Serve,
    /// `worker`: runs missions; nobody waits on one query.
    Worker,
    /// `migrate`, `keys`: one command, then exit.
    Command,
}

impl Use {
    fn acquire_timeout(self) -> Option<Duration> {
        match self {
            Self::Serve => Some(SERVE_ACQUIRE_TIMEOUT),
            Self::Worker | Self::Command => None,
        }
    }

    fn statement_timeout(self) -> Option<Duration> {
        match self {
            Self::Serve => Some(SERVE_STATEMENT_TIMEOUT),
            Self::Worker | Self::Command => None,
        }
    }

    /// Connections the process opens outside its pool: `serve`'s event feed listens on a
    /// connection of its own.
    fn extra_connections(self) -> u32 {
        match self {
            Self::Serve => 1,
            Self::Worker | Self::Command => 0,
        }
    }
}

/// Connect the process's pool; long-running processes also check that it fits the server.
pub async fn connect(settings: &Settings, role: Use) -> Result<PgPool> {
    let mut options: PgConnectOptions = settings
        .database_url
        .parse()
        .context("DATABASE_URL is not a PostgreSQL URL")?;
    if let Some(timeout) = settings.db_statement_timeout.or(role.statement_timeout()) {
        // Appended after any `options` in the URL, so this one wins.
        options = options.options([("statement_timeout", format!("{}ms", timeout.as_millis()))]);
    }
    let mut pool = PgPoolOptions::new().max_connections(settings.db_pool);
    if let Some(timeout) = settings.db_acquire_timeout.or(role.acquire_timeout()) {
        pool = pool.acquire_timeout(timeout);
    }
    let pool = pool
        .connect_with(options)
        .await
        .context("connecting to DATABASE_URL")?;
    if role != Use::Command {
        check_fit(&pool, settings.db_pool, role.extra_connections()).await;
    }
    Ok(pool)
}

/// Log how many connections this process may open against what the server has left, and warn
/// when they cannot fit: past that point every process's queries queue for connections the
/// server refuses, and requests that cannot get one in time answer 503.
async fn check_fit(pool: &PgPool, configured: u32, extra: u32) {
    let limits = sqlx::query!(
        r#"
        select current_setting('max_connections')::int as "max_connections!",
               current_setting('superuser_reserved_connections')::int as "superuser_reserved!",
               coalesce(current_setting('reserved_connections', true)::int, 0) as "reserved!",
               (select count(*) from pg_stat_activity
                where backend_type = 'client backend' and pid <> pg_backend_pid())::int as "in_use!"
        "#
    )
    .fetch_one(pool)
    .await;
    let limits = match limits {
        Ok(limits) => limits,
        Err(e) => {
            tracing::warn!(error = %e, "could not read max_connections to check the database pool's size");
            return;
        }
    };
    let wanted = i64::from(configured) + i64::from(extra);
    // The connection running this query is one of ours, so it is not counted as in use.
    let free = i64::from(limits.max_connections)
        - i64::from(limits.superuser_reserved)
        - i64::from(limits.reserved)
        - i64::from(limits.in_use);
    let (max, in_use) = (limits.max_connections, limits.in_use);
    let reserved = limits.superuser_reserved + limits.reserved;
    let extra_note = if extra > 0 {
        format!(" + {extra} for the event feed")
    } else {
        String::new()
    };
    if wanted > free {
        tracing::warn!(
            pool = configured,
            wanted,
            max_connections = max,
            free,
            "the database pool cannot fit: this process may open {wanted} connections \
             (HYPERCODE_DB_POOL={configured}{extra_note}), but the server's max_connections={max} \
             leaves {free} ({reserved} reserved, {in_use} in use by others); queries will wait \
             for connections the server refuses. Lower HYPERCODE_DB_POOL (across all processes) \
             or raise max_connections"
        );
    } else {
        tracing::info!(
            pool = configured,
            wanted,
            max_connections = max,
            free,
            "database pool: up to {wanted} connections (HYPERCODE_DB_POOL={configured}{extra_note}); \
             the server's max_connections={max} leaves {free} ({reserved} reserved, {in_use} in use)"
        );
    }
}
