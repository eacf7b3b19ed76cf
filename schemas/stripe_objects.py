"""One canonical model of the five Stripe objects we read, whatever API version rendered them (2015 on).

Stripe renders an event at the API version in force when it was created, so one tenant's topic holds
many shapes. This module turns any of them into the record the projections need, with one documented
rule per field (docs/metrics.md, "Field derivations", lists them); the projections read only these
records. Pure: no I/O, no clock.

**Never a silent default for money.** A money amount, currency, interval or quantity that is required
and cannot be derived raises `UnreadableObjectError` naming the field and the shapes tried: the record is
dead-lettered and counted in the tenant's health, never stored as 0, "" or "month". Fields that are not
money (a customer's e-mail, an invoice number) may be absent.

The receiver runs the same model on every delivery before publishing (an object that cannot be read is
refused with a 400), and the projector runs it on every record (what got onto the topic another way is
dead-lettered).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from fractions import Fraction
from typing import Any

CURRENCY = re.compile(r"^[a-z]{3}$")
MONTHS_PER_INTERVAL: Mapping[str, Fraction] = {
    "month": Fraction(1), "year": Fraction(1, 12), "week": Fraction(52, 12), "day": Fraction(365, 12),
}
# Card brands as `source.brand` (before 2019's payment_method_details) wrote them → today's tokens.
LEGACY_BRANDS: Mapping[str, str] = {
    "visa": "visa", "mastercard": "mastercard", "american express": "amex", "discover": "discover",
    "diners club": "diners", "jcb": "jcb", "unionpay": "unionpay", "unknown": "unknown",
}
# Before 2015-02-18 a successful charge had status "paid".
CHARGE_STATUS_ALIASES: Mapping[str, str] = {"paid": "succeeded"}
CHARGE_STATUSES = frozenset({"succeeded", "pending", "failed"})
# Before 2019-02-11 payment intents had these names.
PAYMENT_INTENT_STATUS_ALIASES: Mapping[str, str] = {
    "requires_source": "requires_payment_method", "requires_source_action": "requires_action",
}
SUBSCRIPTION_STATUSES = frozenset({
    "trialing", "active", "past_due", "canceled", "unpaid", "incomplete", "incomplete_expired", "paused",
})
INVOICE_STATUSES = frozenset({"draft", "open", "paid", "uncollectible", "void", "deleted"})
MAX_MINOR_UNITS = 10**15  # far beyond any Stripe amount; keeps every amount inside a bigint with room
# A `*_decimal` amount as Stripe writes it: plain digits, at most 12 decimal places. Checked on the text, before it
# becomes a number: Decimal takes any exponent ("1e-1000000000" is 14 bytes) and making that a Fraction builds
# 10**1_000_000_000 first, hours of CPU on the event loop.
DECIMAL_TEXT = re.compile(r"-?[0-9]{1,16}(\.[0-9]{1,12})?")
ROUNDINGS = frozenset({"up", "down"})
# Since this version a capture in part, or a cancelled authorisation, releases the rest without a refund.
RELEASE_WITHOUT_REFUND_SINCE = "2025-03-31"
API_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


# One rule per field the projections read, in the order it is tried ("→" = else), and what happens when
# nothing gives it. docs/metrics.md ("Field derivations") is generated from this table; the code below
# follows it, and tests/schemas/test_stripe_objects.py checks both against each version's shapes.
DERIVATIONS: tuple[tuple[str, str, str, str], ...] = (
    # (object, field, rule, when it cannot be derived)
    ("charge", "amount", "`amount` (an integer)", "unreadable"),
    ("charge", "currency", "`currency`, lowercased; three letters", "unreadable"),
    ("charge", "status", "`status`; `paid` (before 2015-02-18) → `succeeded`; no status: `paid` true → `succeeded`, "
                         "false → `failed`", "unreadable"),
    ("charge", "amount_captured", "`amount_captured` (2020-09-21 on; null on a cancelled authorisation before "
                                  "2025-03-31.basil: 0 when `captured` is false) → `amount` if `captured` and "
                                  "succeeded, else 0",
     "unreadable (no `amount_captured`, no `captured`)"),
    ("charge", "amount_refunded", "money returned to the customer: `amount_refunded` → the sum of the succeeded "
                                  "refunds listed in `refunds`; of a charge not captured, 0 (before basil, cancelling "
                                  "an authorisation or letting it expire refunded it); of a charge captured in part, "
                                  "in an event of a version before 2025-03-31.basil, less `amount` − "
                                  "`amount_captured` (the part not captured was refunded then) when a listed refund "
                                  "of that amount, or (refunds not listed) `amount_refunded` itself, shows it",
     "unreadable (a charge captured in part, refunded, its refunds not listed, in an event of no known API "
     "version)"),
    ("charge", "refunds", "`refunds.data` (a list object, 2014-06-17 on; included until 2022-11-15, expanded by the "
                          "importer) → `refunds` (an array); a refund without `status` succeeded; its currency is the "
                          "charge's (a refund in another currency is unreadable); not those that released an "
                          "authorisation (as `amount_refunded`: all of a charge not captured; before basil, the "
                          "earliest of a partial capture's refunds of the part not captured)", "none listed"),
    ("charge", "card brand, last4", "`payment_method_details.card` (2019-03-18 on) → a `source` card → a legacy `card`; "
                                    "brands lowercased ('American Express' → `amex`)", "none (not money)"),
    ("charge", "invoice", "`invoice` (removed in 2025-03-31.basil)", "none (not money)"),
    ("subscription", "status", "`status`", "unreadable"),
    ("subscription", "items", "`items.data` → a legacy single `plan` with the top-level `quantity`", "unreadable"),
    ("subscription", "item amount", "the price's `unit_amount` → `unit_amount_decimal` (digits, at most 12 decimal "
                                    "places) → a plan's `amount`; tiered: the tiers (graduated or volume) for the "
                                    "quantity (included only when asked: the importer lists them, the write path "
                                    "fills them in from a retrieve with `expand[]=items.data.price.tiers`); "
                                    "× `quantity`, first divided by `price.transform_quantity.divide_by` (a "
                                    "plan's `transform_usage`) and rounded `up` or `down` (25 in packs of 10, up: 3); "
                                    "metered: 0; a price in another currency than the subscription's (a multi-currency "
                                    "price): the amount of `price.currency_options[<subscription's currency>]`",
     "unreadable (a licensed item without a quantity, a price not expanded, tiers not expanded, a multi-currency "
     "price without its `currency_options`, a decimal in another form (an exponent, more places), a transform "
     "without a whole `divide_by` and `up`/`down`, or on a tiered price)"),
    ("subscription", "item interval", "`price.recurring.interval` and `interval_count` → a plan's `interval` and "
                                      "`interval_count` (never defaulted to month)", "unreadable"),
    ("subscription", "currency", "`currency` (2022-07-07 on) → the items' price or plan currency (all alike) → "
                                 "the legacy `plan.currency`", "unreadable (missing, or items disagree)"),
    ("subscription", "current period", "`current_period_start/end` (until basil) → the span of the items' periods",
     "none"),
    ("subscription", "coupons", "`discount.coupon` (until basil) → `discounts[]` expanded: `coupon`, or "
                                "`source.coupon` (clover on); ids are filled in by the write path (a retrieve with "
                                "`expand[]=discounts.source.coupon`)",
     "an active subscription's MRR is unreadable while a discount is known only by id"),
    ("subscription", "item coupons", "`items.data[].discounts[]` expanded: `coupon`, or `source.coupon`; they apply "
                                     "to their item (never below 0) before the subscription's coupons apply to the "
                                     "total; ids are not filled in (the write path retrieves the subscription's own)",
     "an active subscription's MRR is unreadable while an item's discount is known only by id"),
    ("subscription", "coupon amount off", "`amount_off` when the coupon's `currency` is the subscription's → "
                                          "`currency_options[<subscription's currency>].amount_off`",
     "an active subscription's MRR is unreadable (a coupon in another currency without that option, or with no "
     "currency): never taken off in the wrong currency"),
    ("subscription", "state before an update", "the object with the event's `previous_attributes` laid over it, "
                                               "read by these rules (an MRR history point before the update)",
     "no point (the update itself still counts; a removed discount is named by id only)"),
    ("subscription", "start date", "`start_date` → `start` (before 2019-10-17)", "none"),
    ("invoice", "total, amount_due", "`total`, `amount_due`", "unreadable"),
    ("invoice", "amount_paid", "`amount_paid` (2018-04-04 on) → `amount_due` if `paid`, else 0", "unreadable"),
    ("invoice", "amount_remaining", "`amount_remaining` → `amount_due` − `amount_paid` (never below 0)", "—"),
    ("invoice", "status", "`status` (2018-11-08 on) → `paid` true: paid; `forgiven`: uncollectible; otherwise open",
     "unreadable"),
    ("invoice", "subscription", "`subscription` (until basil) → `parent.subscription_details.subscription`", "none"),
    ("invoice", "created", "`created` → `date` (before 2019-03-14)", "unreadable"),
    ("invoice", "paid at", "`status_transitions.paid_at`", "none"),
    ("invoice", "payment attempts", "`attempt_count` (orders same-second states; failed-payment recovery)", "0 (not money)"),
    ("payment_intent", "amount, amount_received", "`amount`, `amount_received`", "unreadable"),
    ("payment_intent", "status", "`status`; `requires_source` → `requires_payment_method`, "
                                 "`requires_source_action` → `requires_action` (before 2019-02-11)", "unreadable"),
    ("customer", "everything", "`email`, `name`, `currency` (optional); a deleted customer is its stub "
                               "`{id, object, deleted: true}`", "none (not money)"),
)


class UnreadableObjectError(ValueError):
    """A Stripe object lacks a field revenue needs, or holds it in a form no API version uses."""

    retriable = False

    def __init__(self, kind: str, object_id: str, field: str, problem: str):
        super().__init__(f"{kind} {object_id}: {field} {problem}")
        self.kind, self.object_id, self.field = kind, object_id, field
        self.event_id = ""  # set by whoever knows the event


@dataclass(frozen=True, slots=True)
class Refund:
    """A refund listed on a charge."""

    id: str
    amount: int
    currency: str
    status: str
    created: datetime


@dataclass(frozen=True, slots=True)
class Charge:
    id: str
    created: datetime
    customer_id: str | None
    invoice_id: str | None
    payment_intent_id: str | None
    currency: str
    amount: int
    amount_captured: int
    amount_refunded: int
    status: str
    captured: bool
    failure_code: str | None
    card_brand: str | None
    card_last4: str | None
    description: str | None
    refunds: tuple[Refund, ...]


@dataclass(frozen=True, slots=True)
class Coupon:
    """What MRR needs of a coupon: how long it lasts and how much it takes off."""

    id: str
    duration: str
    percent_off: Fraction | None
    amount_off: int | None
    currency: str | None  # of amount_off
    # amount_off in other currencies (`currency_options`, included when expanded): (currency, amount_off) pairs
    currency_options: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class Item:
    """One subscription item as MRR sees it: its per-period amount (None when metered) and its interval."""

    id: str | None
    price_id: str | None
    quantity: int | None
    currency: str
    interval: str
    interval_count: int
    metered: bool
    period_amount: Fraction  # unit amount × quantity for one billing period, in minor units
    coupons: tuple[Coupon, ...] = ()  # of the item's own discounts (applied before the subscription's)
    unresolved_discounts: tuple[str, ...] = ()  # the item's discounts named only by id


@dataclass(frozen=True, slots=True)
class Subscription:
    id: str
    customer_id: str
    status: str
    currency: str
    created: datetime
    start_date: datetime | None
    trial_end: datetime | None
    current_period_start: datetime | None
    current_period_end: datetime | None
    cancel_at_period_end: bool
    canceled_at: datetime | None
    ended_at: datetime | None
    items: tuple[Item, ...]
    coupons: tuple[Coupon, ...]
    # Discounts named only by id (API versions since 2024-04 list ids; clover names coupons by id):
    # their terms are unknown here, so MRR cannot be derived from this state alone. An item's own are on the item.
    unresolved_discounts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Invoice:
    id: str
    created: datetime
    customer_id: str | None
    subscription_id: str | None
    status: str
    currency: str
    billing_reason: str | None
    total: int
    amount_due: int
    amount_paid: int
    amount_remaining: int
    period_start: datetime | None
    period_end: datetime | None
    paid_at: datetime | None
    number: str | None
    attempt_count: int = 0  # payment attempts so far (not money: absent is 0); only grows


@dataclass(frozen=True, slots=True)
class PaymentIntent:
    id: str
    created: datetime
    customer_id: str | None
    invoice_id: str | None
    status: str
    currency: str
    amount: int
    amount_received: int


@dataclass(frozen=True, slots=True)
class Customer:
    id: str
    deleted: bool
    created: datetime | None
    email: str | None
    name: str | None
    currency: str | None


Canonical = Charge | Subscription | Invoice | PaymentIntent | Customer


class _Reader:
    """Field access with the object's kind and id for error messages."""

    def __init__(self, obj: Mapping[str, Any]):
        if not isinstance(obj, Mapping):
            raise UnreadableObjectError("object", "?", "the object", "is not a JSON object")
        self.obj = obj
        self.kind = str(obj.get("object") or "object")
        object_id = obj.get("id")
        if not isinstance(object_id, str) or not object_id:
            raise UnreadableObjectError(self.kind, "?", "id", "is missing")
        self.id = object_id

    def fail(self, field: str, problem: str) -> UnreadableObjectError:
        return UnreadableObjectError(self.kind, self.id, field, problem)

    def money(self, value: Any, field: str) -> int:
        """An amount in minor units: an integer (never a bool, a float or a string)."""
        if type(value) is not int:
            raise self.fail(field, f"must be an integer amount in minor units, got {_shown(value)}")
        if not -MAX_MINOR_UNITS <= value <= MAX_MINOR_UNITS:
            raise self.fail(field, "is beyond any amount Stripe allows")
        return value

    def amount(self, value: Any, field: str) -> int:
        """An amount Stripe never makes negative (a charge's, a refund's, a payment's, a price's, an amount due):
        an integer in minor units, 0 or more."""
        amount = self.money(value, field)
        if amount < 0:
            raise self.fail(field, f"must not be negative, got {amount}")
        return amount

    def decimal(self, value: Any, field: str) -> Fraction:
        """A price's amount in minor units, which may be fractional and is never negative: an integer, or a decimal
        string (`*_decimal`)."""
        if type(value) is int:
            return Fraction(self.amount(value, field))
        if isinstance(value, str) and DECIMAL_TEXT.fullmatch(value):  # bounded digits, no exponent: cheap to convert
            amount = Fraction(Decimal(value))
            if 0 <= amount <= MAX_MINOR_UNITS:
                return amount
        raise self.fail(field, f"must be a decimal amount in minor units, 0 or more (digits, at most 12 places), "
                               f"got {_shown(value)}")

    def currency(self, value: Any, field: str = "currency") -> str:
        if not isinstance(value, str) or not CURRENCY.match(value.lower()):
            raise self.fail(field, f"must be a three-letter ISO currency code, got {_shown(value)}")
        return value.lower()

    def time(self, value: Any, field: str) -> datetime | None:
        """An optional time: None, or Unix seconds."""
        return None if value is None else self.when(value, field)

    def when(self, value: Any, field: str) -> datetime:
        """A required time in Unix seconds (year 1970 to 9999)."""
        if type(value) is not int or not 0 <= value <= 253_402_300_799:
            raise self.fail(field, f"must be a Unix time in seconds, got {_shown(value)}")
        return datetime.fromtimestamp(value, tz=timezone.utc)

    def text(self, value: Any, field: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.fail(field, f"must be text, got {_shown(value)}")
        return value

    def status(self, value: Any, allowed: frozenset[str], aliases: Mapping[str, str] | None = None) -> str:
        status = (aliases or {}).get(value, value) if isinstance(value, str) else value
        if status not in allowed:
            raise self.fail("status", f"must be one of {', '.join(sorted(allowed))}, got {_shown(value)}")
        return str(status)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def ref(value: Any) -> str | None:
    """Returns the id of an expandable field: an id string, an expanded object's id, or None."""
    if isinstance(value, Mapping):
        object_id = value.get("id")
        return object_id if isinstance(object_id, str) else None
    return value if isinstance(value, str) and value else None


def read_object(obj: Mapping[str, Any], api_version: Any = None) -> Canonical:
    """Returns the canonical record of any of the five objects as rendered in `api_version` (the event's; None
    when unknown); raises UnreadableObjectError."""
    kind = obj.get("object") if isinstance(obj, Mapping) else None
    if kind == "charge":
        return read_charge(obj, api_version)
    if kind == "subscription":
        return read_subscription(obj)
    if kind == "invoice":
        return read_invoice(obj)
    if kind == "payment_intent":
        return read_payment_intent(obj)
    if kind == "customer":
        return read_customer(obj)
    raise UnreadableObjectError(str(kind), str(obj.get("id") if isinstance(obj, Mapping) else "?"),
                                "object", "is not one of the five objects we read")


# Charges ------------------------------------------------------------------------------------------

def read_charge(obj: Mapping[str, Any], api_version: Any = None) -> Charge:
    """A charge of any version (`api_version`, the event's, None when unknown). Rules: see docs/metrics.md, "Field
    derivations: charge"."""
    r = _Reader(obj)
    amount = r.amount(obj.get("amount"), "amount")
    currency = r.currency(obj.get("currency"))
    status = _charge_status(r, obj)
    captured = obj.get("captured")
    if "amount_captured" in obj and obj["amount_captured"] is None and captured is False:
        amount_captured = 0  # a cancelled authorisation before basil: nothing was captured
    elif "amount_captured" in obj:  # since 2020-09-21, every version
        amount_captured = r.amount(obj["amount_captured"], "amount_captured")
    elif isinstance(captured, bool):  # before: the whole amount once captured, nothing before
        amount_captured = amount if captured and status == "succeeded" else 0
    else:
        raise r.fail("amount_captured", "is missing and cannot be derived (no amount_captured, no captured flag)")
    refunds = _refunds(r, obj, currency)
    if "amount_refunded" in obj:
        amount_refunded = r.amount(obj["amount_refunded"], "amount_refunded")
    elif refunds or "refunds" in obj:  # very old shapes: the listed refunds are all there is
        amount_refunded = sum(x.amount for x in refunds if x.status == "succeeded")
    else:
        raise r.fail("amount_refunded", "is missing and no refund list tells it")
    was_captured = bool(captured) if isinstance(captured, bool) else amount_captured > 0
    if not was_captured:  # nothing captured, nothing returned: a refund of it released the authorisation
        refunds, amount_refunded = (), 0
    elif amount_refunded and "amount_captured" in obj and amount_captured < amount:
        listed = refunds if refunds or "refunds" in obj else None
        refunds, amount_refunded = _without_release(r, listed, amount_refunded, amount - amount_captured,
                                                    api_version)
    brand, last4 = _card(obj)
    return Charge(
        id=r.id, created=r.when(obj.get("created"), "created"), customer_id=ref(obj.get("customer")),
        invoice_id=ref(obj.get("invoice")), payment_intent_id=ref(obj.get("payment_intent")),
        currency=currency, amount=amount, amount_captured=amount_captured, amount_refunded=amount_refunded,
        status=status, captured=was_captured,
        failure_code=r.text(obj.get("failure_code"), "failure_code"), card_brand=brand, card_last4=last4,
        description=r.text(obj.get("description"), "description"), refunds=refunds,
    )


def _without_release(r: _Reader, refunds: tuple[Refund, ...] | None, amount_refunded: int, uncaptured: int,
                     api_version: Any) -> tuple[tuple[Refund, ...], int]:
    """A charge captured in part, and refunded: in flows before 2025-03-31.basil the final capture refunded the part
    not captured (`uncaptured`), in `amount_refunded` and as a refund object; from basil on it is released without
    one. Money returned to the customer is the rest. In an event of an older version: when its refunds are listed,
    the release is the earliest succeeded refund of exactly that amount, and without one (a capture not final yet,
    multicapture) there is none; when they are not (2022-11-15 on), `amount_refunded` holds it once it is at least
    that much. In a version from basil on, nothing is taken off (a release made before the account's upgrade, shown
    in a newer version, is not told apart: docs note). Unknown version and no list: the amount cannot be derived."""
    version = api_version[:10] if isinstance(api_version, str) and API_DATE.match(api_version) else None
    if version is not None and version >= RELEASE_WITHOUT_REFUND_SINCE:
        return refunds or (), amount_refunded
    if refunds is not None:
        release = min((x for x in refunds if x.amount == uncaptured and x.status == "succeeded"),
                      key=lambda x: (x.created, x.id), default=None)  # at the capture, before any refund of money
        if release is None or amount_refunded < uncaptured:
            return refunds, amount_refunded
        return tuple(x for x in refunds if x is not release), amount_refunded - uncaptured
    if version is None:
        raise r.fail("amount_refunded", "of a charge captured in part holds the part not captured before "
                                        f"{RELEASE_WITHOUT_REFUND_SINCE}.basil and not after, its refunds are not "
                                        f"listed, and the event's API version is {_shown(api_version)}")
    return (), amount_refunded - uncaptured if amount_refunded >= uncaptured else amount_refunded


def _charge_status(r: _Reader, obj: Mapping[str, Any]) -> str:
    status = obj.get("status")
    if status is None and isinstance(obj.get("paid"), bool):  # the oldest shapes: only `paid`
        status = "succeeded" if obj["paid"] else "failed"
    return r.status(status, CHARGE_STATUSES, CHARGE_STATUS_ALIASES)


def _refunds(r: _Reader, obj: Mapping[str, Any], currency: str) -> tuple[Refund, ...]:
    listed = obj.get("refunds")
    if isinstance(listed, Mapping):  # a list object (2014-06-17 on; included by default until 2022-11-15)
        listed = listed.get("data")
    if listed is None:
        return ()
    if not isinstance(listed, Sequence) or isinstance(listed, (str, bytes)):
        raise r.fail("refunds", "must be a list of refunds")
    out = []
    for refund in listed:
        if not isinstance(refund, Mapping):
            raise r.fail("refunds", "holds something that is not a refund")
        rr = _Reader({**refund, "object": "refund"})
        # Refunds without a status are from before refunds could fail: they succeeded.
        status = refund.get("status") or "succeeded"
        refund_currency = rr.currency(refund.get("currency") or currency)
        if refund_currency != currency:  # Stripe refunds in the charge's currency, in every version
            raise r.fail("refunds", f"holds a refund in {refund_currency}, not the charge's {currency}")
        out.append(Refund(
            id=rr.id, amount=rr.amount(refund.get("amount"), "amount"),
            currency=refund_currency, status=str(status),
            created=rr.when(refund.get("created"), "created"),
        ))
    return tuple(out)


def _card(obj: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """Brand and last4 from payment_method_details.card (2019 on), else a `source` card, else a legacy `card`."""
    details = obj.get("payment_method_details")
    card = details.get("card") if isinstance(details, Mapping) else None
    if not isinstance(card, Mapping):
        for legacy in (obj.get("source"), obj.get("card")):
            if isinstance(legacy, Mapping) and legacy.get("object") == "card":
                card = legacy
                break
    if not isinstance(card, Mapping):
        return None, None
    brand = card.get("brand")
    if isinstance(brand, str):
        brand = LEGACY_BRANDS.get(brand.lower(), brand.lower())
    last4 = card.get("last4")
    return (brand if isinstance(brand, str) else None,
            last4 if isinstance(last4, str) and len(last4) == 4 and last4.isdigit() else None)


# Subscriptions ------------------------------------------------------------------------------------

def read_subscription(obj: Mapping[str, Any]) -> Subscription:
    """A subscription of any version. Rules: see docs/metrics.md, "Field derivations: subscription"."""
    r = _Reader(obj)
    status = r.status(obj.get("status"), SUBSCRIPTION_STATUSES)
    top = r.currency(obj["currency"]) if obj.get("currency") is not None else None
    items = _items(r, obj, top)
    currency = top or _subscription_currency(r, obj, items)
    start, end = _period(r, obj)
    coupons, unresolved = _discounts(r, obj)
    cancel = obj.get("cancel_at_period_end")
    customer = ref(obj.get("customer"))
    if customer is None:
        raise r.fail("customer", "is missing")
    return Subscription(
        id=r.id, customer_id=customer, status=status, currency=currency,
        created=r.when(obj.get("created"), "created"),
        start_date=r.time(obj.get("start_date", obj.get("start")), "start_date"),
        trial_end=r.time(obj.get("trial_end"), "trial_end"), current_period_start=start, current_period_end=end,
        cancel_at_period_end=bool(cancel) if isinstance(cancel, bool) else False,
        canceled_at=r.time(obj.get("canceled_at"), "canceled_at"), ended_at=r.time(obj.get("ended_at"), "ended_at"),
        items=items, coupons=coupons, unresolved_discounts=unresolved,
    )


def _items(r: _Reader, obj: Mapping[str, Any], currency: str | None) -> tuple[Item, ...]:
    """The items (`items.data`, always included since 2017), or the legacy single `plan` and `quantity`."""
    listed = obj.get("items")
    data = listed.get("data") if isinstance(listed, Mapping) else None
    if isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        return tuple(_item(r, item, i, currency) for i, item in enumerate(data))
    plan = obj.get("plan")
    if isinstance(plan, Mapping):  # a subscription from before items: one plan, one quantity
        return (_item(r, {"id": None, "plan": plan, "quantity": obj.get("quantity")}, 0, currency),)
    raise r.fail("items", "are missing (neither items.data nor a legacy plan)")


def _item(r: _Reader, item: Any, index: int, subscription_currency: str | None) -> Item:
    field = f"items.data[{index}]"
    if not isinstance(item, Mapping):
        raise r.fail(field, "is not a subscription item")
    price = item.get("price") if isinstance(item.get("price"), Mapping) else item.get("plan")
    if not isinstance(price, Mapping):
        raise r.fail(f"{field}.price", "is missing or not expanded (its amount and interval are needed)")
    recurring = price.get("recurring")
    if isinstance(recurring, Mapping):  # a Price (2020-04-28 on)
        interval, count = recurring.get("interval"), recurring.get("interval_count")
        usage = recurring.get("usage_type") or price.get("usage_type")
        source = f"{field}.price.recurring"
    elif "interval" in price:  # a legacy Plan: interval at the top
        interval, count, usage = price.get("interval"), price.get("interval_count"), price.get("usage_type")
        source = f"{field}.plan"
    else:
        raise r.fail(f"{field}.price", "has no billing interval (neither price.recurring nor a plan's interval)")
    if interval not in MONTHS_PER_INTERVAL:
        raise r.fail(f"{source}.interval", f"must be day, week, month or year, got {_shown(interval)}")
    if type(count) is not int or count < 1:
        raise r.fail(f"{source}.interval_count", f"must be a whole number of at least 1, got {_shown(count)}")
    if price.get("currency") is None and subscription_currency is not None:
        currency = subscription_currency  # the price's currency is the subscription's
    else:
        currency = r.currency(price.get("currency"), f"{field}.price.currency")
    if subscription_currency is not None and currency != subscription_currency:
        price = _in_currency(r, price, f"{field}.price", subscription_currency)
        currency = subscription_currency
    metered = usage == "metered"
    quantity = item.get("quantity")
    if quantity is not None and (type(quantity) is not int or quantity < 0):
        raise r.fail(f"{field}.quantity", f"must be a whole number, got {_shown(quantity)}")
    if metered:
        amount = Fraction(0)  # usage is billed in arrears, not recurring revenue
    else:
        if quantity is None:
            raise r.fail(f"{field}.quantity", "is missing on a licensed (not metered) price")
        billed = _billed_quantity(r, price, field, quantity)
        amount = _unit_amount(r, price, field, billed) * billed if price.get("billing_scheme") != "tiered" \
            else _tiered_amount(r, price, field, billed)
    coupons, unresolved = _discount_list(r, item.get("discounts"), f"{field}.discounts")
    return Item(id=ref(item.get("id")), price_id=ref(price.get("id")), quantity=quantity, currency=currency,
                interval=str(interval), interval_count=count, metered=metered, period_amount=amount,
                coupons=coupons, unresolved_discounts=unresolved)


def _billed_quantity(r: _Reader, price: Mapping[str, Any], field: str, quantity: int) -> int:
    """The quantity the unit amount applies to: divided by `transform_quantity.divide_by` (a Price; a legacy
    Plan's `transform_usage`) and rounded up or down, so 25 seats in packs of 10 rounded up bill 3 packs."""
    for name in ("transform_quantity", "transform_usage"):
        transform = price.get(name)
        if transform is None:
            continue
        where = f"{field}.price.{name}"
        if not isinstance(transform, Mapping):
            raise r.fail(where, f"must be an object with divide_by and round, got {_shown(transform)}")
        divide_by, rounding = transform.get("divide_by"), transform.get("round")
        if type(divide_by) is not int or divide_by < 1:
            raise r.fail(f"{where}.divide_by", f"must be a whole number of at least 1, got {_shown(divide_by)}")
        if rounding not in ROUNDINGS:
            raise r.fail(f"{where}.round", f"must be up or down, got {_shown(rounding)}")
        if price.get("billing_scheme") == "tiered":
            raise r.fail(where, "is set on a tiered price (Stripe allows one or the other)")
        return -(-quantity // divide_by) if rounding == "up" else quantity // divide_by
    return quantity


def _in_currency(r: _Reader, price: Mapping[str, Any], field: str, currency: str) -> Mapping[str, Any]:
    """A multi-currency price as billed in `currency`: its amounts from `currency_options[currency]`.

    A price's `currency` is its default; a subscription in another currency is billed at that option's
    amounts, which Stripe includes only when asked (`expand: currency_options`). Without them the amount
    is not derivable: the price's own amount is in another currency.
    """
    options = price.get("currency_options")
    option = options.get(currency) if isinstance(options, Mapping) else None
    if not isinstance(option, Mapping):
        raise r.fail(f"{field}.currency", f"is {_shown(price.get('currency'))} while the subscription is in "
                     f"{currency}, and the price's currency_options for {currency} are not included")
    amounts = ("unit_amount", "unit_amount_decimal", "tiers", "custom_unit_amount")
    return {**{k: v for k, v in price.items() if k not in amounts}, **option, "currency": currency}


def _unit_amount(r: _Reader, price: Mapping[str, Any], field: str, quantity: int) -> Fraction:
    """unit_amount (a Price), else unit_amount_decimal (sub-cent prices), else `amount` (a legacy Plan)."""
    for name in ("unit_amount", "amount"):
        if name in price and price[name] is not None:
            return Fraction(r.amount(price[name], f"{field}.price.{name}"))
    for name in ("unit_amount_decimal", "amount_decimal"):
        if price.get(name) is not None:
            return r.decimal(price[name], f"{field}.price.{name}")
    raise r.fail(f"{field}.price.unit_amount", "is missing (no unit_amount, unit_amount_decimal or plan amount)")


def _tiered_amount(r: _Reader, price: Mapping[str, Any], field: str, quantity: int) -> Fraction:
    """A tiered price's amount for `quantity`: graduated (each tier's units at its price) or volume (all
    units at the tier the quantity falls in), with each tier's flat amount. Needs the tiers expanded."""
    tiers = price.get("tiers")
    if not isinstance(tiers, Sequence) or not tiers:
        raise r.fail(f"{field}.price.tiers", "are needed for a tiered price and were not expanded")
    mode = price.get("tiers_mode")
    total, below = Fraction(0), 0
    for i, tier in enumerate(tiers):
        if not isinstance(tier, Mapping):
            raise r.fail(f"{field}.price.tiers[{i}]", "is not a tier")
        upper = tier.get("up_to")
        if upper is not None and (type(upper) is not int or upper < 1):
            raise r.fail(f"{field}.price.tiers[{i}].up_to", f"must be a whole number or null, got {_shown(upper)}")
        unit, flat = (_tier_amount(r, tier, name, f"{field}.price.tiers[{i}]") for name in ("unit_amount", "flat_amount"))
        if mode == "volume":
            if upper is None or quantity <= upper:
                return unit * quantity + flat
            continue
        if mode != "graduated":
            raise r.fail(f"{field}.price.tiers_mode", f"must be graduated or volume, got {_shown(mode)}")
        in_tier = (quantity if upper is None else min(quantity, upper)) - below
        if in_tier > 0:
            total += unit * in_tier + flat
        if upper is None or quantity <= upper:
            return total
        below = upper
    return total


def _tier_amount(r: _Reader, tier: Mapping[str, Any], name: str, field: str) -> Fraction:
    """A tier's unit or flat amount (`<name>_decimal` → `<name>`); a tier may have only one of the two: 0."""
    for key in (f"{name}_decimal", name):
        if tier.get(key) is not None:
            return r.decimal(tier[key], f"{field}.{key}")
    return Fraction(0)


def _subscription_currency(r: _Reader, obj: Mapping[str, Any], items: tuple[Item, ...]) -> str:
    """The subscription's `currency` (2022-07-07 on), else its items' (all alike), else a legacy plan's."""
    if obj.get("currency") is not None:
        return r.currency(obj["currency"])
    currencies = {item.currency for item in items}
    if len(currencies) == 1:
        return currencies.pop()
    if len(currencies) > 1:
        raise r.fail("currency", f"is missing and the items disagree ({', '.join(sorted(currencies))})")
    plan = obj.get("plan")
    if isinstance(plan, Mapping) and plan.get("currency") is not None:
        return r.currency(plan["currency"], "plan.currency")
    raise r.fail("currency", "is missing and no item or plan has one")


def _period(r: _Reader, obj: Mapping[str, Any]) -> tuple[datetime | None, datetime | None]:
    """The current period: on the subscription (before 2025-03-31), else the span of its items' periods."""
    if obj.get("current_period_start") is not None:
        return (r.time(obj.get("current_period_start"), "current_period_start"),
                r.time(obj.get("current_period_end"), "current_period_end"))
    data = (obj.get("items") or {}).get("data") if isinstance(obj.get("items"), Mapping) else None
    starts, ends = [], []
    for i, item in enumerate(data or []):
        if isinstance(item, Mapping):
            start = r.time(item.get("current_period_start"), f"items.data[{i}].current_period_start")
            end = r.time(item.get("current_period_end"), f"items.data[{i}].current_period_end")
            starts += [start] if start else []
            ends += [end] if end else []
    return (min(starts) if starts else None, max(ends) if ends else None)


def _discounts(r: _Reader, obj: Mapping[str, Any]) -> tuple[tuple[Coupon, ...], tuple[str, ...]]:
    """The coupons of the subscription's own discounts, and those named only by id.

    `discount` (one object with its coupon, until 2025-03-31) and `discounts` (ids, or objects when
    expanded, since 2024-04). An item's discounts (`items.data[].discounts`) are read with its item.
    """
    listed = obj.get("discounts")
    if listed is not None and not _is_list(listed):
        raise r.fail("discounts", f"must be a list of discounts or their ids, got {_shown(listed)}")
    return _discount_list(r, [obj.get("discount"), *(listed or [])], "discounts")


def _is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def _discount_list(r: _Reader, listed: Any, field: str) -> tuple[tuple[Coupon, ...], tuple[str, ...]]:
    """The coupons of a list of discounts, and the discounts named only by id.

    A discount is an id, or an object (expanded) whose coupon is `coupon`, or since clover `source.coupon`
    (an id unless expanded). A discount id, or a coupon named only by id, is unresolved.
    """
    if listed is None:
        return (), ()
    if not _is_list(listed):
        raise r.fail(field, f"must be a list of discounts or their ids, got {_shown(listed)}")
    found: dict[str, Coupon] = {}
    unresolved: list[str] = []
    for discount in listed:
        if discount is None:
            continue
        if isinstance(discount, str):
            unresolved.append(discount)
            continue
        if not isinstance(discount, Mapping):
            raise r.fail(field, "holds something that is neither a discount nor its id")
        coupon = discount.get("coupon")
        source = discount.get("source")
        if coupon is None and isinstance(source, Mapping):
            coupon = source.get("coupon")
        if isinstance(coupon, Mapping):
            parsed = _coupon(r, coupon, f"{field}.coupon")
            found[parsed.id] = parsed
        else:
            unresolved.append(ref(discount.get("id")) or str(coupon))
    resolved_ids = {ref(d.get("id")) for d in listed if isinstance(d, Mapping)}
    return tuple(found.values()), tuple(u for u in dict.fromkeys(unresolved) if u not in resolved_ids)


def _coupon(r: _Reader, coupon: Mapping[str, Any], field: str) -> Coupon:
    duration = coupon.get("duration")
    if duration not in ("forever", "once", "repeating"):
        raise r.fail(f"{field}.duration", f"must be forever, once or repeating, got {_shown(duration)}")
    percent = coupon.get("percent_off")
    amount = coupon.get("amount_off")
    if percent is not None and (isinstance(percent, bool) or not isinstance(percent, (int, float)) or not 0 < percent <= 100):
        raise r.fail(f"{field}.percent_off", f"must be a number above 0 and at most 100, got {_shown(percent)}")
    if percent is None and amount is None:
        raise r.fail(field, "has neither percent_off nor amount_off")
    amount_off = r.amount(amount, f"{field}.amount_off") if amount is not None else None
    currency = coupon.get("currency")
    return Coupon(
        id=ref(coupon.get("id")) or "?", duration=str(duration),
        percent_off=Fraction(str(percent)) if percent is not None else None,  # a float within (0, 100]: short text
        amount_off=amount_off, currency=r.currency(currency, f"{field}.currency") if currency else None,
        currency_options=_amounts_off(r, coupon.get("currency_options"), f"{field}.currency_options"),
    )


def _amounts_off(r: _Reader, options: Any, field: str) -> tuple[tuple[str, int], ...]:
    """A coupon's `currency_options` (`{currency: {amount_off}}`; only when expanded) as (currency, amount_off)."""
    if options is None:
        return ()
    if not isinstance(options, Mapping):
        raise r.fail(field, f"must map currencies to amounts off, got {_shown(options)}")
    found = []
    for key, option in options.items():
        currency = r.currency(key, f"{field} key")
        amount = r.amount(option.get("amount_off") if isinstance(option, Mapping) else None,
                          f"{field}.{currency}.amount_off")
        found.append((currency, amount))
    return tuple(found)


# Invoices -----------------------------------------------------------------------------------------

def read_invoice(obj: Mapping[str, Any]) -> Invoice:
    """An invoice of any version. Rules: see docs/metrics.md, "Field derivations: invoice"."""
    r = _Reader(obj)
    currency = r.currency(obj.get("currency"))
    total = r.money(obj.get("total"), "total")
    amount_due = r.amount(obj.get("amount_due"), "amount_due")
    status = _invoice_status(r, obj)
    found = obj.get("status_transitions")
    transitions: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    if "amount_paid" in obj:  # since 2018-04-04
        amount_paid = r.amount(obj["amount_paid"], "amount_paid")
    elif isinstance(obj.get("paid"), bool):
        amount_paid = amount_due if obj["paid"] else 0
    else:
        raise r.fail("amount_paid", "is missing and cannot be derived (no amount_paid, no paid flag)")
    amount_remaining = (r.amount(obj["amount_remaining"], "amount_remaining") if "amount_remaining" in obj
                        else max(amount_due - amount_paid, 0))
    return Invoice(
        id=r.id, created=r.when(obj.get("created", obj.get("date")), "created"),
        customer_id=ref(obj.get("customer")), subscription_id=invoice_subscription(obj), status=status,
        currency=currency, billing_reason=r.text(obj.get("billing_reason"), "billing_reason"), total=total,
        amount_due=amount_due, amount_paid=amount_paid, amount_remaining=amount_remaining,
        period_start=r.time(obj.get("period_start"), "period_start"),
        period_end=r.time(obj.get("period_end"), "period_end"),
        paid_at=r.time(transitions.get("paid_at"), "status_transitions.paid_at"),
        number=r.text(obj.get("number"), "number"),
        attempt_count=attempts if isinstance(attempts := obj.get("attempt_count"), int) and attempts >= 0 else 0,
    )


def invoice_subscription(invoice: Mapping[str, Any]) -> str | None:
    """The invoice's subscription: `subscription` (until 2025-03-31) or `parent.subscription_details.subscription`."""
    legacy = ref(invoice.get("subscription"))
    if legacy:
        return legacy
    parent = invoice.get("parent")
    details = parent.get("subscription_details") if isinstance(parent, Mapping) else None
    return ref(details.get("subscription")) if isinstance(details, Mapping) else None


def _invoice_status(r: _Reader, obj: Mapping[str, Any]) -> str:
    """`status` (2018-11-08 on); before, from `paid`, `forgiven` and `closed`."""
    status = obj.get("status")
    if status is None:
        if obj.get("paid") is True:
            status = "paid"
        elif obj.get("forgiven") is True:
            status = "uncollectible"
        elif isinstance(obj.get("closed"), bool) or isinstance(obj.get("paid"), bool):
            status = "open"
    return r.status(status, INVOICE_STATUSES)


# Payment intents and customers ------------------------------------------------------------------

def read_payment_intent(obj: Mapping[str, Any]) -> PaymentIntent:
    """A payment intent of any version. Rules: see docs/metrics.md, "Field derivations: payment intent"."""
    r = _Reader(obj)
    status = r.status(obj.get("status"), frozenset({
        "requires_payment_method", "requires_confirmation", "requires_action", "processing", "requires_capture",
        "canceled", "succeeded"}), PAYMENT_INTENT_STATUS_ALIASES)
    amount = r.amount(obj.get("amount"), "amount")
    if "amount_received" in obj:
        received = r.amount(obj["amount_received"], "amount_received")
    else:
        raise r.fail("amount_received", "is missing (every payment intent version has it)")
    return PaymentIntent(
        id=r.id, created=r.when(obj.get("created"), "created"), customer_id=ref(obj.get("customer")),
        invoice_id=ref(obj.get("invoice")), status=status, currency=r.currency(obj.get("currency")),
        amount=amount, amount_received=received,
    )


def read_customer(obj: Mapping[str, Any]) -> Customer:
    """A customer of any version, or the stub a deleted one leaves (`{id, object, deleted: true}`)."""
    r = _Reader(obj)
    deleted = obj.get("deleted") is True
    currency = obj.get("currency")
    return Customer(
        id=r.id, deleted=deleted, created=r.time(obj.get("created"), "created"),
        email=r.text(obj.get("email"), "email"), name=r.text(obj.get("name"), "name"),
        currency=r.currency(currency) if currency is not None else None,
    )
