-- Refunds a charge's listed refunds do not cover yet count too: a snapshot lists the refunds made
-- up to its fetch, a later charge.refunded event raises the refunded amount. Per charge, the listed
-- refunds count with their own dates, and each step of the refunded amount above their sum counts on
-- the day it was first seen. The result depends only on the set of refunds and levels seen, never on
-- the order they arrived in.
CREATE SCHEMA IF NOT EXISTS projection;
SET LOCAL search_path TO projection;

CREATE OR REPLACE VIEW refund_facts AS
WITH listed AS (
    SELECT tenant_id, charge_id, sum(amount) AS total
      FROM refunds WHERE status = 'succeeded' GROUP BY tenant_id, charge_id
), steps AS (
    SELECT l.tenant_id, l.charge_id, l.amount_refunded, l.first_seen,
           coalesce(lag(l.amount_refunded) OVER (PARTITION BY l.tenant_id, l.charge_id ORDER BY l.amount_refunded), 0)
               AS previous,
           coalesce(s.total, 0) AS listed_total
      FROM charge_refund_levels l
      LEFT JOIN listed s ON s.tenant_id = l.tenant_id AND s.charge_id = l.charge_id
)
SELECT r.tenant_id, c.livemode, r.charge_id, r.currency, r.amount, r.created AS refunded_at
  FROM refunds r JOIN charges c ON c.tenant_id = r.tenant_id AND c.id = r.charge_id
 WHERE r.status = 'succeeded'
UNION ALL
SELECT s.tenant_id, c.livemode, s.charge_id, c.currency,
       (s.amount_refunded - greatest(s.previous, s.listed_total))::bigint,
       to_timestamp(s.first_seen / 1000.0)
  FROM steps s JOIN charges c ON c.tenant_id = s.tenant_id AND c.id = s.charge_id
 WHERE s.amount_refunded > s.listed_total;
