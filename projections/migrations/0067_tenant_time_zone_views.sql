-- Days and months in the tenant's time zone (tenants.time_zone, 'UTC' unless the tenant chose one; 0066): a
-- charge at 2026-03-01 02:00 UTC is February's revenue for a tenant in New York, and a month's MRR is as of
-- the last instant of the tenant's month. Same columns as before; each view reads the zone by a join (one row
-- per tenant), not a call per row. A tenant id without a tenants row (replays of removed tenants) reads UTC.
CREATE SCHEMA IF NOT EXISTS projection;
SET LOCAL search_path TO projection;

CREATE OR REPLACE VIEW daily_revenue AS
SELECT f.tenant_id, f.livemode, (f.at AT TIME ZONE coalesce(z.time_zone, 'UTC'))::date AS day, f.currency,
       sum(f.gross)::bigint AS gross, sum(f.refunded)::bigint AS refunded, (sum(f.gross) - sum(f.refunded))::bigint AS net,
       sum(f.failed_count)::bigint AS failed_count, sum(f.failed_amount)::bigint AS failed_amount
  FROM (
        SELECT tenant_id, livemode, created AS at, currency,
               amount_captured AS gross, 0 AS refunded, 0 AS failed_count, 0 AS failed_amount
          FROM charges WHERE status = 'succeeded' AND captured
        UNION ALL
        SELECT tenant_id, livemode, refunded_at, currency, 0, amount, 0, 0
          FROM refund_facts
        UNION ALL
        SELECT tenant_id, livemode, created, currency, 0, 0, 1, amount
          FROM charges WHERE status = 'failed'
       ) f
  LEFT JOIN public.tenants z ON z.tenant_id = f.tenant_id
 GROUP BY f.tenant_id, f.livemode, 3, f.currency;

CREATE OR REPLACE VIEW revenue_contributions AS
SELECT f.tenant_id, f.livemode, (f.at AT TIME ZONE coalesce(z.time_zone, 'UTC'))::date AS day, f.currency, f.kind,
       f.charge_id, f.refund_id, f.customer_id, f.amount, f.event_id, f.event_time
  FROM (
        SELECT tenant_id, livemode, created AS at, currency, 'charge'::text AS kind,
               id AS charge_id, NULL::text AS refund_id, customer_id, amount_captured AS amount,
               state_event_id AS event_id, to_timestamp(state_time / 1000.0) AS event_time
          FROM charges WHERE status = 'succeeded' AND captured
        UNION ALL
        SELECT tenant_id, livemode, refunded_at, currency, 'refund',
               charge_id, refund_id, customer_id, amount, event_id, refunded_at
          FROM refund_facts
        UNION ALL
        SELECT tenant_id, livemode, created, currency, 'failed_charge',
               id, NULL, customer_id, amount, state_event_id, to_timestamp(state_time / 1000.0)
          FROM charges WHERE status = 'failed'
       ) f
  LEFT JOIN public.tenants z ON z.tenant_id = f.tenant_id;

-- A state closes the tenant's months from the one it starts in to the one before its successor starts.
CREATE OR REPLACE VIEW subscription_mrr_by_month AS
SELECT v.tenant_id, s.livemode, m::date AS month, v.subscription_id, v.customer_id, v.currency, v.mrr,
       v.state_time, v.state_event_id
  FROM (SELECT sv.tenant_id, sv.subscription_id, sv.customer_id, sv.currency, sv.mrr, sv.state_time, sv.state_event_id,
               lead(sv.state_time) OVER (PARTITION BY sv.tenant_id, sv.subscription_id
                                         ORDER BY sv.state_time, sv.state_rank, sv.state_event_id) AS next_time
          FROM subscription_versions sv) v
  JOIN subscriptions s ON s.tenant_id = v.tenant_id AND s.id = v.subscription_id
  LEFT JOIN public.tenants z ON z.tenant_id = v.tenant_id
  CROSS JOIN LATERAL generate_series(
        date_trunc('month', to_timestamp(v.state_time / 1000.0) AT TIME ZONE coalesce(z.time_zone, 'UTC')),
        CASE WHEN v.next_time IS NULL OR v.next_time >= extract(epoch FROM now()) * 1000
             THEN date_trunc('month', now() AT TIME ZONE coalesce(z.time_zone, 'UTC'))
             ELSE date_trunc('month', to_timestamp(v.next_time / 1000.0) AT TIME ZONE coalesce(z.time_zone, 'UTC'))
                  - interval '1 month'
        END,
        interval '1 month') m
 WHERE v.state_time < extract(epoch FROM now()) * 1000;

CREATE OR REPLACE VIEW invoice_summary AS
SELECT i.tenant_id, i.livemode, date_trunc('month', i.created AT TIME ZONE coalesce(z.time_zone, 'UTC'))::date AS month,
       i.currency,
       count(*) AS invoices,
       sum(i.total)::bigint AS billed,
       sum(i.amount_paid)::bigint AS paid,
       coalesce(sum(i.amount_remaining) FILTER (WHERE i.status = 'open'), 0)::bigint AS outstanding,
       coalesce(sum(i.amount_remaining) FILTER (WHERE i.status = 'uncollectible'), 0)::bigint AS uncollectible
  FROM invoices i
  LEFT JOIN public.tenants z ON z.tenant_id = i.tenant_id
 WHERE NOT i.deleted AND i.status IN ('open', 'paid', 'uncollectible')
 GROUP BY i.tenant_id, i.livemode, 3, i.currency;

