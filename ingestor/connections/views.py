"""What the control API shows of a connection and its import: pure JSON views of what the stores hold.

No I/O: `ConnectionService` reads the connection, its webhook token, its import's checkpoints and its latest check
against Stripe, and these turn them into the views (hints only, never a key or secret).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ingestor.connections.status import STATUSES, docs_link
from ingestor.connections.store import Connection
from ingestor.sources.checkpoints import ImportCheckpoint, run_window
from ingestor.stripe_api.catalog import EVENT_TYPES

MONTH_S = 2_629_746  # the average Gregorian month, in seconds


def import_window(now: float, months: int) -> tuple[int, int]:
    """Returns (created[gte], created[lte]) for an import of the last `months` months ending `now`."""
    end = int(now)
    return end - months * MONTH_S, end


def import_progress_json(checkpoints: list[ImportCheckpoint],
                         read_alone_since: datetime | None = None) -> dict[str, Any]:
    """Returns the import's progress: per resource objects published, share of the window covered, objects per
    second since the import last stood still and an estimated time left (None while too little is known), and
    since when its pages are read one at a time (a page of the account killed the process reading it; None: they
    are not)."""
    if not checkpoints:
        return {"state": "none", "resources": {}, "read_alone_since": iso(read_alone_since)}
    first = checkpoints[0]
    window_start, window_end = run_window(checkpoints)
    paused = next((c.paused_reason for c in checkpoints if c.paused_reason and not c.done), None)
    done = all(c.done for c in checkpoints)
    return {
        "run_id": first.run_id,
        "reason": first.reason,
        "window_start": window_start,
        "window_end": window_end,
        "state": "done" if done else "paused" if paused else "running",
        "paused_reason": paused,
        "objects_published": sum(c.objects_published for c in checkpoints),
        "covered": min(c.covered() for c in checkpoints),
        "read_alone_since": iso(read_alone_since),
        **_speed(checkpoints, running=not (done or paused)),
        "resources": {
            c.resource: {"objects_published": c.objects_published, "covered": round(c.covered(), 4), "done": c.done,
                         **_speed([c], running=not (c.done or paused))}
            for c in checkpoints
        },
    }


def _speed(checkpoints: list[ImportCheckpoint], running: bool) -> dict[str, float | None]:
    """Objects per second and seconds left for resources paged together (they share one request budget)."""
    rates = [c.objects_per_s() for c in checkpoints if not c.done]
    lefts = [c.objects_left() for c in checkpoints]
    rate = sum(r for r in rates if r is not None) if rates and all(r is not None for r in rates) else None
    left = sum(x for x in lefts if x is not None) if all(x is not None for x in lefts) else None
    eta = left / rate if running and rate and left is not None else 0.0 if left == 0 else None
    return {"objects_per_s": None if rate is None else round(rate, 1), "eta_s": None if eta is None else round(eta)}


def iso(value: datetime | None) -> str | None:
    """A time as ISO 8601 text, or None."""
    return value.isoformat() if value else None


def connection_json(connection: Connection, webhook_url: str, docs_url: str, import_progress: dict[str, Any],
                    reconcile: dict[str, Any]) -> dict[str, Any]:
    """Returns what the connector page shows for one connection: status, texts, recovery steps, webhook set-up,
    import progress and the latest check."""
    info = STATUSES[connection.status]
    last_error = None
    if connection.last_error_code:
        last_error = {"code": connection.last_error_code, "message": connection.last_error,
                      "at": iso(connection.last_error_at), "docs": docs_link(docs_url, connection.last_error_code)}
    return {
        "connection_id": connection.connection_id,
        "mode": connection.mode,
        "status": connection.status,
        "status_title": info.title,
        "status_meaning": info.meaning,
        "status_reason": connection.status_reason,
        "status_changed_at": iso(connection.status_changed_at),
        "recovery_steps": list(info.recovery),
        "docs": docs_link(docs_url, connection.status),
        "key": {"hint": connection.key_hint, "tested_at": iso(connection.key_tested_at)} if connection.has_key else None,
        "webhook": {
            "url": webhook_url,
            "event_types": list(EVENT_TYPES),
            "secret_hints": list(connection.webhook_secret_hints),
            "test_delivery_received_at": iso(connection.webhook_verified_at),
            "last_webhook_at": iso(connection.last_webhook_at),
            "over_share_at": iso(connection.webhook_over_share_at),
        },
        "last_poll_at": iso(connection.last_poll_at),
        "last_error": last_error,
        "catchup_needed_since": iso(connection.catchup_needed_since),
        "import": import_progress,
        "reconcile": reconcile,
    }
