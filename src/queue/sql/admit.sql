-- Concurrency limits at claim, as Windmill's pull applies them (`apply_concurrency_limit`; the
-- algorithm of windmill-queue's public pull before it moved to EE, and its
-- `concurrency_counter_test`): the claimed job's id joins its key's `job_uuids` (the UPDATE locks
-- the key's row (creating it if push did not), so admissions of one key are serialized across workers, ours and native ones);
-- the count is the admitted jobs (this one included once) plus the key's jobs that ended within
-- the time window.
--   $1 job id   $2 concurrency key   $3 window in seconds (0: running jobs only)
WITH admitted AS (
    INSERT INTO concurrency_counter AS cc (concurrency_id, job_uuids)
    VALUES ($2, jsonb_build_object($1::uuid::text, '{}'::jsonb))
    ON CONFLICT (concurrency_id) DO UPDATE SET job_uuids = cc.job_uuids || EXCLUDED.job_uuids
    RETURNING job_uuids
)
SELECT
    coalesce((SELECT count(*) FROM admitted a, jsonb_object_keys(a.job_uuids)), 1)
    + (SELECT count(*) FROM concurrency_key k
       WHERE k.key = $2 AND $3 > 0 AND k.ended_at > now() - make_interval(secs => $3)
         AND k.job_id <> $1::uuid) AS running
