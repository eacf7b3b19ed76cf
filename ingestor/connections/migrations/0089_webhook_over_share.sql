-- When the receiver last answered one of the connection's signed deliveries 429 because the connection had spent its
-- share of the receiver's work (ingestor/receiver/shares.py): shown on the connection, so a tenant whose webhooks are
-- held back sees it (Stripe delivers them again, and the poller reads them meanwhile).
ALTER TABLE stripe_connections ADD COLUMN webhook_over_share_at timestamptz;
COMMENT ON COLUMN stripe_connections.webhook_over_share_at IS
    'When the receiver last refused a signed delivery of this connection (429) for being over its share of the work';
