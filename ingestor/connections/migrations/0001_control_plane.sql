-- Control plane: tenants, their Stripe connections (secrets encrypted by the key vault, never in
-- plain text), webhook signing secrets, poller cursors, import checkpoints and the audit log.

CREATE TABLE tenants (
    tenant_id        text PRIMARY KEY,
    name             text NOT NULL,
    -- SHA-256 of the tenant's API token; the token itself is shown once at creation.
    token_sha256     bytea NOT NULL UNIQUE,
    created_at       timestamptz NOT NULL DEFAULT now(),
    disabled_at      timestamptz
);

CREATE TABLE stripe_connections (
    connection_id        text PRIMARY KEY,
    tenant_id            text NOT NULL REFERENCES tenants (tenant_id),
    livemode             boolean NOT NULL,
    stripe_account_id    text,
    -- AES-GCM ciphertext of the restricted key (vault format: version, key id, nonce, ct).
    key_ciphertext       bytea,
    key_hint             text,               -- e.g. rk_live_…wxyz, safe to show
    -- The webhook URL token: looked up by its SHA-256, kept encrypted so the URL can be shown again.
    webhook_token_sha256 bytea NOT NULL UNIQUE,
    webhook_token_ciphertext bytea NOT NULL,
    status               text NOT NULL DEFAULT 'disconnected' CHECK (status IN (
                             'connected', 'webhook_unverified', 'polling_only', 'key_invalid',
                             'permission_missing', 'rate_limited', 'disconnected')),
    status_reason        text,
    status_changed_at    timestamptz NOT NULL DEFAULT now(),
    webhook_verified_at  timestamptz,
    last_webhook_at      timestamptz,
    last_poll_at         timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, livemode)
);

CREATE TABLE webhook_secrets (
    secret_id        bigserial PRIMARY KEY,
    connection_id    text NOT NULL REFERENCES stripe_connections (connection_id) ON DELETE CASCADE,
    ciphertext       bytea NOT NULL,
    hint             text NOT NULL,          -- whsec_…abcd
    created_at       timestamptz NOT NULL DEFAULT now(),
    -- Set when a newer secret replaces this one: Stripe keeps signing with both until then.
    expires_at       timestamptz
);
CREATE INDEX webhook_secrets_by_connection ON webhook_secrets (connection_id);

CREATE TABLE poll_cursors (
    connection_id       text PRIMARY KEY REFERENCES stripe_connections (connection_id) ON DELETE CASCADE,
    -- created time (epoch seconds) of the newest event published and acknowledged by Kafka
    last_event_created  bigint NOT NULL,
    updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE import_runs (
    connection_id    text NOT NULL REFERENCES stripe_connections (connection_id) ON DELETE CASCADE,
    resource         text NOT NULL,
    window_start     bigint NOT NULL,        -- created[gte], epoch seconds
    window_end       bigint NOT NULL,        -- the import's "now", epoch seconds
    last_object_id   text,                   -- starting_after for the next page
    oldest_created   bigint,
    objects_published bigint NOT NULL DEFAULT 0,
    done_at          timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connection_id, resource)
);

CREATE TABLE audit_log (
    audit_id         bigserial PRIMARY KEY,
    at               timestamptz NOT NULL DEFAULT now(),
    actor            text NOT NULL,          -- 'admin' or 'tenant:<id>' or 'system'
    tenant_id        text,
    action           text NOT NULL,
    detail           jsonb NOT NULL DEFAULT '{}'::jsonb
);
