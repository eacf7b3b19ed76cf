"""Progress lines for long-running start-up steps, so a person sees what is happening."""

import sys
import time

_started = time.monotonic()


def say(message: str) -> None:
    """Prints one timestamped progress line to stderr."""
    print(f"[stack +{time.monotonic() - _started:5.1f}s] {message}", file=sys.stderr, flush=True)
