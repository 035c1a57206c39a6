-- Startup check: row-level security of one table, and whether our role owns it (an owner is
-- exempt unless the security is forced).
--   $1 table name
SELECT c.relrowsecurity AS rls, c.relforcerowsecurity AS forced,
       pg_has_role(current_user, c.relowner, 'USAGE') AS owner,
       pg_get_userbyid(c.relowner)::text AS owner_name
FROM pg_class c
WHERE c.oid = to_regclass($1)
