"""The webhook receiver: one aiohttp handler that turns a Stripe delivery into a record on the raw topic.

Order of checks, cheapest and safest first: content type and encoding (Stripe never compresses, so a
Content-Encoding is refused rather than decoded), body size, the endpoint's token, the connection's share of
the work (a tenant flooding its own URL gets 429, not everyone's event loop: checked before the body is
read, paid once it is), how many objects and arrays it holds, the signature (nothing unauthenticated is
parsed), the JSON, how many digits it holds (masking card numbers works per digit), the mode, and whether the
canonical model reads its object (one it cannot read is counted in the tenant's health and acknowledged, not
published: Stripe would send it again for days). Only then is the event redacted and published, and 2xx is
answered only after Kafka acknowledged the record (acks=all). If Kafka does not acknowledge in time the answer
is 503 with Retry-After, so Stripe delivers again. This is the only module that turns errors into HTTP responses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import asyncpg
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram

from ingestor.connections.store import PostgresConnectionStore, WebhookTarget, token_digest
from ingestor.envelope.build import (
    container_count,
    envelope_for_event,
    is_read_resource,
    is_test_webhook,
    parse_event,
)
from ingestor.envelope.card_numbers import holds_more_digits
from ingestor.envelope.discounts import fill_in_target, unexpanded, with_expanded
from ingestor.envelope.publisher import RawEventPublisher
from ingestor.errors import BadEventError, IngestError, KeyInvalidError
from ingestor.receiver.shares import DeliveryShares
from ingestor.receiver.signatures import BadSignatureError, spend_verification_time, verify_signature
from ingestor.sources.poller import lists_in_time
from ingestor.sources.refusals import Refused, label_of, record_refused, shown_message
from ingestor.stripe_api.discounts import StripeDiscounts
from plumbing.kafka import PublishError
from plumbing.logs import get_logger
from plumbing.postgres import DatabaseUnavailableError, database_errors
from plumbing.settings import ReceiverSettings
from schemas import Source
from schemas.stripe_objects import UnreadableObjectError, read_event_object

log = get_logger(__name__)


class ReceiverMetrics:
    """Prometheus series of the receiver, in a registry of the caller's choosing."""

    def __init__(self, registry: CollectorRegistry):
        self.requests = Counter(
            "webhook_requests", "Webhook deliveries by outcome", ["outcome"], registry=registry
        )
        self.publish_seconds = Histogram(
            "webhook_publish_seconds", "Time from receipt to Kafka acknowledgement", registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.body_bytes = Counter("webhook_body_bytes", "Bytes of webhook bodies received", registry=registry)
        self._by_outcome: dict[str, Counter] = {}

    def count(self, outcome: str) -> None:
        """Counts one request under `outcome` (the labelled child is looked up once per outcome)."""
        child = self._by_outcome.get(outcome)
        if child is None:
            child = self._by_outcome[outcome] = self.requests.labels(outcome)
        child.inc()


class CachedWebhookTargets:
    """Looks up webhook tokens with a short-lived cache of hits and misses alike.

    Caching misses too keeps an unknown token as cheap as a known one, so timing does not
    reveal which tokens exist; the cache is bounded (least recently used entries go first).
    """

    def __init__(self, store: PostgresConnectionStore, ttl_s: float, max_entries: int = 10_000,
                 clock: Callable[[], float] = time.monotonic):
        self._store = store
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[bytes, tuple[float, WebhookTarget | None]] = OrderedDict()

    async def find(self, token: str) -> WebhookTarget | None:
        """Returns the target of `token` or None; raises DatabaseUnavailableError when Postgres is away."""
        digest = token_digest(token)
        now = self._clock()
        cached = self._entries.get(digest)
        if cached is not None and cached[0] > now:
            self._entries.move_to_end(digest)
            return cached[1]
        target = await self._store.webhook_target(token, datetime.now(timezone.utc))
        self._entries[digest] = (now + self._ttl_s, target)
        self._entries.move_to_end(digest)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
        return target

    def forget(self) -> None:
        """Drops every cached entry (after a connection or secret changed in this process)."""
        self._entries.clear()


def _ok(body: dict[str, bool]) -> Callable[[], web.Response]:
    """Returns a factory of 200 responses with a fixed JSON body, serialised once."""
    encoded = json.dumps(body).encode()
    return lambda: web.Response(body=encoded, content_type="application/json")


def _acknowledged(body: dict[str, Any]) -> web.Response:
    """A 200 with a JSON body said of this delivery alone (left out, and why)."""
    return web.Response(body=json.dumps(body).encode(), content_type="application/json")


PUBLISHED = _ok({"received": True, "published": True})
IGNORED = _ok({"received": True, "published": False})
TEST_RECEIVED = _ok({"received": True, "test": True})


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """Returns a JSON error body `{"error": {"code", "message"}}`."""
    return web.json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)


