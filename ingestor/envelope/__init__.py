"""From Stripe JSON to the raw topic: shape checks, card-data redaction, envelopes, the one publisher."""
