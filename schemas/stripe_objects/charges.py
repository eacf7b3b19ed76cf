"""Charges of any version: the money captured and returned (never an authorisation released), refunds listed, the
card's brand and last four digits only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from schemas.stripe_objects.reader import FieldReader, ref, shown
from schemas.stripe_objects.records import Charge, Refund

# Card brands as `source.brand` (before 2019's payment_method_details) wrote them → today's tokens.
LEGACY_BRANDS: Mapping[str, str] = {
    "visa": "visa", "mastercard": "mastercard", "american express": "amex", "discover": "discover",
    "diners club": "diners", "jcb": "jcb", "unionpay": "unionpay", "unknown": "unknown",
}
# Before 2015-02-18 a successful charge had status "paid".
CHARGE_STATUS_ALIASES: Mapping[str, str] = {"paid": "succeeded"}
CHARGE_STATUSES = frozenset({"succeeded", "pending", "failed"})
# Since this version a capture in part, or a cancelled authorisation, releases the rest without a refund.
RELEASE_WITHOUT_REFUND_SINCE = "2025-03-31"
API_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def read_charge(obj: Mapping[str, Any], api_version: Any = None) -> Charge:
    """A charge of any version (`api_version`, the event's, None when unknown). Rules: see docs/metrics.md, "Field
    derivations: charge"."""
    r = FieldReader(obj)
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


def _without_release(r: FieldReader, refunds: tuple[Refund, ...] | None, amount_refunded: int, uncaptured: int,
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
                                        f"listed, and the event's API version is {shown(api_version)}")
    return (), amount_refunded - uncaptured if amount_refunded >= uncaptured else amount_refunded


def _charge_status(r: FieldReader, obj: Mapping[str, Any]) -> str:
    status = obj.get("status")
    if status is None and isinstance(obj.get("paid"), bool):  # the oldest shapes: only `paid`
        status = "succeeded" if obj["paid"] else "failed"
    return r.status(status, CHARGE_STATUSES, CHARGE_STATUS_ALIASES)


def _refunds(r: FieldReader, obj: Mapping[str, Any], currency: str) -> tuple[Refund, ...]:
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
        rr = FieldReader({**refund, "object": "refund"})
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
