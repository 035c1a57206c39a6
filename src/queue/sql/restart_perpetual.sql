-- Perpetual scripts (`restart_unless_cancelled`): Windmill's `restart_job_if_perpetual`
-- (windmill-queue `jobs.rs`) restarts only kind `script`, and our hand-back completes an
-- `identity` job, so the stock worker ends the chain. Once a job's fix-up has restored its kind,
-- this pushes the next run as Windmill does, in the fix-up's transaction (so exactly once): not a
-- flow step, not canceled, a script hash whose script asks for it; the same hash, path, language,
-- tag, priority, cache_ttl, timeout, args, creator, permissions and trigger, due 10 s after the
-- last run started when that run took under 10 s, else now.
--   $1 the job ids just fixed up
WITH last AS (
    SELECT j.*, gen_random_uuid() AS next_id,
           CASE WHEN c.duration_ms < 10000 THEN greatest(c.started_at + interval '10 seconds', now())
                ELSE now() END AS due
    FROM v2_job j
    JOIN v2_job_completed c ON c.id = j.id
    JOIN script s ON s.workspace_id = j.workspace_id AND s.hash = j.runnable_id
    WHERE j.id = ANY($1::uuid[])
      AND j.kind = 'script'
      AND j.flow_step_id IS NULL
      AND c.status <> 'canceled'
      AND s.restart_unless_cancelled
),
pushed AS (
    INSERT INTO v2_job (id, workspace_id, kind, tag, script_lang, runnable_id, runnable_path, args,
                        timeout, priority, cache_ttl, created_by, permissioned_as,
                        permissioned_as_email, trigger, trigger_kind)
    SELECT next_id, workspace_id, 'script', tag, script_lang, runnable_id, runnable_path, args,
           timeout, priority, cache_ttl, created_by, permissioned_as, permissioned_as_email,
           trigger, trigger_kind
    FROM last
    RETURNING id
),
queued AS (
    INSERT INTO v2_job_queue (id, workspace_id, scheduled_for, tag, priority)
    SELECT next_id, workspace_id, due, tag, priority FROM last
),
runtime AS (
    INSERT INTO v2_job_runtime (id) SELECT next_id FROM last
),
perms AS (
    INSERT INTO job_perms (job_id, email, username, is_admin, is_operator, workspace_id, groups,
                           folders, end_user_email)
    SELECT l.next_id, p.email, p.username, p.is_admin, p.is_operator, p.workspace_id, p.groups,
           p.folders, p.end_user_email
    FROM last l JOIN job_perms p ON p.job_id = l.id
)
SELECT l.id AS restarted, l.next_id FROM last l JOIN pushed p ON p.id = l.next_id
