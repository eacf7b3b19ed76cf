"""The receiver's bounds that need no server: what a delivery costs its connection's share, how often a tenant's
test webhooks are written, and settings that would let a body cost less than its work."""

from __future__ import annotations

import pydantic
import pytest

from ingestor.receiver.shares import DeliveryShares
from ingestor.receiver.webhook import RecentVerifications
from plumbing.settings import ReceiverSettings


def test_a_delivery_costs_more_for_its_bytes_and_its_objects_and_arrays_never_more_than_a_bucket() -> None:
    shares = DeliveryShares(units_per_s=200, burst=2000, bytes_per_unit=4096, containers_per_unit=256)
    assert 1 < shares.cost(3_000, 40) < 2  # a typical event: about one unit
    assert shares.cost(1024 * 1024, 40) > 250  # a megabyte: some 250 typical deliveries' work
    assert shares.cost(3_000, 16_384) > 60  # brackets are walked one by one, whatever the bytes
    assert shares.cost(10**9, 10**9) == 2000  # refused by size first; here, at most the whole bucket


async def test_a_connections_bucket_is_its_own_and_refuses_without_taking() -> None:
    shares = DeliveryShares(units_per_s=0.001, burst=5, bytes_per_unit=4096, containers_per_unit=256)
    assert [await shares.spend("a", 0, 0) for _ in range(6)] == [True] * 5 + [False]
    assert not shares.has_room("a") and shares.has_room("b")
    assert await shares.spend("b", 4096 * 3, 0)  # 4 units of b's 5
    assert not await shares.spend("b", 4096, 0)  # 2 more do not fit, and nothing was taken:
    assert await shares.spend("b", 0, 0)


def test_a_tenants_test_webhooks_are_written_once_a_minute_at_most() -> None:
    now = [1000.0]
    recent = RecentVerifications(every_s=60, clock=lambda: now[0])
    assert recent.due("conn_a")
    recent.done("conn_a")
    now[0] += 59
    assert not recent.due("conn_a") and recent.due("conn_b")
    now[0] += 1
    assert recent.due("conn_a")


def test_a_burst_that_cannot_pay_for_the_largest_body_is_refused() -> None:
    with pytest.raises(pydantic.ValidationError, match="share_burst_units"):
        ReceiverSettings(share_burst_units=100)  # 1 MiB costs 257 units at the default prices
    assert ReceiverSettings().share_burst_units >= 1 + 1024 * 1024 / 4096 + 16 * 1024 / 256
