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
flow_marked AS (
    UPDATE v2_job_status s
    SET flow_status = jsonb_set(
            jsonb_set(s.flow_status, ARRAY['modules', j.flow_step::text, 'type'], '"InProgress"'),
            ARRAY['modules', j.flow_step::text, 'job'], to_jsonb(j.id::text))
    FROM claimed c
    JOIN v2_job j ON j.id = c.id
    WHERE s.id = j.parent_job
      AND j.flow_step IS NOT NULL
      AND s.flow_status #>> ARRAY['modules', j.flow_step::text, 'type'] = 'WaitingForExecutor'
)
