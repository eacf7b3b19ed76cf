"""The simulator's injected latency: Stripe's own has a spread and a long tail, which the importer's count of slices
in flight (Little's law, on the mean time a page takes) must hold up to."""

import statistics

import pytest

from stripe_sim.faults import Fault, Faults


def _latencies(spec: dict[str, object], count: int = 4000) -> list[float]:
    faults = Faults(seed=7)
    faults.add(Fault.from_dict(spec))
    return [faults.pick("/v1/charges")[0] for _ in range(count)]


def test_a_latency_with_a_spread_has_its_median_where_asked_and_a_long_tail() -> None:
    latencies = sorted(_latencies({"kind": "latency", "latency_ms": 300, "latency_sigma": 0.5}))
    assert 285 < statistics.median(latencies) < 315
    p95 = latencies[int(0.95 * len(latencies))]
    assert 600 < p95 < 780  # e^(0.5 × 1.645) = 2.28 times the median
    assert min(latencies) > 0


def test_a_latency_without_a_spread_is_the_same_for_every_request() -> None:
    assert set(_latencies({"kind": "latency", "latency_ms": 300}, 50)) == {300.0}


@pytest.mark.parametrize("sigma", [-0.1, 4, "wide", None])
def test_a_spread_that_is_not_a_small_positive_number_is_refused(sigma: object) -> None:
    with pytest.raises(ValueError, match="latency_sigma"):
        Fault.from_dict({"kind": "latency", "latency_ms": 300, "latency_sigma": sigma})
