"""Live activity: keeps accounts busy as the clock moves (sign-ups, renewals, payments, refunds).

`tick(now)` is one synchronous step (renew what is due, then one random action per account);
`LiveActivity.run` calls it `rate_per_second` times a second until stopped.
"""

from __future__ import annotations

import asyncio
import random

from stripe_sim.billing import Book
from stripe_sim.generator import Walker, build_catalogue, minor_units
from stripe_sim.model import SimState


def tick(state: SimState, rng: random.Random, now: int, livemode: bool = False) -> int:
    """Advance every account by one step at `now`; return the number of actions taken."""
    actions = 0
    for account in list(state.accounts.values()):
        book = Book(state, account, livemode)
        if not book.store.objects.get("price"):
            build_catalogue(book, now, ("usd", "eur", "jpy"))
        actions += renew_due(book, rng, now)
        act(book, rng, now)
        actions += 1
    return actions


def renew_due(book: Book, rng: random.Random, now: int) -> int:
    """Renew every active or trialing subscription whose period has ended."""
    done = 0
    for sub in list(book.store.objects.get("subscription", {}).values()):
        if sub["status"] in ("active", "trialing"):
            while sub["status"] in ("active", "trialing") and \
                    sub["items"]["data"][0]["current_period_end"] <= now:
                sub = book.renew(sub["id"], succeed=rng.random() > 0.08)
                done += 1
    return done


def act(book: Book, rng: random.Random, now: int) -> None:
    """Take one random action: sign-up, one-off payment, refund, update, upgrade or cancel."""
    walker = Walker(book, rng, now)
    currency = rng.choice(sorted(walker.prices))
    roll = rng.random()
    # Never two changes of one subscription in one second: Stripe's timestamps are whole seconds, so
    # no reader could tell their order (projections/handlers/ordering.py breaks such ties, but not by time).
    subs = [s for s in book.store.objects.get("subscription", {}).values()
            if s["status"] == "active" and book.store.versions[s["id"]][-1][0] < now]
    charges = [c for c in book.store.all("charge")[:50] if c["status"] == "succeeded"
               and not c["refunded"]]
    if roll < 0.45 or not subs:
        cus = book.create_customer(now, f"live{rng.randrange(10**6)}@example.com", "Live User")
        book.create_subscription(cus["id"], walker.pick_items(currency), now,
                                 14 if rng.random() < 0.15 else 0, None, rng.random() > 0.05)
    elif roll < 0.65:
        cus = rng.choice(subs)["customer"]
        book.one_off_payment(cus, minor_units(currency, rng.randint(5, 90)), currency, now,
                             rng.random() > 0.15, "One-off order")
    elif roll < 0.75 and charges:
        ch = rng.choice(charges)
        half = min(ch["amount"] // 2, ch["amount"] - ch["amount_refunded"])  # never more than is left
        book.refund(ch["id"], None if rng.random() < 0.6 or not half else half, now)
    elif roll < 0.85:
        sub = rng.choice(subs)
        book.change_items(sub["id"], walker.pick_items(
            sub["currency"], sub["items"]["data"][0]["price"]["recurring"]["interval"]), now)
    elif roll < 0.92:
        book.set_cancel_at_period_end(rng.choice(subs)["id"], True, now)
    else:
        book.cancel_subscription(rng.choice(subs)["id"], now)


class LiveActivity:
    """Runs `tick` at a fixed rate on the simulator's clock until stopped."""

    def __init__(self, state: SimState, rate_per_second: float, seed: int = 0) -> None:
        self.state = state
        self.rate = rate_per_second
        self.rng = random.Random(seed)
        self.ticks = 0

    async def run(self) -> None:
        """Tick until cancelled; cancellation stops it between ticks."""
        while True:
            await asyncio.sleep(1 / self.rate)
            tick(self.state, self.rng, self.state.clock.now())
            self.ticks += 1
