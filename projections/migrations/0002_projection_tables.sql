-- The projector's tables, in their own schema so a replay can rebuild them beside the live ones.
-- Every row leads with tenant_id; amounts are integer minor units with their currency.
-- State columns: state_time (ms since epoch of the state the row reflects), state_rank (the
-- same-second tie-break, see projections/ordering.py), state_event_id (last tie-break).
CREATE SCHEMA IF NOT EXISTS projection;
SET LOCAL search_path TO projection;

-- Exactly-once: an event is applied at most once per tenant.
CREATE TABLE processed_events (
    tenant_id    text NOT NULL,
    event_id     text NOT NULL,
    applied_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, event_id)
);

-- Consumer positions, written in the same transaction as the rows they produced.
CREATE TABLE consumer_positions (
    consumer_group text NOT NULL,
    topic          text NOT NULL,
    partition      integer NOT NULL,
    next_offset    bigint NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);

CREATE TABLE customers (
    tenant_id text NOT NULL, id text NOT NULL,
    state_time bigint NOT NULL, state_rank bigint NOT NULL, state_event_id text NOT NULL,
    livemode boolean NOT NULL, deleted boolean NOT NULL DEFAULT false,
    created timestamptz, email text, name text, currency text,
    data jsonb NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE charges (
    tenant_id text NOT NULL, id text NOT NULL,
    state_time bigint NOT NULL, state_rank bigint NOT NULL, state_event_id text NOT NULL,
    livemode boolean NOT NULL,
    created timestamptz NOT NULL, customer_id text, invoice_id text, payment_intent_id text,
    currency text NOT NULL, amount bigint NOT NULL, amount_captured bigint NOT NULL,
    amount_refunded bigint NOT NULL, status text NOT NULL, captured boolean NOT NULL,
    failure_code text, card_brand text, card_last4 text, description text,
    data jsonb NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX charges_by_day ON charges (tenant_id, created);
CREATE INDEX charges_by_customer ON charges (tenant_id, customer_id);

-- Refunds Stripe listed on a charge (charge.refunds.data), with their own dates.
CREATE TABLE refunds (
    tenant_id text NOT NULL, id text NOT NULL,
    charge_id text NOT NULL, currency text NOT NULL, amount bigint NOT NULL,
    status text NOT NULL, created timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX refunds_by_charge ON refunds (tenant_id, charge_id);

-- Each refunded level a charge was seen at, with the earliest state time it was seen:
-- the refund dates when Stripe did not list the refunds (LEAST() makes it order-independent).
CREATE TABLE charge_refund_levels (
    tenant_id text NOT NULL, charge_id text NOT NULL, amount_refunded bigint NOT NULL,
    first_seen bigint NOT NULL,
    PRIMARY KEY (tenant_id, charge_id, amount_refunded)
);

CREATE TABLE subscriptions (
    tenant_id text NOT NULL, id text NOT NULL,
    state_time bigint NOT NULL, state_rank bigint NOT NULL, state_event_id text NOT NULL,
    livemode boolean NOT NULL, deleted boolean NOT NULL DEFAULT false,
    customer_id text NOT NULL, status text NOT NULL, currency text NOT NULL,
    created timestamptz NOT NULL, start_date timestamptz, trial_end timestamptz,
    current_period_start timestamptz, current_period_end timestamptz,
    cancel_at_period_end boolean NOT NULL DEFAULT false, canceled_at timestamptz, ended_at timestamptz,
    mrr numeric(20, 6) NOT NULL,
    items jsonb NOT NULL,
    data jsonb NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX subscriptions_by_customer ON subscriptions (tenant_id, customer_id);

-- MRR history: one row per distinct subscription state seen (events, snapshots, and the
-- start/trial-end/end points derived from a snapshot when its history is older than 30 days).
CREATE TABLE subscription_versions (
    tenant_id text NOT NULL, subscription_id text NOT NULL,
    state_time bigint NOT NULL, state_rank bigint NOT NULL, state_event_id text NOT NULL,
    customer_id text NOT NULL, currency text NOT NULL, status text NOT NULL,
    mrr numeric(20, 6) NOT NULL,
    PRIMARY KEY (tenant_id, subscription_id, state_time, state_rank, state_event_id)
);

CREATE TABLE invoices (
    tenant_id text NOT NULL, id text NOT NULL,
    state_time bigint NOT NULL, state_rank bigint NOT NULL, state_event_id text NOT NULL,
    livemode boolean NOT NULL, deleted boolean NOT NULL DEFAULT false,
    created timestamptz NOT NULL, customer_id text, subscription_id text,
    status text NOT NULL, currency text NOT NULL, billing_reason text,
    total bigint NOT NULL, amount_due bigint NOT NULL, amount_paid bigint NOT NULL, amount_remaining bigint NOT NULL,
    period_start timestamptz, period_end timestamptz, paid_at timestamptz, number text,
    data jsonb NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX invoices_by_day ON invoices (tenant_id, created);

CREATE TABLE payment_intents (
    tenant_id text NOT NULL, id text NOT NULL,
    state_time bigint NOT NULL, state_rank bigint NOT NULL, state_event_id text NOT NULL,
    livemode boolean NOT NULL,
    created timestamptz NOT NULL, customer_id text, invoice_id text,
    status text NOT NULL, currency text NOT NULL, amount bigint NOT NULL, amount_received bigint NOT NULL,
    data jsonb NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
