-- Exchange rates the operator loads (`ingestor fx load FILE`), for revenue in one reporting currency. One rate
-- per day, currency and reporting currency: 1 major unit of `currency` is `rate` major units of
-- `reporting_currency` (eur → usd 1.0823 on 2026-03-31). Operator-wide reference data, not a tenant's; without a
-- rate nothing is converted (the views show which currencies lack one instead of a figure).
CREATE TABLE fx_rates (
    reporting_currency text NOT NULL CHECK (reporting_currency ~ '^[a-z]{3}$'),
    currency           text NOT NULL CHECK (currency ~ '^[a-z]{3}$'),
    rate_date          date NOT NULL,
    rate               numeric(30, 12) NOT NULL CHECK (rate > 0),
    loaded_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (reporting_currency, currency, rate_date),
    CHECK (currency <> reporting_currency)
);

GRANT SELECT ON fx_rates TO analytics_owner;
