-- Debouncing at claim, as Windmill's `maybe_apply_debouncing` (windmill-queue `jobs.rs`) right
-- after its pull: for a job whose settings debounce it, its `debounce_key` row is removed (new
-- pushes no longer fold into it) and, when the settings name an argument to accumulate, that
-- argument's lists from every job of the job's debounce batch are concatenated (in the order the
-- jobs were created) to replace it for this run. No row: the job is not debounced.
--   $1 job id
WITH settings AS (
    SELECT ds.debounce_args_to_accumulate[1] AS arg
    FROM v2_job_queue q
    JOIN runnable_settings rs ON rs.hash = q.runnable_settings_handle
    JOIN debouncing_settings ds ON ds.hash = rs.debouncing_settings
    WHERE q.id = $1 AND ds.debounce_delay_s > 0
),
removed AS (
    DELETE FROM debounce_key WHERE job_id = $1 AND EXISTS (SELECT 1 FROM settings)
),
batch AS (
    SELECT j.created_at, j.args -> s.arg AS value
    FROM settings s
    JOIN v2_job_debounce_batch mine ON mine.id = $1
    JOIN v2_job_debounce_batch b ON b.debounce_batch = mine.debounce_batch
    JOIN v2_job j ON j.id = b.id
    WHERE s.arg IS NOT NULL AND jsonb_typeof(j.args -> s.arg) IS DISTINCT FROM 'null'
)
SELECT
    s.arg,
    (SELECT count(*) FROM batch WHERE jsonb_typeof(value) <> 'array') AS not_lists,
    (SELECT coalesce(jsonb_agg(e.value ORDER BY b.created_at, e.n), '[]'::jsonb)
     FROM batch b,
          jsonb_array_elements(CASE WHEN jsonb_typeof(b.value) = 'array' THEN b.value ELSE '[]'::jsonb END)
              WITH ORDINALITY AS e(value, n)) AS accumulated
FROM settings s
