//! The moving parts around the engine: the Redis queue that carries mission wake-ups
//! ([`queue`]), the apalis worker pool that runs them ([`worker`]) and reports its heartbeat to
//! Postgres ([`heartbeat`]), and the reconciler that re-sends wake-ups Postgres says are due but
//! Redis may have lost ([`reconciler`]).
//!
//! Redis only ever carries "look at mission X"; Postgres holds every fact. A wake-up delivered
//! twice is harmless (the second claim finds the mission taken or finished), and a wake-up
//! lost is re-sent by the reconciler, so a flushed Redis delays missions but loses none.

pub mod heartbeat;
pub mod queue;
pub mod reconciler;
pub mod worker;

/// Errors of the queue and the worker pool.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Redis could not be reached or refused a command.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The apalis worker stopped with an error.
    #[error("worker: {0}")]
    Worker(String),
}
