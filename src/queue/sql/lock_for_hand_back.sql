-- First step of the hand-back: lock the queue row and see whether it is still ours.
--   $1 job id
SELECT running, worker, canceled_by, canceled_reason
FROM v2_job_queue
WHERE id = $1
FOR UPDATE
