-- Jobs we handed back whose fix-up has not run (the worker stopped in between): completed
-- recently and still carrying `_flext_fixup`.
--   $1 how far back, in seconds
SELECT j.id
FROM v2_job_completed c
JOIN v2_job j ON j.id = c.id
WHERE c.completed_at > now() - make_interval(secs => $1)
  AND j.args ? '_flext_fixup'
