-- A reader credential may be bound to one Stripe mode: a token for live data only, or for test data only,
-- or both ('all', what every credential so far is). The mode is the token's, like its level; each mode-bound
-- credential has a reader role of its own, so the database keeps the other mode's rows out of reach.
ALTER TABLE reader_credentials ADD COLUMN mode text NOT NULL DEFAULT 'all' CHECK (mode IN ('all', 'live', 'test'));
ALTER TABLE reader_credentials DROP CONSTRAINT reader_credentials_pkey;
ALTER TABLE reader_credentials ADD PRIMARY KEY (tenant_id, level, mode);
ALTER TABLE reader_tokens ADD COLUMN mode text NOT NULL DEFAULT 'all' CHECK (mode IN ('all', 'live', 'test'));
