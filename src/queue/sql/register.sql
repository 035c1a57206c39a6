-- Keep this worker visible on Windmill's Workers page.
--   $1 worker  $2 instance  $3 custom tags  $4 worker group  $5 version  $6 current job
--   $7 its workspace  $8 jobs executed  $9 occupancy (0..1)  $10 vcpus  $11 memory bytes
--   $12 memory usage bytes  $13 started at  $14 $15 $16 occupancy over 15 s, 5 min, 30 min
-- (NULL until the worker has run that long, as Windmill reports them)
INSERT INTO worker_ping (worker, worker_instance, ping_at, started_at, custom_tags, worker_group,
                         wm_version, current_job_id, current_job_workspace_id, jobs_executed,
                         occupancy_rate, occupancy_rate_15s, occupancy_rate_5m, occupancy_rate_30m, vcpus, memory, memory_usage,
                         job_isolation, native_mode, ip)
VALUES ($1, $2, now(), $13, $3, $4, $5, $6, $7, $8, $9, $14, $15, $16, $10, $11, $12, 'kubernetes', false, 'NO IP')
ON CONFLICT (worker) DO UPDATE
SET ping_at = now(),
    worker_instance = EXCLUDED.worker_instance,
    custom_tags = EXCLUDED.custom_tags,
    worker_group = EXCLUDED.worker_group,
    wm_version = EXCLUDED.wm_version,
    current_job_id = EXCLUDED.current_job_id,
    current_job_workspace_id = EXCLUDED.current_job_workspace_id,
    jobs_executed = EXCLUDED.jobs_executed,
    occupancy_rate = EXCLUDED.occupancy_rate,
    occupancy_rate_15s = EXCLUDED.occupancy_rate_15s,
    occupancy_rate_5m = EXCLUDED.occupancy_rate_5m,
    occupancy_rate_30m = EXCLUDED.occupancy_rate_30m,
    vcpus = EXCLUDED.vcpus,
    memory = EXCLUDED.memory,
    memory_usage = EXCLUDED.memory_usage,
    started_at = EXCLUDED.started_at,
    job_isolation = EXCLUDED.job_isolation,
    native_mode = EXCLUDED.native_mode
