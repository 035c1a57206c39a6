-- Whether Windmill still has the job in its queue (queued or running); a completed or deleted
-- job has no `v2_job_queue` row.
--   $1 job id
SELECT EXISTS (SELECT 1 FROM v2_job_queue WHERE id = $1)
