//! flext-kubernetes: a Windmill worker group that runs each job as a Kubernetes Job.
//!
//! # Layout
//! - [`backoff`]: capped, jittered retry delays (backon).
//! - [`domain`]: job ids, kinds, languages, outcomes, failure categories — no I/O types.
//! - [`config`]: YAML (FlexCore runtime schema and ours), env overrides, redacted secrets.
//! - [`queue`]: the `Queue` seam — claim, heartbeat, logs, hand-back, fix-up, registration on
//!   Windmill's Postgres (`queue/sql/*.sql`), plus startup schema and role checks.
//! - [`logs`]: per-job log sinks and the hub that batches them into `job_logs`.
//! - [`executor`]: the `Executor` seam — run a claimed job to an outcome.
//! - [`hints`]: per-job pod settings from worker defaults, tag profiles, `k8s:` script
//!   annotations and Windmill's fields, within the admin's limits; each value with its source.
//! - [`worker`]: permits, the claim loop, the batched heartbeat, timeouts, hand-back, fix-ups,
//!   two-phase shutdown.
//! - [`runner`]: the in-pod runner (`flext-kubernetes runner`) and the language wrappers.
//! - [`trailer`]: the nonce-framed result the runner prints and the worker reads from the pod log.
//! - [`windmill_api`]: Windmill's HTTP API — job tokens, `$var:`/`$res:` arguments.
//! - [`telemetry`]: process logs and host figures.
//! - [`units`]: durations and byte sizes as the config writes them (read by `config` and `hints`).
//! - [`cli`]: the `check` and `run` commands (`main.rs` is glue only).

pub mod backoff;
pub mod cli;
pub mod config;
pub mod domain;
pub mod executor;
pub mod hints;
pub mod logs;
pub mod queue;
pub mod runner;
pub mod telemetry;
pub mod trailer;
pub mod units;
pub mod windmill_api;
pub mod worker;

#[cfg(test)]
mod testing;
