-- Failure: set pre_run_error, which a stock Windmill worker records as the job's error.
--   $1 job id   $2 error text   $3 fix-up record
UPDATE v2_job
SET pre_run_error = $2,
    args = CASE
        WHEN jsonb_typeof(args) = 'object' THEN args || jsonb_build_object('_flext_fixup', $3::jsonb)
        ELSE jsonb_build_object('_flext_fixup', $3::jsonb || jsonb_build_object('orig_args', coalesce(args, 'null'::jsonb)))
    END
WHERE id = $1
