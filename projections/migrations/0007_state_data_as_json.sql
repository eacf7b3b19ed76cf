-- The redacted Stripe object kept with each current-state row is stored as json (validated text),
-- not jsonb: nothing queries inside it, and parsing ~3 KB into jsonb on every upsert was most of
-- the projector's transaction time.
CREATE SCHEMA IF NOT EXISTS projection;
SET LOCAL search_path TO projection;

ALTER TABLE customers ALTER COLUMN data TYPE json USING data::json;
ALTER TABLE charges ALTER COLUMN data TYPE json USING data::json;
ALTER TABLE subscriptions ALTER COLUMN data TYPE json USING data::json;
ALTER TABLE invoices ALTER COLUMN data TYPE json USING data::json;
ALTER TABLE payment_intents ALTER COLUMN data TYPE json USING data::json;
