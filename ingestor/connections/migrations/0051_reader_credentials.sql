-- Reader credentials of the AI query layer, per tenant and permission level (issue: isolation).
--
-- reader_credentials: the password of each tenant's reader role (analytics_private.reader_roles names
-- the role), encrypted by the key vault like the Stripe keys; the read API logs in with it.
-- reader_tokens: the API tokens a tenant hands to its readers (an assistant, a person), each bound to
-- one level, stored as SHA-256 only. The level is the token's: a request cannot ask for more.
CREATE TABLE reader_credentials (
    tenant_id           text NOT NULL REFERENCES tenants (tenant_id),
    level               text NOT NULL CHECK (level IN ('summary', 'standard', 'full')),
    role_name           text NOT NULL UNIQUE,
    password_ciphertext bytea NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, level)
);

CREATE TABLE reader_tokens (
    tenant_id    text NOT NULL REFERENCES tenants (tenant_id),
    token_id     text NOT NULL,
    token_sha256 bytea NOT NULL UNIQUE,
    level        text NOT NULL CHECK (level IN ('summary', 'standard', 'full')),
    name         text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    PRIMARY KEY (tenant_id, token_id)
);
