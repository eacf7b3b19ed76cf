-- For Docker users: the same read-only login roles the local launcher creates (stack/postgres.py).
CREATE ROLE revenue_reader_summary LOGIN NOINHERIT CONNECTION LIMIT 50 PASSWORD 'reader';
CREATE ROLE revenue_reader_standard LOGIN NOINHERIT CONNECTION LIMIT 50 PASSWORD 'reader';
CREATE ROLE revenue_reader_full LOGIN NOINHERIT CONNECTION LIMIT 50 PASSWORD 'reader';
ALTER ROLE ingestor CREATEROLE;
