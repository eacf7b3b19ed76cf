-- Each tenant's reporting time zone: the days and months of every revenue figure are the tenant's, not UTC's
-- (a Tokyo company's March starts nine hours before UTC's). An IANA name that PostgreSQL's own zone list holds,
-- checked by the API (POSIX specs such as 'UTC+5', whose sign PostgreSQL reads backwards, are not in that list);
-- the CHECK keeps the column to a canonical area/place name (or UTC) whatever writes it: never an abbreviation
-- such as CET, which `AT TIME ZONE` reads as a fixed offset.
ALTER TABLE tenants ADD COLUMN time_zone text NOT NULL DEFAULT 'UTC'
    CHECK (time_zone = 'UTC' OR (time_zone ~ '^(Africa|America|Antarctica|Arctic|Asia|Atlantic|Australia|Europe|Indian|Pacific|Etc)(/[A-Za-z0-9_+-]+){1,2}$'
                                 AND length(time_zone) <= 64));

-- The revenue views read the zone, and only the zone, of the tenant whose rows they aggregate (the schema's
-- USAGE is granted explicitly: a hardened public schema gives PUBLIC none).
GRANT USAGE ON SCHEMA public TO analytics_owner;
GRANT SELECT (tenant_id, time_zone) ON tenants TO analytics_owner;
