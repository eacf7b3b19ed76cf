"""One tenant flooding its own signed webhooks, another tenant's deliveries timed meanwhile: what each connection's
share of the receiver (ingestor/receiver/shares.py) keeps of the other tenant's latency.

A tenant signs its own webhooks, so it can send valid deliveries without end. Here it keeps 32 in flight, each a
~430 KB body of small JSON values (about the most work per byte the receiver accepts). The other tenant sends
Stripe-like deliveries at 100 a second (open loop). Measured in one run, one web process after the other: the
product as shipped (shares on, the default settings) and the same process with the shares lifted (as before
them); each process's "alone" figures, the other tenant without the flood, are the baseline.

Run: `.venv/bin/python -m bench.receiver_isolation`.
"""

from __future__ import annotations

import asyncio
import json
import string
import time
from collections import Counter
from dataclasses import dataclass

import aiohttp

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
from stack.progress import say
from stripe_sim.objects import template

VICTIM_RATE = 100.0
STEP_SECONDS = 8.0
FLOOD_WARMUP_SECONDS = 3.0  # the flooding tenant's burst is spent before the other tenant is timed
FLOOD_IN_FLIGHT = 32
FLOOD_BODY_BYTES = 256 * 1024


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
    pairs = FLOOD_BODY_BYTES // 12
    metadata = {letters_key(i): "x" for i in range(pairs)}
    return [signed_delivery(stripe_event(10_000_000 + n, "customer.updated",
                                         {**template("customer"), "metadata": metadata}, now), now, secret)
            for n in range(count)]


@dataclass
class Flood:
    """What the flooding tenant got: answers by status."""

    statuses: Counter[int]
    seconds: float


async def flood(url: str, deliveries: list[tuple[bytes, dict[str, str]]], stop: asyncio.Event) -> Flood:
    """Keeps FLOOD_IN_FLIGHT deliveries in flight until `stop` is set; counts the answers by status."""
    statuses: Counter[int] = Counter()
    connector = aiohttp.TCPConnector(limit=FLOOD_IN_FLIGHT)
    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector) as session:
        async def worker(offset: int) -> None:
            i = offset
            while not stop.is_set():
                body, headers = deliveries[i % len(deliveries)]
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    statuses[resp.status] += 1
                i += FLOOD_IN_FLIGHT
        await asyncio.gather(*(worker(k) for k in range(FLOOD_IN_FLIGHT)))
    return Flood(statuses, time.perf_counter() - started)


@dataclass
class Flooded:
    """The other tenant's deliveries under one flood, and what the flood got."""

    victim: LoadResult
    flood: Flood
    cpu_s_per_s: float  # the web process's CPU seconds per second during the timed step


def describe(name: str, r: LoadResult) -> None:
    say(f"{name}: {r.ok}/{r.sent} acknowledged, p50 {r.percentile(50):.1f} ms, p99 {r.percentile(99):.1f} ms")


async def under_flood(url_victim: str, victim: list[tuple[bytes, dict[str, str]]], url_flooder: str,
                      flooder: list[tuple[bytes, dict[str, str]]], pid: int, label: str) -> Flooded:
    """Times the other tenant while `flooder` is sent to `url_flooder` (after the flood's warm-up)."""
    stop = asyncio.Event()
    flooding = asyncio.create_task(flood(url_flooder, flooder, stop))
    await asyncio.sleep(FLOOD_WARMUP_SECONDS)  # the flood's pace, not synchronisation
    cpu_before, t_before = cpu_seconds(pid), time.perf_counter()
    timed = await open_loop(url_victim, victim, VICTIM_RATE, STEP_SECONDS)
    cpu = (cpu_seconds(pid) - cpu_before) / (time.perf_counter() - t_before)
    stop.set()
    got = await flooding
    describe(f"{label}: other tenant", timed)
    say(f"{label}: flood answers {dict(got.statuses)} in {got.seconds:.1f} s; web process CPU {cpu:.2f} s/s")
    return Flooded(timed, got, cpu)


@dataclass
class Phase:
    """The other tenant's deliveries alone and under each flood, in one web process."""

    alone: LoadResult
    floods: dict[str, Flooded]


async def run_process(share_env: dict[str, str], label: str, settings: Settings, master: str, victim_token: str,
                      victim: list[tuple[bytes, dict[str, str]]],
                      floods: dict[str, tuple[str, list[tuple[bytes, dict[str, str]]]]]) -> Phase:
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


