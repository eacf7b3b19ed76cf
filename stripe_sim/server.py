"""`SimServer`: the simulator as an async context manager — aiohttp app, state and admin facade.

Tests and the local-stack launcher start it with `async with SimServer(...) as sim:`; other
processes reach the same operations over HTTP under `/_sim/` (see `admin.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import random
from dataclasses import dataclass
from typing import Any, Iterable

from aiohttp import web

from stripe_sim import admin, api
from stripe_sim.api import LISTED_GROUPS
from stripe_sim.auth import RateLimiter
from stripe_sim.billing import Book
from stripe_sim.clock import SimClock
from stripe_sim.faults import Fault, Faults
from stripe_sim.generator import GeneratorConfig, generate
from stripe_sim.ground_truth import ground_truth
from stripe_sim.live import LiveActivity
from stripe_sim.model import RESOURCES, SimState
from stripe_sim.render import CURRENT_VERSION
from stripe_sim.webhooks import Delivery, WebhookHub

_log = logging.getLogger(__name__)


def _report_crash(task: "asyncio.Task[None]") -> None:
    if not task.cancelled() and task.exception() is not None:
        _log.error("live activity stopped", exc_info=task.exception())


@dataclass(frozen=True)
class AccountInfo:
    """A created account: its id, API version and keys."""

    id: str
    api_version: str
    secret_key: str
    live_secret_key: str
    restricted_key: str

    def to_dict(self) -> dict[str, str]:
        """Return the account as JSON-ready data."""
        return dict(self.__dict__)


class SimServer:
    """The Stripe simulator: serves /v1 reads and /_sim admin on `base_url` while open."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, seed: int = 0,
                 clock: SimClock | None = None, freeze_accounts: bool = False) -> None:
        self.host, self.port, self.seed = host, port, seed
        self.freeze_accounts = freeze_accounts
        self.clock = clock or SimClock()
        self.state = SimState(self.clock, seed)
        self.limiter = RateLimiter()
        self.faults = Faults(seed)
        self.hub = WebhookHub(self.state, self.clock, seed)
        self.base_url = ""
        self._runner: web.AppRunner | None = None
        self._live: asyncio.Task[None] | None = None
        self.live: LiveActivity | None = None

    def make_app(self) -> web.Application:
        """Build the aiohttp application (read API plus admin routes)."""
        app = web.Application(middlewares=[api.stripe_middleware])
        app[api.SIM] = self
        admin.add_routes(app)
        api.add_routes(app)
        return app

    async def __aenter__(self) -> SimServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Bind the port and start serving. Raises OSError if the port is taken."""
        await self.hub.start()
        self._runner = web.AppRunner(self.make_app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self.base_url = f"http://{self.host}:{self.port}"

    async def stop(self) -> None:
        """Stop live activity, deliveries and the server (idempotent)."""
        await self.stop_live_activity()
        await self.hub.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # Accounts and keys -------------------------------------------------------------------------
    def create_account(self, api_version: str = CURRENT_VERSION, customers: int = 0,
                       months: int = 12, currencies: Iterable[str] = ("usd", "eur", "jpy"),
                       seed: int | None = None, live_customers: int = 0, migrated_customers: int = 0,
                       live_migrated_customers: int = 0, migration_s: int = 60,
                       migration_at: float = 0.5, customer_coupons: bool = False) -> AccountInfo:
        """Create an account with generated history ending now, and its keys. Migrated customers are created in a
        burst of `migration_s` seconds at `migration_at` of the history; with `customer_coupons`, some customers
        get a customer-level coupon for a while (`GeneratorConfig`)."""
        currencies = () if isinstance(currencies, str) else tuple(currencies)
        configs = [GeneratorConfig(n, months, currencies, livemode, migrated, migration_s, migration_at,
                                   customer_coupons)
                   for livemode, n, migrated in ((False, customers, migrated_customers),
                                                 (True, live_customers, live_migrated_customers))]  # checked first
        if seed is None:
            seed = random.Random(f"{self.seed}:{len(self.state.accounts)}").getrandbits(64)
        account = self.state.add_account(api_version, seed)
        now = self.clock.now()
        for config in configs:
            if config.customers or config.migrated_customers:
                generate(Book(self.state, account, config.livemode), config, now)
        for store in (account.test, account.live):
            store.prepare(LISTED_GROUPS)
        if self.freeze_accounts:
            # An account's history lives as long as the simulator: kept out of the collector, which otherwise
            # walks every account's objects in a full collection, a pause of a second or more that a
            # benchmark met now and then in the middle of an import, as Stripe's latency never is.
            gc.collect()
            gc.freeze()
        return AccountInfo(account.id, api_version, self.secret_key(account.id),
                           self.secret_key(account.id, livemode=True),
                           self.create_restricted_key(account.id))

    def book(self, account_id: str, livemode: bool = False) -> Book:
        """Return the model API for hand-building an account's history."""
        return Book(self.state, self.state.accounts[account_id], livemode)

    def create_restricted_key(self, account_id: str, livemode: bool = False,
                              permissions: Iterable[str] = RESOURCES) -> str:
        """Issue an `rk_` key that can read the given resources."""
        perms = frozenset(permissions)
        unknown = perms - set(RESOURCES)
        if unknown:
            raise ValueError(f"unknown resources: {sorted(unknown)}")
        return self.state.add_key(account_id, livemode, True, perms).key

    def secret_key(self, account_id: str, livemode: bool = False) -> str:
        """Return the account's `sk_` key for the mode."""
        return self.state.secret_key(account_id, livemode)

    def revoke_key(self, key: str) -> None:
        """Roll/expire a key: later requests get 401 `api_key_expired`."""
        self.state.keys[key].expired = True

    def revoke_key_after(self, key: str, requests: int) -> None:
        """Expire a key once it has served `requests` more requests: a revocation at a set point of a run."""
        self.state.keys[key].requests_left = requests

    def set_rate_limit(self, account_id: str, per_second: float, livemode: bool | None = None,
                       endpoint_per_second: float | None = None) -> None:
        """Set an account's request rate limit (both modes unless `livemode` is given) and its per-endpoint
        limit (by default raised to `per_second` if that is above Stripe's 25/s)."""
        self.limiter.set_limit(account_id, per_second, livemode, endpoint_per_second)

    def set_faults(self, *faults: Fault | dict[str, Any], clear: bool = True) -> None:
        """Replace (or with clear=False, add to) the active faults; no arguments clears. A bad spec changes nothing."""
        made = [f if isinstance(f, Fault) else Fault.from_dict(f) for f in faults]
        if clear:
            self.faults.clear()
        for fault in made:
            self.faults.add(fault)

    def request_rate(self, account_id: str, livemode: bool = False) -> dict[str, Any]:
        """What the rate limit saw of the account's mode (requests, 429s, busiest second, mean rate)."""
        return self.limiter.observed(account_id, livemode)

    def request_arrivals(self, account_id: str, livemode: bool = False) -> list[float]:
        """When each request of the account's mode reached the rate limit (monotonic seconds, in order)."""
        return self.limiter.arrivals(account_id, livemode)

    def request_counts(self, account_id: str) -> dict[str, int]:
        """Return `{"GET /v1/…?…": n}` for every request made with the account's keys."""
        return dict(self.state.request_counts.get(account_id, {}))

    # Webhooks -----------------------------------------------------------------------------------
    def add_webhook_endpoint(self, account_id: str, url: str,
                             livemode: bool = False) -> tuple[str, str]:
        """Register an endpoint; return (endpoint id, whsec secret)."""
        ep = self.hub.add_endpoint(account_id, url, livemode)
        return ep.id, ep.secrets[0][0]

    def roll_webhook_secret(self, endpoint_id: str, grace_seconds: int = 86400) -> str:
        """Roll an endpoint's secret; old secrets keep signing for the grace period."""
        return self.hub.roll_secret(endpoint_id, grace_seconds)

    def resend_events(self, endpoint_id: str) -> list[Delivery]:
        """Deliver every event its account already holds (of the endpoint's mode) to one endpoint, oldest first, as the
        Dashboard's "Resend" would: history made before an endpoint existed reaches it without being backdated behind
        a poll that already read past it."""
        ep = self.hub.endpoints[endpoint_id]
        store = self.state.accounts[ep.account_id].store(ep.livemode)
        return self.hub.resend(endpoint_id, sorted(store.all("event"), key=lambda e: (e["created"], e["id"])))

    def send_test_webhook(self, endpoint_id: str,
                          event_type: str = "charge.succeeded") -> Delivery:
        """Send a dashboard-style test event to one endpoint."""
        return self.hub.send_test(endpoint_id, event_type)

    def set_delivery(self, duplicates: float | None = None, shuffle: bool | None = None,
                     backoff: Iterable[float] | None = None, timeout: float | None = None,
                     shuffle_window: float | None = None) -> None:
        """Change delivery behaviour; unspecified settings stay as they are."""
        cfg = self.hub.config
        if duplicates is not None:
            cfg.duplicates = duplicates
        if shuffle is not None:
            cfg.shuffle = shuffle
        if backoff is not None:
            cfg.backoff = tuple(backoff)
        if timeout is not None:
            cfg.timeout = timeout
        if shuffle_window is not None:
            cfg.shuffle_window = shuffle_window

    def deliveries(self, endpoint_id: str | None = None) -> list[Delivery]:
        """Return the delivery log, optionally for one endpoint."""
        return [d for d in self.hub.deliveries if endpoint_id in (None, d.endpoint_id)]

    async def wait_deliveries_idle(self, timeout: float = 10.0) -> None:
        """Wait until every delivery has succeeded or given up. Raises TimeoutError."""
        await self.hub.wait_idle(timeout)

    # Live activity and ground truth ------------------------------------------------------------
    def start_live_activity(self, rate_per_second: float = 1.0) -> None:
        """Start producing new activity on every account at the given rate."""
        if self._live is not None:
            self._live.cancel()
        self.live = LiveActivity(self.state, rate_per_second, self.seed)
        self._live = asyncio.get_running_loop().create_task(self.live.run())
        self._live.add_done_callback(_report_crash)

    async def stop_live_activity(self) -> None:
        """Stop live activity (idempotent)."""
        if self._live is not None:
            self._live.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._live
            self._live = None

    def ground_truth(self, account_id: str, livemode: bool = False, zone: str = "UTC") -> dict[str, Any]:
        """Return the account's expected revenue figures from the internal model, days and months in `zone`."""
        store = self.state.accounts[account_id].store(livemode)
        return ground_truth(store, self.clock.now(), zone)
