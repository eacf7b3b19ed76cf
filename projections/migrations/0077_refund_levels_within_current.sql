-- A refunded level (a charge state's amount_refunded, counted where no refund object lists it) counts only up
-- to the charge's current amount_refunded (its newest state). Stripe takes a refund that fails back out of
-- amount_refunded: a level reached before the failure is no longer refunded money, and counting it would
-- overstate refunds (and understate net) for good. Levels at or below the current amount are counted as
-- before, each on the day it was first seen.
CREATE SCHEMA IF NOT EXISTS projection;
SET LOCAL search_path TO projection;

CREATE OR REPLACE VIEW refund_facts AS
WITH listed AS (
    SELECT tenant_id, charge_id, sum(amount) AS total
      FROM refunds WHERE status = 'succeeded' GROUP BY tenant_id, charge_id
), steps AS (
    SELECT l.tenant_id, l.charge_id, l.amount_refunded, l.first_seen, l.event_id,
           coalesce(lag(l.amount_refunded) OVER (PARTITION BY l.tenant_id, l.charge_id ORDER BY l.amount_refunded), 0)
               AS previous,
           coalesce(s.total, 0) AS listed_total
      FROM charge_refund_levels l
      JOIN charges c ON c.tenant_id = l.tenant_id AND c.id = l.charge_id
      LEFT JOIN listed s ON s.tenant_id = l.tenant_id AND s.charge_id = l.charge_id
     WHERE l.amount_refunded <= c.amount_refunded
)
SELECT r.tenant_id, c.livemode, r.charge_id, r.currency, r.amount, r.created AS refunded_at, r.id AS refund_id,
       r.event_id, c.customer_id
  FROM refunds r JOIN charges c ON c.tenant_id = r.tenant_id AND c.id = r.charge_id
 WHERE r.status = 'succeeded'
UNION ALL
SELECT s.tenant_id, c.livemode, s.charge_id, c.currency,
       (s.amount_refunded - greatest(s.previous, s.listed_total))::bigint,
       to_timestamp(s.first_seen / 1000.0), NULL, s.event_id, c.customer_id
  FROM steps s JOIN charges c ON c.tenant_id = s.tenant_id AND c.id = s.charge_id
 WHERE s.amount_refunded > s.listed_total;
