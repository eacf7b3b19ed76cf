"""Tenants and their Stripe connections: lifecycle, storage, status, key test, and the key vault."""

from pathlib import Path

# The control plane's migrations (tenants, connections, secrets, cursors, checkpoints, audit).
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
