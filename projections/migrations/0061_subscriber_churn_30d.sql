-- Stripe's rolling subscriber churn rate (Billing analytics): the subscribers who churned in the past
-- 30 days ÷ (the active subscribers 30 days ago + the new subscribers in those 30 days), as of each day.
-- A subscriber is a customer with MRR > 0 (a paid active or past_due subscription); they churn when the
-- last of those ends, whatever the time of month. Built from each customer's paying spans.
CREATE SCHEMA IF NOT EXISTS projection;
SET LOCAL search_path TO projection;

-- Each customer's spans of being a subscriber (ms since epoch; ends NULL while still paying): the states
-- of their subscriptions with MRR > 0, merged where they touch or overlap (gaps and islands).
CREATE OR REPLACE VIEW subscriber_spans AS
WITH paying AS (
    SELECT v.tenant_id, s.livemode, v.customer_id, v.state_time AS starts,
           CASE WHEN v.next_time >= extract(epoch FROM now()) * 1000 THEN NULL ELSE v.next_time END AS ends
      FROM (SELECT sv.tenant_id, sv.subscription_id, sv.customer_id, sv.mrr, sv.state_time,
                   lead(sv.state_time) OVER (PARTITION BY sv.tenant_id, sv.subscription_id
                                             ORDER BY sv.state_time, sv.state_rank, sv.state_event_id) AS next_time
              FROM subscription_versions sv) v
      JOIN subscriptions s ON s.tenant_id = v.tenant_id AND s.id = v.subscription_id
     WHERE v.mrr > 0 AND v.state_time < extract(epoch FROM now()) * 1000
       AND (v.next_time IS NULL OR v.next_time > v.state_time)
), marked AS (
    SELECT *, CASE WHEN starts <= max(coalesce(ends, 9223372036854775807)) OVER earlier THEN 0 ELSE 1 END AS opens
      FROM paying
    WINDOW earlier AS (PARTITION BY tenant_id, livemode, customer_id ORDER BY starts, ends
                       ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
), islands AS (
    SELECT *, sum(opens) OVER (PARTITION BY tenant_id, livemode, customer_id ORDER BY starts, ends) AS island
      FROM marked
)
SELECT tenant_id, livemode, customer_id, min(starts) AS starts,
       CASE WHEN bool_or(ends IS NULL) THEN NULL ELSE max(ends) END AS ends
  FROM islands
 GROUP BY tenant_id, livemode, customer_id, island;

-- As of the end of each day (today: now), from the day of the first subscriber on; 2592000000 ms = 30 days.
CREATE OR REPLACE VIEW subscriber_churn_30d AS
SELECT d.tenant_id, d.livemode, d.day,
       count(*) FILTER (WHERE p.ends > d.at_ms - 2592000000 AND p.ends <= d.at_ms) AS churned_30d,
       count(*) FILTER (WHERE p.starts <= d.at_ms - 2592000000
                          AND (p.ends IS NULL OR p.ends > d.at_ms - 2592000000)) AS active_30d_ago,
       count(*) FILTER (WHERE p.starts > d.at_ms - 2592000000 AND p.starts <= d.at_ms) AS new_30d,
       round(count(*) FILTER (WHERE p.ends > d.at_ms - 2592000000 AND p.ends <= d.at_ms)::numeric
             / nullif(count(*) FILTER (WHERE p.starts <= d.at_ms - 2592000000
                                         AND (p.ends IS NULL OR p.ends > d.at_ms - 2592000000))
                      + count(*) FILTER (WHERE p.starts > d.at_ms - 2592000000 AND p.starts <= d.at_ms), 0), 6)
           AS subscriber_churn_rate_30d
  FROM (SELECT b.tenant_id, b.livemode, day::date AS day,
               least((extract(epoch FROM (day + interval '1 day') AT TIME ZONE 'UTC') * 1000)::bigint,
                     (extract(epoch FROM now()) * 1000)::bigint) AS at_ms
          FROM (SELECT tenant_id, livemode, min(starts) AS first_ms FROM subscriber_spans GROUP BY tenant_id, livemode) b,
               generate_series(date_trunc('day', to_timestamp(b.first_ms / 1000.0) AT TIME ZONE 'UTC'),
                               date_trunc('day', now() AT TIME ZONE 'UTC'), interval '1 day') day) d
  JOIN subscriber_spans p ON p.tenant_id = d.tenant_id AND p.livemode = d.livemode
 GROUP BY d.tenant_id, d.livemode, d.day;

ALTER VIEW subscriber_spans OWNER TO analytics_owner;
ALTER VIEW subscriber_churn_30d OWNER TO analytics_owner;
