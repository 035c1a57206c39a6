-- Last step of the hand-back: give the row to a stock worker through the finalize tag.
--   $1 job id   $2 finalize tag
UPDATE v2_job_queue
SET running = false, worker = NULL, scheduled_for = now(), tag = $2
WHERE id = $1
