-- For Docker users (docker-entrypoint-initdb.d, as the superuser): the application role may create the
-- per-tenant reader roles. service/sql/database_setup.sql is mounted beside this file and runs after it.
ALTER ROLE ingestor CREATEROLE;
