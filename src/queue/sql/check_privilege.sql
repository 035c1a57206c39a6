-- Startup check: whether our role holds one privilege on one table.
--   $1 table name   $2 privilege (SELECT, INSERT, UPDATE)
SELECT has_table_privilege(current_user, $1, $2)
