-- A job ran past its effective timeout: cancel it the way Windmill does.
--   $1 job id   $2 worker name   $3 timeout in seconds
UPDATE v2_job_queue
SET canceled_by = 'timeout', canceled_reason = 'duration > ' || $3::text
WHERE id = $1 AND running AND worker = $2 AND canceled_by IS NULL
