"""Ground truth on a tiny account built by hand through the model API, with hand-checked figures."""

from __future__ import annotations

from datetime import datetime, timezone

import aiohttp

from stripe_sim import SimServer, ground_truth
from stripe_sim.objects import period_amount


def ts(day: str) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=timezone.utc).timestamp())


def build(sim: SimServer) -> tuple[str, int]:
    """Six customers in Jan–Feb 2025; returns (account id, "now")."""
    acct = sim.create_account(customers=0).id
    b = sim.book(acct)
    t0 = ts("2025-01-10")
    monthly = b.create_price(t0, "usd", 2000)
    yearly = b.create_price(t0, "usd", 12000, "year")
    small = b.create_price(t0, "usd", 1000)
    trial_price = b.create_price(t0, "usd", 3000)
    quarterly = b.create_price(t0, "usd", 9000, "month", 3)
    yen = b.create_price(t0, "jpy", 1100)
    forever = b.create_coupon(t0, "forever", percent_off=20)
    once = b.create_coupon(t0, "once", percent_off=50)
    cus = {n: b.create_customer(t0, f"{n}@example.com", n)["id"] for n in "ABCDEF"}
    a = b.create_subscription(cus["A"], [(monthly, 2)], t0)
    bb = b.create_subscription(cus["B"], [(yearly, 1)], t0, coupon=forever)
    c = b.create_subscription(cus["C"], [(small, 1)], t0, coupon=once)
    d = b.create_subscription(cus["D"], [(trial_price, 1)], t0, trial_days=30)
    e = b.create_subscription(cus["E"], [(yen, 1)], t0)
    f = b.create_subscription(cus["F"], [(quarterly, 1)], t0)
    b.one_off_payment(cus["A"], 2500, "usd", ts("2025-01-12"), succeed=False)
    yen_charge = next(ch for ch in sim.state.accounts[acct].test.all("charge")
                      if ch["currency"] == "jpy")
    b.refund(yen_charge["id"], 300, ts("2025-01-15"))
    b.set_cancel_at_period_end(f["id"], True, ts("2025-01-20"))
    b_charge = next(ch for ch in sim.state.accounts[acct].test.all("charge")
                    if ch["amount"] == 9600)
    b.refund(b_charge["id"], 4800, ts("2025-02-01"))
    assert b.renew(d["id"])["status"] == "active"          # trial ends 2025-02-09, pays 3000
    assert b.renew(a["id"], succeed=False)["status"] == "past_due"   # 2025-02-10 fails
    b.renew(c["id"])                                        # 2025-02-10 pays full 1000
    b.renew(e["id"])                                        # 2025-02-10 pays 1100 JPY
    b.cancel_subscription(c["id"], ts("2025-02-14"))
    assert bb["status"] == "active"
    return acct, ts("2025-02-15")


def test_hand_built_account_figures(sim: SimServer) -> None:
    acct, now = build(sim)
    gt = ground_truth(sim.state.accounts[acct].test, now)
    assert gt["daily"]["2025-01-10"] == {
        "jpy": {"gross": 1100, "refunded": 0, "net": 1100},
        "usd": {"gross": 4000 + 9600 + 500 + 9000, "refunded": 0, "net": 23100}}
    assert gt["daily"]["2025-01-15"] == {"jpy": {"gross": 0, "refunded": 300, "net": -300}}
    assert gt["daily"]["2025-02-01"] == {"usd": {"gross": 0, "refunded": 4800, "net": -4800}}
    assert gt["daily"]["2025-02-09"] == {"usd": {"gross": 3000, "refunded": 0, "net": 3000}}
    assert gt["daily"]["2025-02-10"] == {"jpy": {"gross": 1100, "refunded": 0, "net": 1100},
                                         "usd": {"gross": 1000, "refunded": 0, "net": 1000}}
    assert gt["failed"] == {"2025-01-12": {"usd": {"count": 1, "amount": 2500}},
                            "2025-02-10": {"usd": {"count": 1, "amount": 4000}}}
    # Jan: A 2×2000 + B 12000/12×0.8 + C 1000 (once coupon ignored) + F 9000/3; D trialing.
    assert gt["mrr"]["2025-01"] == {"jpy": 1100.0, "usd": 4000 + 800 + 1000 + 3000}
    # Feb (as of now): A past_due still counts, D active, C canceled, F cancels at period end.
    assert gt["mrr"]["2025-02"] == {"jpy": 1100.0, "usd": 4000 + 800 + 3000 + 3000}
    assert gt["subscribers"] == {"2025-01": {"active": 5, "new": 5, "churned": 0},
                                 "2025-02": {"active": 5, "new": 1, "churned": 1}}


def test_amount_off_forever_and_unpaid_excluded(sim: SimServer) -> None:
    acct = sim.create_account(customers=0).id
    b = sim.book(acct)
    t0 = ts("2025-03-01")
    p = b.create_price(t0, "usd", 24000, "year")
    off = b.create_coupon(t0, "forever", amount_off=1200, currency="usd")
    cus = b.create_customer(t0)["id"]
    sub = b.create_subscription(cus, [(p, 1)], t0, coupon=off)
    inv = sim.state.accounts[acct].test.get("invoice", sub["latest_invoice"])
    assert inv is not None and inv["amount_paid"] == 22800
    gt = ground_truth(sim.state.accounts[acct].test, ts("2025-03-20"))
    assert gt["mrr"]["2025-03"] == {"usd": 2000 - 100}
    b._update("subscription", sub["id"], {"status": "unpaid"}, ts("2025-03-21"), None)
    gt = ground_truth(sim.state.accounts[acct].test, ts("2025-03-25"))
    assert gt["mrr"]["2025-03"] == {} and gt["subscribers"]["2025-03"]["active"] == 0


