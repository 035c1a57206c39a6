-- The database we are connected to, to name it in a schema error.
SELECT current_database()::text