async def _read_at_most(request: web.Request, size: int) -> bytes:
    """Returns the body, or its first `size` bytes if it is longer (one read() may return only a part)."""
    chunks: list[bytes] = []
    remaining = size
    while remaining > 0:
        chunk = await request.content.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


async def _answer_and_close(request: web.Request, response: web.Response) -> None:
    """Sends `response` and closes the connection without reading the rest of the body: aiohttp would read and
    discard it first (for up to 10 s, however large it says it is) to keep the connection, which is the work a
    refusal is there to save. Linux resets a connection closed with bytes unread; Stripe retries either way."""
    with contextlib.suppress(ConnectionError):
        await response.prepare(request)
        await response.write_eof()
    request.protocol.force_close()


def _refused_by_headers(request: web.Request, max_body_bytes: int) -> tuple[str, web.Response] | None:
    """The refusal of a delivery its headers already rule out: not JSON, compressed, announced too large."""
    if request.content_type != "application/json":
        return "bad_content_type", error_response(
            415, "unsupported_content_type", "Stripe webhooks are sent as application/json")
    if request.headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity"):
        return "bad_content_encoding", error_response(
            415, "unsupported_content_encoding", "Stripe webhooks are sent uncompressed (no Content-Encoding)")
    if request.content_length is not None and request.content_length > max_body_bytes:
        return "too_large", error_response(413, "body_too_large", f"the body is larger than {max_body_bytes} bytes")
    return None


