//! Startup checks: is this Windmill's database, of the shape we expect, and may our role change
//! its jobs? Each failure names the table, column or privilege and what to do about it.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::{PgPool, Row};

use super::{Error, Result, sql};

/// Columns we read or write, with Postgres' `udt_name` of their type (`None`: any type) and
/// whether they must be NOT NULL.
type Columns = &'static [(&'static str, Option<&'static str>)];

const EXPECTED: &[(&str, Columns)] = &[
    (
        "v2_job",
        &[
            ("id", Some("uuid")),
            ("workspace_id", Some("varchar")),
            ("kind", Some("job_kind")),
            ("tag", Some("varchar")),
            ("script_lang", Some("script_lang")),
            ("raw_code", Some("text")),
            ("raw_lock", Some("text")),
            ("runnable_id", Some("int8")),
            ("runnable_path", Some("varchar")),
            ("script_entrypoint_override", Some("varchar")),
            ("args", Some("jsonb")),
            ("timeout", Some("int4")),
            ("priority", Some("int2")),
            ("cache_ttl", Some("int4")),
            ("concurrent_limit", Some("int4")),
            ("concurrency_time_window_s", Some("int4")),
            ("parent_job", Some("uuid")),
            ("root_job", Some("uuid")),
            ("flow_innermost_root_job", Some("uuid")),
            ("trigger", Some("varchar")),
            ("trigger_kind", Some("job_trigger_kind")),
            ("flow_step_id", Some("varchar")),
            ("same_worker", Some("bool")),
            ("created_at", Some("timestamptz")),
            ("created_by", Some("varchar")),
            ("permissioned_as", Some("varchar")),
            ("permissioned_as_email", Some("varchar")),
            ("pre_run_error", Some("text")),
        ],
    ),
    (
        "v2_job_queue",
        &[
            ("id", Some("uuid")),
            ("workspace_id", Some("varchar")),
            ("started_at", Some("timestamptz")),
            ("scheduled_for", Some("timestamptz")),
            ("running", Some("bool")),
            ("canceled_by", Some("varchar")),
            ("canceled_reason", Some("text")),
            ("suspend_until", Some("timestamptz")),
            ("tag", Some("varchar")),
            ("priority", Some("int2")),
            ("worker", Some("varchar")),
            ("runnable_settings_handle", Some("int8")),
        ],
    ),
    (
        "v2_job_runtime",
        &[
            ("id", Some("uuid")),
            ("ping", Some("timestamptz")),
            ("memory_peak", Some("int4")),
        ],
    ),
    (
        "v2_job_status",
        &[("id", Some("uuid")), ("flow_status", Some("jsonb"))],
    ),
    (
        "v2_job_completed",
        &[
            ("id", Some("uuid")),
            ("duration_ms", Some("int8")),
            ("result", Some("jsonb")),
            ("status", Some("job_status")),
            ("started_at", Some("timestamptz")),
            ("completed_at", Some("timestamptz")),
            ("memory_peak", Some("int4")),
            ("worker", Some("varchar")),
        ],
    ),
    (
        "job_logs",
        &[
            ("job_id", Some("uuid")),
            ("workspace_id", Some("varchar")),
            ("logs", Some("text")),
        ],
    ),
    (
        "worker_ping",
        &[
            ("worker", Some("varchar")),
            ("worker_instance", Some("varchar")),
            ("ping_at", Some("timestamptz")),
            ("started_at", Some("timestamptz")),
            ("custom_tags", Some("_text")),
            ("worker_group", Some("varchar")),
            ("wm_version", Some("varchar")),
            ("current_job_id", Some("uuid")),
            ("current_job_workspace_id", Some("varchar")),
            ("jobs_executed", Some("int4")),
            ("occupancy_rate", None),
            ("occupancy_rate_15s", None),
            ("occupancy_rate_5m", None),
            ("occupancy_rate_30m", None),
            ("vcpus", Some("int8")),
            ("memory", Some("int8")),
            ("memory_usage", Some("int8")),
            ("job_isolation", None),
            ("native_mode", Some("bool")),
            ("ip", None),
        ],
    ),
    (
        "script",
        &[
            ("workspace_id", Some("varchar")),
            ("hash", Some("int8")),
            ("content", Some("text")),
            ("lock", Some("text")),
            ("language", Some("script_lang")),
            ("envs", None),
        ],
    ),
    (
        "job_perms",
        &[
            ("job_id", Some("uuid")),
            ("end_user_email", Some("varchar")),
        ],
    ),
    (
        "global_settings",
        &[("name", Some("varchar")), ("value", Some("jsonb"))],
    ),
    (
        "workspace",
        &[
            ("id", Some("varchar")),
            ("parent_workspace_id", Some("varchar")),
        ],
    ),
    (
        "resource",
        &[
            ("workspace_id", Some("varchar")),
            ("path", Some("varchar")),
            ("value", Some("jsonb")),
            ("resource_type", Some("varchar")),
        ],
    ),
    (
        "runnable_settings",
        &[
            ("hash", Some("int8")),
            ("concurrency_settings", Some("int8")),
            ("debouncing_settings", Some("int8")),
        ],
    ),
    (
        "debouncing_settings",
        &[
            ("hash", Some("int8")),
            ("debounce_delay_s", Some("int4")),
            ("debounce_args_to_accumulate", Some("_text")),
        ],
    ),
    ("debounce_key", &[("job_id", Some("uuid"))]),
    (
        "v2_job_debounce_batch",
        &[("id", Some("uuid")), ("debounce_batch", Some("int8"))],
    ),
    (
        "concurrency_settings",
        &[
            ("hash", Some("int8")),
            ("concurrent_limit", Some("int4")),
            ("concurrency_time_window_s", Some("int4")),
        ],
    ),
    (
        "concurrency_counter",
        &[
            ("concurrency_id", Some("varchar")),
            ("job_uuids", Some("jsonb")),
        ],
    ),
    (
        "concurrency_key",
        &[
            ("key", Some("varchar")),
            ("job_id", Some("uuid")),
            ("ended_at", Some("timestamptz")),
        ],
    ),
    (
        "workspace_env",
        &[
            ("workspace_id", Some("varchar")),
            ("name", Some("varchar")),
            ("value", Some("varchar")),
        ],
    ),
    (
        "flow_node",
        &[
            ("id", Some("int8")),
            ("code", Some("text")),
            ("lock", Some("text")),
        ],
    ),
];

