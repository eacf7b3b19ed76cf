"""The simulator's injected faults: a latency with Stripe's spread and long tail (which the importer's count of slices
in flight, Little's law on the mean time a page takes, must hold up to), and specs refused whole when bad."""

import random
import statistics

import aiohttp
import pytest

from stripe_sim import SimServer
from stripe_sim.faults import Fault, Faults


def _latencies(faults: Faults, spec: dict[str, object], count: int = 4000) -> list[float]:
    faults.add(Fault.from_dict(spec))
    return [faults.pick("/v1/charges")[0] for _ in range(count)]


def test_a_latency_with_a_spread_has_its_median_where_asked_and_a_long_tail() -> None:
    latencies = sorted(_latencies(Faults(seed=7), {"kind": "latency", "latency_ms": 300, "latency_sigma": 0.5}))
    assert 285 < statistics.median(latencies) < 315
    p95 = latencies[int(0.95 * len(latencies))]
    assert 600 < p95 < 780  # e^(0.5 × 1.645) = 2.28 times the median


def test_a_latency_without_a_spread_is_the_same_for_every_request_and_draws_nothing_more() -> None:
    """Seeded faults stay as they were: a fixed latency takes no draw from the generator the rates use."""
    faults = Faults(seed=7)
    assert set(_latencies(faults, {"kind": "latency", "latency_ms": 300}, 50)) == {300.0}
    alongside = random.Random(7)
    for _ in range(50):
        alongside.random()  # the one draw per request: whether the fault hits (rate)
    assert faults._rng.getstate() == alongside.getstate()


@pytest.mark.parametrize("field, value", [
    ("latency_sigma", -0.1), ("latency_sigma", 2.0), ("latency_sigma", "wide"), ("latency_sigma", True),
    ("latency_sigma", None), ("latency_ms", "300"), ("latency_ms", -1), ("rate", "0.5"), ("rate", 1.5),
    ("count", 0), ("status", True), ("path_prefix", 5), ("should_retry", "yes"),
])
def test_a_field_of_the_wrong_type_or_range_is_refused(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        Fault.from_dict({"kind": "latency", "latency_ms": 300, field: value})


async def test_a_bad_spec_among_good_ones_changes_no_fault(sim: SimServer) -> None:
    sim.set_faults({"kind": "latency", "latency_ms": 100})
    async with aiohttp.ClientSession() as http:
        bad = {"faults": [{"kind": "drop"}, {"kind": "latency", "latency_ms": "300"}], "clear": True}
        async with http.post(f"{sim.base_url}/_sim/faults", json=bad) as response:
            assert response.status == 400 and "latency_ms" in await response.text()
    assert [fault.to_dict() for fault in sim.faults.active] == [Fault(kind="latency", latency_ms=100).to_dict()]
    sim.set_faults()
