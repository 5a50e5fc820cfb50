//! Delivery core of `webhook_ext`: everything that does not need Postgres.
//!
//! The pgrx extension owns the tables, the transactions and the background worker; this crate
//! owns what can be tested without a database: input validation, the wire body and headers,
//! signatures, the retry schedule, the SSRF network policy, one HTTP attempt and the pool of
//! HTTP threads that keeps the Postgres main thread from ever blocking on the network.

pub mod clock;
pub mod columns;
pub mod databases;
pub mod envelope;
pub mod fair;
pub mod format;
pub mod health;
pub mod http;
pub mod pacing;
pub mod policy;
pub mod pool;
pub mod reparsed;
pub mod schedule;
pub mod signing;
pub mod validate;
pub mod walk;
pub mod wire;

pub use validate::InvalidField;

#[cfg(test)]
mod testing;