async def test_ground_truth_over_admin_http(sim: SimServer) -> None:
    info = sim.create_account(customers=40, seed=99)
    async with aiohttp.ClientSession(sim.base_url) as http:
        async with http.get(f"/_sim/accounts/{info.id}/ground_truth") as resp:
            body = await resp.json()
    assert body == sim.ground_truth(info.id)
    assert len(body["mrr"]) >= 12 and body["daily"]


def test_tiered_prices_bill_and_count_by_their_tiers(sim: SimServer) -> None:
    """Graduated: each unit at the tier it falls in, plus the flat amount of every tier reached; volume: every unit
    at the tier the quantity falls in, plus that tier's flat amount (hand-checked)."""
    acct = sim.create_account(customers=0).id
    b = sim.book(acct)
    t0 = ts("2025-03-01")
    graduated = b.create_tiered_price(t0, "usd", [(5, 1000, 0), (20, 800, 1000), (None, 500, 0)])
    volume = b.create_tiered_price(t0, "usd", [(10, 900, 0), (None, 700, 2000)], "volume")
    yearly = b.create_tiered_price(t0, "eur", [(3, 12000, 0), (None, 6000, 2400)], "graduated", "year")
    assert [period_amount(graduated, q) for q in (1, 5, 6, 12, 21)] == [
        1000, 5000, 5000 + 800 + 1000, 5000 + 7 * 800 + 1000, 5000 + 15 * 800 + 1000 + 500]
    assert [period_amount(volume, q) for q in (4, 10, 12)] == [3600, 9000, 12 * 700 + 2000]
    cus = [b.create_customer(t0)["id"] for _ in range(3)]
    g = b.create_subscription(cus[0], [(graduated, 12)], t0)
    b.create_subscription(cus[1], [(volume, 12)], t0)
    b.create_subscription(cus[2], [(yearly, 4)], t0)
    inv = sim.state.accounts[acct].test.get("invoice", g["latest_invoice"])
    assert inv is not None and inv["amount_paid"] == 11600
    gt = ground_truth(sim.state.accounts[acct].test, ts("2025-03-20"))
    assert gt["mrr"]["2025-03"] == {"eur": (3 * 12000 + 6000 + 2400) / 12, "usd": 11600 + 10400}


def test_a_coupon_restricted_to_products_reduces_only_their_items(sim: SimServer) -> None:
    """30% off prod Pro only, on a subscription of Pro ($20) and Basic ($10): $6 off, invoiced and in MRR."""
    acct = sim.create_account(customers=0).id
    b = sim.book(acct)
    t0 = ts("2025-03-01")
    pro, basic = b.create_price(t0, "usd", 2000), b.create_price(t0, "usd", 1000)
    coupon = b.create_coupon(t0, "forever", percent_off=30, products=[pro["product"]])
    cus = b.create_customer(t0)["id"]
    sub = b.create_subscription(cus, [(pro, 1), (basic, 1)], t0, coupon=coupon)
    inv = sim.state.accounts[acct].test.get("invoice", sub["latest_invoice"])
    assert inv is not None and inv["amount_paid"] == 3000 - 600
    assert ground_truth(sim.state.accounts[acct].test, ts("2025-03-20"))["mrr"]["2025-03"] == {"usd": 2400}


def test_an_items_own_coupon_reduces_it_before_the_subscriptions(sim: SimServer) -> None:
    """50% off the seats item alone ($40 of seats → $20), then 10% off the subscription: ($20 + $20) × 0.9."""
    acct = sim.create_account(customers=0).id
    b = sim.book(acct)
    t0 = ts("2025-03-01")
    base, seat = b.create_price(t0, "usd", 2000), b.create_price(t0, "usd", 1000)
    half, tenth = b.create_coupon(t0, "forever", percent_off=50), b.create_coupon(t0, "forever", percent_off=10)
    cus = b.create_customer(t0)["id"]
    sub = b.create_subscription(cus, [(base, 1), (seat, 4)], t0, coupon=tenth, item_coupons={seat["id"]: half})
    inv = sim.state.accounts[acct].test.get("invoice", sub["latest_invoice"])
    assert inv is not None and inv["amount_paid"] == 3600
    assert ground_truth(sim.state.accounts[acct].test, ts("2025-03-20"))["mrr"]["2025-03"] == {"usd": 3600}


def test_an_items_amount_off_comes_before_the_subscriptions_percent(sim: SimServer) -> None:
    """$40 of seats, $10 off the item, 50% off the subscription: $15 invoiced and in MRR ($10 the other way)."""
    acct = sim.create_account(customers=0).id
    b = sim.book(acct)
    t0 = ts("2025-03-01")
    seat = b.create_price(t0, "usd", 2000)
    ten_off = b.create_coupon(t0, "forever", amount_off=1000, currency="usd")
    half = b.create_coupon(t0, "forever", percent_off=50)
    sub = b.create_subscription(b.create_customer(t0)["id"], [(seat, 2)], t0, coupon=half,
                                item_coupons={seat["id"]: ten_off})
    inv = sim.state.accounts[acct].test.get("invoice", sub["latest_invoice"])
    assert inv is not None and inv["amount_paid"] == 1500
    assert ground_truth(sim.state.accounts[acct].test, ts("2025-03-20"))["mrr"]["2025-03"] == {"usd": 1500}
