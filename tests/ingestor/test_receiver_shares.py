"""The receiver's bounds that need no server: what a delivery costs its connection's share, how a bucket refills
and settles, how objects and arrays are counted, and settings that would let a body cost less than its work."""

from __future__ import annotations

import json

import pydantic
import pytest

from ingestor.envelope.build import container_count
from ingestor.receiver.shares import DeliveryShares
from plumbing.settings import ReceiverSettings


def shares(units_per_s: float = 200, burst: float = 2000, clock: list[float] | None = None) -> DeliveryShares:
    now = clock if clock is not None else [0.0]
    return DeliveryShares(units_per_s, burst, bytes_per_unit=4096, containers_per_unit=256, clock=lambda: now[0])


def test_a_delivery_costs_more_for_its_bytes_and_its_objects_and_arrays_never_more_than_a_bucket() -> None:
    bucket = shares()
    assert 1 < bucket.cost(3_000, 40) < 2  # a typical event: about one unit
    assert bucket.cost(1024 * 1024, 40) > 250  # a megabyte: some 250 typical deliveries' work
    assert bucket.cost(3_000, 16_384) > 60  # brackets are walked one by one, whatever the bytes
    assert bucket.cost(10**9, 10**9) == 2000  # refused by size first; here, at most the whole bucket


def test_a_connections_bucket_is_its_own_refuses_without_taking_and_refills_at_its_rate() -> None:
    now = [0.0]
    bucket = shares(units_per_s=2, burst=5, clock=now)
    assert [bucket.take("a", 1) for _ in range(6)] == [True] * 5 + [False]
    assert bucket.take("b", 4)  # b's bucket is its own
    assert not bucket.take("b", 2) and bucket.take("b", 1)  # a refusal takes nothing
    now[0] += 0.5  # one unit drained from each
    assert bucket.take("a", 1) and not bucket.take("a", 1)


def test_what_was_reserved_for_a_body_is_settled_to_what_it_cost() -> None:
    bucket = shares(units_per_s=0.001, burst=10)
    assert bucket.take("a", 9)  # reserved for the largest body the headers allow
    bucket.give_back("a", 8)  # the body was small
    assert bucket.take("a", 9) and not bucket.take("a", 1)


@pytest.mark.parametrize("body,exact_above,counted", [
    ({"l": [[], []]}, 100, 4),
    ({"metadata": {"json": "[{" * 50}}, 200, 102),  # under the bound: the brackets of strings count too
    ({"metadata": {"json": "[{" * 50, "q": "x\\\"[["}}, 10, 2),  # past it, only those outside strings
])
def test_objects_and_arrays_are_counted_outside_strings_past_the_bound(body: object, exact_above: int,
                                                                       counted: int) -> None:
    assert container_count(json.dumps(body).encode(), exact_above) == counted


def test_a_burst_that_cannot_pay_for_the_largest_body_is_refused() -> None:
    with pytest.raises(pydantic.ValidationError, match="share_burst_units"):
        ReceiverSettings(share_burst_units=100)  # 1 MiB costs 257 units at the default prices
    assert ReceiverSettings().share_burst_units >= 1 + 1024 * 1024 / 4096 + 16 * 1024 / 256


def test_a_delivery_settles_what_it_reserved_to_what_its_body_cost() -> None:
    bucket = shares(units_per_s=0.001, burst=10)
    reserved = bucket.cost(8192)  # 3 units for the bytes announced
    assert bucket.take("a", reserved) and bucket.settle("a", reserved, 4096, 0)  # 2 units: 1 given back
    assert bucket.take("a", 8) and not bucket.take("a", 0.5)  # 2 + 8 taken: full
    bucket.give_back("a", 3)
    assert not bucket.settle("a", 1, 4096, 1024)  # 2 + 4 units, 1 reserved: 5 more do not fit in 3
    assert bucket.take("a", 3)  # and nothing was taken by the refusal
