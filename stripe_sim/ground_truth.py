"""Expected revenue figures computed from the simulator's own model, never from its events.

Definitions (amounts in minor units per currency; days and months in the account owner's time zone, UTC
unless a zone is given — an IANA name, as our tenants set it):
- daily gross: captured amount of succeeded charges by the charge's created day; refunded: refunds by the
  refund's created day; net = gross - refunded.
- failed: count and amount of failed charges by created day.
- MRR at each month end (the last second of the month, or "now" for the current month), Stripe
  Billing-analytics style: subscriptions in status active or past_due, every item's
  unit_amount × quantity (a tiered price: its tiers for the quantity, graduated or volume, as
  `objects.period_amount` bills them) normalised to a month (year /12, week ×52/12, day ×365/12, divided by
  interval_count); trialing, unpaid, canceled and incomplete count 0; no taxes; only `forever`
  coupons reduce it (percent off, or amount off normalised by the billing interval): an item's own
  first, then the subscription's, or, when it has none of its own, its customer's discount at that
  moment; a coupon restricted to products (`applies_to`) only their items, at most their amount; a
  subscription set to cancel at period end counts until it ends. Rounded to 2 decimals.
- subscribers: customers with MRR > 0 at the month end; `new` were not subscribers at the previous
  month end, `churned` were subscribers then and are not now.
- kpis, per month end and currency: ARR = MRR × 12; net MRR retention = the MRR now of the customers
  paying (in that currency) at the previous month end ÷ their MRR then (new customers out); quick ratio
  = MRR gained (new, expansion, reactivation) ÷ MRR lost (contraction, churn), None when nothing was lost
  or (retention) when nothing was paying. Rounded to 6 decimals (ARR to 2).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

from stripe_sim.discounts import in_effect
from stripe_sim.model import Obj, Store
from stripe_sim.objects import period_amount

_PER_MONTH = {"month": Fraction(1), "year": Fraction(1, 12), "week": Fraction(52, 12),
              "day": Fraction(365, 12)}
MRR_STATUSES = ("active", "past_due")


def _day(ts: int, zone: str = "UTC") -> str:
    return datetime.fromtimestamp(ts, ZoneInfo(zone)).date().isoformat()


def month_ends(first: int, now: int, zone: str = "UTC") -> list[tuple[str, int]]:
    """Return ("YYYY-MM", last second of that month in `zone`, or `now`) from `first`'s month to now's."""
    tz = ZoneInfo(zone)
    dt = datetime.fromtimestamp(first, tz)
    year, month = dt.year, dt.month
    out = []
    while True:
        ny, nm = (year + 1, 1) if month == 12 else (year, month + 1)
        end = int(datetime(ny, nm, 1, tzinfo=tz).timestamp()) - 1
        out.append((f"{year:04d}-{month:02d}", min(end, now)))
        if end >= now:
            return out
        year, month = ny, nm


def monthly_factor(price: Obj) -> Fraction:
    """Return the factor that turns one period's amount of a price into a monthly amount."""
    rec = price["recurring"]
    interval_count: int = rec["interval_count"]
    return _PER_MONTH[rec["interval"]] / interval_count


def subscription_mrr(sub: Obj | None, customer: Obj | None = None) -> Fraction:
    """Return one subscription's MRR (minor units) for the state given, its `customer`'s discount (the customer's
    state at the same moment) applying when it has no discount of its own."""
    if sub is None or sub["status"] not in MRR_STATUSES:
        return Fraction(0)
    items = sub["items"]["data"]
    amounts = [_forever_off(it.get("discounts") or [], [it],
                            [Fraction(period_amount(it["price"], it["quantity"])) * monthly_factor(it["price"])])[0]
               for it in items]
    disc = in_effect(sub, customer)
    total = sum(_forever_off([disc] if disc else [], items, amounts), Fraction(0))
    return max(total, Fraction(0))


def _forever_off(discounts: list[Obj], items: list[Obj], amounts: list[Fraction]) -> list[Fraction]:
    """The items' month amounts after the forever coupons of `discounts`, each on the items of its products (an
    amount normalised by the first such item's interval, at most their amount, shared in proportion)."""
    amounts = list(amounts)
    for disc in discounts:
        cpn = disc["coupon"]
        if cpn["duration"] != "forever":
            continue
        products = (cpn.get("applies_to") or {}).get("products")
        reduced = [i for i, it in enumerate(items)
                   if amounts[i] > 0 and (products is None or it["price"]["product"] in products)]
        base = sum((amounts[i] for i in reduced), Fraction(0))
        if not reduced:
            continue
        if cpn["percent_off"] is not None:
            off = base * Fraction(str(cpn["percent_off"])) / 100
        else:
            off = min(base, (cpn["amount_off"] or 0) * monthly_factor(items[reduced[0]]["price"]))
        for i in reduced:
            amounts[i] -= off * amounts[i] / base
    return amounts


