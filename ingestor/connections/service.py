"""The connection lifecycle as the control API drives it: Test, Connect, rotate, webhook secret, import, disconnect.

Place in the flow: `ingestor/control/api.py` authenticates the caller and turns requests into calls here;
this module decides, with the key test (`key_test.py`), the stores (`store.py`, `tenant_store.py`), the
checkpoints (`ingestor/sources/checkpoints.py`) and the status texts (`status.py`). A pasted key is decrypted nowhere
and stored only by `connect`, after it passed Test; every change is written to the audit log
without its secret. Views returned here contain hints (`rk_live_…wxyz`), never a key or secret.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from ingestor.connections.key_formats import KeyCheck, classify_key, validate_webhook_secret
from ingestor.connections.key_test import KeyTestResult, test_key
from ingestor.connections.status import RECOVERABLE_BY_TEST, docs_link
from ingestor.connections.store import Connection, PostgresConnectionStore
from ingestor.connections.tenant_store import PostgresTenantStore
from ingestor.connections.views import connection_json, import_progress_json, import_window, iso
from ingestor.errors import IngestError, ObjectMissingError
from ingestor.sources.checkpoints import PostgresCheckpoints
from ingestor.sources.reconcile import Reconciler
from ingestor.stripe_api.catalog import IMPORTED
from ingestor.stripe_api.readers import StripeReaders
from plumbing.logs import get_logger
from plumbing.runtime import cancel_and_wait
from plumbing.settings import Settings

log = get_logger(__name__)



class ControlError(IngestError):
    """A control API request that cannot be done as asked; `status` is the HTTP status to answer."""

    status = 400


class NotFoundError(ControlError):
    """No such tenant or connection (or not one the caller may see)."""

    status = 404
    code = "not_found"


class KeyNotAcceptedError(ControlError):
    """The key was refused by the format check or did not pass Test; nothing was stored."""

    status = 422

    def __init__(self, result: KeyTestResult):
        super().__init__(result.summary(), "key_refused" if not result.check.accepted else "key_test_failed")
        self.result = result


class RefusedInputError(ControlError):
    """The input is well-formed JSON but refused (malformed secret, wrong-mode key); nothing was stored."""

    status = 422


class StripeBusyError(ControlError):
    """Stripe could not be asked what the request needs (5xx, unreachable, rate-limited); nothing was stored."""

    status = 503
    code = "stripe_unavailable"


MAX_NAME_CHARS = 200
READER_LEVELS = ("summary", "standard", "full")
# A reader token reads both modes ("all") or one: live data only, test data only.
READER_MODES = ("all", "live", "test")
# Canonical IANA names only: an area and a place ("Europe/Paris", "America/Argentina/Buenos_Aires", "Etc/GMT+5"),
# or UTC. Not the abbreviations that are also zone names (CET, EST, MET…: in `AT TIME ZONE` PostgreSQL reads
# them as fixed offsets, summer time lost), not `localtime` or `Factory` (the host's zone, none), not the legacy
# aliases (US/Pacific, GB: optional in newer tzdata, so an upgrade could make every view fail).
TIME_ZONE_SHAPE = re.compile(r"UTC|(Africa|America|Antarctica|Arctic|Asia|Atlantic|Australia|Europe|Indian|Pacific|Etc)"
                             r"(/[A-Za-z0-9_+-]{1,30}){1,2}")


def clean_time_zone(value: object) -> str:
    """Returns a canonical IANA time zone name as given (e.g. "Europe/Paris"); raises RefusedInputError for
    anything else in shape. Whether the zone exists is PostgreSQL's zone list's to say (the store asks it)."""
    if not isinstance(value, str) or not TIME_ZONE_SHAPE.fullmatch(value):
        raise RefusedInputError('time_zone must be an IANA time zone name such as "Europe/Paris" or "UTC" '
                                "(an area and a place; abbreviations such as CET and offsets are not accepted)",
                                "invalid_time_zone")
    return value


def clean_name(value: object, what: str) -> str:
    """Returns a display name trimmed of outer spaces; raises RefusedInputError unless it is 1 to 200
    printable characters (no control characters, NUL included)."""
    if not isinstance(value, str) or not value.strip():
        raise RefusedInputError(f"the {what} name must be a non-empty string", f"invalid_{what}_name")
    name = value.strip()
    if len(name) > MAX_NAME_CHARS or not name.isprintable():
        raise RefusedInputError(f"the {what} name must be at most {MAX_NAME_CHARS} printable characters",
                                f"invalid_{what}_name")
    return name


class ConnectionService:
    """The connection lifecycle of every tenant."""

    def __init__(
        self, store: PostgresConnectionStore, tenants: PostgresTenantStore, checkpoints: PostgresCheckpoints,
        readers: StripeReaders, settings: Settings, on_secrets_changed: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time, reconciler: Reconciler | None = None,
    ):
        self._reconciler = reconciler
        self._reconciling: dict[str, asyncio.Task[None]] = {}  # connection id → the check running in the background
        self._store = store
        self._tenants = tenants
        self._checkpoints = checkpoints
        self._readers = readers
        self._settings = settings
        self._on_secrets_changed = on_secrets_changed
        self._clock = clock

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), tz=timezone.utc)

    async def create_tenant(self, actor: str, name: str) -> dict[str, str]:
        """Creates a tenant; returns its id and API token (shown this once). Raises RefusedInputError for a bad name."""
        name = clean_name(name, "tenant")
        tenant_id, token = await self._tenants.create_tenant(name)
        await self._tenants.audit(actor, tenant_id, "tenant.created", {"name": name})
        return {"tenant_id": tenant_id, "name": name, "api_token": token}

    async def tenant(self, tenant_id: str) -> dict[str, Any]:
        """Returns the tenant with the views of its connections."""
        tenant = await self._tenants.tenant(tenant_id)
        if tenant is None:
            raise NotFoundError("no such tenant")
        connections = [await self._store.find_connection(tenant_id, live) for live in (False, True)]
        return {
            "tenant_id": tenant_id, "name": tenant["name"], "time_zone": tenant["time_zone"],
            "created_at": iso(tenant["created_at"]),
            "connections": {c.mode: await self.view(c) for c in connections if c is not None},
            "unreadable_events": {**await self._tenants.unreadable_events(tenant_id),
                                  "docs": docs_link(self._settings.control.docs_url, "unreadable_events")},
        }

    async def set_time_zone(self, actor: str, tenant_id: str, time_zone: object) -> dict[str, Any]:
        """Sets the zone whose days and months every revenue figure of the tenant uses (from the next read on:
        the views derive days and months at read time, so no replay). Raises RefusedInputError for a name
        PostgreSQL does not know; nothing changes then."""
        await self._require_tenant(tenant_id)
        zone = clean_time_zone(time_zone)
        previous = await self._tenants.set_time_zone(actor, tenant_id, zone)
        if previous is False:
            raise RefusedInputError(f'"{zone}" is not a time zone PostgreSQL knows; use an IANA name such as '
                                    '"America/New_York"', "invalid_time_zone")
        if previous is True:
            raise NotFoundError("no such tenant")
        return {"tenant_id": tenant_id, "time_zone": zone}

    async def _require_tenant(self, tenant_id: str) -> None:
        if await self._tenants.tenant(tenant_id) is None:
            raise NotFoundError("no such tenant")

    async def _connection(self, tenant_id: str, mode: str) -> Connection:
        connection = await self._store.find_connection(tenant_id, mode == "live")
        if connection is None:
            raise NotFoundError(f"this tenant has no {mode}-mode Stripe connection")
        return connection

    async def _test(self, check: KeyCheck, connection: Connection | None) -> KeyTestResult:
        if not check.accepted:
            return await test_key(check, None)
        budget = connection.connection_id if connection else None
        reader = self._readers.reader(check.key, budget, check.mode == "live", quick=True)
        try:
            return await test_key(check, reader)
        finally:
            await reader.close()

    async def test_key(self, actor: str, tenant_id: str, raw_key: str) -> KeyTestResult:
        """Tests a pasted key without storing it."""
        await self._require_tenant(tenant_id)
        check = classify_key(raw_key)
        existing = await self._store.find_connection(tenant_id, check.mode == "live") if check.accepted else None
        result = await self._test(check, existing)
        await self._tenants.audit(actor, tenant_id, "key.tested", {"key": check.masked, "outcome": result.outcome})
        return result

    async def connect(self, actor: str, tenant_id: str, raw_key: str, rotate_only: bool = False) -> dict[str, Any]:
        """Tests the key and, if green, stores it (swapping out any previous key atomically).

        A first connection (or a reconnection after a disconnect) also starts the history import;
        a rotation resumes an import paused by the old key's failure from its checkpoints.
        Raises KeyNotAcceptedError (nothing stored) or NotFoundError (no such tenant, or rotate_only
        without a connection; a refused key is reported as refused, whichever the route).
        """
        await self._require_tenant(tenant_id)
        check = classify_key(raw_key)
        livemode = check.mode == "live"
        existing = await self._store.find_connection(tenant_id, livemode) if check.accepted else None
        if rotate_only and check.accepted and (existing is None or existing.status == "disconnected"):
            raise NotFoundError("there is no connected key to rotate in this mode; connect instead")
        result = await self._test(check, existing)
        if not result.green:
            await self._tenants.audit(actor, tenant_id, "key.refused", {"key": check.masked, "outcome": result.outcome})
            raise KeyNotAcceptedError(result)
        if existing is not None:
            await self._same_account(actor, tenant_id, check, existing)
        now = self._now()
        if existing is None:
            connection_id, _ = await self._store.create_connection(tenant_id, livemode)
        else:
            connection_id = existing.connection_id
        rotation = existing is not None and existing.status != "disconnected"
        await self._store.store_key(connection_id, check.key, check.masked, now)
        log.info("restricted key stored", connection_id=connection_id, key=check.masked, rotation=rotation)
        if rotation:
            await self._checkpoints.resume_import(connection_id)
            await self._tenants.audit(actor, tenant_id, "key.rotated", {
                "mode": check.mode, "old_key": existing.key_hint if existing else None, "new_key": check.masked})
        else:
            if existing is None:  # the Test read on a budget of its own: counted in the new one before the import
                await self._readers.budgets.spent_before(connection_id, livemode, result.requests)
            await self._start_import(connection_id, "connect", self._settings.importer.history_months)
            await self._tenants.audit(actor, tenant_id, "connection.connected", {"mode": check.mode, "key": check.masked})
        connection = await self._connection(tenant_id, check.mode or "test")
        return {"connection": await self.view(connection), "key_test": result.to_json()}

    async def _same_account(self, actor: str, tenant_id: str, check: KeyCheck, existing: Connection) -> None:
        """Refuses a key (a rotation, or a reconnection that kept the data) that reads another Stripe account than
        the one the tenant's tables hold: its objects would be mixed with theirs, every figure silently wrong. A
        restricted key cannot read its account's id, so a few objects the tables hold are retrieved with it: none
        there (404) is another account. Raises RefusedInputError, or StripeBusyError when Stripe cannot be asked
        (nothing stored either way)."""
        held = await self._store.held_object_ids(tenant_id, check.mode == "live")
        if not held:
            return
        reader = self._readers.reader(check.key, existing.connection_id, check.mode == "live", quick=True)
        try:
            for resource, object_id in held:
                try:
                    await reader.retrieve_raw(resource, object_id, {})
                    return
                except ObjectMissingError:
                    continue
        except IngestError as exc:
            raise StripeBusyError(f"Stripe could not be asked whether this key reads the same account ({exc.code}); "
                                  "nothing was stored, try again in a minute") from None
        finally:
            await reader.close()
        await self._tenants.audit(actor, tenant_id, "key.refused", {"key": check.masked,
                                                                     "outcome": "another_account"})
        raise RefusedInputError(
            f"this key reads another Stripe account than the one this connection's data came from (none of "
            f"{', '.join(object_id for _, object_id in held)} is there): its objects would be mixed with that "
            f"data. Use a key of the same account, or disconnect with purge first to start again",
            "key_for_another_account")

    async def retest(self, actor: str, tenant_id: str, mode: str) -> dict[str, Any]:
        """Tests the stored key again; green recovers a key_invalid/permission_missing/rate_limited connection."""
        connection = await self._connection(tenant_id, mode)
        stored = await self._store.load_key(connection.connection_id)
        if stored is None:
            raise NotFoundError("this connection has no stored key; connect with a restricted key")
        key, _ = stored
        result = await self._test(classify_key(key), connection)
        if result.green:
            await self._store.recover(connection.connection_id, RECOVERABLE_BY_TEST, self._now())
            await self._checkpoints.resume_import(connection.connection_id)
        await self._tenants.audit(actor, tenant_id, "key.retested", {"key": connection.key_hint, "outcome": result.outcome})
        connection = await self._connection(tenant_id, mode)
        return {"connection": await self.view(connection), "key_test": result.to_json()}

    async def set_webhook_secret(self, actor: str, tenant_id: str, mode: str, raw_secret: str) -> dict[str, Any]:
        """Stores a new signing secret; the previous one keeps working for the grace period (Stripe's roll)."""
        connection = await self._connection(tenant_id, mode)
        if connection.status == "disconnected":
            raise NotFoundError("this connection is disconnected; connect it again first")
        check = validate_webhook_secret(raw_secret)
        if not check.accepted:
            raise RefusedInputError(check.message, check.code)
        grace = timedelta(seconds=self._settings.control.webhook_secret_grace_s)
        rolled = bool(connection.webhook_secret_hints)
        await self._store.add_webhook_secret(connection.connection_id, check.key, self._now(), grace)
        await self._store.webhook_secret_added(connection.connection_id)
        self._on_secrets_changed()
        await self._tenants.audit(actor, tenant_id, "webhook_secret.rolled" if rolled else "webhook_secret.set", {
            "mode": mode, "secret": check.masked, "grace_s": int(grace.total_seconds()) if rolled else 0})
        return {"connection": await self.view(await self._connection(tenant_id, mode))}

    async def rotate_webhook_url(self, actor: str, tenant_id: str, mode: str) -> dict[str, Any]:
        """Gives the connection a new webhook URL; the old one answers 404 at once here and within the target cache's
        lifetime in other web processes. The endpoint's URL must then be changed in Stripe (its retries follow)."""
        connection = await self._connection(tenant_id, mode)
        if connection.status == "disconnected":
            raise NotFoundError("this connection is disconnected; connect it again first")
        await self._store.new_webhook_token(connection.connection_id, tenant_id)
        self._on_secrets_changed()
        await self._tenants.audit(actor, tenant_id, "webhook_url.rotated", {"mode": mode})
        return {"connection": await self.view(await self._connection(tenant_id, mode))}

    async def _start_import(self, connection_id: str, reason: str, months: int) -> str:
        start, end = import_window(self._clock(), months)
        return await self._checkpoints.start_import(connection_id, [r.name for r in IMPORTED], start, end, reason)

    async def request_import(self, actor: str, tenant_id: str, mode: str, months: int | None) -> dict[str, Any]:
        """Starts a new import of the last `months` months (default from settings)."""
        connection = await self._connection(tenant_id, mode)
        if not connection.has_key:
            raise NotFoundError("this connection has no key; connect it first")
        months = months or self._settings.importer.history_months
        run_id = await self._start_import(connection.connection_id, "on_demand", months)
        await self._tenants.audit(actor, tenant_id, "import.requested", {"mode": mode, "months": months, "run_id": run_id})
        return await self.import_progress(tenant_id, mode)

    async def start_reconcile(self, actor: str, tenant_id: str, mode: str, months: int | None) -> dict[str, Any]:
        """Starts a check against Stripe of the last `months` months (default: the import's) in the background."""
        connection = await self._connection(tenant_id, mode)
        if self._reconciler is None or not connection.has_key:
            raise NotFoundError("this connection has no key; connect it first")
        running = self._reconciling.get(connection.connection_id)
        if running is not None and not running.done():
            raise ControlError("a check against Stripe is already running for this connection", "already_running")
        window = import_window(self._clock(), months or self._settings.importer.history_months)
        reconciler, connection_id = self._reconciler, connection.connection_id

        async def check() -> None:
            try:
                await reconciler.run(connection_id, window, "on_demand")
            except Exception as exc:  # noqa: BLE001 - a background check: its failure is logged, the API shows no result
                log.warning("check against Stripe failed", connection_id=connection_id, error=repr(exc))

        self._reconciling[connection_id] = asyncio.get_running_loop().create_task(check())
        await self._tenants.audit(actor, tenant_id, "reconcile.requested", {"mode": mode, "window": list(window)})
        return await self.reconcile_status(tenant_id, mode)

    async def close(self) -> None:
        """Cancels the checks still running (they store nothing unless finished)."""
        await cancel_and_wait([task for task in self._reconciling.values() if not task.done()])

    async def reconcile_status(self, tenant_id: str, mode: str) -> dict[str, Any]:
        """Returns whether a check is running and the latest finished one."""
        return await self._reconcile_view(await self._connection(tenant_id, mode))

    async def _reconcile_view(self, connection: Connection) -> dict[str, Any]:
        running = self._reconciling.get(connection.connection_id)
        latest = await self._reconciler.runs.latest(connection.connection_id) if self._reconciler else None
        return {"running": running is not None and not running.done(), "latest": latest}

    async def import_progress(self, tenant_id: str, mode: str) -> dict[str, Any]:
        """Returns the progress of the connection's latest import."""
        return await self._import_progress(await self._connection(tenant_id, mode))

    async def _import_progress(self, connection: Connection) -> dict[str, Any]:
        return import_progress_json(await self._checkpoints.import_checkpoints(connection.connection_id),
                                    connection.pages_read_alone_since)

    async def status(self, tenant_id: str, mode: str) -> dict[str, Any]:
        """Returns the connection's view: status, texts, recovery steps, webhook set-up, import progress."""
        return await self.view(await self._connection(tenant_id, mode))

    async def disconnect(self, actor: str, tenant_id: str, mode: str, purge: bool) -> dict[str, Any]:
        """Deletes the key and secrets and stops reading; with `purge`, deletes the tenant's data too.

        Purging is tenant-wide (projected rows are the tenant's, in both modes): both connections are
        disconnected and every row with this tenant id goes, except the tenant and its audit log.
        """
        connection = await self._connection(tenant_id, mode)
        now = self._now()
        targets = [connection]
        if purge:
            other = await self._store.find_connection(tenant_id, not connection.livemode)
            targets += [other] if other else []
        for target in targets:
            await self._store.disconnect(target.connection_id, now)
        self._on_secrets_changed()
        deleted = await self._tenants.purge_tenant_data(tenant_id) if purge else {}
        await self._tenants.audit(actor, tenant_id, "connection.disconnected",
                                {"mode": mode, "purge": purge, "rows_deleted": deleted})
        return {"disconnected": [t.mode for t in targets], "data": "purged" if purge else "kept",
                "rows_deleted": deleted}

    async def delete_tenant(self, actor: str, tenant_id: str) -> dict[str, Any]:
        """Deletes the tenant: both connections disconnected, its data purged, its reader roles dropped
        (their sessions end) and tokens revoked, its API token disabled. The audit log stays."""
        await self._require_tenant(tenant_id)
        now = self._now()
        for live in (False, True):
            connection = await self._store.find_connection(tenant_id, live)
            if connection is not None:
                await self._store.disconnect(connection.connection_id, now)
        self._on_secrets_changed()
        deleted = await self._tenants.purge_tenant_data(tenant_id)
        roles = await self._tenants.drop_readers(tenant_id)
        await self._tenants.disable_tenant(tenant_id)
        await self._tenants.audit(actor, tenant_id, "tenant.deleted", {"rows_deleted": deleted, "reader_roles": roles})
        return {"tenant_id": tenant_id, "deleted": True, "rows_deleted": deleted, "reader_roles_dropped": roles}

    async def issue_reader_token(self, actor: str, tenant_id: str, level: object, name: object,
                                 mode: object = "all") -> dict[str, Any]:
        """Issues a reader token bound to one permission level and one mode, or both modes (shown this once)."""
        await self._require_tenant(tenant_id)
        if level not in READER_LEVELS:
            raise RefusedInputError(f"level is one of {', '.join(READER_LEVELS)}", "invalid_level")
        if mode not in READER_MODES:
            raise RefusedInputError(f"mode is one of {', '.join(READER_MODES)}", "invalid_mode")
        label = clean_name(name if name is not None else f"{level} reader", "reader")
        token_id, token = await self._tenants.issue_reader_token(tenant_id, str(level), label, str(mode))
        await self._tenants.audit(actor, tenant_id, "reader_token.issued", {"token_id": token_id, "level": level,
                                                                            "mode": mode, "name": label})
        return {"token_id": token_id, "level": level, "mode": mode, "name": label, "token": token}

    async def reader_tokens(self, tenant_id: str) -> list[dict[str, Any]]:
        """Returns the tenant's reader tokens (never the tokens themselves)."""
        await self._require_tenant(tenant_id)
        return [{**t, "created_at": iso(t["created_at"]), "revoked_at": iso(t["revoked_at"])}
                for t in await self._tenants.reader_tokens(tenant_id)]

    async def revoke_reader_token(self, actor: str, tenant_id: str, token_id: str) -> dict[str, Any]:
        """Revokes one reader token; raises NotFoundError for an unknown or already revoked one."""
        if not await self._tenants.revoke_reader_token(tenant_id, token_id):
            raise NotFoundError("no such active reader token")
        await self._tenants.audit(actor, tenant_id, "reader_token.revoked", {"token_id": token_id})
        return {"token_id": token_id, "revoked": True}

    async def audit_log(self, tenant_id: str) -> list[dict[str, Any]]:
        """Returns the tenant's audit entries, newest first."""
        return [{**e, "at": iso(e["at"])} for e in await self._tenants.audit_entries(tenant_id)]

    async def view(self, connection: Connection) -> dict[str, Any]:
        """Returns what the connector page shows for one connection (hints only, no secret)."""
        token = await self._store.webhook_token(connection)
        return connection_json(connection, f"{self._settings.http.public_base_url.rstrip('/')}/webhooks/stripe/{token}",
                               self._settings.control.docs_url, await self._import_progress(connection),
                               await self._reconcile_view(connection))
