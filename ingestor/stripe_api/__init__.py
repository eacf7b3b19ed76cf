"""Reading Stripe: the read-only client, per-account request budgets, and what we read (the catalog)."""