async def main() -> None:
    settings = await bench_settings(platform())
    await ensure_topics(settings.kafka)
    master = generate_master_key("bench")
    victim_token, flooder_token = await connected_tenant(settings, master), await connected_tenant(settings, master)
    victim, signed = mixed_deliveries(2000), flood_deliveries(64, SECRET)
    stranger_token = "whk_" + "0" * 40  # no connection's: what anyone can send, without any tenant's URL
    body_bytes = len(signed[0][0])
    say(f"flood bodies: {body_bytes:,} bytes, {len(json.loads(signed[0][0])['data']['object']['metadata']):,} "
        "metadata values each")
    shared = await run_process({}, "shares on", settings, master, victim_token, victim,
                               {"tenant's flood": (flooder_token, signed),
                                "stranger's flood": (stranger_token, signed)})
    lifted = await run_process(UNBOUNDED_SHARE_ENV, "shares lifted", settings, master, victim_token, victim,
                               {"tenant's flood": (flooder_token, signed)})

    defaults = ReceiverSettings()
    flood_cost = 1 + body_bytes / defaults.share_bytes_per_unit
    on, off = shared.floods["tenant's flood"], lifted.floods["tenant's flood"]
    stranger = shared.floods["stranger's flood"]
    write_result(BenchResult(
        name="receiver_isolation",
        figures=[
            Figure("other tenant's p99 under a tenant's flood, shares on", on.victim.percentile(99), "ms",
                   "its p99 under a stranger's flood (to no tenant's URL), same process",
                   stranger.victim.percentile(99),
                   Target(ratio_at_most=1.5),
                   notes="what a tenant's own flood costs others beyond what anyone's flood of refused deliveries "
                         "costs (the edge's concern)"),
            Figure("other tenant's p99 under a tenant's flood, shares on (vs alone)", on.victim.percentile(99), "ms",
                   "its p99 alone, same process", shared.alone.percentile(99)),
            Figure("other tenant's p99 under a stranger's flood (vs alone)", stranger.victim.percentile(99), "ms",
                   "its p99 alone, same process", shared.alone.percentile(99),
                   notes="each delivery read whole and its signature's time spent before the 404"),
            Figure("other tenant's p99 under a tenant's flood, shares lifted (as before them)",
                   off.victim.percentile(99), "ms", "its p99 alone, same process", lifted.alone.percentile(99)),
            Figure("other tenant's p50 under a tenant's flood, shares on", on.victim.percentile(50), "ms",
                   "its p50 alone, same process", shared.alone.percentile(50)),
            Figure("other tenant's p50 under a tenant's flood, shares lifted", off.victim.percentile(50), "ms",
                   "its p50 alone, same process", lifted.alone.percentile(50)),
            Figure("other tenant's deliveries acknowledged under a tenant's flood, shares on",
                   100 * on.victim.ok / max(1, on.victim.sent), "%", "alone",
                   100 * shared.alone.ok / max(1, shared.alone.sent), Target(at_least=100.0)),
            Figure("flooding tenant's deliveries accepted, shares on", on.flood.statuses[200] / on.flood.seconds,
                   "deliveries/s", "its share ÷ the cost of one of its bodies", defaults.share_units_per_s / flood_cost,
                   notes=f"answers by status {dict(sorted(on.flood.statuses.items()))} in {on.flood.seconds:.1f} s; a "
                         f"{body_bytes:,}-byte body costs {flood_cost:.0f} units, the share is "
                         f"{defaults.share_units_per_s:g} units/s with a burst of {defaults.share_burst_units:g} "
                         "(partly spent in the flood's warm-up, before timing)"),
            Figure("flooding tenant's deliveries accepted, shares lifted", off.flood.statuses[200] / off.flood.seconds,
                   "deliveries/s", notes=f"answers by status {dict(sorted(off.flood.statuses.items()))}"),
            *[Figure(f"web process CPU during the {name}", f.cpu_s_per_s, "CPU s/s")
              for name, f in (("tenant's flood, shares on", on), ("stranger's flood", stranger),
                              ("tenant's flood, shares lifted", off))],
        ],
        notes=f"One web process at a time on the real broker and Postgres; the load generator (both tenants' aiohttp "
              f"clients) runs in the benchmark process on the same 2-core machine. The other tenant sends mixed "
              f"Stripe-like deliveries (1-5 KB) at {VICTIM_RATE:g}/s for {STEP_SECONDS:g} s, open loop; a flood "
              f"keeps {FLOOD_IN_FLIGHT} deliveries of {body_bytes:,} bytes (small JSON values) in flight, started "
              f"{FLOOD_WARMUP_SECONDS:g} s before the timed step: the tenant's own, signed with its secret, to its URL "
              "(refused past its share before parsing, and before reading once its bucket is empty), or a "
              "stranger's to a URL of no tenant (read whole, its signature's time spent, 404).",
    ))


if __name__ == "__main__":
    asyncio.run(main())
