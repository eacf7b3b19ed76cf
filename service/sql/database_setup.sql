-- Run once per database, as a superuser, before `ingestor migrate` (the local stack and
-- docker-compose do it; in production your DBA does). It grants the application role what only a
-- superuser can, and takes from every role what no reader should have. Replace `ingestor` if your
-- application role has another name. Safe to run again.

-- Large objects: any role may create them by default, even in a read-only transaction, which made them
-- a channel between readers and an unbounded store. Nothing in this product uses them.
REVOKE EXECUTE ON FUNCTION
    lo_from_bytea(oid, bytea), lo_creat(integer), lo_create(oid), lo_import(text), lo_import(text, oid),
    lo_export(oid, text), lo_put(oid, bigint, bytea), lo_get(oid), lo_get(oid, bigint, integer),
    lo_open(oid, integer), lo_unlink(oid), lo_truncate(integer, integer), lo_truncate64(integer, bigint),
    lowrite(integer, bytea), loread(integer, integer), lo_close(integer), lo_lseek(integer, integer, integer),
    lo_lseek64(integer, bigint, integer), lo_tell(integer), lo_tell64(integer)
FROM PUBLIC;

-- The application role sets a temp-file limit on each tenant's reader roles (a superuser-only setting
-- the readers then cannot raise).
GRANT SET ON PARAMETER temp_file_limit TO ingestor;
