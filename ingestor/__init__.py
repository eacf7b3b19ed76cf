"""The write path: Stripe events in (receiver, sources), redacted into one envelope, published to Kafka.

Follow an event through the folders in order: `receiver/` (webhook deliveries) and `sources/`
(the events poller and the history importer, reading through `stripe_api/`) both hand Stripe JSON
to `envelope/`, which redacts it, builds the Avro envelope and publishes it on the raw topic.
`connections/` keeps tenants, keys and webhook secrets; `control/` is the control API and the page.
Never imports `projections`.
"""
