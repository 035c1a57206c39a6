-- The jobs Windmill shows running under this worker's name (at start: what a stopped run of this
-- worker left), and whether each was canceled meanwhile.
--   $1 worker name
SELECT q.id, q.canceled_by IS NOT NULL AS canceled
FROM v2_job_queue q
WHERE q.running
  AND q.worker = $1
ORDER BY q.started_at
