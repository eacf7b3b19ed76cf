"""The rule per field, as data: docs/metrics.md ("Field derivations") is generated from it, and the readers follow
it.
"""

from __future__ import annotations

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
                                    "fills them in from a retrieve with `expand[]=items.data.price.tiers`, or, for "
                                    "a price the subscription has left since, of the price with `expand[]=tiers`: "
                                    "the key's optional Prices permission); "
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
    ("subscription", "current period", "`current_period_start/end` (until basil) → the span of the items' periods "
                                       "(a snapshot's past-due, unpaid or paused status from the latest item's "
                                       "start: items may renew at different times since basil)",
     "none"),
    ("subscription", "coupons", "`discount.coupon` (until basil) → `discounts[]` expanded: `coupon`, or "
                                "`source.coupon` (clover on); ids are filled in by the write path (a retrieve with "
                                "`expand[]=discounts.source.coupon.applies_to`)",
     "an active subscription's MRR is unreadable while a discount is known only by id"),
    ("subscription", "item coupons", "`items.data[].discounts[]` expanded: `coupon`, or `source.coupon`; they apply "
                                     "to their item (never below 0) before the subscription's coupons apply to the "
                                     "total; ids (since 2024-04) are filled in by the write path (a retrieve with "
                                     "`expand[]=items.data.discounts`, then each coupon named by id)",
     "an active subscription's MRR is unreadable while an item's discount or its coupon is known only by id (a "
     "coupon deleted at Stripe since)"),
    ("subscription", "coupon amount off", "`amount_off` when the coupon's `currency` is the subscription's → "
                                          "`currency_options[<subscription's currency>].amount_off`",
     "an active subscription's MRR is unreadable (a coupon in another currency without that option, or with no "
     "currency): never taken off in the wrong currency"),
    ("subscription", "coupon products", "`coupon.applies_to.products` (Stripe includes `applies_to` only when asked: "
                                        "the write path lays in what a retrieve of the subscription with "
                                        "`expand[]=discounts.source.coupon.applies_to` gives, else the coupon's "
                                        "own with `expand[]=applies_to`, asked once); null: every item. A "
                                        "restricted coupon reduces only the items whose `price.product` (a plan's "
                                        "`product`) it lists; an amount coupon takes off at most their amount, "
                                        "shared in proportion",
     "an active subscription's MRR is unreadable while a forever coupon's `applies_to` is not included (a coupon "
     "deleted at Stripe since cannot be asked), or a restricted coupon meets an item without a product: never "
     "taken off every item on a guess"),
    ("subscription", "state before an update", "the object with the event's `previous_attributes` laid over it "
                                               "(a nested hash key by key: Stripe names only its changed keys; an "
                                               "array whole, unreadable before 2017-05-25 when Stripe named only its "
                                               "changed elements, but for one item, read from the legacy `plan` and "
                                               "`quantity`; a coupon's products or a price's tiers never lent "
                                               "to another id; "
                                               "its tiered prices' tiers filled in as the object's), read by these "
                                               "rules (MRR history points before the update, where a snapshot of "
                                               "that state would put them: its start, trial end, current period "
                                               "start and each item's, end)",
     "no point, the update named in health (the update itself still counts); not named for an update of its "
     "discounts alone whose removed discount is known by id only, as every removal of a discount leaves it"),
    ("subscription", "start date", "`start_date` → `created` (before 2019-10-17; `start` then is when the current "
                                   "plan configuration began, not the subscription)", "none"),
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
    ("customer", "discount", "`discount` (one or null): `coupon`, or `source.coupon` (clover on; an id, filled in "
                             "by the write path with `expand[]=applies_to`); also a `customer.discount.*` event's "
                             "object from its time on (none once `.deleted`), when it is the customer's own (no "
                             "`subscription`, item, invoice or checkout named). Of a customer's states of one "
                             "second, one showing a discount applied later (`start`), or removing the one applied "
                             "latest (`.deleted`, or `previous_attributes.discount`), is the later. Its forever "
                             "coupon reduces, after their items' own, the MRR of the customer's subscriptions that "
                             "have no discounts of their own (of any duration), from the customer state that shows "
                             "it to the one that no longer does, by the subscription coupon rules (products, amount "
                             "off in the subscription's currency)",
     "the customer still counts; a state whose discount cannot be read (named by id only, no coupon, no "
     "`applies_to`) takes the coupon from another of the customer's states that reads it, else counts as not "
     "received (the discount before stays in effect), and a coupon that cannot apply to "
     "a subscription (an amount with none in its currency) leaves it without: both counted in health by name"),
)
