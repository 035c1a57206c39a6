-- How many jobs wait for a worker on our tags (`flext-kubernetes check`): queued, not running.
--   $1 tags
SELECT count(*) FROM v2_job_queue WHERE running = false AND tag = ANY($1)
