"""Injected faults for the read API: error statuses, dropped connections and added latency.

A fault is switched on with a spec like `{"kind": "status", "status": 503, "rate": 0.5,
"count": 20}`: each matching request is hit with probability `rate` until `count` hits are used
up (no count: until cleared). Kinds: `status` (answer `status` with a Stripe `api_error` body,
plus `Stripe-Should-Retry` only if `should_retry` is given), `drop` (close the socket without a
response) and `latency` (delay `latency_ms`, then carry on; with `latency_sigma`, each request's delay is
`latency_ms` × e^(sigma × N(0, 1)): log-normal, `latency_ms` its median, with the long tail a real API's
latency has). `path_prefix` narrows the requests hit.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Fault:
    """One fault spec; see the module docstring for its fields."""

    kind: str = "status"
    status: int = 503
    rate: float = 1.0
    count: int | None = None
    latency_ms: int = 0
    latency_sigma: float = 0.0
    path_prefix: str = "/v1/"
    should_retry: bool | None = None

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> Fault:
        """Build a fault from its JSON spec, rejecting unknown fields and kinds."""
        unknown = set(spec) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        fault = cls(**spec)
        if fault.kind not in ("status", "drop", "latency"):
            raise ValueError(f"unknown fault kind: {fault.kind}")
        for name, lowest, highest in _NUMBERS:
            value = getattr(fault, name)
            if value is None and name == "count":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not lowest <= value <= highest:
                raise ValueError(f"{name} must be a number from {lowest} to {highest}")
        if not isinstance(fault.path_prefix, str) or not isinstance(fault.should_retry, (bool, type(None))):
            raise ValueError("path_prefix must be a string and should_retry true, false or absent")
        return fault

    def to_dict(self) -> dict[str, Any]:
        """Return the spec as JSON-ready data."""
        return asdict(self)


# Numeric fields: (name, lowest, highest). A spread above 1.5 would hold one request in a thousand for over 100
# times the median.
_NUMBERS = (("status", 100, 599), ("rate", 0, 1), ("count", 1, 10**9), ("latency_ms", 0, 600_000),
            ("latency_sigma", 0, 1.5))


class Faults:
    """The active faults, consulted once per API request."""

    def __init__(self, seed: int = 0) -> None:
        self.active: list[Fault] = []
        self._rng = random.Random(seed)

    def add(self, fault: Fault) -> None:
        """Switch a fault on."""
        self.active.append(fault)

    def clear(self) -> None:
        """Switch every fault off."""
        self.active.clear()

    def pick(self, path: str) -> tuple[float, Fault | None]:
        """Return (total latency ms, the status/drop fault to apply or None) for a request."""
        latency, hit = 0.0, None
        for fault in list(self.active):
            if not path.startswith(fault.path_prefix) or self._rng.random() >= fault.rate:
                continue
            if fault.kind != "latency" and hit is not None:
                continue
            if fault.count is not None:
                fault.count -= 1
                if fault.count <= 0:
                    self.active.remove(fault)
            if fault.kind == "latency":
                spread = math.exp(fault.latency_sigma * self._rng.gauss(0.0, 1.0)) if fault.latency_sigma else 1.0
                latency += fault.latency_ms * spread
            else:
                hit = fault
        return latency, hit
