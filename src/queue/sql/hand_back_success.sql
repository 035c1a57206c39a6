-- Success: turn the job into an `identity` job carrying our result, which a stock Windmill worker
-- returns as the job's result. `_flext_fixup` keeps what the post-completion fix-up restores.
--   $1 job id   $2 result   $3 fix-up record
UPDATE v2_job
SET kind = 'identity',
    cache_ttl = NULL,
    -- The preprocessor ran (the record carries its args): as Windmill's worker does on success.
    preprocessed = CASE WHEN $3::jsonb ? 'new_args' THEN true ELSE preprocessed END,
    args = CASE
        WHEN jsonb_typeof(args) = 'object' THEN
            args || jsonb_build_object('previous_result', $2::jsonb, '_flext_fixup',
                CASE WHEN args ? 'previous_result'
                     THEN $3::jsonb || jsonb_build_object('previous_result_arg', args -> 'previous_result')
                     ELSE $3::jsonb END)
        ELSE
            jsonb_build_object('previous_result', $2::jsonb, '_flext_fixup',
                $3::jsonb || jsonb_build_object('orig_args', coalesce(args, 'null'::jsonb)))
    END
WHERE id = $1
