-- Take over a running job whose Kubernetes Job this worker found at start: its queue row is still
-- running under our name (this worker restarted) or under a worker whose pings stopped. Same
-- effect as a claim, then the job's details.
--   $1 worker name   $2 job id   $3 seconds without ping after which another worker's job is ours
WITH claimed AS (
    UPDATE v2_job_queue q
    SET worker = $1
    FROM v2_job_runtime r
    WHERE q.id = $2
      AND r.id = q.id
      AND q.running
      AND (q.worker = $1 OR r.ping < now() - make_interval(secs => $3))
    RETURNING q.id, q.started_at
),
pinged AS (
    UPDATE v2_job_runtime SET ping = now() WHERE id IN (SELECT id FROM claimed)
)
