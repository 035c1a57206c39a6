-- The queue depth KEDA's PostgreSQL scaler scales the workers on (templates/scaledobject.yaml):
-- the jobs on our tags that a worker of ours would claim now, plus those running on our tags.
-- KEDA divides it by targetQueryValue = worker.concurrency, so the desired number of workers is
-- "slots needed / slots per worker". Running jobs are counted so that a busy worker group is not
-- scaled down under its jobs as soon as the queue is empty.
--
-- "Due" is exactly what src/queue/sql/claim.sql takes: not running, due now, not canceled, no
-- pre-run error, not a same-worker job, and not a kind we never claim (JobKind::NEVER_CLAIMED:
-- those leave our tags at once for a stock worker's). Scheduled-later jobs are not counted: a
-- worker started for them would wait idle.
--
-- v2_job has row-level security: a role that is neither its owner, a superuser nor BYPASSRLS sees
-- none of its rows. The LEFT JOIN keeps such a role counting every due queue row on our tags (a
-- few re-routed or failed rows too many for a moment) instead of silently counting nothing and
-- never scaling up; with the worker's own role the count is exact.
--
-- $1 is our tags (text[]): run as a prepared statement, bind them; the chart writes them in
-- instead, as an ARRAY of quoted literals (flext-kubernetes.kedaQuery in templates/_helpers.tpl).
SELECT count(*)
FROM v2_job_queue q
LEFT JOIN v2_job j ON j.id = q.id
WHERE q.tag = ANY($1)
  AND (
        q.running
     OR (    q.scheduled_for <= now()
         AND q.canceled_by IS NULL
         AND (j.id IS NULL
              OR (    j.pre_run_error IS NULL
                  AND NOT j.same_worker
                  AND j.kind::text <> ALL (ARRAY[
                        'flow', 'flowpreview', 'singlestepflow', 'singlescriptflow', 'flownode',
                        'dependencies', 'flowdependencies', 'appdependencies',
                        'identity', 'noop',
                        'unassigned_script', 'unassigned_flow', 'unassigned_singlestepflow'])))))
