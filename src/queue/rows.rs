//! Rows of Windmill's tables as our types: a job from the projection that claim, adopt and load
//! share (`sql/job_projection.sql`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::Row;
use sqlx::postgres::PgRow;
use uuid::Uuid;

use super::{Error, Result};
use crate::domain::{FlowStep, Job, JobContext, JobId, JobKind, Language};

pub(super) fn get<'r, T>(row: &'r PgRow, column: &str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(column).map_err(Error::db("reading a column"))
}

pub(super) fn job_from_row(row: &PgRow) -> Result<Job> {
    let id = JobId(get(row, "id")?);
    let started_at: Option<DateTime<Utc>> = get(row, "started_at")?;
    let timeout: Option<i32> = get(row, "timeout")?;
    let parent: Option<Uuid> = get(row, "parent_job")?;
    let language: Option<String> = get(row, "language")?;
    let args: Option<Value> = get(row, "args")?;
    let prior_logs: Option<String> = get(row, "prior_logs")?;
    Ok(Job {
        id,
        workspace: get(row, "workspace_id")?,
        kind: JobKind::from_windmill(&get::<String>(row, "kind")?),
        tag: get(row, "tag")?,
        language: language.map(|l| Language::new(&l)),
        code: get(row, "code")?,
        lock: get(row, "lock")?,
        path: get(row, "runnable_path")?,
        entrypoint: get(row, "script_entrypoint_override")?,
        args: args.unwrap_or(Value::Null),
        timeout: timeout
            .and_then(|t| u64::try_from(t).ok())
            .filter(|t| *t > 0)
            .map(Duration::from_secs),
        priority: get(row, "priority")?,
        flow: match parent {
            Some(parent) => Some(FlowStep {
                parent: JobId(parent),
                root: get::<Option<Uuid>>(row, "root_job")?.map(JobId),
                index: get(row, "flow_step")?,
                step_id: get(row, "flow_step_id")?,
            }),
            None => None,
        },
        permissioned_as: get(row, "permissioned_as")?,
        permissioned_as_email: get(row, "permissioned_as_email")?,
        created_by: get(row, "created_by")?,
        script_envs: get(row, "envs")?,
        created_at: get(row, "created_at")?,
        // A queued job (`render <job id>`) has not started: its creation stands in, so that
        // rendering it twice gives the same objects.
        started_at: match started_at {
            Some(at) => at,
            None => get(row, "created_at")?,
        },
        prior_output_lines: prior_logs.as_deref().map_or(0, super::output_lines),
        failed_at_claim: None,
        preprocess: get(row, "preprocess")?,
        context: JobContext {
            schedule_path: get(row, "schedule_path")?,
            flow_path: get(row, "flow_path")?,
            innermost_root: get::<Option<Uuid>>(row, "flow_innermost_root_job")?.map(JobId),
            runnable_id: get(row, "runnable_id")?,
            scheduled_for: get(row, "scheduled_for")?,
            end_user_email: get(row, "end_user_email")?,
            base_url: get(row, "base_url")?,
            workspace_envs: serde_json::from_value(get::<Value>(row, "workspace_envs")?).map_err(
                |e| Error::BadRow {
                    id,
                    message: format!("workspace_env values must be text: {e}"),
                },
            )?,
            cache_ttl: get(row, "cache_ttl")?,
            cache_args: match get::<Option<Value>>(row, "cache_args")? {
                Some(args) => serde_json::from_value(args).map_err(|e| Error::BadRow {
                    id,
                    message: format!("reading the args for the cache key: {e}"),
                })?,
                None => Vec::new(),
            },
        },
    })
}
