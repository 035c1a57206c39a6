-- A job's details without claiming it (`flext-kubernetes render <job id>`); the same projection
-- as the end of claim.sql.
--   $1 job id
WITH claimed AS (
    SELECT q.id, q.started_at FROM v2_job_queue q WHERE q.id = $1
)
