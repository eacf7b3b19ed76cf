"""`python -m bench`: runs every benchmark (each in its own process, so peak memory is its own),
then regenerates bench/REPORT.md."""

from __future__ import annotations

import subprocess
import sys
import time

from bench import report
from stack import REPO_ROOT
from stack.progress import say

BENCHMARKS = ("receiver_throughput", "receiver_processes", "receiver_isolation", "projector_throughput",
              "projector_scaling", "import_throughput", "freshness", "mcp_latency", "redaction")


def main() -> None:
    """Runs the benchmarks named on the command line (default: all), then writes the report."""
    chosen = sys.argv[1:] or list(BENCHMARKS)
    failed = []
    for i, name in enumerate(chosen, 1):
        say(f"benchmark {i}/{len(chosen)}: {name}")
        started = time.monotonic()
        if subprocess.run([sys.executable, "-m", f"bench.{name}"], cwd=REPO_ROOT).returncode != 0:
            failed.append(name)
        say(f"{name} took {time.monotonic() - started:.0f}s")
    report.main()
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
