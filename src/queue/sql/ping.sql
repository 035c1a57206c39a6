-- Whether the database answers (the worker's /readyz). No parameters.
SELECT 1
