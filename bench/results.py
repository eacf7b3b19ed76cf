"""One format for every benchmark's result file, so the report can be regenerated from them."""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Target:
    """What a figure is held to, as bounds a machine can check (the value's own, and its ratio's)."""

    at_least: float | None = None
    at_most: float | None = None
    ratio_at_least: float | None = None
    ratio_at_most: float | None = None

    def describe(self, unit: str) -> str:
        """Returns the target in words, e.g. ">= 3,000 events/s and ratio >= 0.5"."""
        parts = []
        if self.at_least is not None:
            parts.append(f">= {self.at_least:,g} {unit}")
        if self.at_most is not None:
            parts.append(f"<= {self.at_most:,g} {unit}")
        if self.ratio_at_least is not None:
            parts.append(f"ratio >= {self.ratio_at_least:g}")
        if self.ratio_at_most is not None:
            parts.append(f"ratio <= {self.ratio_at_most:g}")
        return " and ".join(parts)

    def met(self, value: float, ratio: float | None) -> bool:
        """Tells whether `value` (and `ratio`) meet every bound; a ratio bound without a ratio is missed."""
        checks = [
            self.at_least is None or value >= self.at_least,
            self.at_most is None or value <= self.at_most,
            self.ratio_at_least is None or (ratio is not None and ratio >= self.ratio_at_least),
            self.ratio_at_most is None or (ratio is not None and ratio <= self.ratio_at_most),
        ]
        return all(checks)


@dataclass
class Figure:
    """One measured figure, the baseline measured in the same run, and the target it is held to."""

    name: str
    value: float
    unit: str
    baseline_name: str | None = None
    baseline_value: float | None = None
    target: Target | None = None
    notes: str = ""

    @property
    def meets_target(self) -> bool | None:
        """Returns whether the figure meets its target (None without one)."""
        return None if self.target is None else self.target.met(self.value, self.ratio)

    @property
    def ratio(self) -> float | None:
        """Returns value ÷ baseline (None without a baseline)."""
        if self.baseline_value is None or self.baseline_value == 0:
            return None
        return self.value / self.baseline_value


@dataclass
class BenchResult:
    """What one benchmark run measured, with the machine it ran on."""

    name: str
    figures: list[Figure] = field(default_factory=list)
    peak_rss_mib: dict[str, float] = field(default_factory=dict)
    notes: str = ""


def machine_notes() -> dict[str, Any]:
    """Returns a short description of this machine."""
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    }


def peak_rss_mib(pid: int) -> float:
    """Returns the peak resident memory in MiB of process `pid` (a server the benchmark started)."""
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmHWM"))


def own_peak_rss_mib() -> float:
    """Returns this process's peak resident memory in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_result(result: BenchResult) -> Path:
    """Prints the figures and writes bench/results/<name>.json."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    payload = {
        "name": result.name,
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_notes(),
        "figures": [asdict(f) | {"ratio": f.ratio, "target_text": f.target.describe(f.unit) if f.target else None,
                                 "meets_target": f.meets_target} for f in result.figures],
        "peak_rss_mib": result.peak_rss_mib,
        "notes": result.notes,
    }
    path = RESULTS_DIR / f"{result.name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\n== {result.name} ==")
    for f in result.figures:
        ratio = f" (ratio {f.ratio:.2f} vs {f.baseline_name} {f.baseline_value:,.1f})" if f.ratio is not None else ""
        target = (f"  target: {f.target.describe(f.unit)} — {'met' if f.meets_target else 'MISSED'}"
                  if f.target else "")
        print(f"  {f.name}: {f.value:,.2f} {f.unit}{ratio}{target}")
    for proc, mib in result.peak_rss_mib.items():
        print(f"  peak RSS {proc}: {mib:.0f} MiB")
    print(f"  written to {path}")
    return path
