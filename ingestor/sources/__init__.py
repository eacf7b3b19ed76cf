"""The producers that read Stripe on their own schedule: the events poller, the history importer, their checkpoints."""
