-- Startup check: the labels of one enum type (none when the type is missing).
--   $1 type name
SELECT e.enumlabel::text FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid WHERE t.typname = $1
