"""The read path: Kafka → dedupe → apply → per-tenant revenue tables → analytics views.

`projector/` consumes the raw topic and applies each batch once (consumer, store, replay);
`handlers/` are the pure functions from one envelope to the rows it writes; `read/` is the AI query
layer over the analytics views. `migrations/` builds the tables and views. Never imports `ingestor`.
"""

from pathlib import Path

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
