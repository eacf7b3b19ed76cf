"""Stripe's own mock server (`stripe-mock`, a Go module) for the tests: a second Stripe nobody here wrote.

It serves Stripe's OpenAPI fixtures of the API version its release embeds (v0.203.0: 2026-08-26.dahlia)
for every endpoint and validates every request's parameters against Stripe's spec. It is stateless: each
list answers one fixture object and `has_more: false`, and it enforces neither permissions nor rate
limits. Installed with `go install` into `.cache/` (like Kafka's jars) and started on a loopback port.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from stack import CACHE_DIR, StackError
from stack.progress import say

VERSION = "v0.203.0"
MODULE = "github.com/stripe/stripe-mock"
SPEC_API_VERSION = "2026-08-26.dahlia"
INSTALL_DIR = CACHE_DIR / f"stripe-mock-{VERSION}"
BINARY = INSTALL_DIR / "bin" / "stripe-mock"
LISTENING = re.compile(r"Listening for HTTP at address: [^\s]*:(\d+)")


def ensure_installed() -> Path:
    """Builds stripe-mock with `go install` from the Go module proxy unless it is there; returns the binary."""
    if BINARY.exists():
        return BINARY
    go = shutil.which("go")
    if go is None:
        raise StackError("stripe-mock needs Go (https://go.dev/dl/) to be installed; it is built with `go install`")
    say(f"building stripe-mock {VERSION} with go install (about a minute and a half the first time)…")
    env = {**os.environ, "GOBIN": str(BINARY.parent), "GOPATH": str(INSTALL_DIR / "gopath"),
           "GOMODCACHE": str(INSTALL_DIR / "modcache"), "GOCACHE": str(INSTALL_DIR / "gocache"), "GOFLAGS": "-buildvcs=false"}
    result = subprocess.run([go, "install", f"{MODULE}@{VERSION}"], env=env, capture_output=True, text=True)
    if result.returncode != 0 or not BINARY.exists():
        raise StackError(f"go install {MODULE}@{VERSION} failed:\n{result.stderr[-2000:]}")
    shutil.rmtree(INSTALL_DIR / "gocache", ignore_errors=True)  # 100+ MB of build cache, never needed again
    return BINARY


def openapi_spec() -> Path:
    """Returns Stripe's OpenAPI spec (`SPEC_API_VERSION`) that stripe-mock serves, from its installed module."""
    return _embedded("spec3.json")


def openapi_fixtures() -> Path:
    """Returns Stripe's example object of each resource (`fixtures3.json`, the spec's companion; MIT) that
    stripe-mock answers with, from its installed module."""
    return _embedded("fixtures3.json")


def _embedded(name: str) -> Path:
    ensure_installed()
    path = INSTALL_DIR / "modcache" / "github.com" / "stripe" / f"stripe-mock@{VERSION}" / "embedded" / "openapi" / name
    if not path.exists():
        raise StackError(f"stripe-mock's {name} is missing at {path}; delete {INSTALL_DIR} to reinstall it")
    return path


@dataclass
class StripeMock:
    """A running stripe-mock on loopback."""

    process: subprocess.Popen[bytes]
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Stops the server."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start(log_file: Path, timeout_s: float = 30.0) -> StripeMock:
    """Starts stripe-mock on free loopback ports (HTTP and HTTPS both given: it otherwise takes :12112)
    and returns once it answers a request."""
    binary = ensure_installed()
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "wb") as log:
        process = subprocess.Popen([str(binary), "-http-addr", "127.0.0.1:0", "-https-addr", "127.0.0.1:0"],
                                   stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StackError(f"stripe-mock exited at start-up; see {log_file}:\n{log_file.read_text()[-2000:]}")
        found = LISTENING.search(log_file.read_text(errors="replace"))
        if found and _answers(int(found.group(1))):
            return StripeMock(process, int(found.group(1)))
        time.sleep(0.05)
    process.kill()
    raise StackError(f"stripe-mock did not answer within {timeout_s:.0f}s; see {log_file}")


def _answers(port: int) -> bool:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/customers",
                                     headers={"Authorization": "Bearer sk_test_123"})
    try:
        with urllib.request.urlopen(request, timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False
