"""Which of two states of one Stripe object is newer: the last-writer-wins rule, with its tie-break.

Stripe timestamps are in seconds and deliveries come in any order, so two states of one object
can carry the same second (`invoice.finalized` and `invoice.paid` often do). The order is the tuple

    (state_time_ms, state_rank, state_event_id)

compared left to right, larger wins:

1. `state_time_ms` — when the state was true: the event's `created` (× 1000), or for an import
   snapshot two seconds before the request that read it was sent, to the second (so a change
   Stripe made after reading it, whose event is of that second or later, wins; a snapshot and an
   event of the same second tie on time and go to rule 2).
2. `state_rank` — how far along its lifecycle the state is, from the status (a succeeded charge not
   captured yet a step before its capture) and, for charges, the refunded amount (refunds only grow); a
   deletion outranks everything. Lifecycles move forward within a second, so the further state is the
   later one. At equal progress a real event (rank × 2 + 1) outranks a snapshot (rank × 2): the event
   is exact, the snapshot may have been read just before the change. A creation event (`*.created`: the
   object's first state) ranks below both (rank × 2 − 1): an update in the second it was created in (a
   customer given its email, a subscription its quantity, a draft invoice its lines, all with the same
   status) is later, and a snapshot dated that second was read more than a second after it (an object
   listed exists). Stored rows keep the ranks they were written with: a creation stored before this
   rule ties with its update as before.
3. `state_event_id` — the event id, compared as text: arbitrary but the same in every order.

Because the rule only compares states, the stored row after any delivery order (and any number
of duplicates) is the maximum of the states seen, which is what makes the tables order-independent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Lifecycle position of each status, per object type; unknown statuses sit at 0.
STATUS_PROGRESS: Mapping[str, Mapping[str, int]] = {
    "invoice": {"draft": 1, "open": 2, "uncollectible": 3, "paid": 4, "void": 4},
    "charge": {"pending": 1, "failed": 2, "succeeded": 2},
    "payment_intent": {
        "requires_payment_method": 1, "requires_confirmation": 2, "requires_action": 3,
        "processing": 4, "requires_capture": 5, "canceled": 6, "succeeded": 6,
    },
    "subscription": {
        "incomplete": 1, "incomplete_expired": 2, "trialing": 2, "active": 3, "past_due": 4,
        "unpaid": 5, "paused": 5, "canceled": 6,
    },
    "customer": {},
}
# A succeeded charge not captured yet (an authorisation) sits a step before it is captured (`charge.succeeded`
# then `charge.captured`, often in one second), at pending's step: captured never goes back to not captured,
# and neither state counts money. The step is taken from the uncaptured state, not added to the captured one,
# so the ranks of captured charges (nearly every stored row) stay what they were.
UNCAPTURED_PROGRESS = 1
DELETED_PROGRESS = 100
# Within one status, what only grows orders the states: a charge's refunded amount, an invoice's payment
# attempts (`invoice.finalized` and a failed first attempt's `invoice.payment_failed` share a second).
AMOUNT_SCALE = 10**12
GROWING_FIELD = {"charge": "amount_refunded", "invoice": "attempt_count"}


def state_rank(object_type: str, obj: Mapping[str, Any], deleted: bool, from_event: bool,
               creation: bool = False) -> int:
    """Returns the same-second tie-break rank of one object state (fits a Postgres bigint); `creation`: the state
    of a creation event (`*.created`)."""
    progress = DELETED_PROGRESS if deleted else _status_progress(object_type, obj)
    field = GROWING_FIELD.get(object_type)
    grown = int(obj.get(field) or 0) if field and not deleted else 0
    step = progress * AMOUNT_SCALE + min(grown, AMOUNT_SCALE - 1)
    if creation and from_event:
        return step * 2 - 1  # below a snapshot of its step; the event one step below would need 10^12 grown
    return step * 2 + (1 if from_event else 0)


def _status_progress(object_type: str, obj: Mapping[str, Any]) -> int:
    status = str(obj.get("status"))
    if object_type == "charge" and status == "succeeded" and obj.get("captured") is False:
        return UNCAPTURED_PROGRESS
    return STATUS_PROGRESS.get(object_type, {}).get(status, 0)
