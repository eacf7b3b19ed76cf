"""The local stack without Docker: Kafka (KRaft, jars from Maven Central) and Debian's PostgreSQL.

Used by the tests, the main-job command (`./dev run`) and the benchmarks alike. Every step is
idempotent: what is already running is reused, a stale pid file is cleaned up with a message, and
a port held by something else is reported instead of silently clashing.
"""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
STATE_DIR = REPO_ROOT / ".stack"
CACHE_DIR = REPO_ROOT / ".cache"


class StackError(RuntimeError):
    """A piece of the local stack could not be installed, started or reached."""

    retriable = False
