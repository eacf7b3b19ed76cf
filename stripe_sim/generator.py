"""Deterministic history: builds an account's customers, subscriptions, invoices and payments.

Walks each customer from sign-up to "now" through the model API in `billing.py`, so every state
change emits the event Stripe would. The same seed, size and "now" give the same account.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from stripe_sim.billing import DAY, Book
from stripe_sim.model import Obj
from stripe_sim.objects import ZERO_DECIMAL, luhn_number

MONTH = 2629746  # average Gregorian month in seconds

# (nickname, major units, interval, interval_count, seats)
PLANS = (("Basic", 9, "month", 1, False), ("Pro", 29, "month", 1, False),
         ("Team seat", 12, "month", 1, True), ("Pro quarterly", 79, "month", 3, False),
         ("Basic yearly", 90, "year", 1, False), ("Pro yearly", 290, "year", 1, False))
_FIRST = ("Ada", "Ben", "Chloé", "Dmitri", "Emi", "Farah", "Gus", "Hiro", "Ines", "Jonas", "Kofi")
_LAST = ("Lovelace", "Okafor", "Tanaka", "Müller", "Silva", "Nguyen", "Smith", "Kowalski")


@dataclass(frozen=True)
class GeneratorConfig:
    """How big an account to build and over how long."""

    customers: int = 100
    months: int = 12
    currencies: tuple[str, ...] = ("usd", "eur", "jpy")
    livemode: bool = False
    # A bulk migration from another processor: this many more customers created within `migration_s` seconds, at
    # `migration_at` of the window (each one's first subscription within as long again), as an import through Stripe's
    # API makes them. Their lists are a burst in `created`, where the others' are smooth.
    migrated_customers: int = 0
    migration_s: int = 60
    migration_at: float = 0.5
    # Some customers get a customer-level forever coupon at some point of their history, and some of them lose it
    # later (`CustomerCoupons`); off, the account is the one it always was.
    customer_coupons: bool = False

    def __post_init__(self) -> None:
        """Refuses what would fail halfway through generating (the admin API passes a request's values on)."""
        for name in ("customers", "migrated_customers"):
            if not _integer(getattr(self, name)) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be an integer of 0 or more")
        if not _integer(self.migration_s) or not 1 <= self.migration_s <= 86400:
            raise ValueError("migration_s must be an integer from 1 to 86400")
        at = self.migration_at
        if isinstance(at, bool) or not isinstance(at, (int, float)) or not 0 <= at <= 0.9:
            raise ValueError("migration_at must be a number from 0 to 0.9 (of the history's months)")
        if not self.currencies:
            raise ValueError("currencies must be a non-empty list")
        if not isinstance(self.customer_coupons, bool):
            raise ValueError("customer_coupons must be true or false")


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def minor_units(currency: str, major: int) -> int:
    """Return a price in the currency's minor units (JPY has none; ~110 yen per dollar)."""
    return major * 110 if currency in ZERO_DECIMAL else major * 100


def build_catalogue(book: Book, at: int, currencies: tuple[str, ...]) -> None:
    """Create the account's prices (per currency) and coupons."""
    for cur in currencies:
        for nick, major, interval, count, _ in PLANS:
            book.create_price(at, cur, minor_units(cur, major), interval, count, nick)
    pro = [p["product"] for p in book.store.objects["price"].values() if p["nickname"].startswith("Pro")]
    book.create_coupon(at, "forever", percent_off=20, products=pro)  # Pro plans only: Basic and seats pay in full
    book.create_coupon(at, "once", percent_off=50)
    book.create_coupon(at, "repeating", percent_off=25, duration_in_months=3)
    if "usd" in currencies:
        book.create_coupon(at, "forever", amount_off=500, currency="usd")


class CustomerCoupons:
    """Plans customer-level coupons on a random stream of their own, so that the rest of a history is drawn as it
    is without them: a customer in five gets one, some weeks after signing up, and two in five of those lose it
    some months later."""

    def __init__(self, rng: random.Random, coupon_ids: list[str]) -> None:
        self.rng, self.coupon_ids = rng, coupon_ids

    @classmethod
    def create(cls, book: Book, at: int, rng: random.Random) -> CustomerCoupons:
        """Create the two coupons given to customers: 30% off the Basic plans only, and 10% off everything."""
        basic = [p["product"] for p in book.store.objects["price"].values() if p["nickname"].startswith("Basic")]
        restricted = book.create_coupon(at, "forever", percent_off=30, products=basic)
        everything = book.create_coupon(at, "forever", percent_off=10)
        return cls(rng, [restricted["id"], everything["id"]])

    def plan(self, t0: int, now: int) -> list[tuple[int, str | None]]:
        """One customer's discount changes as (when, coupon id, or None: removed), oldest first, all before `now`."""
        rng = self.rng
        if rng.random() >= 0.2:
            return []
        applied = t0 + rng.randint(2, 120) * DAY + rng.randrange(DAY)
        changes: list[tuple[int, str | None]] = [(applied, rng.choice(self.coupon_ids))]
        if rng.random() < 0.4:
            changes.append((applied + rng.randint(30, 180) * DAY, None))
        return [(at, coupon_id) for at, coupon_id in changes if at < now]


class Walker:
    """Walks one customer's life from sign-up to `now` with random but seeded choices."""

    def __init__(self, book: Book, rng: random.Random, now: int,
                 customer_coupons: CustomerCoupons | None = None) -> None:
        self.book, self.rng, self.now = book, rng, now
        prices = list(book.store.objects.get("price", {}).values())
        self.prices = {cur: [p for p in prices if p["currency"] == cur]
                       for cur in {p["currency"] for p in prices}}
        given = set(customer_coupons.coupon_ids) if customer_coupons else set()
        # A subscription's coupon is one of the catalogue's: the customers' ones are theirs alone.
        self.coupons = [c for c in book.store.objects.get("coupon", {}).values() if c["id"] not in given]
        self.customer_coupons = customer_coupons
        # The walked customer's planned discount changes not made yet: (when, coupon id or None), oldest first.
        self.pending: list[tuple[int, str | None]] = []
        self.cus_id = ""

    def customer(self, t0: int, currency: str, signup_s: int = 3600) -> None:
        rng, book = self.rng, self.book
        name = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
        email = f"{name.split()[0].lower()}{rng.randrange(10000)}@example.com"
        desc = f"Card on file {luhn_number(rng)} (from sales call)" if rng.random() < 0.03 else None
        meta = {"note": f"backup card {luhn_number(rng, '5')}"} if rng.random() < 0.02 else {}
        cus = book.create_customer(t0, email, name, desc, meta)
        self.cus_id = cus["id"]
        self.pending = self.customer_coupons.plan(t0, self.now) if self.customer_coupons else []
        if rng.random() < 0.12:
            self.one_offs(cus["id"], currency, t0)
            self.catch_up(self.now)
            return
        end = self.subscription_life(cus["id"], currency, t0 + rng.randrange(signup_s))
        if end is not None and rng.random() < 0.2:
            again = end + rng.randrange(10, 60) * DAY
            if again < self.now:
                self.catch_up(again)
                end = self.subscription_life(cus["id"], currency, again)
        if end is not None and rng.random() < 0.3 and end + 5 * DAY < self.now:
            self.catch_up(end + 5 * DAY)
            book.delete_customer(cus["id"], end + 5 * DAY)
            self.pending = []
        elif rng.random() < 0.05 and t0 + 7 * DAY < self.now:
            self.catch_up(t0 + 7 * DAY)
            book.update_customer(cus["id"], self._after_customer_changes(t0 + 7 * DAY), email=f"new.{email}")
        self.catch_up(self.now)

    def catch_up(self, at: int) -> None:
        """Make the walked customer's planned discount changes due by `at`: called before each step that invoices
        or changes the customer, so its invoices see the discount of their moment and its versions stay in order."""
        while self.pending and self.pending[0][0] <= at:
            when, coupon_id = self.pending.pop(0)
            if coupon_id is None:
                self.book.remove_customer_discount(self.cus_id, when)
            else:
                self.book.apply_customer_coupon(self.cus_id, coupon_id, when)

    def _after_customer_changes(self, at: int) -> int:
        """`at`, or just after the walked customer's latest discount change if that came later (never without
        customer coupons: nothing else changes a customer after its first week)."""
        if self.customer_coupons is None:
            return at
        return max(at, self.book.store.versions[self.cus_id][-1][0] + 1)

    def one_offs(self, cus_id: str, currency: str, t0: int) -> None:
        for _ in range(self.rng.randint(1, 3)):
            at = self.rng.randint(t0, max(t0, self.now - 60))
            amount = minor_units(currency, self.rng.randint(5, 200))
            meta = ({"memo": f"paid with {luhn_number(self.rng)}"}
                    if self.rng.random() < 0.05 else None)
            ch = self.book.one_off_payment(cus_id, amount, currency, at,
                                           self.rng.random() > 0.12, "One-off order", meta)
            self.maybe_refund(ch)

    def pick_items(self, currency: str, interval: str | None = None) -> list[tuple[Obj, int]]:
        options = [p for p in self.prices[currency]
                   if interval is None or p["recurring"]["interval"] == interval]
        p = self.rng.choice(options)
        seats = p["nickname"] == "Team seat"
        qty = self.rng.randint(2, 20) if seats else (2 if self.rng.random() < 0.08 else 1)
        return [(p, qty)]

    def subscription_life(self, cus_id: str, currency: str, t0: int) -> int | None:
        """Run one subscription until it ends or `now`; return when it ended (or None)."""
        rng, book = self.rng, self.book
        trial = 14 if rng.random() < 0.2 else 0
        coupon = None
        if rng.random() < 0.2:
            fits = [c for c in self.coupons if c["currency"] in (None, currency)
                    and not (trial and c["duration"] == "once")]
            coupon = rng.choice(fits)
        first_ok = trial > 0 or rng.random() > 0.03
        self.catch_up(t0)
        sub = book.create_subscription(cus_id, self.pick_items(currency), t0, trial, coupon,
                                       first_ok)
        if sub["status"] == "incomplete":
            inv_id = sub["latest_invoice"]
            book.void_invoice(inv_id, min(t0 + 23 * 3600, self.now))
            book.store.update("subscription", sub["id"], {"status": "incomplete_expired"},
                              min(t0 + 23 * 3600, self.now))
            return None
        self.refund_latest(sub)
        return self.periods(sub["id"], currency)

    def periods(self, sub_id: str, currency: str) -> int | None:
        rng, book = self.rng, self.book
        while True:
            sub = book.store.objects["subscription"][sub_id]
            item = sub["items"]["data"][0]
            start, end = item["current_period_start"], item["current_period_end"]
            mid = start + (end - start) // 2
            if mid < self.now and sub["status"] == "active":
                self.catch_up(mid)
                ended = self.mid_period(sub, currency, mid)
                if ended is not None:
                    return ended
            if end > self.now:
                return None
            self.catch_up(end)
            sub = book.renew(sub_id, succeed=rng.random() > 0.08)
            if sub["status"] == "canceled":
                return int(sub["ended_at"])
            if sub["status"] == "past_due" and not self.dunning(sub, end):
                sub = book.store.objects["subscription"][sub_id]
                return int(sub["ended_at"]) if sub["status"] == "canceled" else None
            self.refund_latest(book.store.objects["subscription"][sub_id])

    def mid_period(self, sub: Obj, currency: str, mid: int) -> int | None:
        rng, book = self.rng, self.book
        roll = rng.random()
        if roll < 0.08:
            interval = sub["items"]["data"][0]["price"]["recurring"]["interval"]
            book.change_items(sub["id"], self.pick_items(currency, interval), mid)
        elif roll < 0.12:
            book.set_cancel_at_period_end(sub["id"], True, mid)
            if rng.random() < 0.3:
                book.set_cancel_at_period_end(sub["id"], False, mid + DAY)
        elif roll < 0.135:
            latest = book.store.objects["invoice"].get(sub["latest_invoice"] or "")
            book.cancel_subscription(sub["id"], mid)
            ch = self._charge_of(latest)
            if ch is not None and rng.random() < 0.5 and ch["amount"] > 1:
                self.refund(ch["id"], ch["amount"] // 2, mid)
            return mid
        return None

    def dunning(self, sub: Obj, failed_at: int) -> bool:
        """Retry a failed renewal; return True if the subscription recovered."""
        inv_id = sub["latest_invoice"]
        for days, chance in ((3, 0.6), (5, 0.4)):
            at = failed_at + days * DAY
            if at > self.now:
                return False
            if self.book.retry_invoice(inv_id, at, self.rng.random() < chance):
                return True
        at = failed_at + 9 * DAY
        if at > self.now:
            return False
        if self.rng.random() < 0.6:
            self.book.cancel_subscription(sub["id"], at)
            self.book.mark_uncollectible(inv_id, at)
        else:
            self.book._update("subscription", sub["id"], {"status": "unpaid"}, at,
                              "customer.subscription.updated")
        return False

    def _charge_of(self, inv: Obj | None) -> Obj | None:
        if inv is None or inv.get("payment_intent") is None:
            return None
        pi = self.book.store.objects["payment_intent"][inv["payment_intent"]]
        return self.book.store.get("charge", pi["latest_charge"] or "")

    def refund_latest(self, sub: Obj) -> None:
        inv = self.book.store.objects["invoice"].get(sub["latest_invoice"] or "")
        ch = self._charge_of(inv)
        if ch is not None:
            self.maybe_refund(ch)

    def maybe_refund(self, ch: Obj) -> None:
        if ch["status"] != "succeeded":
            return
        roll = self.rng.random()
        at = ch["created"] + self.rng.randint(1, 20) * DAY
        if roll < 0.07 and at <= self.now:
            partial = roll < 0.03 and ch["amount"] > 1
            self.refund(ch["id"], ch["amount"] // 3 if partial else None, at)

    def refund(self, ch_id: str, amount: int | None, at: int) -> None:
        """Refunds `amount` of a charge (None: what is left) at `at`, as Stripe would: never more than is left,
        and never before the charge's latest state (a second refund follows the first, not back in time)."""
        ch = self.book.store.objects["charge"][ch_id]
        left = ch["amount"] - ch["amount_refunded"]
        amount = left if amount is None else min(amount, left)
        at = max(at, self.book.store.versions[ch_id][-1][0] + 1)
        if amount > 0 and at <= self.now:
            self.book.refund(ch_id, amount, at)


def generate(book: Book, config: GeneratorConfig, now: int) -> None:
    """Fill an account's store with `config.customers` customers' history ending at `now` (and the migrated ones')."""
    seed = book.rng.getrandbits(64)
    rng = random.Random(seed)
    start = now - config.months * MONTH
    build_catalogue(book, start, config.currencies)
    customer_coupons = (CustomerCoupons.create(book, start, random.Random(seed * 7919 + 1))
                        if config.customer_coupons else None)
    walker = Walker(book, rng, now, customer_coupons)
    weights = [6 if c == "usd" else 2 for c in config.currencies]
    span = max(1, now - start - 3600)
    for _ in range(config.customers):
        t0 = start + int(span * rng.random() ** 0.8)
        walker.customer(t0, rng.choices(config.currencies, weights)[0])
    # After the others: their history is the same with or without a migration.
    migrated_at = start + int((now - start) * config.migration_at)
    for _ in range(config.migrated_customers):
        walker.customer(migrated_at + rng.randrange(config.migration_s), rng.choices(config.currencies, weights)[0],
                        signup_s=config.migration_s)
