"""Builders for Stripe-shaped objects, each starting from the shape in `data/fixtures.json`.

Pure functions: they take ids, times and amounts and return new dicts; nothing here stores or emits.
"""

from __future__ import annotations

import json
import random
from functools import cache
from importlib import resources
from typing import Any

Obj = dict[str, Any]

ZERO_DECIMAL = frozenset({"jpy", "krw", "vnd", "clp", "xof", "xaf", "ugx", "pyg", "rwf"})
_BRANDS = (("visa", "4"), ("mastercard", "5"), ("amex", "37"), ("discover", "6011"))


@cache
def _templates() -> dict[str, Obj]:
    text = resources.files("stripe_sim").joinpath("data/fixtures.json").read_text()
    loaded: dict[str, Obj] = json.loads(text)
    return loaded


def template(kind: str) -> Obj:
    """Return the fixture shape of a kind (shared; copy before changing)."""
    return _templates()[kind]


def luhn_number(rng: random.Random, prefix: str = "4", length: int = 16) -> str:
    """Return a Luhn-valid card-like number with the given prefix and length."""
    digits = prefix + "".join(str(rng.randrange(10)) for _ in range(length - len(prefix) - 1))
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            d -= 9 if d > 9 else 0
        total += d
    return digits + str((10 - total % 10) % 10)


def card_for(customer_id: str) -> Obj:
    """Return the stable card (brand, last4, expiry, fingerprint) a customer pays with."""
    rng = random.Random(customer_id)
    brand, prefix = rng.choice(_BRANDS)
    number = luhn_number(rng, prefix, 15 if brand == "amex" else 16)
    return {"brand": brand, "last4": number[-4:], "exp_month": rng.randint(1, 12),
            "exp_year": rng.randint(2027, 2032), "fingerprint": "".join(
                rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
                for _ in range(16))}


def customer(cus_id: str, at: int, livemode: bool, email: str | None, name: str | None,
             description: str | None = None, metadata: dict[str, str] | None = None) -> Obj:
    """Build a customer."""
    return {**template("customer"), "id": cus_id, "created": at, "livemode": livemode,
            "email": email, "name": name, "description": description,
            "metadata": metadata or {}, "currency": None,
            "invoice_prefix": cus_id[-8:].upper()}


def price(price_id: str, at: int, livemode: bool, currency: str, unit_amount: int,
          interval: str, interval_count: int, nickname: str | None, product: str) -> Obj:
    """Build a recurring, licensed, per-unit price."""
    recurring = {**template("price")["recurring"], "interval": interval,
                 "interval_count": interval_count}
    return {**template("price"), "id": price_id, "created": at, "livemode": livemode,
            "currency": currency, "unit_amount": unit_amount, "unit_amount_decimal": str(unit_amount),
            "recurring": recurring, "nickname": nickname, "product": product}


def tiered_price(price_id: str, at: int, livemode: bool, currency: str, tiers: list[tuple[int | None, int, int]],
                 tiers_mode: str, interval: str, interval_count: int, nickname: str | None, product: str) -> Obj:
    """Build a recurring, licensed, tiered price: `tiers` as (up_to, unit_amount, flat_amount), the last up_to
    None; `tiers_mode` graduated or volume. Stored with its tiers; rendered without them unless expanded."""
    listed = [{"flat_amount": flat, "flat_amount_decimal": str(flat), "unit_amount": unit,
               "unit_amount_decimal": str(unit), "up_to": up_to} for up_to, unit, flat in tiers]
    return {**price(price_id, at, livemode, currency, 0, interval, interval_count, nickname, product),
            "billing_scheme": "tiered", "tiers_mode": tiers_mode, "tiers": listed,
            "unit_amount": None, "unit_amount_decimal": None}


def period_amount(p: Obj, quantity: int) -> int:
    """One billing period's amount of `quantity` units of a price, as Stripe bills it: per unit, or by its tiers.
    Volume: every unit at the tier the quantity falls in, plus that tier's flat amount. Graduated: unit by unit,
    each at the tier it falls in, plus the flat amount of every tier reached."""
    if p["billing_scheme"] != "tiered":
        return int(p["unit_amount"]) * quantity
    tiers = p["tiers"]
    unit = [int(t["unit_amount"] or 0) for t in tiers]
    flat = [int(t["flat_amount"] or 0) for t in tiers]

    def tier_of(units: int) -> int:
        return next(i for i, t in enumerate(tiers) if t["up_to"] is None or units <= t["up_to"])

    if p["tiers_mode"] == "volume":
        i = tier_of(quantity)
        return unit[i] * quantity + flat[i]
    reached = [tier_of(n) for n in range(1, quantity + 1)]
    return sum(unit[i] for i in reached) + sum(flat[i] for i in set(reached))


