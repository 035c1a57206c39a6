-- Saves a successful result in Windmill's cache as its worker does (`save_in_cache`): the
-- `resource` row at the cache path, expiring `cache_ttl` seconds from now. Runs in the hand-back's
-- transaction, before it clears `cache_ttl`.
--   $1 job id   $2 cache path   $3 the result
INSERT INTO resource (workspace_id, path, value, resource_type, created_by, edited_at)
SELECT j.workspace_id, $2,
       jsonb_build_object('expire', floor(extract(epoch FROM now()))::bigint + j.cache_ttl, 'value', $3::jsonb),
       'cache', coalesce(j.created_by, 'unknown'), now()
FROM v2_job j
WHERE j.id = $1 AND j.cache_ttl > 0
ON CONFLICT (workspace_id, path) DO UPDATE
SET value = EXCLUDED.value, edited_at = EXCLUDED.edited_at
