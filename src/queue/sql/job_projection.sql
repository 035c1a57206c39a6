-- The job as the worker needs it, for the rows of a CTE named `claimed` (id, started_at): appended
-- to claim.sql, adopt.sql and load_job.sql.
SELECT
    c.id,
    c.started_at,
    j.workspace_id,
    j.kind::text AS kind,
    j.tag,
    coalesce(j.script_lang, s.language)::text AS language,
    CASE j.kind WHEN 'script' THEN s.content WHEN 'flowscript' THEN n.code ELSE j.raw_code END AS code,
    CASE j.kind WHEN 'script' THEN s.lock WHEN 'flowscript' THEN n.lock ELSE j.raw_lock END AS lock,
    j.runnable_path,
    j.script_entrypoint_override,
    j.args,
    j.timeout,
    j.priority,
    j.parent_job,
    j.root_job,
    -- Windmill's push writes no v2_job.flow_step: a step's index is its parent's flow_status->'step'.
    (SELECT (ps.flow_status->>'step')::int FROM v2_job_status ps
     WHERE ps.id = j.parent_job AND j.flow_step_id IS NOT NULL) AS flow_step,
    j.flow_step_id,
    j.permissioned_as,
    j.permissioned_as_email,
    j.created_by,
    j.created_at,
    coalesce(s.envs, ARRAY[]::varchar[])::text[] AS envs,
    (SELECT l.logs FROM job_logs l WHERE l.job_id = c.id) AS prior_logs,
    -- A preprocessor runs first when push asked for it (Windmill's executors: `preprocessed` is
    -- false and the job is not itself a flow's preprocessor step).
    coalesce(j.preprocessed = false AND j.flow_step_id IS DISTINCT FROM 'preprocessor', false) AS preprocess,
    -- The result cache: the ttl, and the args' texts as Postgres prints them (what Windmill's
    -- worker hashes), in byte order of the names.
    nullif(j.cache_ttl, 0) AS cache_ttl,
    CASE WHEN j.cache_ttl > 0 THEN
        (SELECT coalesce(jsonb_agg(jsonb_build_array(e.key, e.value::text) ORDER BY e.key COLLATE "C"), '[]'::jsonb)
         FROM jsonb_each(CASE WHEN jsonb_typeof(j.args) = 'object' THEN j.args ELSE '{}'::jsonb END) e)
    END AS cache_args,
    -- Concurrency limit: the settings behind the queue row's handle, else v2_job's (Windmill's
    -- `maybe_fallback`); the key is the one Windmill's push wrote for this job.
    (SELECT k.key FROM concurrency_key k WHERE k.job_id = c.id) AS concurrency_key,
    coalesce(cs.concurrent_limit, j.concurrent_limit) AS concurrent_limit,
    coalesce(cs.concurrency_time_window_s, j.concurrency_time_window_s, 0) AS concurrency_time_window_s,
    -- Debouncing applies at claim only when the settings debounce the job (sql/debounce.sql).
    coalesce(ds.debounce_delay_s, 0) > 0 AS debounced,
    -- What Windmill's get_reserved_variables reads (windmill-common variables.rs).
    CASE WHEN j.trigger_kind = 'schedule' THEN j.trigger END AS schedule_path,
    (SELECT pj.runnable_path FROM v2_job pj WHERE pj.id = j.parent_job) AS flow_path,
    j.flow_innermost_root_job,
    j.runnable_id,
    q.scheduled_for,
    (SELECT p.end_user_email FROM job_perms p WHERE p.job_id = c.id) AS end_user_email,
    (SELECT g.value #>> '{}' FROM global_settings g WHERE g.name = 'base_url') AS base_url,
    (SELECT coalesce(jsonb_object_agg(e.name, e.value), '{}'::jsonb)
     FROM workspace_env e WHERE e.workspace_id = j.workspace_id) AS workspace_envs
FROM claimed c
JOIN v2_job j ON j.id = c.id
LEFT JOIN script s ON j.kind = 'script' AND s.workspace_id = j.workspace_id AND s.hash = j.runnable_id
LEFT JOIN flow_node n ON j.kind = 'flowscript' AND n.id = j.runnable_id
-- The queue row and the runnable settings behind its handle, read once for every column above.
LEFT JOIN v2_job_queue q ON q.id = c.id
LEFT JOIN runnable_settings rs ON rs.hash = q.runnable_settings_handle
LEFT JOIN concurrency_settings cs ON cs.hash = rs.concurrency_settings
LEFT JOIN debouncing_settings ds ON ds.hash = rs.debouncing_settings