/// Enum labels our statements name.
const EXPECTED_ENUM_LABELS: &[(&str, &[&str])] = &[
    (
        "job_kind",
        &["script", "preview", "flowscript", "identity", "flow"],
    ),
    ("job_status", &["success", "failure", "canceled"]),
];

/// Checks that the connected database has the Windmill tables, columns and enums we use.
pub async fn check_schema(pool: &PgPool) -> Result<()> {
    let tables: Vec<&str> = EXPECTED.iter().map(|(t, _)| *t).collect();
    let rows = sqlx::query(sql::CHECK_COLUMNS)
        .bind(&tables)
        .fetch_all(pool)
        .await
        .map_err(Error::db("reading the schema"))?;
    let mut found: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for row in &rows {
        let t: String = row.try_get("t").map_err(Error::db("reading the schema"))?;
        let c: String = row.try_get("c").map_err(Error::db("reading the schema"))?;
        let u: String = row.try_get("u").map_err(Error::db("reading the schema"))?;
        found.entry(t).or_default().insert(c, u);
    }
    let mut problems = Vec::new();
    for (table, columns) in EXPECTED {
        let Some(have) = found.get(*table) else {
            problems.push(format!("table `{table}` is missing"));
            continue;
        };
        for (column, udt) in *columns {
            match (have.get(*column), udt) {
                (None, _) => problems.push(format!("column `{table}.{column}` is missing")),
                (Some(actual), Some(expected)) if actual != expected => {
                    problems.push(format!(
                        "column `{table}.{column}` is `{actual}`, expected `{expected}`"
                    ));
                }
                _ => {}
            }
        }
    }
    for (enum_name, labels) in EXPECTED_ENUM_LABELS {
        let have: BTreeSet<String> = sqlx::query_scalar(sql::CHECK_ENUM_LABELS)
            .bind(enum_name)
            .fetch_all(pool)
            .await
            .map_err(Error::db("reading enum labels"))?
            .into_iter()
            .collect();
        if have.is_empty() {
            problems.push(format!("enum type `{enum_name}` is missing"));
            continue;
        }
        for label in *labels {
            if !have.contains(*label) {
                problems.push(format!("enum `{enum_name}` lacks the value `{label}`"));
            }
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    let database: String = sqlx::query_scalar(sql::CURRENT_DATABASE)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|_| "?".into());
    Err(Error::Schema(format!(
        "database `{database}` does not have the Windmill schema this worker needs: {}. Point FLEXT_DATABASE_URL at \
         Windmill's own database (with the v2_job tables, Windmill 1.5xx or later)",
        problems.join("; ")
    )))
}

/// Checks that our role can read and change `v2_job` despite its row-level security, and has the
/// table privileges the queue statements need.
pub async fn check_role(pool: &PgPool) -> Result<()> {
    let row = sqlx::query(sql::CHECK_ROLE)
        .fetch_one(pool)
        .await
        .map_err(Error::db("reading our role"))?;
    let role: String = row.try_get("role").map_err(Error::db("reading our role"))?;
    let superuser: bool = row
        .try_get("rolsuper")
        .map_err(Error::db("reading our role"))?;
    let bypass: bool = row
        .try_get("rolbypassrls")
        .map_err(Error::db("reading our role"))?;

    for table in ["v2_job", "script"] {
        let row = sqlx::query(sql::CHECK_ROW_SECURITY)
            .bind(table)
            .fetch_one(pool)
            .await
            .map_err(Error::db("reading row-level security settings"))?;
        let rls: bool = row
            .try_get("rls")
            .map_err(Error::db("reading row-level security settings"))?;
        let forced: bool = row
            .try_get("forced")
            .map_err(Error::db("reading row-level security settings"))?;
        let owner: bool = row
            .try_get("owner")
            .map_err(Error::db("reading row-level security settings"))?;
        let owner_name: String = row
            .try_get("owner_name")
            .map_err(Error::db("reading row-level security settings"))?;
        let exempt = superuser || bypass || (owner && !forced);
        if rls && !exempt {
            return Err(Error::Permission(format!(
                "database role `{role}` cannot see or update Windmill's jobs: row-level security is on for `{table}` and \
                 `{role}` is neither its owner (`{owner_name}`), a superuser, nor BYPASSRLS, so claims would find nothing \
                 and hand-backs would silently change 0 rows. Connect as Windmill's database owner, or run \
                 `ALTER ROLE \"{role}\" BYPASSRLS;` as a superuser"
            )));
        }
    }

    let privileges: &[(&str, &str)] = &[
        ("v2_job", "SELECT, UPDATE"),
        ("v2_job_queue", "SELECT, UPDATE"),
        ("v2_job_runtime", "SELECT, INSERT, UPDATE"),
        ("v2_job_status", "SELECT, UPDATE"),
        ("v2_job_completed", "SELECT, UPDATE"),
        ("job_logs", "SELECT, INSERT, UPDATE"),
        ("worker_ping", "SELECT, INSERT, UPDATE"),
        ("script", "SELECT"),
        ("flow_node", "SELECT"),
        ("job_perms", "SELECT"),
        ("global_settings", "SELECT"),
        ("workspace", "SELECT"),
        ("workspace_env", "SELECT"),
        ("resource", "SELECT, INSERT, UPDATE"),
        ("runnable_settings", "SELECT"),
        ("concurrency_settings", "SELECT"),
        ("concurrency_counter", "SELECT, INSERT, UPDATE"),
        ("concurrency_key", "SELECT"),
        ("debouncing_settings", "SELECT"),
        ("debounce_key", "SELECT, DELETE"),
        ("v2_job_debounce_batch", "SELECT"),
    ];
    let mut missing = Vec::new();
    for (table, needed) in privileges {
        // has_table_privilege with a list answers "any of"; we need each one.
        for privilege in needed.split(", ") {
            let ok: bool = sqlx::query_scalar(sql::CHECK_PRIVILEGE)
                .bind(table)
                .bind(privilege)
                .fetch_one(pool)
                .await
                .map_err(Error::db("reading table privileges"))?;
            if !ok {
                missing.push(format!("{privilege} on {table}"));
            }
        }
    }
    if !missing.is_empty() {
        return Err(Error::Permission(format!(
            "database role `{role}` lacks privileges the worker needs: {}. Connect as Windmill's database owner, or GRANT them",
            missing.join(", ")
        )));
    }
    Ok(())
}