def plan_of(p: Obj) -> Obj:
    """Return the legacy `plan` view of a price, as subscription items still carry it."""
    tiered = {"tiers": p["tiers"]} if p["billing_scheme"] == "tiered" else {}
    return {**template("subscription_item")["plan"], "id": p["id"], "amount": p["unit_amount"],
            "amount_decimal": p["unit_amount_decimal"], "billing_scheme": p["billing_scheme"],
            "created": p["created"], "currency": p["currency"],
            "interval": p["recurring"]["interval"], "interval_count": p["recurring"]["interval_count"],
            "livemode": p["livemode"], "metadata": {}, "nickname": p["nickname"],
            "product": p["product"], "tiers_mode": p["tiers_mode"], "transform_usage": None, **tiered}


def coupon(coupon_id: str, at: int, livemode: bool, duration: str, percent_off: float | None,
           amount_off: int | None, currency: str | None, duration_in_months: int | None,
           products: list[str] | None = None) -> Obj:
    """Build a coupon (duration forever, once or repeating), restricted to `products` or reducing every item.
    Stored with its `applies_to`; rendered without it unless expanded."""
    name = f"{percent_off:g}% off" if percent_off is not None else f"{amount_off} {currency} off"
    return {**template("coupon"), "id": coupon_id, "created": at, "livemode": livemode,
            "duration": duration, "percent_off": percent_off, "amount_off": amount_off,
            "currency": currency, "duration_in_months": duration_in_months, "name": name,
            "redeem_by": None, "applies_to": {"products": list(products)} if products else None}


def discount(di_id: str, cpn: Obj, customer_id: str, sub_id: str | None, start: int,
             end: int | None) -> Obj:
    """Build a discount applying a coupon to a subscription (or, `sub_id` None, to a customer)."""
    return {**template("discount"), "id": di_id, "coupon": cpn, "customer": customer_id,
            "subscription": sub_id, "start": start, "end": end,
            "source": {"coupon": cpn["id"], "type": "coupon"}}


def subscription_item(si_id: str, sub_id: str, p: Obj, quantity: int, at: int,
                      period: tuple[int, int], discounts: list[Obj] | None = None) -> Obj:
    """Build a subscription item carrying its own billing period (basil shape) and its own discounts (stored
    whole; rendered as ids unless expanded)."""
    return {**template("subscription_item"), "id": si_id, "created": at, "price": p,
            "plan": plan_of(p), "quantity": quantity, "subscription": sub_id,
            "current_period_start": period[0], "current_period_end": period[1],
            "billing_thresholds": None, "discounts": list(discounts or [])}


def subscription(sub_id: str, customer_id: str, at: int, livemode: bool, currency: str,
                 items: list[Obj], status: str, trial: tuple[int, int] | None,
                 disc: Obj | None) -> Obj:
    """Build a subscription in the current (basil) shape."""
    tmpl = template("subscription")
    return {**tmpl, "id": sub_id, "customer": customer_id, "created": at, "start_date": at,
            "billing_cycle_anchor": trial[1] if trial else at, "livemode": livemode,
            "currency": currency, "status": status, "cancel_at": None, "canceled_at": None,
            "ended_at": None, "cancel_at_period_end": False,
            "trial_start": trial[0] if trial else None, "trial_end": trial[1] if trial else None,
            "discount": disc, "discounts": [disc["id"]] if disc else [],
            "items": {**tmpl["items"], "data": items,
                      "url": f"/v1/subscription_items?subscription={sub_id}"},
            "latest_invoice": None, "managed_payments": None}


def line_item(li_id: str, inv_id: str, item: Obj, sub_id: str, period: tuple[int, int],
              livemode: bool, trial: bool = False) -> Obj:
    """Build an invoice line for one subscription item (zero during a trial)."""
    amount = 0 if trial else period_amount(item["price"], item["quantity"])
    parent = {"type": "subscription_item_details", "invoice_item_details": None,
              "subscription_item_details": {"invoice_item": None, "proration": False,
                                            "proration_details": {"credited_items": None},
                                            "subscription": sub_id,
                                            "subscription_item": item["id"]}}
    return {**template("line_item"), "id": li_id, "invoice": inv_id, "amount": amount,
            "subtotal": amount, "currency": item["price"]["currency"], "livemode": livemode,
            "description": (f"Trial period for {item['price']['nickname']}" if trial
                            else f"{item['quantity']} × {item['price']['nickname']}"),
            "period": {"start": period[0], "end": period[1]}, "quantity": item["quantity"],
            "subscription": sub_id, "parent": parent, "price": item["price"]}


