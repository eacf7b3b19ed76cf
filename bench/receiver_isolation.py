"""One tenant flooding its own URL, another tenant's deliveries timed meanwhile: what each connection's share of
the receiver (ingestor/receiver/shares.py) keeps of the other tenant's latency.

A tenant signs its own webhooks, so it can send valid deliveries without end. Two floods, each keeping 32
deliveries in flight from a process of its own (bench/flood_client.py): ~430 KB bodies of small JSON values (the
receiver refuses them past the share before reading them), and the tenant's own typical events (the share is then
spent on deliveries the receiver parses and publishes). The other tenant sends Stripe-like deliveries at 100 a
second (open loop, latency from when each was due). Measured in one run, one web process after the other: the
product as shipped (shares on) and the same process with the shares lifted (as before them); each process's
"alone" figures, the other tenant without a flood, are the baseline; a stranger's flood of the large bodies to
no tenant's URL shows what no per-tenant rule can refuse (the edge's concern).

Run: `.venv/bin/python -m bench.receiver_isolation`.
"""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import string
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass

from bench.common import UNBOUNDED_SHARE_ENV, bench_settings, platform
from bench.load import LoadResult, open_loop
from bench.receiver_throughput import (
    SECRET,
    connected_tenant,
    cpu_seconds,
    free_port,
    mixed_deliveries,
    signed_delivery,
    start_receiver,
    stripe_event,
    wait_ready,
)
from bench.results import BenchResult, Figure, Target, write_result
from ingestor.connections.vault import generate_master_key
from plumbing.kafka import ensure_topics
from plumbing.settings import ReceiverSettings, Settings
from stack import REPO_ROOT
from stack.progress import say
from stripe_sim.objects import template

VICTIM_RATE = 100.0  # its deliveries cost ~1.8 units each: 180 of its 200 a second, within its share
STEP_SECONDS = 15.0
FLOOD_WARMUP_SECONDS = 3.0  # the flooding tenant's burst is spent before the other tenant is timed
FLOOD_IN_FLIGHT = 32
PADDING_VALUES = 22_000  # small metadata values: ~430 KB a body, pretty-printed as Stripe sends it
Deliveries = list[tuple[bytes, dict[str, str]]]


def letters_key(n: int) -> str:
    """A key of letters only (digits would make the body refused for its digits, which costs nothing)."""
    out = ""
    while True:
        n, rest = divmod(n, 26)
        out = string.ascii_lowercase[rest] + out
        if n == 0:
            return out


def flood_deliveries(count: int, secret: str) -> list[tuple[bytes, dict[str, str]]]:
    """Distinct customer.updated deliveries padded with ~22,000 small metadata values (~430 KB pretty-printed),
    signed with `secret`."""
    now = int(time.time())
    metadata = {letters_key(i): "x" for i in range(PADDING_VALUES)}
    return [signed_delivery(stripe_event(10_000_000 + n, "customer.updated",
                                         {**template("customer"), "metadata": metadata}, now), now, secret)
            for n in range(count)]


@dataclass
class Flooded:
    """The other tenant's deliveries under one flood, and the flood's answers within the timed window."""

    victim: LoadResult
    flood: Counter[int]
    cpu_s_per_s: float  # the web process's CPU seconds per second during the timed step


def describe(name: str, r: LoadResult) -> None:
    say(f"{name}: {r.ok}/{r.sent} acknowledged {dict(r.statuses)}, p50 {r.percentile(50):.1f} ms, "
        f"p99 {r.percentile_counting_refusals(99):.1f} ms, generator at most {r.most_late_ms:.1f} ms late")