CREATE OR REPLACE VIEW trial_conversions AS
SELECT t.tenant_id, t.livemode, date_trunc('month', t.trial_start AT TIME ZONE coalesce(z.time_zone, 'UTC'))::date AS month,
       count(*) AS trial_starts,
       count(*) FILTER (WHERE t.converted) AS converted,
       count(*) FILTER (WHERE NOT t.converted AND t.trialing) AS still_trialing,
       round(count(*) FILTER (WHERE t.converted)::numeric
             / nullif(count(*) FILTER (WHERE t.converted OR NOT t.trialing), 0), 6) AS trial_conversion_rate
  FROM (SELECT s.tenant_id, s.livemode, s.status = 'trialing' AS trialing,
               coalesce(CASE WHEN s.data ->> 'trial_start' ~ '^[0-9]{1,12}$' THEN to_timestamp((s.data ->> 'trial_start')::bigint) END,
                        s.start_date, s.created) AS trial_start,
               EXISTS (SELECT 1 FROM subscription_versions v
                        WHERE v.tenant_id = s.tenant_id AND v.subscription_id = s.id AND v.status = 'active'
                          AND v.state_time >= extract(epoch FROM s.trial_end) * 1000) AS converted
          FROM subscriptions s
         WHERE s.trial_end IS NOT NULL AND s.trial_end > coalesce(s.start_date, s.created)) t
  LEFT JOIN public.tenants z ON z.tenant_id = t.tenant_id
 GROUP BY t.tenant_id, t.livemode, 3;

CREATE OR REPLACE VIEW failed_payment_recovery AS
SELECT i.tenant_id, i.livemode, date_trunc('month', i.created AT TIME ZONE coalesce(z.time_zone, 'UTC'))::date AS month,
       i.currency,
       count(*) AS failed_invoices,
       count(*) FILTER (WHERE i.status = 'paid') AS recovered_invoices,
       sum(i.amount_due)::bigint AS failed_amount,
       coalesce(sum(i.amount_paid) FILTER (WHERE i.status = 'paid'), 0)::bigint AS recovered_amount,
       round(count(*) FILTER (WHERE i.status = 'paid')::numeric / count(*), 6) AS recovery_rate
  FROM invoices i
  LEFT JOIN public.tenants z ON z.tenant_id = i.tenant_id
 WHERE NOT i.deleted AND i.amount_due > 0
   AND (CASE WHEN i.data ->> 'attempt_count' ~ '^[0-9]{1,9}$' THEN (i.data ->> 'attempt_count')::int ELSE 0 END > 1
        OR (i.data ->> 'attempted' = 'true' AND i.status IN ('open', 'uncollectible')))
 GROUP BY i.tenant_id, i.livemode, 3, i.currency;

-- As of the end of each of the tenant's days (today: now), over the 30 of the tenant's days before (a window
-- with a clock change is 30 calendar days, not 720 hours).
CREATE OR REPLACE VIEW subscriber_churn_30d AS
SELECT d.tenant_id, d.livemode, d.day,
       count(*) FILTER (WHERE p.ends > d.from_ms AND p.ends <= d.at_ms) AS churned_30d,
       count(*) FILTER (WHERE p.starts <= d.from_ms AND (p.ends IS NULL OR p.ends > d.from_ms)) AS active_30d_ago,
       count(*) FILTER (WHERE p.starts > d.from_ms AND p.starts <= d.at_ms) AS new_30d,
       round(count(*) FILTER (WHERE p.ends > d.from_ms AND p.ends <= d.at_ms)::numeric
             / nullif(count(*) FILTER (WHERE p.starts <= d.from_ms AND (p.ends IS NULL OR p.ends > d.from_ms))
                      + count(*) FILTER (WHERE p.starts > d.from_ms AND p.starts <= d.at_ms), 0), 6)
           AS subscriber_churn_rate_30d
  FROM (SELECT b.tenant_id, b.livemode, day::date AS day,
               (extract(epoch FROM least(day + interval '1 day', now() AT TIME ZONE b.tz) AT TIME ZONE b.tz) * 1000)::bigint
                   AS at_ms,
               (extract(epoch FROM (least(day + interval '1 day', now() AT TIME ZONE b.tz) - interval '30 days')
                                   AT TIME ZONE b.tz) * 1000)::bigint AS from_ms
          FROM (SELECT p.tenant_id, p.livemode, min(p.starts) AS first_ms, coalesce(min(z.time_zone), 'UTC') AS tz
                  FROM subscriber_spans p LEFT JOIN public.tenants z ON z.tenant_id = p.tenant_id
                 GROUP BY p.tenant_id, p.livemode) b,
               generate_series(date_trunc('day', to_timestamp(b.first_ms / 1000.0) AT TIME ZONE b.tz),
                               date_trunc('day', now() AT TIME ZONE b.tz), interval '1 day') day) d
  JOIN subscriber_spans p ON p.tenant_id = d.tenant_id AND p.livemode = d.livemode
 GROUP BY d.tenant_id, d.livemode, d.day;
