"""The web process: webhook receiver, control API (`/api/…`), read API, MCP endpoint (`/mcp`), connector page,
health, metrics.

The one place that composes the write path (`ingestor`) with the read path's API (`projections`),
which never import each other.

Resources open in order and close in reverse through aiohttp's `cleanup_ctx`: Postgres pool,
Kafka publisher, then the background task that stores when each connection last received a
webhook. On SIGTERM aiohttp stops accepting, lets in-flight deliveries finish (bounded by the
shutdown timeout) and only then runs the cleanups, so the producer flushes before it closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import signal
from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, start_http_server

from ingestor.connections.service import ConnectionService
from ingestor.connections.store import PostgresConnectionStore
from ingestor.connections.tenant_store import PostgresTenantStore
from ingestor.connections.vault import KeyringConfigError, MasterKeyring
from ingestor.control import api as control_api
from ingestor.control.page import add_page_routes
from ingestor.envelope.publisher import RawEventPublisher
from ingestor.receiver.webhook import CachedWebhookTargets, ReceiverMetrics, WebhookReceiver
from ingestor.sources.checkpoints import PostgresCheckpoints
from ingestor.sources.reconcile import Reconciler
from ingestor.stripe_api.discounts import StripeDiscounts
from ingestor.stripe_api.readers import StripeReaders
from plumbing.kafka import KafkaPublisher, PublishError
from plumbing.logs import configure_logging, get_logger
from plumbing.postgres import DatabaseUnavailableError, create_pool
from plumbing.runtime import log_tasks, tune_gc
from plumbing.settings import Settings, VaultSettings, load_settings
from projections.read.client import Grant, Level
from projections.read.http_api import add_read_routes
from projections.read.mcp_http import add_mcp_routes
from service.http_errors import json_error, json_errors

log = get_logger(__name__)

POOL = web.AppKey("pool", asyncpg.Pool)
PUBLISHER = web.AppKey("publisher", KafkaPublisher)
RECEIVER = web.AppKey("receiver", WebhookReceiver)
REGISTRY = web.AppKey("registry", CollectorRegistry)
STORE = web.AppKey("store", PostgresConnectionStore)
METRICS_TOKEN = web.AppKey("metrics_token", str)
TENANTS = web.AppKey("tenants", PostgresTenantStore)
ACTIVITY_FLUSH_INTERVAL_S = 1.0


def load_keyring(settings: VaultSettings) -> MasterKeyring:
    """Returns the master keyring from the setting or the file; raises KeyringConfigError if neither is set."""
    if settings.master_keys is not None:
        return MasterKeyring.from_setting(settings.master_keys.get_secret_value())
    if settings.master_keys_file:
        return MasterKeyring.from_file(settings.master_keys_file)
    raise KeyringConfigError("set INGESTOR_VAULT__MASTER_KEYS or INGESTOR_VAULT__MASTER_KEYS_FILE")


def create_ingest_app(
    settings: Settings, keyring: MasterKeyring, registry: CollectorRegistry | None = None,
    readers: StripeReaders | None = None,
) -> web.Application:
    """Returns the write path's application (receiver, control API, health, metrics), not yet started.

    Pass `readers` to share one per-account Stripe budget with a poller or importer in this process.
    """
    app = web.Application(client_max_size=settings.receiver.max_body_bytes + 1, middlewares=[json_errors])
    app[REGISTRY] = registry or CollectorRegistry()
    app[METRICS_TOKEN] = settings.http.metrics_token.get_secret_value() if settings.http.metrics_token else ""

    async def resources(app: web.Application) -> AsyncIterator[None]:
        pool = await create_pool(settings.postgres)
        publisher = KafkaPublisher(settings.kafka, client_id="webhook-receiver")
        try:
            await publisher.start()
        except PublishError as exc:  # keep serving: deliveries get 503 until Kafka is back
            log.warning("Kafka unreachable at start-up; webhooks will get 503 until it is back", error=str(exc))
        store = PostgresConnectionStore(pool, keyring)
        targets = CachedWebhookTargets(store, settings.receiver.target_cache_ttl_s)
        stripe_readers = readers or StripeReaders(settings.stripe, pool=pool)
        receiver = WebhookReceiver(
            targets, store, RawEventPublisher(publisher, settings.kafka.raw_topic),
            StripeDiscounts(store, stripe_readers, settings.receiver.discount_fetch_timeout_s,
                            settings.receiver.discount_fetches_per_connection),
            settings.receiver, ReceiverMetrics(app[REGISTRY]), pool,
        )
        tenants = PostgresTenantStore(pool, keyring, settings.reader)
        service = ConnectionService(
            store, tenants, PostgresCheckpoints(pool), stripe_readers, settings,
            on_secrets_changed=targets.forget, reconciler=Reconciler(pool, store, stripe_readers, settings.kafka,
                                                                  projected_wait_s=settings.importer.reconcile_projected_wait_s),
        )
        app[control_api.CONTROL] = control_api.ControlApi(service, tenants, settings.control)
        app[POOL], app[PUBLISHER], app[STORE], app[RECEIVER], app[TENANTS] = pool, publisher, store, receiver, tenants
        flusher = asyncio.create_task(_flush_webhook_activity(receiver, store), name="webhook-activity")
        yield
        await service.close()
        flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flusher
        await store_webhook_activity(receiver, store)
        await publisher.stop()
        await pool.close()

    app.cleanup_ctx.append(resources)
    app.router.add_post("/webhooks/stripe/{token}", _webhook)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    control_api.add_routes(app)
    return app


async def _webhook(request: web.Request) -> web.StreamResponse:
    return await request.app[RECEIVER].handle(request)


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    checks: dict[str, str] = {}
    try:
        await request.app[POOL].fetchval("SELECT 1", timeout=2)
        checks["postgres"] = "ok"
    except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as exc:
        checks["postgres"] = f"unreachable: {type(exc).__name__}"
    publisher = request.app[PUBLISHER]
    try:
        await publisher.start()
        checks["kafka"] = "ok"
    except PublishError:
        checks["kafka"] = "unreachable"
    ready = all(v == "ok" for v in checks.values())
    return web.json_response({"ready": ready, "checks": checks}, status=200 if ready else 503)


async def _metrics(request: web.Request) -> web.Response:
    """Metrics on the main port only for a request bearing the metrics token (see HttpSettings)."""
    token = request.app[METRICS_TOKEN]
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if not token or scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        return json_error(404, "not_found", "metrics are served on their own address, or with the metrics token")
    body = generate_latest(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _flush_webhook_activity(receiver: WebhookReceiver, store: PostgresConnectionStore) -> None:
    """Stores, once a second, when each connection last received a real webhook and last went over its share."""
    while True:
        await asyncio.sleep(ACTIVITY_FLUSH_INTERVAL_S)
        try:
            await store_webhook_activity(receiver, store)
        except (DatabaseUnavailableError, asyncpg.PostgresError) as exc:
            log.warning("could not store webhook activity; will retry", error=repr(exc))


async def store_webhook_activity(receiver: WebhookReceiver, store: PostgresConnectionStore) -> None:
    """Stores the times noted since the last flush; on a failure they are noted again, for the next flush."""
    seen, receiver.last_delivery_at = receiver.last_delivery_at, {}
    over_share, receiver.last_over_share_at = receiver.last_over_share_at, {}
    try:
        await store.record_webhooks_received(seen)
        seen = {}
        await store.record_webhooks_over_share(over_share)
    except BaseException:
        for noted, kept in ((seen, receiver.last_delivery_at), (over_share, receiver.last_over_share_at)):
            for connection_id, at in noted.items():
                kept[connection_id] = max(at, kept.get(connection_id, at))
        raise


def build_web_app(settings: Settings) -> web.Application:
    """Returns the web process's application, not yet started: the write path's app plus the read API and the page."""
    app = create_ingest_app(settings, load_keyring(settings.vault))

    async def authenticate(request: web.Request) -> Grant | None:
        """A reader token grants its tenant at its level; a tenant API token or the operator's, summary only."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        reader = await request.app[TENANTS].reader_for_token(token.strip())
        if reader is not None:
            return Grant(reader[0], Level[reader[1].upper()], reader[2])
        who = await request.app[control_api.CONTROL].actor(request)
        if who is None:
            return None
        return Grant("*" if who[1] is None else who[1], Level.SUMMARY)

    async def credentials(tenant_id: str, level: str, mode: str) -> tuple[str, str]:
        return await app[TENANTS].reader_credentials(tenant_id, level, mode)

    async def reader_for_token(token: str) -> tuple[str, str, str] | None:
        return await app[TENANTS].reader_for_token(token)

    reader = add_read_routes(app, settings, authenticate, credentials)
    add_mcp_routes(app, settings, reader, reader_for_token)
    add_page_routes(app)
    return app


async def _log_tasks_on_sigusr1(app: web.Application) -> None:
    """Where each task waits, on SIGUSR1 (docs/operating.md)."""
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, log_tasks)


def serve() -> None:
    """Serves the web process until SIGTERM (settings from the environment)."""
    import uvloop

    settings = load_settings()
    configure_logging(settings.log)
    uvloop.install()  # the receiver's hot path is the event loop: uvloop makes it markedly cheaper
    tune_gc()
    app = build_web_app(settings)
    app.on_startup.append(_log_tasks_on_sigusr1)
    if settings.http.metrics_port:
        start_http_server(settings.http.metrics_port, addr=settings.http.metrics_host, registry=app[REGISTRY])
    web.run_app(app, host=settings.http.host, port=settings.http.port, reuse_port=settings.http.reuse_port or None,
                shutdown_timeout=settings.http.shutdown_timeout_s, print=None, access_log=None)
