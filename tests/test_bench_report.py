"""The benchmark report flags every figure that misses its target, from the bounds in its result file."""

from __future__ import annotations

from bench.report import verdict_of
from bench.results import Figure, Target


def as_result(figure: Figure) -> dict[str, object]:
    return {"value": figure.value, "ratio": figure.ratio,
            "target": None if figure.target is None else vars(figure.target)}


def test_a_figure_below_its_floor_or_its_ratio_is_flagged_and_one_within_is_not() -> None:
    target = Target(at_least=3000, ratio_at_least=0.5)
    assert verdict_of(as_result(Figure("rate", 3004, "events/s", "no-op", 9866, target))) == "**MISSED**"
    assert verdict_of(as_result(Figure("rate", 2999, "events/s", "no-op", 5000, target))) == "**MISSED**"
    assert verdict_of(as_result(Figure("rate", 3004, "events/s", "no-op", 6000, target))) == "yes"


def test_an_upper_bound_and_a_ratio_bound_without_a_baseline() -> None:
    assert verdict_of(as_result(Figure("p99", 51, "ms", target=Target(at_most=50)))) == "**MISSED**"
    assert verdict_of(as_result(Figure("p99", 15.7, "ms", target=Target(at_most=50)))) == "yes"
    assert verdict_of(as_result(Figure("ratio", 1.0, "x", target=Target(ratio_at_least=0.9)))) == "**MISSED**"
    assert verdict_of(as_result(Figure("cpu", 317, "µs"))) == ""
    assert Target(at_least=3000, ratio_at_least=0.5).describe("events/s") == ">= 3,000 events/s and ratio >= 0.5"
