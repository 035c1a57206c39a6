-- Over its concurrency limit: the job leaves the key's admitted jobs and goes back to the queue
-- for later, as Windmill's pull does (`running = false`, `started_at = NULL`, ping cleared,
-- `scheduled_for` = an estimate), with Windmill's job-log line. The estimate: one slot is the
-- key's average run time (its last 10 completed jobs) plus 100 ms, at least 1 s, plus the window;
-- the job is due one slot after the oldest admitted job started, and not before 3 s from now.
--   $1 job id   $2 concurrency key   $3 limit   $4 window in seconds
WITH removed AS (
    UPDATE concurrency_counter
    SET job_uuids = job_uuids - ($1::uuid::text)
    WHERE concurrency_id = $2
    RETURNING job_uuids
),
slot AS (
    SELECT greatest(
               coalesce((SELECT avg(c.duration_ms) FROM (
                   SELECT c.duration_ms FROM concurrency_key k JOIN v2_job_completed c ON c.id = k.job_id
                   WHERE k.key = $2 AND k.ended_at IS NOT NULL ORDER BY k.ended_at DESC LIMIT 10) c), 0) + 100,
               1000) * interval '1 millisecond'
           + make_interval(secs => $4) AS inc
),
due AS (
    SELECT greatest(
               now() + interval '3 seconds',
               coalesce((SELECT min(q.started_at) FROM v2_job_queue q, removed r
                         WHERE r.job_uuids ? q.id::text AND q.running), now()) + (SELECT inc FROM slot)
           ) AS at
),
requeued AS (
    UPDATE v2_job_queue q
    SET running = false, started_at = NULL, worker = NULL, scheduled_for = (SELECT at FROM due)
    WHERE q.id = $1
    RETURNING q.id, q.workspace_id, q.scheduled_for
),
unpinged AS (
    UPDATE v2_job_runtime SET ping = NULL WHERE id = $1
),
logged AS (
    INSERT INTO job_logs (job_id, workspace_id, logs)
    SELECT r.id, r.workspace_id,
           format(E'\nRe-scheduled job to %s due to concurrency limits with key %s and limit %s in the last %s seconds\n',
                  r.scheduled_for, $2, $3, $4)
    FROM requeued r
    ON CONFLICT (job_id) DO UPDATE SET logs = concat(job_logs.logs, EXCLUDED.logs)
)
SELECT scheduled_for FROM requeued