async def under_flood(url_victim: str, victim: Deliveries, url_flooder: str, flooder: Deliveries, pid: int,
                      label: str) -> Flooded:
    """Times the other tenant while a flood process sends `flooder` to `url_flooder` (after the flood's warm-up)."""
    with tempfile.NamedTemporaryFile(suffix=".pickle", delete=False) as file:
        pickle.dump(flooder, file)
    flooding = subprocess.Popen(
        [sys.executable, "-m", "bench.flood_client", url_flooder, str(FLOOD_IN_FLIGHT),
         str(FLOOD_WARMUP_SECONDS + STEP_SECONDS + 1), file.name], cwd=REPO_ROOT, stdout=subprocess.PIPE)
    try:
        await asyncio.sleep(FLOOD_WARMUP_SECONDS)  # the flood's pace, not synchronisation
        cpu_before, t_before, window_from = cpu_seconds(pid), time.perf_counter(), time.time()
        timed = await open_loop(url_victim, victim, VICTIM_RATE, STEP_SECONDS)
        cpu = (cpu_seconds(pid) - cpu_before) / (time.perf_counter() - t_before)
        window_to = time.time()
        out, _ = await asyncio.to_thread(flooding.communicate, timeout=120)
    finally:
        os.unlink(file.name)
    answered = {int(status): times for status, times in json.loads(out).items()}
    in_window = Counter({status: sum(window_from <= t <= window_to for t in times)
                         for status, times in answered.items()})
    describe(f"{label}: other tenant", timed)
    say(f"{label}: flood answers in the timed {window_to - window_from:.1f} s {dict(in_window)}; "
        f"web process CPU {cpu:.2f} s/s")
    return Flooded(timed, in_window, cpu)


@dataclass
class Phase:
    """The other tenant's deliveries alone and under each flood, in one web process."""

    alone: LoadResult
    floods: dict[str, Flooded]


async def run_process(share_env: dict[str, str], label: str, settings: Settings, master: str, victim_token: str,
                      victim: Deliveries, floods: dict[str, tuple[str, Deliveries]]) -> Phase:
    """Starts a web process, times the other tenant alone, then under each flood (name → URL token, deliveries)."""
    port = free_port()
    process = start_receiver(settings, master, port, share_env=share_env)
    try:
        await wait_ready(f"http://127.0.0.1:{port}/readyz")
        base = f"http://127.0.0.1:{port}/webhooks/stripe/"
        await open_loop(base + victim_token, victim, VICTIM_RATE, 2.0)  # warm-up: connections, caches
        alone = await open_loop(base + victim_token, victim, VICTIM_RATE, STEP_SECONDS)
        describe(f"{label}, alone: other tenant", alone)
        flooded = {name: await under_flood(base + victim_token, victim, base + token, deliveries, process.pid,
                                           f"{label}, {name}")
                   for name, (token, deliveries) in floods.items()}
        return Phase(alone, flooded)
    finally:
        process.terminate()
        process.wait(timeout=30)


LARGE, TYPICAL, STRANGER = "tenant's flood of large bodies", "tenant's flood of typical events", "stranger's flood"


async def main() -> None:
    settings = await bench_settings(platform())
    await ensure_topics(settings.kafka)
    master = generate_master_key("bench")
    victim_token, flooder_token = await connected_tenant(settings, master), await connected_tenant(settings, master)
    victim, large, typical = mixed_deliveries(3000), flood_deliveries(64, SECRET), mixed_deliveries(3000)
    stranger_token = "whk_" + "0" * 40  # no connection's: what anyone can send, without any tenant's URL
    body_bytes = len(large[0][0])
    say(f"large flood bodies: {body_bytes:,} bytes, {PADDING_VALUES:,} metadata values each")
    shared = await run_process({}, "shares on", settings, master, victim_token, victim, {
        LARGE: (flooder_token, large), TYPICAL: (flooder_token, typical), STRANGER: (stranger_token, large)})
    lifted = await run_process(UNBOUNDED_SHARE_ENV, "shares lifted", settings, master, victim_token, victim,
                               {LARGE: (flooder_token, large), TYPICAL: (flooder_token, typical)})
    write_result(BenchResult(name="receiver_isolation", figures=figures(shared, lifted, body_bytes), notes=(
        f"One web process at a time on the real broker and Postgres, on a 2-core machine with both clients. The "
        f"other tenant sends mixed Stripe-like deliveries (1-5 KB) at {VICTIM_RATE:g}/s for {STEP_SECONDS:g} s, "
        f"open loop, each delivery's latency from when it was due, one not acknowledged counting as infinitely late "
        f"in its p99. Each flood runs in its own process, {FLOOD_IN_FLIGHT} deliveries in flight, started "
        f"{FLOOD_WARMUP_SECONDS:g} s before the timed step (the tenant's burst spent by then); its answers are "
        f"counted within the timed step. The large bodies ({body_bytes:,} bytes) cost 1 + bytes/4 KiB units, more "
        "than the bucket holds once drained, so past the burst each is refused on its headers (429, the "
        "connection closed, the body unread) until the bucket can pay; the typical events are parsed and "
        "published while the share lasts. The stranger's flood goes to a URL of no connection: each body is read "
        "whole and its signature's time spent before the 404.")))


