//! The command line: `check` and `run`.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use crate::config::{Config, ExecutorKind, ProcessEnv};
use crate::executor::{Executor, InProcessExecutor};
use crate::queue::{PgQueue, Queue, schema};
use crate::worker::Worker;

/// Runs Windmill jobs as Kubernetes Jobs.
#[derive(Debug, Parser)]
#[command(name = "flext-kubernetes", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a config, connect to Windmill's database, check its schema and our role, and print
    /// the effective settings (secrets redacted).
    Check {
        /// The worker config (YAML).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Run the worker until SIGTERM/SIGINT (a second signal exits at once).
    Run {
        /// The worker config (YAML).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

/// Loads the config for a command, with the file named in errors.
pub fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
    Config::load(path, &ProcessEnv).with_context(|| match path {
        Some(p) => format!("config {}", p.display()),
        None => "config (no file; defaults and environment)".to_owned(),
    })
}

/// Connects and runs the startup checks: unreachable database, wrong schema, weak role.
pub async fn connect_checked(config: &Config) -> anyhow::Result<PgQueue> {
    let url = config.require_database_url()?;
    let db = &config.settings.database;
    let queue = PgQueue::connect(url, db.max_connections, db.connect_timeout.0).await?;
    schema::check_schema(queue.pool()).await?;
    schema::check_role(queue.pool()).await?;
    Ok(queue)
}

fn executor_for(config: &Config) -> anyhow::Result<Executor> {
    match config.settings.executor.kind {
        ExecutorKind::Echo => Ok(Executor::InProcess(InProcessExecutor::echo(&[
            "python3", "bash", "bun", "deno", "nativets", "go",
        ]))),
        ExecutorKind::Kubernetes => bail!(
            "executor.type `kubernetes` is not available in this build yet; set `executor: {{type: echo}}` \
             (or FLEXT__EXECUTOR__TYPE=echo) to exercise the queue path without a cluster"
        ),
    }
}

/// `check`.
pub async fn check(path: Option<PathBuf>) -> anyhow::Result<()> {
    let config = load_config(path.as_deref())?;
    print!("{}", config.to_redacted_yaml());
    let queue = connect_checked(&config).await?;
    let queued: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM v2_job_queue WHERE running = false AND tag = ANY($1)",
    )
    .bind(&config.settings.windmill.tags)
    .fetch_one(queue.pool())
    .await
    .context("counting queued jobs")?;
    println!("# database: reachable, Windmill schema OK, role may claim and hand back jobs");
    println!(
        "# would run as worker `{}` in group `{}`",
        config.worker_name(),
        config.settings.windmill.worker_group
    );
    println!(
        "# would claim tags {:?} ({queued} job(s) waiting now), hand back on tag `{}`",
        config.settings.windmill.tags, config.settings.windmill.finalize_tag
    );
    match executor_for(&config) {
        Ok(executor) => println!("# executor: {executor:?}"),
        Err(error) => println!("# executor: {error}"),
    }
    Ok(())
}

/// `run`.
pub async fn run(path: Option<PathBuf>) -> anyhow::Result<()> {
    let config = load_config(path.as_deref())?;
    crate::telemetry::init(&config.settings.telemetry);
    let executor = executor_for(&config)?;
    let queue = connect_checked(&config).await?;
    let handle = Worker::new(config, Queue::Postgres(queue), executor).spawn();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!(
        "signal received: no new claims; running jobs get the shutdown grace (signal again to leave them now)"
    );
    handle.stop();
    let control = handle.control();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::warn!("second signal: leaving running jobs to the next worker");
        control.abandon();
    });
    handle.wait().await;
    Ok(())
}
