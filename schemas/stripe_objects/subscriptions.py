"""Subscriptions of any version: items with their prices (flat, sub-cent, tiered, packaged; in the subscription's
currency), interval, period and discounts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from fractions import Fraction
from typing import Any

from schemas.stripe_objects.reader import FieldReader, ref, shown
from schemas.stripe_objects.records import Coupon, Item, Subscription

MONTHS_PER_INTERVAL: Mapping[str, Fraction] = {
    "month": Fraction(1), "year": Fraction(1, 12), "week": Fraction(52, 12), "day": Fraction(365, 12),
}
SUBSCRIPTION_STATUSES = frozenset({
    "trialing", "active", "past_due", "canceled", "unpaid", "incomplete", "incomplete_expired", "paused",
})
ROUNDINGS = frozenset({"up", "down"})


def read_subscription(obj: Mapping[str, Any]) -> Subscription:
    """A subscription of any version. Rules: see docs/metrics.md, "Field derivations: subscription"."""
    r = FieldReader(obj)
    status = r.status(obj.get("status"), SUBSCRIPTION_STATUSES)
    top = r.currency(obj["currency"]) if obj.get("currency") is not None else None
    items = _items(r, obj, top)
    currency = top or _subscription_currency(r, obj, items)
    start, end, item_starts = _period(r, obj)
    coupons, unresolved = _discounts(r, obj)
    cancel = obj.get("cancel_at_period_end")
    customer = ref(obj.get("customer"))
    if customer is None:
        raise r.fail("customer", "is missing")
    return Subscription(
        id=r.id, customer_id=customer, status=status, currency=currency,
        created=r.when(obj.get("created"), "created"),
        # Before 2019-10-17 there is no `start_date`, and `start` is when the current plan configuration began, not
        # the subscription (Stripe's changelog): read as the start, a plan changed once hid every month before it.
        start_date=r.time(obj.get("start_date", obj.get("created")), "start_date"),
        trial_end=r.time(obj.get("trial_end"), "trial_end"), current_period_start=start, current_period_end=end,
        cancel_at_period_end=bool(cancel) if isinstance(cancel, bool) else False,
        canceled_at=r.time(obj.get("canceled_at"), "canceled_at"), ended_at=r.time(obj.get("ended_at"), "ended_at"),
        items=items, coupons=coupons, unresolved_discounts=unresolved, item_period_starts=item_starts,
    )


def _items(r: FieldReader, obj: Mapping[str, Any], currency: str | None) -> tuple[Item, ...]:
    """The items (`items.data`, always included since 2017), or the legacy single `plan` and `quantity`."""
    listed = obj.get("items")
    data = listed.get("data") if isinstance(listed, Mapping) else None
    if isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        return tuple(_item(r, item, i, currency) for i, item in enumerate(data))
    plan = obj.get("plan")
    if isinstance(plan, Mapping):  # a subscription from before items: one plan, one quantity
        return (_item(r, {"id": None, "plan": plan, "quantity": obj.get("quantity")}, 0, currency),)
    raise r.fail("items", "are missing (neither items.data nor a legacy plan)")


def _item(r: FieldReader, item: Any, index: int, subscription_currency: str | None) -> Item:
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
        raise r.fail(f"{source}.interval", f"must be day, week, month or year, got {shown(interval)}")
    if type(count) is not int or count < 1:
        raise r.fail(f"{source}.interval_count", f"must be a whole number of at least 1, got {shown(count)}")
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
        raise r.fail(f"{field}.quantity", f"must be a whole number, got {shown(quantity)}")
    if metered:
        amount = Fraction(0)  # usage is billed in arrears, not recurring revenue
    else:
        if quantity is None:
            raise r.fail(f"{field}.quantity", "is missing on a licensed (not metered) price")
        billed = _billed_quantity(r, price, field, quantity)
        amount = _unit_amount(r, price, field, billed) * billed if price.get("billing_scheme") != "tiered" \
            else _tiered_amount(r, price, field, billed)
    coupons, unresolved = discount_list(r, item.get("discounts"), f"{field}.discounts")
    return Item(id=ref(item.get("id")), price_id=ref(price.get("id")), product_id=ref(price.get("product")),
                quantity=quantity, currency=currency,
                interval=str(interval), interval_count=count, metered=metered, period_amount=amount,
                coupons=coupons, unresolved_discounts=unresolved)


def _billed_quantity(r: FieldReader, price: Mapping[str, Any], field: str, quantity: int) -> int:
    """The quantity the unit amount applies to: divided by `transform_quantity.divide_by` (a Price; a legacy
    Plan's `transform_usage`) and rounded up or down, so 25 seats in packs of 10 rounded up bill 3 packs."""
    for name in ("transform_quantity", "transform_usage"):
        transform = price.get(name)
        if transform is None:
            continue
        where = f"{field}.price.{name}"
        if not isinstance(transform, Mapping):
            raise r.fail(where, f"must be an object with divide_by and round, got {shown(transform)}")
        divide_by, rounding = transform.get("divide_by"), transform.get("round")
        if type(divide_by) is not int or divide_by < 1:
            raise r.fail(f"{where}.divide_by", f"must be a whole number of at least 1, got {shown(divide_by)}")
        if rounding not in ROUNDINGS:
            raise r.fail(f"{where}.round", f"must be up or down, got {shown(rounding)}")
        if price.get("billing_scheme") == "tiered":
            raise r.fail(where, "is set on a tiered price (Stripe allows one or the other)")
        return -(-quantity // divide_by) if rounding == "up" else quantity // divide_by
    return quantity


def _in_currency(r: FieldReader, price: Mapping[str, Any], field: str, currency: str) -> Mapping[str, Any]:
    """A multi-currency price as billed in `currency`: its amounts from `currency_options[currency]`.

    A price's `currency` is its default; a subscription in another currency is billed at that option's
    amounts, which Stripe includes only when asked (`expand: currency_options`). Without them the amount
    is not derivable: the price's own amount is in another currency.
    """
    options = price.get("currency_options")
    option = options.get(currency) if isinstance(options, Mapping) else None
    if not isinstance(option, Mapping):
        raise r.fail(f"{field}.currency", f"is {shown(price.get('currency'))} while the subscription is in "
                     f"{currency}, and the price's currency_options for {currency} are not included")
    amounts = ("unit_amount", "unit_amount_decimal", "tiers", "custom_unit_amount")
    return {**{k: v for k, v in price.items() if k not in amounts}, **option, "currency": currency}


def _unit_amount(r: FieldReader, price: Mapping[str, Any], field: str, quantity: int) -> Fraction:
    """unit_amount (a Price), else unit_amount_decimal (sub-cent prices), else `amount` (a legacy Plan)."""
    for name in ("unit_amount", "amount"):
        if name in price and price[name] is not None:
            return Fraction(r.amount(price[name], f"{field}.price.{name}"))
    for name in ("unit_amount_decimal", "amount_decimal"):
        if price.get(name) is not None:
            return r.decimal(price[name], f"{field}.price.{name}")
    raise r.fail(f"{field}.price.unit_amount", "is missing (no unit_amount, unit_amount_decimal or plan amount)")


def _tiered_amount(r: FieldReader, price: Mapping[str, Any], field: str, quantity: int) -> Fraction:
    """A tiered price's amount for `quantity`: graduated (each tier's units at its price) or volume (all
    units at the tier the quantity falls in), with each tier's flat amount. Needs the tiers expanded."""
    tiers = price.get("tiers")
    if not isinstance(tiers, Sequence) or not tiers:
        raise r.fail(f"{field}.price.tiers", "are needed for a tiered price and were not expanded (a price the "
                     "subscription has left since is read with the key's Prices permission)")
    mode = price.get("tiers_mode")
    total, below = Fraction(0), 0
    for i, tier in enumerate(tiers):
        if not isinstance(tier, Mapping):
            raise r.fail(f"{field}.price.tiers[{i}]", "is not a tier")
        upper = tier.get("up_to")
        if upper is not None and (type(upper) is not int or upper < 1):
            raise r.fail(f"{field}.price.tiers[{i}].up_to", f"must be a whole number or null, got {shown(upper)}")
        unit, flat = (_tier_amount(r, tier, name, f"{field}.price.tiers[{i}]") for name in ("unit_amount", "flat_amount"))
        if mode == "volume":
            if upper is None or quantity <= upper:
                return unit * quantity + flat
            continue
        if mode != "graduated":
            raise r.fail(f"{field}.price.tiers_mode", f"must be graduated or volume, got {shown(mode)}")
        in_tier = (quantity if upper is None else min(quantity, upper)) - below
        if in_tier > 0:
            total += unit * in_tier + flat
        if upper is None or quantity <= upper:
            return total
        below = upper
    return total


def _tier_amount(r: FieldReader, tier: Mapping[str, Any], name: str, field: str) -> Fraction:
    """A tier's unit or flat amount (`<name>_decimal` → `<name>`); a tier may have only one of the two: 0."""
    for key in (f"{name}_decimal", name):
        if tier.get(key) is not None:
            return r.decimal(tier[key], f"{field}.{key}")
    return Fraction(0)


def _subscription_currency(r: FieldReader, obj: Mapping[str, Any], items: tuple[Item, ...]) -> str:
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


def _period(r: FieldReader, obj: Mapping[str, Any]) -> tuple[datetime | None, datetime | None, tuple[datetime, ...]]:
    """The current period: on the subscription (before 2025-03-31), else the span of its items' periods; and when
    each item's began (since basil)."""
    if obj.get("current_period_start") is not None:
        return (r.time(obj.get("current_period_start"), "current_period_start"),
                r.time(obj.get("current_period_end"), "current_period_end"), ())
    data = (obj.get("items") or {}).get("data") if isinstance(obj.get("items"), Mapping) else None
    starts, ends = [], []
    for i, item in enumerate(data if isinstance(data, list) else []):
        if isinstance(item, Mapping):
            start = r.time(item.get("current_period_start"), f"items.data[{i}].current_period_start")
            end = r.time(item.get("current_period_end"), f"items.data[{i}].current_period_end")
            starts += [start] if start else []
            ends += [end] if end else []
    return (min(starts) if starts else None, max(ends) if ends else None, tuple(starts))


def _discounts(r: FieldReader, obj: Mapping[str, Any]) -> tuple[tuple[Coupon, ...], tuple[str, ...]]:
    """The coupons of the subscription's own discounts, and those named only by id.

    `discount` (one object with its coupon, until 2025-03-31) and `discounts` (ids, or objects when
    expanded, since 2024-04). An item's discounts (`items.data[].discounts`) are read with its item.
    """
    listed = obj.get("discounts")
    if listed is not None and not _is_list(listed):
        raise r.fail("discounts", f"must be a list of discounts or their ids, got {shown(listed)}")
    return discount_list(r, [obj.get("discount"), *(listed or [])], "discounts")


def _is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def discount_list(r: FieldReader, listed: Any, field: str) -> tuple[tuple[Coupon, ...], tuple[str, ...]]:
    """The coupons of a list of discounts, and the discounts named only by id.

    A discount is an id, or an object (expanded) whose coupon is `coupon`, or since clover `source.coupon`
    (an id unless expanded). A discount id, or a coupon named only by id, is unresolved.
    """
    if listed is None:
        return (), ()
    if not _is_list(listed):
        raise r.fail(field, f"must be a list of discounts or their ids, got {shown(listed)}")
    found: dict[str, Coupon] = {}
    unresolved: list[str] = []
    resolved_ids: set[str | None] = set()  # discounts read with their coupon: the same id listed again is not missing
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
            resolved_ids.add(ref(discount.get("id")))
        else:
            unresolved.append(ref(discount.get("id")) or str(coupon))
    return tuple(found.values()), tuple(u for u in dict.fromkeys(unresolved) if u not in resolved_ids)


def _coupon(r: FieldReader, coupon: Mapping[str, Any], field: str) -> Coupon:
    duration = coupon.get("duration")
    if duration not in ("forever", "once", "repeating"):
        raise r.fail(f"{field}.duration", f"must be forever, once or repeating, got {shown(duration)}")
    percent = coupon.get("percent_off")
    amount = coupon.get("amount_off")
    if percent is not None and (isinstance(percent, bool) or not isinstance(percent, (int, float)) or not 0 < percent <= 100):
        raise r.fail(f"{field}.percent_off", f"must be a number above 0 and at most 100, got {shown(percent)}")
    if percent is None and amount is None:
        raise r.fail(field, "has neither percent_off nor amount_off")
    amount_off = r.amount(amount, f"{field}.amount_off") if amount is not None else None
    currency = coupon.get("currency")
    return Coupon(
        id=ref(coupon.get("id")) or "?", duration=str(duration),
        percent_off=Fraction(str(percent)) if percent is not None else None,  # a float within (0, 100]: short text
        amount_off=amount_off, currency=r.currency(currency, f"{field}.currency") if currency else None,
        currency_options=_amounts_off(r, coupon.get("currency_options"), f"{field}.currency_options"),
        applies_to_known="applies_to" in coupon,
        products=_products(r, coupon.get("applies_to"), f"{field}.applies_to"),
    )


def _products(r: FieldReader, applies_to: Any, field: str) -> tuple[str, ...] | None:
    """The products a coupon is restricted to (`applies_to.products`), or None for every product: `applies_to` null,
    or an empty list (what Stripe's own mock answers for a coupon without restriction, and how integrations read
    it: a restriction names at least one product)."""
    if applies_to is None:
        return None
    products = applies_to.get("products") if isinstance(applies_to, Mapping) else None
    if not isinstance(products, list) or not all(isinstance(p, str) and p for p in products):
        raise r.fail(f"{field}.products", f"must be a list of product ids, got {shown(products)}")
    return tuple(products) or None


def _amounts_off(r: FieldReader, options: Any, field: str) -> tuple[tuple[str, int], ...]:
    """A coupon's `currency_options` (`{currency: {amount_off}}`; only when expanded) as (currency, amount_off)."""
    if options is None:
        return ()
    if not isinstance(options, Mapping):
        raise r.fail(field, f"must map currencies to amounts off, got {shown(options)}")
    found = []
    for key, option in options.items():
        currency = r.currency(key, f"{field} key")
        amount = r.amount(option.get("amount_off") if isinstance(option, Mapping) else None,
                          f"{field}.{currency}.amount_off")
        found.append((currency, amount))
    return tuple(found)