def figures(shared: Phase, lifted: Phase, body_bytes: int) -> list[Figure]:
    """The figures of one run: each flood against the other tenant alone, and the shares against none."""
    defaults = ReceiverSettings()
    out = []
    for name in (LARGE, TYPICAL):
        on, off = shared.floods[name], lifted.floods[name]
        out += [
            Figure(f"other tenant's p99 under a {name}, shares on", on.victim.percentile_counting_refusals(99), "ms",
                   "its p99 alone, same process", shared.alone.percentile_counting_refusals(99),
                   Target(at_most=50, ratio_at_most=3)),
            Figure(f"other tenant's p99 under a {name}, shares on vs lifted",
                   on.victim.percentile_counting_refusals(99), "ms",
                   "its p99 under the same flood with the shares lifted (another process, same run)",
                   off.victim.percentile_counting_refusals(99),
                   notes=f"with the shares lifted its p99 alone was {lifted.alone.percentile_counting_refusals(99):.1f}"
                         f" ms, and {off.victim.acknowledged_percent:.1f}% of its deliveries were acknowledged"),
            Figure(f"other tenant's p50 under a {name}, shares on", on.victim.percentile(50), "ms",
                   "its p50 alone, same process", shared.alone.percentile(50)),
            Figure(f"other tenant's deliveries acknowledged under a {name}, shares on", on.victim.acknowledged_percent,
                   "%", "alone", shared.alone.acknowledged_percent, Target(at_least=100.0),
                   notes=f"answers {dict(on.victim.statuses)}"),
            Figure(f"web process CPU during the {name}, shares on", on.cpu_s_per_s, "CPU s/s",
                   "shares lifted", off.cpu_s_per_s,
                   notes=f"flood answers in the timed step: {dict(on.flood)} (shares lifted: {dict(off.flood)})"),
        ]
    cost = 1 + body_bytes / defaults.share_bytes_per_unit
    accepted = shared.floods[LARGE].flood[200] / STEP_SECONDS
    out.append(Figure("flooding tenant's large bodies accepted during the timed step, shares on", accepted,
                      "deliveries/s", "its share ÷ the cost of one", defaults.share_units_per_s / cost,
                      notes=f"a {body_bytes:,}-byte body costs {cost:.0f} units of a share of "
                            f"{defaults.share_units_per_s:g} units/s"))
    stranger = shared.floods[STRANGER]
    out += [
        Figure("other tenant's p99 under a stranger's flood to no tenant's URL",
               stranger.victim.percentile_counting_refusals(99), "ms", "its p99 alone, same process",
               shared.alone.percentile_counting_refusals(99),
               notes=f"{stranger.victim.acknowledged_percent:.1f}% acknowledged; flood answers in the timed step "
                     f"{dict(stranger.flood)}; web process CPU {stranger.cpu_s_per_s:.2f} s/s. No per-tenant rule "
                     "refuses it before reading: the edge's concern"),
        Figure("other tenant's generator, latest send behind schedule (all steps)",
               max(r.most_late_ms for r in (shared.alone, lifted.alone, *(f.victim for f in shared.floods.values()),
                                            *(f.victim for f in lifted.floods.values()))), "ms",
               notes="the timed client's own lag, counted in its latencies (they run from when each was due)"),
    ]
    return out


if __name__ == "__main__":
    asyncio.run(main())
