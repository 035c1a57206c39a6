//! flext-kubernetes: a Windmill worker group that runs each job as a Kubernetes Job.
//!
//! # A job's path, and where each step lives
//! 1. **Claim** — `worker/claim.rs` takes a permit, then [`queue`] claims with
//!    `queue/sql/claim.sql`; kinds we never run go to stock workers' tags
//!    (`queue/sql/route_elsewhere.sql`). At start, `worker/adopt.rs` takes back what a stopped run
//!    left.
//! 2. **Run** — `worker/job.rs` runs the job through the [`executor`] within its timeout. The
//!    Kubernetes executor (`executor/kubernetes/`) resolves pod settings ([`hints`]), a job token
//!    and `$var:`/`$res:` args ([`windmill_api`]), renders the objects (`render/`), creates them
//!    (`objects.rs`) and drives one attempt as a state machine (`attempt.rs`) over the shared pod
//!    watch (`watch.rs`, `classify.rs`). In the pod, the [`runner`] runs the script.
//! 3. **Follow** — `executor/kubernetes/follow.rs` follows the pod log into the job log
//!    ([`logs`]), reads the [`trailer`] and live memory peaks.
//! 4. **Outcome** — `executor/kubernetes/outcome.rs` turns the ended pod into success or a failure
//!    with its category ([`domain`]).
//! 5. **Hand-back** — `worker/job.rs` hands the outcome back ([`queue`],
//!    `queue/sql/hand_back_*.sql`), then the executor removes its objects.
//! 6. **Heartbeat** — `worker/heartbeat.rs` pings every running job in one statement and reads back
//!    cancels; it also refreshes `worker_ping` (`worker/occupancy.rs`).
//! 7. **Fix-up** — `worker/fix_up.rs` restores what a native run shows once Windmill completed the
//!    job (`queue/sql/fix_up.sql`).
//!
//! # Modules
//! - [`domain`]: job ids, kinds, the language table, outcomes, failure categories — no I/O types.
//! - [`config`]: YAML (FlexCore runtime schema and ours), env overrides, redacted secrets.
//! - [`units`]: durations and byte sizes as the config writes them (read by `config` and `hints`).
//! - [`queue`]: the `Queue` seam on Windmill's Postgres (every statement in `queue/sql/`), plus
//!   startup schema and role checks.
//! - [`logs`]: per-job log sinks and the hub that batches them into `job_logs`.
//! - [`worker`]: permits, claim, one job's life, heartbeat, adoption, fix-ups, two-phase shutdown.
//! - [`executor`]: the `Executor` seam — run a claimed job to an outcome (in process, or on
//!   Kubernetes).
//! - [`hints`]: per-job pod settings from worker defaults, tag profiles, `k8s:` script
//!   annotations and Windmill's fields, within the admin's limits; each value with its source.
//! - [`runner`]: the in-pod runner (`flext-kubernetes runner`) and the language wrappers.
//! - [`trailer`]: the nonce-framed result the runner prints and the worker reads from the pod log.
//! - [`windmill_api`]: Windmill's HTTP API — job tokens, `$var:`/`$res:` arguments.
//! - [`backoff`]: capped, jittered retry delays (backon).
//! - [`telemetry`]: process logs and host figures.
//! - [`cli`]: the commands (`check`, `run`, `hints`, `render`, `runner`; `main.rs` is glue
//!   only).

pub mod backoff;
pub mod cli;
pub mod config;
pub mod domain;
pub mod executor;
pub mod handover;
pub mod hints;
pub mod http;
pub mod logs;
pub mod metrics;
pub mod plugins;
pub mod queue;
pub mod runner;
pub mod telemetry;
pub mod trailer;
pub mod units;
pub mod windmill_api;
pub mod worker;

#[cfg(test)]
mod testing;
