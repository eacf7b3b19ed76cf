-- Records the projector dead-lettered, counted against their tenant: the connection health the control
-- API shows ("N events could not be read, and why") and what an operator looks up in the dead-letter
-- topic (topic, partition, offset). Written in the same transaction as the batch's positions, so a
-- record is counted once whatever the retries. In public, not in the projection schema: a replay
-- rebuilds the projections, never this count. The tenant is the record key's (empty if it had none).
CREATE TABLE public.dead_lettered_events (
    tenant_id        text NOT NULL,
    topic            text NOT NULL,
    partition        integer NOT NULL,
    "offset"         bigint NOT NULL,
    event_id         text NOT NULL,
    reason           text NOT NULL,
    message          text NOT NULL,
    dead_lettered_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, topic, partition, "offset")
);
CREATE INDEX dead_lettered_events_by_tenant_time ON public.dead_lettered_events (tenant_id, dead_lettered_at);
