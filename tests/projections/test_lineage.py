"""Lineage in the tables: each refund and refunded step keeps the event that first showed it, whatever order
events arrive in (one batch or many), so `explain` names the same event after any redelivery or replay."""

from __future__ import annotations

import itertools
import uuid

import asyncpg
import pytest

from projections.handlers.writes import writes_for
from projections.projector.store import PostgresProjectionStore
from schemas import Source
from tests.projections.support import bind_tenant
from tests.projections.test_order_and_duplicates import CHARGE, T, event

DAY = 86_400
LISTED = {"object": "list", "data": [{"id": "re_1", "object": "refund", "amount": 1500, "currency": "usd",
                                      "created": T + DAY, "status": "succeeded", "charge": "ch_1"}]}


def envelopes(tenant: str) -> list:  # type: ignore[type-arg]
    first = event(CHARGE | {"status": "succeeded", "amount_refunded": 1500, "refunds": LISTED}, "charge.refunded",
                  "evt_first", T + DAY, tenant)
    snapshot = event(CHARGE | {"status": "succeeded", "amount_refunded": 1500, "refunds": LISTED}, "charge.snapshot",
                     "snap_later", T + 2 * DAY, tenant, Source.IMPORT)
    more = event(CHARGE | {"status": "succeeded", "amount_refunded": 5000}, "charge.refunded", "evt_more",
                 T + 3 * DAY, tenant)
    return [first, snapshot, more]


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))), ids=lambda o: "".join(map(str, o)))
@pytest.mark.parametrize("one_batch", [True, False], ids=["one-batch", "one-by-one"])
async def test_each_refund_names_the_event_that_first_showed_it_in_any_order(
    pool: asyncpg.Pool, order: tuple[int, ...], one_batch: bool
) -> None:
    tenant = f"lineage_{uuid.uuid4().hex[:8]}"
    store = PostgresProjectionStore(pool, "lineage-test")
    arriving = [envelopes(tenant)[i] for i in order]
    batches = [arriving] if one_batch else [[e] for e in arriving]
    for batch in batches:
        await store.apply([(tenant, e.event_id, writes_for(e)) for e in batch], {})
    async with pool.acquire() as conn, conn.transaction():
        await bind_tenant(conn, tenant)
        rows = await conn.fetch("SELECT kind, refund_id, amount, event_id FROM projection.revenue_contributions "
                                "WHERE tenant_id = $1 ORDER BY kind, amount", tenant)
    assert [tuple(r) for r in rows] == [
        ("charge", None, 5000, "evt_more"),  # the charge's counted state is its newest
        ("refund", "re_1", 1500, "evt_first"),  # listed by evt_first and later by a snapshot: the first one
        ("refund", None, 3500, "evt_more"),  # the step above the listed refunds, first seen in evt_more
    ]
