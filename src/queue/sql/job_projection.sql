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
    (SELECT l.logs FROM job_logs l WHERE l.job_id = c.id) AS prior_logs
FROM claimed c
JOIN v2_job j ON j.id = c.id
LEFT JOIN script s ON j.kind = 'script' AND s.workspace_id = j.workspace_id AND s.hash = j.runnable_id
LEFT JOIN flow_node n ON j.kind = 'flowscript' AND n.id = j.runnable_id
