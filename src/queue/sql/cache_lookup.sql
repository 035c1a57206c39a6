-- A result in Windmill's cache that has not expired (see `queue/cache.rs`).
--   $1 workspace   $2 cache path
SELECT value -> 'value' AS result
FROM resource
WHERE workspace_id = $1
  AND path = $2
  AND resource_type = 'cache'
  AND (value ->> 'expire')::bigint > extract(epoch FROM now())
