"""Child processes of the local stack: started with their settings in the environment, logs to files,
stopped in reverse order on Ctrl-C (SIGTERM first, SIGKILL after a grace period)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from stack import REPO_ROOT, STATE_DIR
from stack.progress import say

LOG_DIR = STATE_DIR / "logs"


@dataclass
class Services:
    """The processes started by the demo, in start order."""

    started: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        """Starts `python <args>` with `env` added to the environment; output goes to .stack/logs/<name>.log."""
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        log_path = LOG_DIR / f"{name}.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen([sys.executable, *args], cwd=REPO_ROOT, env={**os.environ, **env},
                                    stdout=subprocess.PIPE if name == "stripe-simulator" else log,
                                    stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        self.started.append((name, proc))
        say(f"started {name} (pid {proc.pid}, log {log_path.relative_to(REPO_ROOT)})")
        return proc

    def check_alive(self) -> None:
        """Raises RuntimeError naming the first service that exited."""
        for name, proc in self.started:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with code {proc.returncode}; see {log_file(name)}, which ends:\n"
                                   + last_words(log_file(name)))

    def stop(self, grace_s: float = 15.0) -> None:
        """Stops every service, newest first."""
        for name, proc in reversed(self.started):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for name, proc in reversed(self.started):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            say(f"stopped {name}")
        self.started.clear()


def log_file(name: str) -> Path:
    """Returns where a service writes its log."""
    return LOG_DIR / f"{name}.log"


def last_words(path: Path, lines: int = 15, tail_bytes: int = 1 << 20) -> str:
    """The end of a service's log, for the error that says it exited (a CI run keeps no files): its last lines but
    the Kafka client's retries, which fill a log while the broker is away."""
    try:
        with open(path, "rb") as log:
            start = max(0, log.seek(0, os.SEEK_END) - tail_bytes)
            log.seek(start)
            tail = log.read().decode("utf-8", "replace").splitlines()[1 if start else 0:]  # from a whole line
    except OSError as exc:
        return f"(unreadable: {exc})"
    own = [line for line in tail if '"logger": "aiokafka' not in line]
    return "\n".join(line[:2000] for line in own[-lines:])
