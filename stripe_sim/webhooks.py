"""Webhook endpoints, Stripe's signing scheme and delivery with retries, duplicates and shuffling.

Each event emitted on an account is POSTed to that account's endpoints of the same mode, signed
`Stripe-Signature: t=<ts>,v1=<hmac>` with every live secret of the endpoint (two during a roll).
Deliveries retry on non-2xx, errors and timeouts along a configurable backoff; every attempt is
logged so tests can count deliveries. Stripe guarantees neither order nor uniqueness, and the
`duplicates` / `shuffle` switches let tests see both.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
import orjson

from stripe_sim import objects as o
from stripe_sim.clock import SimClock
from stripe_sim.ids import new_id
from stripe_sim.model import Account, Obj, SimState
from stripe_sim.render import render_event

TEST_SUFFIX = "00000000000000"


def sign(payload: bytes, secrets: list[str], timestamp: int) -> str:
    """Return a Stripe-Signature header value: `t=…` and one `v1=…` per secret."""
    signed = f"{timestamp}.".encode() + payload
    sigs = [hmac.new(s.encode(), signed, hashlib.sha256).hexdigest() for s in secrets]
    return ",".join([f"t={timestamp}"] + [f"v1={sig}" for sig in sigs])


@dataclass
class Endpoint:
    """A registered webhook endpoint with its signing secrets (newest first)."""

    id: str
    account_id: str
    url: str
    livemode: bool
    secrets: list[tuple[str, int | None]]  # (secret, expires_at in sim time or None)

    def live_secrets(self, now: int) -> list[str]:
        """Return the secrets that sign right now."""
        return [s for s, until in self.secrets if until is None or until > now]


@dataclass
class Attempt:
    """One POST of a delivery."""

    at: float
    status: int | None
    error: str | None
    duration_ms: float


@dataclass
class Delivery:
    """One delivery of one event to one endpoint, with all its attempts."""

    id: str
    endpoint_id: str
    event_id: str
    event_type: str
    duplicate: bool = False
    state: str = "pending"
    attempts: list[Attempt] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Return the delivery as JSON-ready data."""
        return asdict(self)


@dataclass
class DeliveryConfig:
    """Delivery behaviour: retry backoff (seconds), timeout, duplicate rate, shuffling."""

    backoff: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4)
    timeout: float = 5.0
    duplicates: float = 0.0
    shuffle: bool = False
    shuffle_window: float = 0.25


