"""Kafka → Postgres exactly once: the consumer group member, the store that applies a batch in one transaction, replay."""
