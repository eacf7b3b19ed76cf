-- Customers beside subscribers: at each of the tenant's month ends, every customer object the account has
-- (created by then, not deleted by then — paying or not), the customers created that month, and the
-- subscribers (customers with MRR > 0 in any currency, as subscriber_churn counts them).
CREATE SCHEMA IF NOT EXISTS projection;
SET LOCAL search_path TO projection;

CREATE OR REPLACE VIEW customer_counts AS
WITH bounds AS (
    SELECT c.tenant_id, c.livemode, coalesce(min(z.time_zone), 'UTC') AS tz, min(c.created) AS first_created
      FROM customers c LEFT JOIN public.tenants z ON z.tenant_id = c.tenant_id
     WHERE c.created IS NOT NULL
     GROUP BY c.tenant_id, c.livemode
), months AS (
    SELECT b.tenant_id, b.livemode, m::date AS month, m AT TIME ZONE b.tz AS starts,
           (m + interval '1 month') AT TIME ZONE b.tz AS ends
      FROM bounds b,
           generate_series(date_trunc('month', b.first_created AT TIME ZONE b.tz),
                           date_trunc('month', now() AT TIME ZONE b.tz), interval '1 month') m
), counted AS (
    SELECT m.tenant_id, m.livemode, m.month,
           count(*) FILTER (WHERE c.created < m.ends
                              AND NOT (c.deleted AND c.state_time < extract(epoch FROM m.ends) * 1000)) AS customers,
           count(*) FILTER (WHERE c.created >= m.starts AND c.created < m.ends) AS new_customers
      FROM months m
      JOIN customers c ON c.tenant_id = m.tenant_id AND c.livemode = m.livemode AND c.created IS NOT NULL
     GROUP BY m.tenant_id, m.livemode, m.month
)
SELECT k.tenant_id, k.livemode, k.month, k.customers, k.new_customers, coalesce(s.active_end, 0) AS subscribers,
       round(coalesce(s.active_end, 0)::numeric / nullif(k.customers, 0), 6) AS paying_share
  FROM counted k
  LEFT JOIN subscriber_churn s ON s.tenant_id = k.tenant_id AND s.livemode = k.livemode AND s.month = k.month;

ALTER VIEW customer_counts OWNER TO analytics_owner;
