-- Startup check: our role and whether it is exempt from row-level security by itself.
SELECT current_user::text AS role, r.rolsuper, r.rolbypassrls
FROM pg_roles r WHERE r.rolname = current_user
