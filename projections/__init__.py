"""The read path: consumers of the raw events topic that keep per-tenant revenue tables in Postgres."""

from pathlib import Path

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
