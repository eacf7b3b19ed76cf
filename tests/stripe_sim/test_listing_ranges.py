"""The simulator's list pages for `created` ranges: the bounded walk gives what filtering every object gives."""

from __future__ import annotations

import random

import pytest

from stripe_sim.listing import list_objects
from stripe_sim.model import Store


def store_of(created_times: list[int]) -> Store:
    store = Store()
    for n, created in enumerate(created_times):
        store.insert("charge", {"id": f"ch_{n:04d}", "object": "charge", "created": created}, at=created)
    return store


def every_page(store: Store, query: dict[str, str], backwards_from: str | None = None) -> list[str]:
    """Pages the whole list (forwards with starting_after, or backwards with ending_before)."""
    ids: list[str] = []
    cursor = backwards_from
    while True:
        params = dict(query, limit="7")
        if cursor:
            params["ending_before" if backwards_from else "starting_after"] = cursor
        page = list_objects(store, "charges", params, now=10_000)
        batch = [o["id"] for o in page["data"]]
        ids = batch + ids if backwards_from else ids + batch
        if not page["has_more"] or not batch:
            return ids
        cursor = batch[0] if backwards_from else batch[-1]


@pytest.mark.parametrize("seed", range(20))
def test_a_created_range_lists_exactly_the_objects_in_it_newest_first(seed: int) -> None:
    rng = random.Random(seed)
    times = [rng.randrange(0, 200) for _ in range(rng.randrange(0, 120))]  # ties on purpose
    store = store_of(times)
    newest_first = store.all("charge")
    low, high = sorted(rng.sample(range(-5, 205), 2))
    for query, keep in [
        ({"created[gte]": str(low), "created[lte]": str(high)}, lambda c: low <= c <= high),
        ({"created[gt]": str(low), "created[lt]": str(high)}, lambda c: low < c < high),
        ({"created[gte]": str(low)}, lambda c: c >= low),
        ({"created[lt]": str(high)}, lambda c: c < high),
        ({"created": str(low), "created[lte]": str(high)}, lambda c: c == low),
    ]:
        want = [o["id"] for o in newest_first if keep(o["created"])]
        assert every_page(store, query) == want, query
        if want:  # backwards from the oldest in range: every newer one in range, in list order
            assert every_page(store, query, backwards_from=want[-1]) == want[:-1], query


def test_a_charges_refunds_follow_refunds_added_and_changed_later() -> None:
    store = store_of([10, 20])
    pending = {"id": "re_1", "object": "refund", "charge": "ch_0000", "created": 11, "status": "pending"}
    store.insert("refund", pending, 11)
    assert [r["id"] for r in store.grouped("refund", "charge", "ch_0000")] == ["re_1"]
    store.insert("refund", {**pending, "id": "re_2", "created": 12, "status": "succeeded"}, 12)
    store.update("refund", "re_1", {"status": "succeeded"}, 13)
    refunds = store.grouped("refund", "charge", "ch_0000")
    assert [(r["id"], r["status"]) for r in refunds] == [("re_2", "succeeded"), ("re_1", "succeeded")]
    assert store.grouped("refund", "charge", "ch_0001") == []
