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


@dataclass
class Figure:
    """One measured figure, the baseline measured in the same run, and the target it is held to."""

    name: str
    value: float
    unit: str
    baseline_name: str | None = None
    baseline_value: float | None = None
    target: str | None = None
    notes: str = ""

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
        "figures": [asdict(f) | {"ratio": f.ratio} for f in result.figures],
        "peak_rss_mib": result.peak_rss_mib,
        "notes": result.notes,
    }
    path = RESULTS_DIR / f"{result.name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\n== {result.name} ==")
    for f in result.figures:
        ratio = f" (ratio {f.ratio:.2f} vs {f.baseline_name} {f.baseline_value:,.1f})" if f.ratio is not None else ""
        target = f"  target: {f.target}" if f.target else ""
        print(f"  {f.name}: {f.value:,.2f} {f.unit}{ratio}{target}")
    for proc, mib in result.peak_rss_mib.items():
        print(f"  peak RSS {proc}: {mib:.0f} MiB")
    print(f"  written to {path}")
    return path
