-- Jobs queued on our tags and not running, by tag, for `/metrics` (`flext_queue_depth`): `due`
-- are those a claim could take now (scheduled_for reached, not canceled), `later` those scheduled
-- for the future. Every tag gets a row, zeros included, so a drained queue reads 0, not absent.
--   $1 tags
SELECT t.tag,
       count(q.id) FILTER (WHERE q.scheduled_for <= now()) AS due,
       count(q.id) FILTER (WHERE q.scheduled_for > now()) AS later
FROM unnest($1::text[]) AS t(tag)
LEFT JOIN v2_job_queue q
       ON q.tag = t.tag AND q.running = false AND q.canceled_by IS NULL
GROUP BY t.tag
ORDER BY t.tag
