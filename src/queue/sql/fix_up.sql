-- After a stock worker completed a job we handed back: restore what a native run would show
-- (duration, memory peak, start time, worker, the real error object, kind and args). Jobs not yet
-- completed are left for the next round; the ids fixed are returned.
-- A success or failure hand-back put the record into v2_job.args. When it is no longer there (and
-- the job was not canceled, which leaves v2_job untouched), Windmill replaced the args after
-- completing the job: a flow step with `delete_after_use` has its args and result blanked to `{}`
-- when its root flow ends (windmill-worker `worker_flow.rs`,
-- `update_flow_status_after_job_completion_internal`). Then neither args nor result are written
-- back; the figures (duration, memory, start, worker, kind) come from the record kept in memory.
--   $1 job ids   $2 fix-up records kept in memory (used when args carry none)
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::jsonb[]) AS i(id, record)
),
target AS (
    SELECT j.id, coalesce(j.args -> '_flext_fixup', i.record) AS f, j.args ? '_flext_fixup' AS in_args
    FROM input i
    JOIN v2_job j ON j.id = i.id
    JOIN v2_job_completed c ON c.id = i.id
    FOR UPDATE OF j
),
completed AS (
    UPDATE v2_job_completed c
    SET duration_ms = coalesce((t.f ->> 'duration_ms')::bigint, c.duration_ms),
        memory_peak = coalesce((t.f ->> 'memory_peak')::int, c.memory_peak),
        started_at = coalesce((t.f ->> 'started_at')::timestamptz, c.started_at),
        worker = coalesce(t.f ->> 'worker', c.worker),
        result = CASE WHEN c.status = 'failure' AND t.f ? 'error' AND t.in_args
                      THEN jsonb_build_object('error', t.f -> 'error') ELSE c.result END
    FROM target t
    WHERE c.id = t.id
    RETURNING c.id
),
restored AS (
    UPDATE v2_job j
    SET kind = coalesce((t.f ->> 'kind')::job_kind, j.kind),
        args = CASE
            WHEN NOT t.in_args THEN j.args
            WHEN t.f ? 'new_args' THEN t.f -> 'new_args'
            WHEN t.f ? 'orig_args' THEN nullif(t.f -> 'orig_args', 'null'::jsonb)
            WHEN t.f ? 'previous_result_arg' THEN
                (j.args - '_flext_fixup') || jsonb_build_object('previous_result', t.f -> 'previous_result_arg')
            WHEN t.f ->> 'outcome' = 'success' THEN j.args - '_flext_fixup' - 'previous_result'
            ELSE j.args - '_flext_fixup'
        END
    FROM target t
    WHERE j.id = t.id
)
SELECT id FROM completed
