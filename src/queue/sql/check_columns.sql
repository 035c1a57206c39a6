-- Startup check: the columns (and their types) of the Windmill tables we use, as the catalog
-- sees them on our search path.
--   $1 table names
SELECT table_name::text AS t, column_name::text AS c, udt_name::text AS u
FROM information_schema.columns
WHERE table_schema = ANY (current_schemas(false)) AND table_name = ANY ($1)
