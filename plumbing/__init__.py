"""Infrastructure both paths share: settings, logs, Kafka client configuration, Postgres pool, migrations.

`ingestor` (write path) and `projections` (read path) never import each other; both import
`schemas` (the envelope contract) and `plumbing` (how we talk to Kafka and Postgres).
"""
