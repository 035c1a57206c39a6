-- Claim the next job on our tags, Windmill's order (priority, then scheduled_for), skipping rows
-- another worker holds. One statement: mark it running as ours, create or refresh its ping, mark
-- the step InProgress in the parent flow, and return what is needed to run it.
--   $1 worker name   $2 our tags   $3 kinds we never claim
WITH candidate AS (
    SELECT q.id
    FROM v2_job_queue q
    JOIN v2_job j ON j.id = q.id
    WHERE q.running = false
      AND q.tag = ANY($2::text[])
      AND q.scheduled_for <= now()
      AND q.canceled_by IS NULL
      AND j.pre_run_error IS NULL
      AND NOT j.same_worker
      AND j.kind::text <> ALL($3::text[])
    ORDER BY q.priority DESC NULLS LAST, q.scheduled_for
    LIMIT 1
    FOR UPDATE OF q SKIP LOCKED
),
claimed AS (
    UPDATE v2_job_queue q
    SET running = true,
        started_at = coalesce(q.started_at, now()),
        suspend_until = NULL,
        worker = $1
    FROM candidate c
    WHERE q.id = c.id
    RETURNING q.id, q.started_at
),
pinged AS (
    INSERT INTO v2_job_runtime (id, ping)
    SELECT id, now() FROM claimed
    ON CONFLICT (id) DO UPDATE SET ping = now()
),
-- As Windmill's `update_flow_status_in_progress` (windmill-queue `flow_status.rs`): a flow step's
-- module is the one the parent's `flow_status->'step'` points at (below 0 the preprocessor module,
-- past the last module the failure module); it gets our job id and type InProgress.
flow_marked AS (
    UPDATE v2_job_status s
    SET flow_status = jsonb_set(
            jsonb_set(s.flow_status, m.path || ARRAY['type'], '"InProgress"'),
            m.path || ARRAY['job'], to_jsonb(m.id::text))
    FROM (
        SELECT j.id, j.parent_job,
               CASE
                   WHEN (ps.flow_status->>'step')::int < 0 THEN ARRAY['preprocessor_module']
                   WHEN (ps.flow_status->>'step')::int >= jsonb_array_length(ps.flow_status->'modules')
                       THEN ARRAY['failure_module']
                   ELSE ARRAY['modules', ps.flow_status->>'step']
               END AS path
        FROM claimed c
        JOIN v2_job j ON j.id = c.id
        JOIN v2_job_status ps ON ps.id = j.parent_job
        WHERE j.flow_step_id IS NOT NULL
          AND ps.flow_status ? 'step'
    ) m
    WHERE s.id = m.parent_job
),
-- As Windmill's `update_workflow_as_code_status`: a child of a workflow-as-code script (a parent,
-- no flow step) gets its `started_at` under its id in the parent's `workflow_as_code_status`.
wac_marked AS (
    UPDATE v2_job_status s
    SET workflow_as_code_status = jsonb_set(
            coalesce(s.workflow_as_code_status, '{}'::jsonb),
            ARRAY[j.id::text],
            coalesce(s.workflow_as_code_status -> j.id::text, '{}'::jsonb)
                || jsonb_build_object('started_at', now()::text))
    FROM claimed c
    JOIN v2_job j ON j.id = c.id
    WHERE s.id = j.parent_job
      AND j.flow_step_id IS NULL
)