def invoice(inv_id: str, sub: Obj, at: int, lines: list[Obj], period: tuple[int, int],
            discount_amount: int, billing_reason: str, disc: Obj | None = None) -> Obj:
    """Build a draft subscription invoice (basil shape: subscription under `parent`); `disc` is the
    subscription-level discount in effect (its own, the default, or its customer's)."""
    subtotal = sum(line["amount"] for line in lines)
    total = subtotal - discount_amount
    tmpl = template("invoice")
    return {**tmpl, "id": inv_id, "customer": sub["customer"], "created": at,
            "livemode": sub["livemode"], "currency": sub["currency"], "status": "draft",
            "amount_due": total, "amount_paid": 0, "amount_remaining": total,
            "subtotal": subtotal, "subtotal_excluding_tax": subtotal, "total": total,
            "total_excluding_tax": total, "attempt_count": 0, "attempted": False,
            "auto_advance": True, "billing_reason": billing_reason, "due_date": None,
            "effective_at": None, "next_payment_attempt": None, "webhooks_delivered_at": None,
            "period_start": period[0], "period_end": period[1], "number": None,
            "discounts": _discount_ids(sub, disc) if discount_amount else [],
            "total_discount_amounts": ([{"amount": discount_amount, "discount": _discount_ids(sub, disc)[0]}]
                                       if discount_amount else []),
            "lines": {**tmpl["lines"], "data": lines, "total_count": len(lines),
                      "url": f"/v1/invoices/{inv_id}/lines"},
            "parent": {"type": "subscription_details", "quote_details": None,
                       "subscription_details": {"metadata": {}, "subscription": sub["id"]}},
            "status_transitions": {"finalized_at": None, "marked_uncollectible_at": None,
                                   "paid_at": None, "voided_at": None},
            "subscription": None, "payments": None}


def _discount_ids(sub: Obj, disc: Obj | None) -> list[str]:
    """The subscription-level discount (the subscription's, or its customer's) and its items' (the invoice's)."""
    disc = disc or sub.get("discount")
    own = [disc["id"]] if disc else []
    return own + [d["id"] for it in sub["items"]["data"] for d in it.get("discounts") or []]


def payment_intent(pi_id: str, customer_id: str | None, at: int, livemode: bool, amount: int,
                   currency: str, description: str | None, invoice_id: str | None) -> Obj:
    """Build a payment intent awaiting confirmation."""
    return {**template("payment_intent"), "id": pi_id, "customer": customer_id, "created": at,
            "livemode": livemode, "amount": amount, "currency": currency,
            "description": description, "client_secret": f"{pi_id}_secret_sim",
            "status": "requires_confirmation", "invoice": invoice_id,
            "payment_method": None, "managed_payments": None}


def charge(ch_id: str, pi: Obj, at: int, card: Obj, succeeded: bool,
           description: str | None, metadata: dict[str, str] | None) -> Obj:
    """Build a succeeded or failed card charge for a payment intent."""
    tmpl = template("charge")
    details = {**tmpl["payment_method_details"],
               "card": {**tmpl["payment_method_details"]["card"], **card,
                        "network": card["brand"]}}
    outcome = {**tmpl["outcome"], "type": "authorized" if succeeded else "issuer_declined",
               "network_status": "approved_by_network" if succeeded else "declined_by_network",
               "reason": None if succeeded else "insufficient_funds",
               "seller_message": "Payment complete." if succeeded else "The bank declined."}
    return {**tmpl, "id": ch_id, "created": at, "livemode": pi["livemode"],
            "amount": pi["amount"], "amount_captured": pi["amount"] if succeeded else 0,
            "amount_refunded": 0, "refunded": False, "captured": succeeded, "paid": succeeded,
            "status": "succeeded" if succeeded else "failed", "currency": pi["currency"],
            "customer": pi["customer"], "payment_intent": pi["id"], "invoice": pi.get("invoice"),
            "description": description, "metadata": metadata or {},
            "failure_code": None if succeeded else "card_declined",
            "failure_message": None if succeeded else "Your card was declined.",
            "outcome": outcome, "payment_method_details": details,
            "payment_method": f"pm_{ch_id[3:]}", "balance_transaction": (
                f"txn_{ch_id[3:]}" if succeeded else None),
            "refunds": {**tmpl["refunds"], "url": f"/v1/charges/{ch_id}/refunds"}}


def refund(re_id: str, ch: Obj, amount: int, at: int) -> Obj:
    """Build a succeeded refund of part or all of a charge."""
    return {**template("refund"), "id": re_id, "charge": ch["id"], "amount": amount,
            "currency": ch["currency"], "created": at, "payment_intent": ch["payment_intent"],
            "customer": ch["customer"], "status": "succeeded", "reason": "requested_by_customer",
            "balance_transaction": f"txn_{re_id[3:]}"}


def event(evt_id: str, evt_type: str, obj: Obj, at: int, api_version: str, livemode: bool,
          previous: Obj | None, request_id: str | None) -> Obj:
    """Build an event whose `data.object` is the object's state at this moment."""
    data: Obj = {"object": obj}
    if previous is not None:
        data["previous_attributes"] = previous
    return {"id": evt_id, "object": "event", "api_version": api_version, "created": at,
            "data": data, "livemode": livemode, "pending_webhooks": 0,
            "request": {"id": request_id, "idempotency_key": None}, "type": evt_type}
