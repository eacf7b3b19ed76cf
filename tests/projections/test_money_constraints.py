"""The database refuses money without a currency, whatever slips past the canonical model."""

from __future__ import annotations

import dataclasses

import asyncpg
import pytest

from projections.handlers.writes import writes_for
from projections.projector.store import PostgresProjectionStore
from tests.projections.test_order_and_duplicates import CHARGE, SUBSCRIPTION, T, event

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("obj", [CHARGE | {"status": "succeeded"}, SUBSCRIPTION | {"status": "active"}],
                         ids=["charge", "subscription"])
async def test_an_empty_or_upper_case_currency_never_lands(pool: asyncpg.Pool, obj: dict[str, object]) -> None:
    store = PostgresProjectionStore(pool, "constraints-test")
    envelope = event(obj, f"{obj['object']}.updated", f"evt_cur_{obj['object']}", T, "tenant_constraints")
    writes = writes_for(envelope)
    state = writes.states[0]
    currency_at = 4 if state.table == "charges" else 3  # the column's place in STATE_COLUMNS
    for bad in ("", "US", "usd ", "EUR"):
        values = list(state.values)
        values[currency_at] = bad
        broken = dataclasses.replace(writes, states=[state._replace(values=tuple(values))], versions=[])
        with pytest.raises(asyncpg.CheckViolationError):
            await store.apply([("tenant_constraints", f"evt_{bad or 'empty'}", broken)], {})