class WebhookHub:
    """Holds endpoints and the delivery log; sends deliveries as background tasks."""

    def __init__(self, state: SimState, clock: SimClock, seed: int = 0) -> None:
        self.state = state
        self.clock = clock
        self.config = DeliveryConfig()
        self.endpoints: dict[str, Endpoint] = {}
        self.deliveries: list[Delivery] = []
        self._rng = random.Random(seed)
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        state.listeners.append(self.on_event)

    async def start(self) -> None:
        """Open the HTTP client session used for deliveries."""
        if self._session is None:
            self._session = aiohttp.ClientSession()

    async def stop(self) -> None:
        """Cancel pending deliveries and close the session (idempotent)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def add_endpoint(self, account_id: str, url: str, livemode: bool = False) -> Endpoint:
        """Register an endpoint for an account and mode with a fresh `whsec_` secret."""
        account = self.state.accounts[account_id]
        ep = Endpoint(new_id(account.rng, "we"), account_id, url, livemode,
                      [(new_id(account.rng, "whsec"), None)])
        self.endpoints[ep.id] = ep
        return ep

    def roll_secret(self, endpoint_id: str, grace_seconds: int = 86400) -> str:
        """Issue a new secret; the old ones keep signing for `grace_seconds` of sim time."""
        ep = self.endpoints[endpoint_id]
        account = self.state.accounts[ep.account_id]
        until = self.clock.now() + grace_seconds
        old = [(s, until if exp is None else min(exp, until)) for s, exp in ep.secrets]
        new = new_id(account.rng, "whsec")
        ep.secrets = [(new, None)] + [(s, e) for s, e in old if e > self.clock.now()]
        return new

    def on_event(self, account: Account, livemode: bool, event: Obj) -> None:
        """Queue the event for every matching endpoint (the state's event listener)."""
        targets = [ep for ep in self.endpoints.values()
                   if ep.account_id == account.id and ep.livemode == livemode]
        event["pending_webhooks"] = len(targets)
        for ep in targets:
            self._queue(ep, event)

    def resend(self, endpoint_id: str, events: list[Obj]) -> list[Delivery]:
        """Deliver existing events to one endpoint, as the Dashboard's "Resend" does (each in the version it was
        created in), with this hub's duplicates, shuffling and retries."""
        ep = self.endpoints[endpoint_id]
        return [self._queue(ep, event) for event in events]

    def send_test(self, endpoint_id: str, event_type: str = "charge.succeeded") -> Delivery:
        """Send a dashboard-style test event (`evt_00000000000000`) to one endpoint."""
        ep = self.endpoints[endpoint_id]
        account = self.state.accounts[ep.account_id]
        kind = event_type.split(".")[0]
        kind = {"customer": "customer"}.get(kind, kind)
        sample = dict(o.template(kind)) if kind in ("charge", "customer", "invoice",
                                                     "payment_intent", "subscription") else {}
        prefix = {"charge": "ch", "customer": "cus", "invoice": "in", "payment_intent": "pi",
                  "subscription": "sub"}.get(kind, "obj")
        sample.update({"id": f"{prefix}_{TEST_SUFFIX}", "livemode": ep.livemode})
        evt = o.event(f"evt_{TEST_SUFFIX}", event_type, sample, self.clock.now(),
                      account.api_version, ep.livemode, None, None)
        return self._queue(ep, evt)

    def _queue(self, ep: Endpoint, event: Obj) -> Delivery:
        first = self._enqueue(ep, event, duplicate=False)
        if self.config.duplicates and self._rng.random() < self.config.duplicates:
            self._enqueue(ep, event, duplicate=True)
        return first

    def _enqueue(self, ep: Endpoint, event: Obj, duplicate: bool) -> Delivery:
        delivery = Delivery(new_id(self._rng, "wd"), ep.id, event["id"], event["type"],
                            duplicate)
        self.deliveries.append(delivery)
        delay = self._rng.uniform(0, self.config.shuffle_window) if self.config.shuffle else 0.0
        try:
            task = asyncio.get_running_loop().create_task(
                self._deliver(ep, event, delivery, delay))
        except RuntimeError:
            delivery.state = "failed"  # no event loop: nothing can be sent
            return delivery
        self._tasks.add(task)
        self._idle.clear()
        task.add_done_callback(self._done)
        return delivery

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not self._tasks:
            self._idle.set()

    async def _deliver(self, ep: Endpoint, event: Obj, delivery: Delivery, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        payload = orjson.dumps(render_event(event), option=orjson.OPT_INDENT_2)
        waits = (0.0,) + self.config.backoff
        for wait in waits:
            if wait:
                await asyncio.sleep(wait)
            if await self._attempt(ep, payload, delivery):
                delivery.state = "succeeded"
                event["pending_webhooks"] = max(0, event.get("pending_webhooks", 1) - 1)
                return
        delivery.state = "failed"

    async def _attempt(self, ep: Endpoint, payload: bytes, delivery: Delivery) -> bool:
        if self._session is None:
            await self.start()
        assert self._session is not None
        # `t` is the real moment of sending, which receivers check against their own clocks;
        # secret expiry follows the simulated clock so tests can step past a grace period.
        header = sign(payload, ep.live_secrets(self.clock.now()), int(time.time()))
        headers = {"Content-Type": "application/json; charset=utf-8",
                   "Stripe-Signature": header, "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)"}
        started = time.monotonic()
        status, error = None, None
        try:
            timeout = aiohttp.ClientTimeout(total=self.config.timeout)
            async with self._session.post(ep.url, data=payload, headers=headers,
                                          timeout=timeout) as resp:
                await resp.read()
                status = resp.status
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            error = type(exc).__name__
        elapsed = (time.monotonic() - started) * 1000
        delivery.attempts.append(Attempt(time.time(), status, error, round(elapsed, 2)))
        return status is not None and 200 <= status < 300

    async def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait until no delivery is pending. Raises TimeoutError after `timeout` seconds."""
        await asyncio.wait_for(self._idle.wait(), timeout)
