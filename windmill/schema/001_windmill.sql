-- The part of Windmill's database that flext-kubernetes touches, written by us from the schema facts
-- in shared/windmill-protocol.md (Windmill's v2_* job tables, 2026). This is a test fixture: on a
-- real instance Windmill owns these objects and we never create them.
--
-- Loaded into an empty database by scripts/pg (as the database owner). Column names, types,
-- nullability and defaults match the contract column for column.

CREATE EXTENSION IF NOT EXISTS pgcrypto;

CREATE TYPE job_kind AS ENUM (
    'script', 'preview', 'flow', 'dependencies', 'flowpreview', 'script_hub', 'identity',
    'flowdependencies', 'http', 'graphql', 'postgresql', 'noop', 'appdependencies',
    'deploymentcallback', 'singlescriptflow', 'singlestepflow', 'flowscript', 'flownode',
    'appscript', 'aiagent', 'unassigned_script', 'unassigned_flow', 'unassigned_singlestepflow'
);

CREATE TYPE script_lang AS ENUM (
    'python3', 'deno', 'go', 'bash', 'postgresql', 'nativets', 'bun', 'mysql', 'bigquery',
    'snowflake', 'graphql', 'powershell', 'mssql', 'php', 'bunnative', 'rust', 'ansible', 'csharp',
    'oracledb', 'nu', 'java', 'duckdb', 'ruby'
);

CREATE TYPE job_status AS ENUM ('success', 'failure', 'canceled', 'skipped');

CREATE TYPE job_trigger_kind AS ENUM (
    'webhook', 'http', 'websocket', 'kafka', 'email', 'nats', 'schedule', 'app', 'ui', 'postgres',
    'sqs', 'gcp', 'mqtt'
);

CREATE TABLE v2_job (
    id                          uuid PRIMARY KEY,
    workspace_id                varchar(50) NOT NULL,
    kind                        job_kind NOT NULL DEFAULT 'script',
    tag                         varchar(50) NOT NULL DEFAULT 'other',
    script_lang                 script_lang DEFAULT 'python3',
    raw_code                    text,
    raw_lock                    text,
    raw_flow                    jsonb,
    runnable_id                 bigint,
    runnable_path               varchar(255),
    script_entrypoint_override  varchar(255),
    args                        jsonb,
    timeout                     int,
    priority                    smallint,
    cache_ttl                   int,
    concurrent_limit            int,
    concurrency_time_window_s   int,
    parent_job                  uuid,
    root_job                    uuid,
    flow_innermost_root_job     uuid,
    flow_step                   int,
    flow_step_id                varchar(255),
    same_worker                 bool NOT NULL DEFAULT false,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    created_by                  varchar(255),
    permissioned_as             varchar(55),
    permissioned_as_email       varchar(255),
    trigger                     varchar(255),
    trigger_kind                job_trigger_kind,
    visible_to_owner            bool,
    preprocessed                bool,
    labels                      text[],
    pre_run_error               text
);

CREATE TABLE v2_job_queue (
    id                          uuid PRIMARY KEY,
    workspace_id                varchar(50) NOT NULL,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    started_at                  timestamptz,
    scheduled_for               timestamptz NOT NULL,
    running                     bool NOT NULL DEFAULT false,
    canceled_by                 varchar(255),
    canceled_reason             text,
    suspend                     int NOT NULL DEFAULT 0,
    suspend_until               timestamptz,
    tag                         varchar(255) NOT NULL DEFAULT 'other',
    priority                    smallint,
    worker                      varchar(255),
    extras                      jsonb,
    runnable_settings_handle    bigint,
    cache_ignore_s3_path        bool
);

CREATE INDEX queue_sort_v2 ON v2_job_queue (priority DESC NULLS LAST, scheduled_for, tag)
    WHERE running = false;

CREATE TABLE v2_job_runtime (
    id          uuid PRIMARY KEY REFERENCES v2_job_queue (id) ON DELETE CASCADE,
    ping        timestamptz DEFAULT now(),
    memory_peak int
);

CREATE TABLE v2_job_status (
    id                      uuid PRIMARY KEY REFERENCES v2_job_queue (id) ON DELETE CASCADE,
    flow_status             jsonb,
    flow_leaf_jobs          jsonb,
    workflow_as_code_status jsonb
);

CREATE TABLE v2_job_completed (
    id              uuid PRIMARY KEY,
    workspace_id    varchar(50) NOT NULL,
    duration_ms     bigint NOT NULL,
    result          jsonb,
    deleted         bool NOT NULL DEFAULT false,
    canceled_by     varchar(50),
    canceled_reason text,
    flow_status     jsonb,
    started_at      timestamptz DEFAULT now(),
    memory_peak     int,
    status          job_status NOT NULL,
    completed_at    timestamptz NOT NULL DEFAULT now(),
    worker          varchar(255),
    workflow_as_code_status jsonb,
    result_columns  text[],
    retries         uuid[],
    extras          jsonb
);

CREATE INDEX ix_completed_completed_at ON v2_job_completed (completed_at DESC);

CREATE TABLE job_logs (
    job_id          uuid PRIMARY KEY,
    workspace_id    varchar(255),
    created_at      timestamptz DEFAULT now(),
    logs            text,
    log_offset      int NOT NULL DEFAULT 0,
    log_file_index  text[]
);

CREATE TABLE job_perms (
    job_id          uuid PRIMARY KEY,
    email           varchar(255) NOT NULL,
    username        varchar(50) NOT NULL,
    is_admin        bool NOT NULL,
    is_operator     bool NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    workspace_id    varchar(50) NOT NULL,
    groups          text[] NOT NULL,
    folders         jsonb[] NOT NULL,
    end_user_email  varchar(255)
);

CREATE TABLE worker_ping (
    worker              varchar(255) PRIMARY KEY,
    worker_instance     varchar(255) NOT NULL,
    ping_at             timestamptz NOT NULL DEFAULT now(),
    started_at          timestamptz NOT NULL DEFAULT now(),
    ip                  varchar(50) NOT NULL DEFAULT 'NO IP',
    jobs_executed       int NOT NULL DEFAULT 0,
    custom_tags         text[],
    worker_group        varchar(255) NOT NULL DEFAULT 'default',
    wm_version          varchar(255) NOT NULL DEFAULT '',
    current_job_id      uuid,
    current_job_workspace_id varchar(50),
    vcpus               bigint,
    memory              bigint,
    memory_usage        bigint,
    wm_memory_usage     bigint,
    occupancy_rate      real,
    occupancy_rate_15s  real,
    occupancy_rate_5m   real,
    occupancy_rate_30m  real,
    job_isolation       text,
    native_mode         bool
);

CREATE TABLE script (
    workspace_id        varchar(50) NOT NULL,
    hash                bigint NOT NULL,
    path                varchar(255) NOT NULL,
    parent_hashes       bigint[],
    summary             text NOT NULL DEFAULT '',
    description         text NOT NULL DEFAULT '',
    content             text NOT NULL,
    created_by          varchar(50) NOT NULL DEFAULT 'system',
    created_at          timestamptz NOT NULL DEFAULT now(),
    archived            bool NOT NULL DEFAULT false,
    schema              json,
    deleted             bool NOT NULL DEFAULT false,
    is_template         bool DEFAULT false,
    extra_perms         jsonb NOT NULL DEFAULT '{}',
    lock                text,
    lock_error_logs     text,
    language            script_lang NOT NULL DEFAULT 'python3',
    kind                varchar(20) NOT NULL DEFAULT 'script',
    tag                 varchar(50),
    draft_only          bool,
    envs                varchar(1000)[],
    concurrent_limit    int,
    concurrency_time_window_s int,
    cache_ttl           int,
    dedicated_worker    bool,
    ws_error_handler_muted bool NOT NULL DEFAULT false,
    priority            smallint,
    timeout             int,
    delete_after_use    bool,
    restart_unless_cancelled bool,
    concurrency_key     varchar(255),
    visible_to_runner_only bool,
    no_main_func        bool,
    codebase            varchar(255),
    has_preprocessor    bool,
    on_behalf_of_email  text,
    PRIMARY KEY (workspace_id, hash)
);

-- The code of inline flow steps (kind `flowscript`): v2_job.runnable_id = flow_node.id.
CREATE TABLE flow_node (
    id              bigserial PRIMARY KEY,
    workspace_id    varchar(50) NOT NULL,
    hash            bigint NOT NULL DEFAULT 0,
    path            varchar(255) NOT NULL,
    lock            text,
    code            text,
    flow            jsonb,
    hash_v2         char(64)
);

CREATE TABLE config (
    name    varchar(255) PRIMARY KEY,
    config  jsonb DEFAULT '{}'
);

-- Instance settings (name, JSON value). The worker reads `default_tags_per_workspace`,
-- `default_tags_workspaces` and `fork_workspace_tag_append_fork_suffix` to name the per-workspace
-- tags of stock workers.
CREATE TABLE global_settings (
    name        varchar(255) PRIMARY KEY,
    value       jsonb NOT NULL,
    updated_at  timestamp NOT NULL DEFAULT now()
);

-- Workspaces: only the columns the worker reads (a fork or dev workspace names its parent).
CREATE TABLE workspace (
    id                   varchar(50) PRIMARY KEY,
    name                 varchar(50) NOT NULL,
    owner                varchar(50) NOT NULL,
    parent_workspace_id  varchar(50)
);

-- Concurrency limits (windmill-common `runnable_settings.rs`): a queued job's
-- `runnable_settings_handle` names its settings; their concurrency part is a row of
-- `concurrency_settings`. Windmill's push (windmill-queue `jobs.rs`, `insert_concurrency_key`)
-- writes the job's key to `concurrency_key` and makes sure the key's `concurrency_counter` row
-- exists; a puller admits a job by adding its id to `job_uuids`; completion removes it and sets
-- `concurrency_key.ended_at`.
CREATE TABLE runnable_settings (
    hash                  bigint PRIMARY KEY,
    debouncing_settings   bigint,
    concurrency_settings  bigint
);

-- Debouncing (Enterprise; windmill-queue `jobs.rs`, `maybe_apply_debouncing`): a pulled job's
-- `debounce_key` row is removed, and an argument to accumulate is gathered from every job of its
-- `v2_job_debounce_batch`.
CREATE TABLE debouncing_settings (
    hash                         bigint PRIMARY KEY,
    debounce_key                 varchar(255),
    debounce_delay_s             int,
    max_total_debouncing_time    int,
    max_total_debounces_amount   int,
    debounce_args_to_accumulate  text[]
);

CREATE TABLE debounce_key (
    key     varchar(1000) PRIMARY KEY,
    job_id  uuid NOT NULL
);

CREATE TABLE v2_job_debounce_batch (
    id              uuid PRIMARY KEY,
    debounce_batch  bigint NOT NULL
);

CREATE TABLE concurrency_settings (
    hash                       bigint PRIMARY KEY,
    concurrency_key            varchar(255),
    concurrent_limit           int,
    concurrency_time_window_s  int
);

CREATE TABLE concurrency_counter (
    concurrency_id  varchar(1000) PRIMARY KEY,
    job_uuids       jsonb NOT NULL DEFAULT '{}'::jsonb
);

CREATE TABLE concurrency_key (
    key       varchar(255) NOT NULL,
    ended_at  timestamptz,
    job_id    uuid PRIMARY KEY
);

-- Resources; the result cache keeps its entries here (`resource_type = 'cache'`, path
-- `g/results/<hash>`, value `{"expire": <unix seconds>, "value": <result>}`).
CREATE TABLE resource (
    workspace_id   varchar(50) NOT NULL,
    path           varchar(255) NOT NULL,
    value          jsonb,
    description    text,
    resource_type  varchar(50) NOT NULL,
    extra_perms    jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_by     varchar(50),
    edited_at      timestamptz,
    PRIMARY KEY (workspace_id, path)
);

-- A workspace's custom environment variables, added to every job's environment
-- (windmill-common `variables.rs`, `get_cached_workspace_envs`).
CREATE TABLE workspace_env (
    workspace_id  varchar(50) NOT NULL,
    name          varchar(255) NOT NULL,
    value         varchar(1000) NOT NULL,
    PRIMARY KEY (workspace_id, name)
);

-- Row-level security, as Windmill sets it up: only its app roles get policies, so any other
-- role that is neither owner, superuser nor BYPASSRLS sees no rows and updates nothing.
ALTER TABLE v2_job ENABLE ROW LEVEL SECURITY;
ALTER TABLE script ENABLE ROW LEVEL SECURITY;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'windmill_admin') THEN
        CREATE ROLE windmill_admin NOLOGIN BYPASSRLS;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'windmill_user') THEN
        CREATE ROLE windmill_user NOLOGIN;
    END IF;
END
$$;

CREATE POLICY see_own ON v2_job FOR ALL TO windmill_user
    USING (permissioned_as = concat('u/', current_setting('session.user', true)));
CREATE POLICY see_own ON script FOR ALL TO windmill_user
    USING (created_by = current_setting('session.user', true));
