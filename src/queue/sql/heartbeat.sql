-- The batched heartbeat: refresh ping (and memory peak) of every job this worker runs, in one
-- statement, and read back what Windmill did to each: canceled, re-queued to someone else, or
-- completed elsewhere (no queue row).
--   $1 job ids   $2 memory peaks in KiB (NULL when unknown)   $3 worker name
WITH beat AS (
    SELECT * FROM unnest($1::uuid[], $2::int[]) AS b(id, memory_peak)
),
pinged AS (
    UPDATE v2_job_runtime r
    SET ping = now(),
        memory_peak = greatest(r.memory_peak, b.memory_peak)
    FROM beat b
    JOIN v2_job_queue q ON q.id = b.id AND q.running AND q.worker = $3
    WHERE r.id = b.id
    RETURNING r.id
)
SELECT b.id, q.id IS NOT NULL AS present, coalesce(q.running AND q.worker = $3, false) AS ours,
       q.worker, q.canceled_by, q.canceled_reason
FROM beat b
LEFT JOIN v2_job_queue q ON q.id = b.id