class WebhookReceiver:
    """Handles `POST /webhooks/stripe/{token}`."""

    def __init__(
        self,
        targets: CachedWebhookTargets,
        store: PostgresConnectionStore,
        publisher: RawEventPublisher,
        discounts: StripeDiscounts,
        settings: ReceiverSettings,
        metrics: ReceiverMetrics,
        health: asyncpg.Pool,
        wall_clock: Callable[[], float] = time.time,
    ):
        self._targets = targets
        self._store = store
        self._health = health  # where an unreadable event is counted (`public.dead_lettered_events`)
        self._publisher = publisher
        self._discounts = discounts
        self._settings = settings
        self._metrics = metrics
        self._wall_clock = wall_clock
        self._shares = DeliveryShares(settings.share_units_per_s, settings.share_burst_units,
                                      settings.share_bytes_per_unit, settings.share_containers_per_unit)
        self.last_delivery_at: dict[str, datetime] = {}
        self.last_over_share_at: dict[str, datetime] = {}

    async def handle(self, request: web.Request) -> web.Response:
        """Answers one delivery; every outcome is counted by its label."""
        outcome, response = await self._answer(request)
        self._metrics.count(outcome)
        if not request.content.is_eof():  # refused on its headers, for its share, or cut off: not read on
            await _answer_and_close(request, response)
        return response

    async def _answer(self, request: web.Request) -> tuple[str, web.Response]:
        refused = _refused_by_headers(request, self._settings.max_body_bytes)
        if refused is not None:
            return refused
        try:
            target = await self._targets.find(request.match_info["token"])
        except DatabaseUnavailableError as exc:  # Postgres restarting: Stripe retries, like for Kafka
            log.warning("webhook target lookup failed; answering 503", error=repr(exc))
            return "database_unavailable", self._unavailable()
        if target is not None and not target.accepting:
            target = None
        # Every delivery to a URL pays, signed or not: the bytes announced (the most allowed, when none are) before
        # the body is read, so deliveries sent at once cannot all be read on one unit's room; settled once read.
        reserved = self._shares.cost(self._settings.max_body_bytes if request.content_length is None
                                     else request.content_length)
        if target is not None and not self._shares.take(target.connection_id, reserved):
            return self._over_share(target)  # its body not even read
        body, refused = await self._read_body(request)
        if refused is not None:
            return refused  # what was reserved stays taken: the reading was work
        containers = container_count(body, exact_above=self._settings.max_body_containers)
        if target is not None and not self._shares.settle(target.connection_id, reserved, len(body), containers):
            return self._over_share(target)
        try:
            payload = body.decode("utf-8")
        except UnicodeDecodeError:
            return "bad_body", error_response(400, "malformed_json", "the body is not UTF-8 text")

        signature = request.headers.get("Stripe-Signature")
        if target is None:
            spend_verification_time(payload, signature)
            return "unknown_endpoint", error_response(
                404, "unknown_endpoint", "no active Stripe connection has this webhook URL"
            )
        most = self._settings.max_body_containers
        if containers > most:  # before parsing, checking and masking walk them one by one
            return "too_many_containers", error_response(
                413, "too_many_containers", f"the body holds more than {most} objects and arrays; Stripe's events "
                "hold far fewer")
        try:
            verify_signature(payload, signature, target.signing_secrets, self._wall_clock(),
                             self._settings.signature_tolerance_s)
            event = parse_event(body)
        except BadSignatureError as exc:
            return "bad_signature", error_response(400, exc.code, str(exc))
        except BadEventError as exc:
            return "bad_event", error_response(400, exc.code, str(exc))

        digits = self._settings.max_body_digits
        if holds_more_digits(payload, digits):  # before redaction's work per digit, which would stall every tenant
            return "too_many_digits", error_response(
                413, "too_many_digits", f"the body holds more than {digits} digits; Stripe's events hold far fewer")

        if event["livemode"] != target.livemode:
            mode = "live" if event["livemode"] else "test"
            expected = "live" if target.livemode else "test"
            return "livemode_mismatch", error_response(
                400, "livemode_mismatch", f"a {mode}-mode event was sent to a {expected}-mode connection"
            )
        now = datetime.fromtimestamp(self._wall_clock(), tz=timezone.utc)
        if is_test_webhook(event):
            try:
                await self._store.mark_webhook_verified(target.connection_id, now)
            except DatabaseUnavailableError as exc:
                log.warning("could not record the test webhook; answering 503", error=repr(exc))
                return "database_unavailable", self._unavailable()
            return "test_webhook", TEST_RECEIVED()
        if not is_read_resource(event):
            self.last_delivery_at[target.connection_id] = now
            return "ignored_type", IGNORED()
        wanted = unexpanded(event)
        if wanted:  # discounts named by id, tiers left out: MRR needs them, fetched before reading and publishing
            try:
                found = await self._discounts.for_object(
                    target.connection_id, target.livemode, *fill_in_target(event), wanted)
            except KeyInvalidError as exc:
                # Its type and age first: Postgres is asked whether the connection has polled only if they pass.
                listed = lists_in_time(str(event["type"]), int(event["created"]), now.timestamp(), polled=True)
                if listed:
                    try:
                        listed = await self._store.has_polled(target.connection_id)
                    except DatabaseUnavailableError:
                        return "database_unavailable", self._unavailable()
                if not listed:
                    log.warning("Stripe refused the connection's key for a fill-in of an event the poller is not sure "
                                "to list; answering 503", error=str(exc))
                    return "discounts_unavailable", self._unavailable()
                return "left_to_poller", self._left_to_poller(target, exc, now)
            except (IngestError, DatabaseUnavailableError) as exc:
                log.warning("could not fetch a subscription's or customer's discounts, coupons or tiers; answering 503",
                            error=str(exc))
                return "discounts_unavailable", self._unavailable()
            event = with_expanded(event, found)
        unreadable = None
        try:
            read_event_object(event)  # as the projections will read it
        except UnreadableObjectError as exc:
            unreadable = exc  # handled outside: an error while counting it would carry its unredacted text
        if unreadable is not None:
            return await self._unreadable(event, target, unreadable, now)
        self.last_delivery_at[target.connection_id] = now
        return await self._publish(event, target, now)

    async def _unreadable(self, event: dict[str, Any], target: WebhookTarget, exc: UnreadableObjectError,
                          now: datetime) -> tuple[str, web.Response]:
        """A signed event whose object no rule reads (a money, currency or interval that cannot be derived): not
        published, counted in the tenant's health (once, however often it comes), and acknowledged. Refused with a
        400, Stripe delivered the same object again for three days and then disabled the endpoint, every revenue
        event of the tenant with it, and nothing showed in health."""
        why = shown_message(str(exc))  # the raw event's values, not redacted yet: card numbers masked, cut short
        refused = Refused(target.tenant_id, "webhook", str(event["type"]), label_of(event), "unreadable_object",
                          shown_message(f"{why}; left out of the webhooks"))
        try:
            with database_errors(server_state=True):
                await record_refused(self._health, [refused])
        except DatabaseUnavailableError:
            log.warning("could not count an unreadable event in health; answering 503")
            return "database_unavailable", self._unavailable()
        self.last_delivery_at[target.connection_id] = now
        return "unreadable_object", _acknowledged({"received": True, "published": False, "unreadable": why})

    def _left_to_poller(self, target: WebhookTarget, exc: IngestError, now: datetime) -> web.Response:
        """Stripe refused the connection's key (401: rotated or revoked, never valid again) for what the event names.
        Answered 503, Stripe delivered it again for three days and then disabled the endpoint, every revenue event
        of the tenant with it, while the key stayed broken. The poller meets the same refusal, puts the connection
        in `key_invalid` (shown, with the fix) and keeps its cursor; once a new key is entered it lists from there
        (within 30 days) and publishes what it lists filled in, this event too if the cursor had not passed it (if
        it had, it was listed and published then). So it is acknowledged, not published. A permission taken
        away (403) is still answered 503: the key can be edited in place, and Stripe's next delivery then reads it
        with no one pressing Test. So is an event the poller is not sure to list (`lists_in_time`: a type it does
        not ask for, one older than any poll reaches back, as a delivery resent from the Dashboard, or any event of a
        connection never polled, whose first poll reads from whenever a key works less 30 days): acknowledged, it
        was lost (the fault suite's history, delivered as it is made, lost up to five subscription events a run)."""
        log.info("Stripe refused the connection's key for a fill-in; the event is left to the poller",
                 connection_id=target.connection_id, code=exc.code)
        self.last_delivery_at[target.connection_id] = now
        return _acknowledged({"received": True, "published": False,
                              "left_to_poller": f"{exc}: read by the poller once a working key is entered"})

    async def _read_body(self, request: web.Request) -> tuple[bytes, tuple[str, web.Response] | None]:
        """The body, or the refusal of one too slow or too large."""
        limit = self._settings.max_body_bytes
        try:
            async with asyncio.timeout(self._settings.body_read_timeout_s):
                body = await _read_at_most(request, limit + 1)
        except TimeoutError:
            return b"", ("body_timeout", error_response(
                408, "body_too_slow", f"the body did not arrive within {self._settings.body_read_timeout_s:g}s"))
        if len(body) > limit:
            return b"", ("too_large", error_response(413, "body_too_large", f"the body is larger than {limit} bytes"))
        self._metrics.body_bytes.inc(len(body))
        return body, None

    def _over_share(self, target: WebhookTarget) -> tuple[str, web.Response]:
        """429 with Retry-After: the connection spent its share of the receiver's work; Stripe delivers again later.
        The connection is closed after it, so a body not read yet is not read."""
        self.last_over_share_at[target.connection_id] = datetime.fromtimestamp(self._wall_clock(), tz=timezone.utc)
        response = error_response(
            429, "over_share", "this connection's deliveries are over its share of the receiver's work; "
            "Stripe will deliver them again", headers={"Retry-After": str(self._settings.retry_after_s)})
        response.force_close()
        return "over_share", response

    def _unavailable(self) -> web.Response:
        """503 with Retry-After: nothing was stored, Stripe delivers again."""
        return error_response(503, "temporarily_unavailable", "the event could not be stored yet; Stripe will retry",
                              headers={"Retry-After": str(self._settings.retry_after_s)})

    async def _publish(self, event: dict[str, object], target: WebhookTarget, now: datetime) -> tuple[str, web.Response]:
        envelope = envelope_for_event(event, target.tenant_id, Source.WEBHOOK, now)
        started = time.perf_counter()
        try:
            await self._publisher.publish(envelope, timeout_s=self._settings.publish_timeout_s)
        except PublishError as exc:
            log.warning("webhook not acknowledged by Kafka", event_id=envelope.event_id, error=str(exc))
            return "kafka_unavailable", self._unavailable()
        self._metrics.publish_seconds.observe(time.perf_counter() - started)
        return "published", PUBLISHED()

