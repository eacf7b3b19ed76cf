"""The model API: billing state changes on one account and mode, each emitting Stripe's events.

Used by the history generator, by live activity and by tests that build tiny accounts by hand.
Every method takes the moment `at` it happens (Unix seconds) and never reads the clock itself.
"""

from __future__ import annotations

from typing import Any

from stripe_sim import objects as o
from stripe_sim.clock import DAY, add_interval
from stripe_sim.discounts import discount_end, in_effect, invoice_discount
from stripe_sim.ids import new_id
from stripe_sim.model import Account, Obj, SimState

__all__ = ["DAY", "Book", "add_interval"]


class Book:
    """State changes for one account in one mode; each stores new object versions and events."""

    def __init__(self, state: SimState, account: Account, livemode: bool = False) -> None:
        self.state = state
        self.account = account
        self.livemode = livemode
        self.store = account.store(livemode)
        self.rng = account.rng

    def _id(self, prefix: str) -> str:
        return new_id(self.rng, prefix)

    def emit(self, evt_type: str, obj: Obj, at: int, previous: Obj | None = None,
             by_request: bool = False) -> Obj:
        """Store and publish the event for a state change."""
        req = self._id("req") if by_request else None
        evt = o.event(self._id("evt"), evt_type, obj, at, self.account.api_version,
                      self.livemode, previous, req)
        self.store.insert("event", evt, at)
        self.state.publish(self.account, self.livemode, evt)
        return evt

    def _update(self, kind: str, obj_id: str, changes: Obj, at: int, evt_type: str | None,
                by_request: bool = False) -> Obj:
        new, previous = self.store.update(kind, obj_id, changes, at)
        if evt_type is not None:
            self.emit(evt_type, new, at, previous, by_request)
        return new

    # Catalogue -------------------------------------------------------------------------------
    def create_price(self, at: int, currency: str, unit_amount: int, interval: str = "month",
                     interval_count: int = 1, nickname: str | None = None) -> Obj:
        """Create a recurring price (stored, not listed through the read API)."""
        p = o.price(self._id("price"), at, self.livemode, currency, unit_amount, interval,
                    interval_count, nickname or f"{unit_amount} {currency}/{interval}",
                    self._id("prod"))
        return self.store.insert("price", p, at)

    def create_tiered_price(self, at: int, currency: str, tiers: list[tuple[int | None, int, int]],
                            tiers_mode: str = "graduated", interval: str = "month", interval_count: int = 1,
                            nickname: str | None = None) -> Obj:
        """Create a recurring tiered price: `tiers` as (up_to, unit_amount, flat_amount), the last up_to None;
        `tiers_mode` graduated or volume (stored, not listed through the read API)."""
        p = o.tiered_price(self._id("price"), at, self.livemode, currency, tiers, tiers_mode, interval,
                           interval_count, nickname or f"{tiers_mode} {currency}/{interval}", self._id("prod"))
        return self.store.insert("price", p, at)

    def create_coupon(self, at: int, duration: str, percent_off: float | None = None,
                      amount_off: int | None = None, currency: str | None = None,
                      duration_in_months: int | None = None, products: list[str] | None = None) -> Obj:
        """Create a coupon: `duration` is forever, once or repeating; restricted to `products`, or every item."""
        c = o.coupon(self._id("cpn"), at, self.livemode, duration, percent_off, amount_off,
                     currency, duration_in_months, products)
        return self.store.insert("coupon", c, at)

    def delete_coupon(self, coupon_id: str, at: int) -> None:
        """Delete a coupon: no longer retrieved or listed (404), while the subscriptions it was applied to keep it."""
        self.store.update("coupon", coupon_id, {"deleted": True}, at)

    # Customers -------------------------------------------------------------------------------
    def create_customer(self, at: int, email: str | None = None, name: str | None = None,
                        description: str | None = None,
                        metadata: dict[str, str] | None = None) -> Obj:
        """Create a customer (`customer.created`)."""
        c = o.customer(self._id("cus"), at, self.livemode, email, name, description, metadata)
        self.store.insert("customer", c, at)
        self.emit("customer.created", c, at, by_request=True)
        return c

    def update_customer(self, cus_id: str, at: int, **changes: Any) -> Obj:
        """Change customer fields (`customer.updated` with previous_attributes)."""
        return self._update("customer", cus_id, changes, at, "customer.updated", True)

    def delete_customer(self, cus_id: str, at: int) -> Obj:
        """Delete a customer, cancelling its live subscriptions first (`customer.deleted`)."""
        for sub in list(self.store.objects.get("subscription", {}).values()):
            if sub["customer"] == cus_id and sub["status"] not in ("canceled",
                                                                     "incomplete_expired"):
                self.cancel_subscription(sub["id"], at)
        c = self.store.get("customer", cus_id)
        assert c is not None
        new, _ = self.store.update("customer", cus_id, {"deleted": True}, at)
        self.emit("customer.deleted", c, at, by_request=True)
        return new

    def apply_customer_coupon(self, cus_id: str, coupon_id: str, at: int, customer_updated: bool = True) -> Obj:
        """Give a customer a discount (`customer.discount.created`, or `.updated` when it replaces one, then
        `customer.updated` unless not `customer_updated`: Stripe does not document whether it sends it): every
        subscription of theirs without a discount of its own inherits it."""
        cus, coupon = self.store.objects["customer"][cus_id], self.store.objects["coupon"][coupon_id]
        if cus.get("deleted") or coupon.get("deleted"):
            raise ValueError(f"cannot apply {coupon_id} to {cus_id}: one of them is deleted")
        before = cus.get("discount")
        disc = o.discount(self._id("di"), coupon, cus_id, None, at, discount_end(coupon, at))
        if before is None:
            self.emit("customer.discount.created", disc, at, by_request=True)
        else:  # Stripe: "Occurs whenever a customer is switched from one coupon to another."
            self.emit("customer.discount.updated", disc, at, {k: v for k, v in before.items() if disc.get(k) != v},
                      by_request=True)
        updated = "customer.updated" if customer_updated else None
        return self._update("customer", cus_id, {"discount": disc}, at, updated, True)

    def remove_customer_discount(self, cus_id: str, at: int, customer_updated: bool = True) -> Obj:
        """Take a customer's discount away (`customer.discount.deleted`, then `customer.updated` unless not
        `customer_updated`); a no-op without one."""
        cus = self.store.objects["customer"][cus_id]
        if cus.get("discount") is None:
            return cus
        self.emit("customer.discount.deleted", cus["discount"], at, by_request=True)
        updated = "customer.updated" if customer_updated else None
        return self._update("customer", cus_id, {"discount": None}, at, updated, True)

    # Subscriptions ---------------------------------------------------------------------------
    def create_subscription(self, cus_id: str, items: list[tuple[Obj, int]], at: int,
                            trial_days: int = 0, coupon: Obj | None = None,
                            pay: bool = True, item_coupons: dict[str, Obj] | None = None) -> Obj:
        """Start a subscription; without a trial its first invoice is charged at once. `item_coupons` (by price id)
        discount an item alone (since 2024-04)."""
        sub_id = self._id("sub")
        currency = items[0][0]["currency"]
        trial = (at, at + trial_days * DAY) if trial_days else None
        start = trial[1] if trial else at
        interval, count = _interval(items[0][0])
        period = (at, start) if trial else (at, add_interval(at, interval, count))
        sis = []
        for p, q in items:
            si_id = self._id("si")
            on_item = (item_coupons or {}).get(p["id"])
            item_discounts = [] if on_item is None else [
                {**o.discount(self._id("di"), on_item, cus_id, sub_id, at, discount_end(on_item, at)),
                 "subscription_item": si_id}]
            sis.append(o.subscription_item(si_id, sub_id, p, q, at, period, item_discounts))
        disc = None
        if coupon is not None:
            disc = o.discount(self._id("di"), coupon, cus_id, sub_id, at, discount_end(coupon, at))
        status = "trialing" if trial else "incomplete"
        sub = o.subscription(sub_id, cus_id, at, self.livemode, currency, sis, status, trial, disc)
        self.store.insert("subscription", sub, at)
        cus = self.store.get("customer", cus_id)
        if cus is not None and cus["currency"] is None:
            self.store.update("customer", cus_id, {"currency": currency}, at)
        self.emit("customer.subscription.created", sub, at, by_request=True)
        inv = self.invoice_period(sub_id, at, period, "subscription_create")
        if trial:
            return self.store.objects["subscription"][sub_id]
        ok = self.collect(inv["id"], at, pay)
        return self._update("subscription", sub_id,
                            {"status": "active" if ok else "incomplete"}, at,
                            "customer.subscription.updated")

    def invoice_period(self, sub_id: str, at: int, period: tuple[int, int],
                       billing_reason: str) -> Obj:
        """Create and finalize the invoice for one period (`invoice.created`, `.finalized`)."""
        sub = self.store.objects["subscription"][sub_id]
        inv_id = self._id("in")
        trial = sub["status"] == "trialing"
        lines = [o.line_item(self._id("il"), inv_id, it, sub_id, period, self.livemode, trial)
                 for it in sub["items"]["data"]]
        disc = in_effect(sub, self.store.get("customer", sub["customer"]))
        off = invoice_discount(sub, disc, lines, period[0], billing_reason)
        inv = o.invoice(inv_id, sub, at, lines, period, off, billing_reason, disc)
        self.store.insert("invoice", inv, at)
        self.emit("invoice.created", inv, at)
        number = f"{inv['customer'][-8:].upper()}-{len(self.store.objects['invoice']):04d}"
        finalized = {"status": "open", "number": number, "effective_at": at,
                     "status_transitions": {**inv["status_transitions"], "finalized_at": at}}
        inv = self._update("invoice", inv_id, finalized, at, "invoice.finalized")
        self._update("subscription", sub_id, {"latest_invoice": inv_id}, at, None)
        if inv["amount_due"] == 0:
            inv = self._mark_paid(inv_id, at)
        return inv

    def collect(self, inv_id: str, at: int, succeed: bool) -> bool:
        """Attempt payment of an open invoice; return whether it was paid."""
        inv = self.store.objects["invoice"][inv_id]
        if inv["status"] == "paid":
            return True
        pi_id = inv.get("payment_intent")
        if pi_id is None:
            pi = o.payment_intent(self._id("pi"), inv["customer"], at, self.livemode,
                                  inv["amount_due"], inv["currency"],
                                  "Subscription update" if inv["billing_reason"] ==
                                  "subscription_update" else "Subscription creation"
                                  if inv["billing_reason"] == "subscription_create"
                                  else "Subscription cycle", inv_id)
            self.store.insert("payment_intent", pi, at)
            self.emit("payment_intent.created", pi, at)
            self.store.update("invoice", inv_id, {"payment_intent": pi["id"]}, at)
            pi_id = pi["id"]
        self._charge(pi_id, at, succeed)
        changes = {"attempt_count": inv["attempt_count"] + 1, "attempted": True}
        if not succeed:
            self._update("invoice", inv_id, changes, at, "invoice.payment_failed")
            return False
        self.store.update("invoice", inv_id, changes, at)
        self._mark_paid(inv_id, at)
        return True

    def _mark_paid(self, inv_id: str, at: int) -> Obj:
        inv = self.store.objects["invoice"][inv_id]
        changes = {"status": "paid", "amount_paid": inv["amount_due"], "amount_remaining": 0,
                   "status_transitions": {**inv["status_transitions"], "paid_at": at}}
        new = self._update("invoice", inv_id, changes, at, "invoice.paid")
        self.emit("invoice.payment_succeeded", new, at)
        return new

    def _charge(self, pi_id: str, at: int, succeed: bool,
                description: str | None = None, metadata: dict[str, str] | None = None) -> Obj:
        pi = self.store.objects["payment_intent"][pi_id]
        card = o.card_for(pi["customer"] or pi_id)
        ch = o.charge(self._id("ch"), pi, at, card, succeed, description or pi["description"],
                      metadata)
        self.store.insert("charge", ch, at)
        self.emit("charge.succeeded" if succeed else "charge.failed", ch, at)
        if succeed:
            changes = {"status": "succeeded", "amount_received": pi["amount"],
                       "latest_charge": ch["id"], "last_payment_error": None,
                       "payment_method": ch["payment_method"]}
            self._update("payment_intent", pi_id, changes, at, "payment_intent.succeeded")
        else:
            error = {"type": "card_error", "code": "card_declined",
                     "decline_code": "insufficient_funds", "message": "Your card was declined.",
                     "charge": ch["id"]}
            changes = {"status": "requires_payment_method", "latest_charge": ch["id"],
                       "last_payment_error": error}
            self._update("payment_intent", pi_id, changes, at, "payment_intent.payment_failed")
        return ch

    def one_off_payment(self, cus_id: str | None, amount: int, currency: str, at: int,
                        succeed: bool = True, description: str | None = None,
                        metadata: dict[str, str] | None = None) -> Obj:
        """Take a one-off card payment through a payment intent; return the charge."""
        pi = o.payment_intent(self._id("pi"), cus_id, at, self.livemode, amount, currency,
                              description, None)
        self.store.insert("payment_intent", pi, at)
        self.emit("payment_intent.created", pi, at, by_request=True)
        return self._charge(pi["id"], at, succeed, description, metadata)

    def authorize_payment(self, cus_id: str | None, amount: int, currency: str, at: int,
                          description: str | None = None) -> Obj:
        """A one-off card payment authorised now and captured later (`capture_method=manual`): the charge
        succeeds uncaptured (`charge.succeeded`, nothing captured yet), its intent waits in `requires_capture`.
        Returns the charge."""
        pi = {**o.payment_intent(self._id("pi"), cus_id, at, self.livemode, amount, currency, description, None),
              "capture_method": "manual"}
        self.store.insert("payment_intent", pi, at)
        self.emit("payment_intent.created", pi, at, by_request=True)
        card = o.card_for(cus_id or pi["id"])
        ch = {**o.charge(self._id("ch"), pi, at, card, True, description, None),
              "captured": False, "amount_captured": 0}
        self.store.insert("charge", ch, at)
        self.emit("charge.succeeded", ch, at)
        self._update("payment_intent", pi["id"], {"status": "requires_capture", "amount_capturable": amount,
                                                  "latest_charge": ch["id"], "payment_method": ch["payment_method"]},
                     at, "payment_intent.amount_capturable_updated")
        return ch

    def capture(self, ch_id: str, at: int, amount: int | None = None) -> Obj:
        """Captures an authorised charge, whole or `amount` of it (`charge.captured`; since 2025-03-31 the
        part not captured is released without a refund)."""
        ch = self.store.objects["charge"][ch_id]
        captured = ch["amount"] if amount is None else amount
        new = self._update("charge", ch_id, {"captured": True, "amount_captured": captured}, at, "charge.captured",
                           by_request=True)
        self._update("payment_intent", ch["payment_intent"], {"status": "succeeded", "amount_received": captured,
                                                             "amount_capturable": 0}, at, "payment_intent.succeeded")
        return new

    def renew(self, sub_id: str, at: int | None = None, succeed: bool = True) -> Obj:
        """Start the next period at the current period's end and charge for it."""
        sub = self.store.objects["subscription"][sub_id]
        start = sub["items"]["data"][0]["current_period_end"]
        at = start if at is None else at
        if sub["cancel_at_period_end"]:
            return self.cancel_subscription(sub_id, start)
        interval, count = _interval(sub["items"]["data"][0]["price"])
        period = (start, add_interval(start, interval, count))
        items = [{**it, "current_period_start": period[0], "current_period_end": period[1]}
                 for it in sub["items"]["data"]]
        changes: Obj = {"items": {**sub["items"], "data": items}}
        if sub["status"] == "trialing":
            changes["status"] = "active"
        new = self._update("subscription", sub_id, changes, at, "customer.subscription.updated")
        inv = self.invoice_period(sub_id, at, period, "subscription_cycle")
        if inv["status"] != "paid" and not self.collect(inv["id"], at, succeed):
            if new["status"] != "past_due":
                new = self._update("subscription", sub_id, {"status": "past_due"}, at,
                                   "customer.subscription.updated")
        return new

    def retry_invoice(self, inv_id: str, at: int, succeed: bool) -> bool:
        """Retry a failed invoice; on success a past_due subscription becomes active."""
        ok = self.collect(inv_id, at, succeed)
        sub_id = self.store.objects["invoice"][inv_id]["parent"]["subscription_details"][
            "subscription"]
        sub = self.store.objects["subscription"][sub_id]
        if ok and sub["status"] in ("past_due", "incomplete"):
            self._update("subscription", sub_id, {"status": "active"}, at,
                         "customer.subscription.updated")
        return ok

    def void_invoice(self, inv_id: str, at: int) -> Obj:
        """Void an open invoice (`invoice.voided`)."""
        inv = self.store.objects["invoice"][inv_id]
        changes = {"status": "void", "amount_remaining": 0,
                   "status_transitions": {**inv["status_transitions"], "voided_at": at}}
        return self._update("invoice", inv_id, changes, at, "invoice.voided")

    def mark_uncollectible(self, inv_id: str, at: int) -> Obj:
        """Mark an open invoice uncollectible (`invoice.marked_uncollectible`)."""
        inv = self.store.objects["invoice"][inv_id]
        changes = {"status": "uncollectible", "status_transitions": {
            **inv["status_transitions"], "marked_uncollectible_at": at}}
        return self._update("invoice", inv_id, changes, at, "invoice.marked_uncollectible")

    def change_items(self, sub_id: str, items: list[tuple[Obj, int]], at: int) -> Obj:
        """Replace a subscription's prices/quantities (upgrade, downgrade), no proration."""
        sub = self.store.objects["subscription"][sub_id]
        old = sub["items"]["data"][0]
        period = (old["current_period_start"], old["current_period_end"])
        sis = [o.subscription_item(self._id("si"), sub_id, p, q, at, period) for p, q in items]
        return self._update("subscription", sub_id, {"items": {**sub["items"], "data": sis}},
                            at, "customer.subscription.updated", True)

    def set_cancel_at_period_end(self, sub_id: str, flag: bool, at: int) -> Obj:
        """Schedule (or undo, i.e. reactivate) a cancellation at the period end."""
        sub = self.store.objects["subscription"][sub_id]
        end = sub["items"]["data"][0]["current_period_end"]
        changes = {"cancel_at_period_end": flag, "cancel_at": end if flag else None,
                   "canceled_at": at if flag else None}
        return self._update("subscription", sub_id, changes, at,
                            "customer.subscription.updated", True)

    def cancel_subscription(self, sub_id: str, at: int) -> Obj:
        """End a subscription now (`customer.subscription.deleted`)."""
        sub = self.store.objects["subscription"][sub_id]
        changes = {"status": "canceled", "ended_at": at,
                   "canceled_at": sub["canceled_at"] or at}
        new, _ = self.store.update("subscription", sub_id, changes, at)
        self.emit("customer.subscription.deleted", new, at)
        return new

    def refund(self, ch_id: str, amount: int | None, at: int) -> Obj:
        """Refund part or all of a charge (`charge.refunded`, `refund.created`)."""
        ch = self.store.objects["charge"][ch_id]
        amount = ch["amount"] - ch["amount_refunded"] if amount is None else amount
        re = o.refund(self._id("re"), ch, amount, at)
        self.store.insert("refund", re, at)
        self.emit("refund.created", re, at, by_request=True)
        total = ch["amount_refunded"] + amount
        self._update("charge", ch_id, {"amount_refunded": total,
                                       "refunded": total >= ch["amount"]},
                     at, "charge.refunded")
        return re


def _interval(p: Obj) -> tuple[str, int]:
    return p["recurring"]["interval"], p["recurring"]["interval_count"]
