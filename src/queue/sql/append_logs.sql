-- Append log chunks of several jobs at once (each job at most once per batch).
--   $1 job ids   $2 workspaces   $3 text chunks
INSERT INTO job_logs (job_id, workspace_id, logs)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[])
ON CONFLICT (job_id) DO UPDATE SET logs = concat(job_logs.logs, EXCLUDED.logs)