def money(store: Store, zone: str = "UTC") -> dict[str, Any]:
    """Return daily gross/refunded/net and failed payments per currency."""
    daily: dict[str, dict[str, dict[str, int]]] = defaultdict(
        lambda: defaultdict(lambda: {"gross": 0, "refunded": 0, "net": 0}))
    failed: dict[str, dict[str, dict[str, int]]] = defaultdict(
        lambda: defaultdict(lambda: {"count": 0, "amount": 0}))
    for ch in store.objects.get("charge", {}).values():
        if ch["status"] == "succeeded":
            row = daily[_day(ch["created"], zone)][ch["currency"]]
            row["gross"] += ch["amount_captured"]  # an authorisation not captured yet counts nothing
            row["net"] += ch["amount_captured"]
        elif ch["status"] == "failed":
            f = failed[_day(ch["created"], zone)][ch["currency"]]
            f["count"] += 1
            f["amount"] += ch["amount"]
    for re in store.objects.get("refund", {}).values():
        if re["status"] == "succeeded":
            row = daily[_day(re["created"], zone)][re["currency"]]
            row["refunded"] += re["amount"]
            row["net"] -= re["amount"]
    return {"daily": _plain(daily), "failed": _plain(failed)}


def recurring(store: Store, now: int, zone: str = "UTC") -> dict[str, Any]:
    """Return MRR per month end per currency and subscriber counts per month."""
    subs = list(store.objects.get("subscription", {}).values())
    if not subs:
        return {"mrr": {}, "subscribers": {}}
    first = min(s["created"] for s in subs)
    mrr: dict[str, dict[str, float]] = {}
    subscribers: dict[str, dict[str, int]] = {}
    kpis: dict[str, dict[str, dict[str, float | None]]] = {}
    previous: set[str] = set()
    before: dict[tuple[str, str], Fraction] = {}
    for label, at in month_ends(first, now, zone):
        totals: dict[str, Fraction] = defaultdict(Fraction)
        per_customer: dict[str, Fraction] = defaultdict(Fraction)
        per_currency: dict[tuple[str, str], Fraction] = defaultdict(Fraction)
        for s in subs:
            state = store.state_at(s["id"], at)
            value = subscription_mrr(state, None if state is None else store.state_at(state["customer"], at))
            if value and state is not None:
                totals[state["currency"]] += value
                per_customer[state["customer"]] += value
                per_currency[(state["customer"], state["currency"])] += value
        mrr[label] = {cur: round(float(v), 2) for cur, v in sorted(totals.items())}
        current = {c for c, v in per_customer.items() if v > 0}
        subscribers[label] = {"active": len(current), "new": len(current - previous),
                              "churned": len(previous - current)}
        kpis[label] = _kpis(before, dict(per_currency), totals)
        previous, before = current, dict(per_currency)
    return {"mrr": mrr, "subscribers": subscribers, "kpis": kpis}


def _kpis(before: dict[tuple[str, str], Fraction], now: dict[tuple[str, str], Fraction],
          totals: dict[str, Fraction]) -> dict[str, dict[str, float | None]]:
    """ARR, net MRR retention and quick ratio per currency from two month ends' MRR per customer."""
    out: dict[str, dict[str, float | None]] = {}
    for currency in sorted({c for _, c in (*before, *now)}):
        opening = kept = gained = lost = Fraction(0)
        for key in {k for k in (*before, *now) if k[1] == currency}:
            was, is_ = before.get(key, Fraction(0)), now.get(key, Fraction(0))
            opening += was
            if was > 0:
                kept += is_
            if is_ > was:  # new, expansion or reactivation
                gained += is_ - was
            elif is_ < was:
                lost += was - is_
        out[currency] = {
            "arr": round(float(totals.get(currency, Fraction(0)) * 12), 2),
            "net_mrr_retention": round(float(kept / opening), 6) if opening else None,
            "quick_ratio": round(float(gained / lost), 6) if lost else None,
        }
    return out


def ground_truth(store: Store, now: int, zone: str = "UTC") -> dict[str, Any]:
    """Return every expected figure for one account and mode, with days and months in `zone`."""
    return {"as_of": now, **money(store, zone), **recurring(store, now, zone)}


def _plain(nested: dict[str, Any]) -> dict[str, Any]:
    return {k: (_plain(v) if isinstance(v, dict) else v) for k, v in sorted(nested.items())}
