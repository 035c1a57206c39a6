-- Jobs on our tags that must not wait for us: kinds we never run go to the tag a stock worker
-- serves for them, and queued jobs that are already canceled (`canceled_by`) or failed
-- (`pre_run_error`) go to the finalize tag, where a stock worker completes them as canceled or
-- failed. Each gets one line in its job log. The tag is Windmill's default for the kind
-- (`dependency`, `flow`), in the per-workspace form `<tag>-<workspace>` when the instance setting
-- `default_tags_per_workspace` is on (and the workspace is in `default_tags_workspaces`, when that
-- list is set); a fork or dev workspace uses its parent's id, with `-fork` when
-- `fork_workspace_tag_append_fork_suffix` is on (windmill-queue `tags.rs`, `per_workspace_tag`).
-- `worker` and `started_at` are cleared so that the stock worker's claim starts the job afresh.
--   $1 our tags   $2 dependency kinds   $3 flow kinds   $4 kinds ended by a stock worker
--   $5 the finalize tag   $6 at most this many jobs
WITH setting AS (
    SELECT
        coalesce((SELECT value = 'true'::jsonb FROM global_settings WHERE name = 'default_tags_per_workspace'), false) AS per_workspace,
        (SELECT value FROM global_settings WHERE name = 'default_tags_workspaces' AND jsonb_typeof(value) = 'array') AS only_in,
        coalesce((SELECT value = 'true'::jsonb FROM global_settings WHERE name = 'fork_workspace_tag_append_fork_suffix'), false) AS fork_suffix
),
found AS (
    SELECT q.id, q.workspace_id, j.kind::text AS kind,
           q.canceled_by, q.canceled_reason, j.pre_run_error,
           coalesce(w.parent_workspace_id, q.workspace_id) AS tag_workspace,
           w.parent_workspace_id IS NOT NULL AS is_fork
    FROM v2_job_queue q
    JOIN v2_job j ON j.id = q.id
    LEFT JOIN workspace w ON w.id = q.workspace_id
    WHERE NOT q.running
      AND q.tag = ANY($1::text[])
      AND (q.canceled_by IS NOT NULL
           OR j.pre_run_error IS NOT NULL
           OR j.kind::text = ANY($2::text[] || $3::text[] || $4::text[]))
    ORDER BY q.scheduled_for
    LIMIT $6
    FOR UPDATE OF q SKIP LOCKED
),
routed AS (
    SELECT f.id, f.workspace_id,
           CASE
               WHEN f.canceled_by IS NOT NULL OR f.pre_run_error IS NOT NULL OR f.kind = ANY($4::text[])
                   THEN $5::text
               ELSE (CASE WHEN f.kind = ANY($2::text[]) THEN 'dependency' ELSE 'flow' END)
                   || CASE
                          WHEN s.per_workspace AND (s.only_in IS NULL OR s.only_in ? f.tag_workspace)
                              THEN '-' || f.tag_workspace || CASE WHEN f.is_fork AND s.fork_suffix THEN '-fork' ELSE '' END
                          ELSE ''
                      END
           END AS tag,
           CASE
               WHEN f.canceled_by IS NOT NULL
                   THEN format('canceled by %s before it started%s', f.canceled_by, coalesce(': ' || f.canceled_reason, ''))
               WHEN f.pre_run_error IS NOT NULL
                   THEN 'failed before it started: ' || f.pre_run_error
               ELSE format('a job of kind %s is run by a stock Windmill worker', f.kind)
           END AS why,
           f.canceled_by IS NOT NULL OR f.pre_run_error IS NOT NULL AS now_due
    FROM found f CROSS JOIN setting s
),
moved AS (
    UPDATE v2_job_queue q
    SET tag = r.tag,
        worker = NULL,
        started_at = NULL,
        scheduled_for = CASE WHEN r.now_due THEN least(q.scheduled_for, now()) ELSE q.scheduled_for END
    FROM routed r
    WHERE q.id = r.id
    RETURNING q.id
),
logged AS (
    INSERT INTO job_logs (job_id, workspace_id, logs)
    SELECT r.id, r.workspace_id, format(E'[flext-kubernetes] %s: handed to tag %s\n', r.why, r.tag)
    FROM routed r
    ON CONFLICT (job_id) DO UPDATE SET logs = concat(job_logs.logs, EXCLUDED.logs)
)
SELECT r.id, r.tag, r.why FROM routed r JOIN moved m ON m.id = r.id
