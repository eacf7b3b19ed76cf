"""Projector scaling, in one run on one machine:
- members: the same pre-filled 6-partition topic applied by 1, 2 and 3 projector processes in one consumer group
  (each run into a freshly migrated database), events/s against one member;
- tenants: the same events as the history of 1 tenant and spread over 1,000 tenants, one member each,
  events/s against the one-tenant run (target: within 20%).

Events/s is measured between 10% and 90% of the events applied, so process start-up and the last partition's
tail are not in it. Run: `.venv/bin/python -m bench.projector_scaling [--events 150000]` (fewer events measure the group's rebalance more than its throughput).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import subprocess
import sys
import time
import uuid
import zlib

import asyncpg

from bench.common import bench_settings, platform
from bench.projector_throughput import fill_topic, make_events
from bench.results import BenchResult, Figure, Target, peak_rss_mib, write_result
from plumbing.settings import Settings
from schemas import Envelope
from stack import REPO_ROOT
from stack.progress import say

DATABASE = "ingestor_bench_scaling"
MEMBER_COUNTS = (1, 2, 3)
SPREAD_TENANTS = 1000


def start_members(settings: Settings, count: int) -> list[subprocess.Popen[bytes]]:
    env = dict(os.environ,
               INGESTOR_KAFKA__BOOTSTRAP_SERVERS=settings.kafka.bootstrap_servers,
               INGESTOR_KAFKA__RAW_TOPIC=settings.kafka.raw_topic,
               INGESTOR_KAFKA__DEAD_LETTER_TOPIC=settings.kafka.dead_letter_topic,
               INGESTOR_KAFKA__PROJECTOR_GROUP=settings.kafka.projector_group,
               INGESTOR_POSTGRES__DSN=settings.postgres.dsn.get_secret_value(),
               INGESTOR_PROJECTOR__METRICS_PORT="0", INGESTOR_LOG__LEVEL="WARNING")
    return [subprocess.Popen([sys.executable, "-m", "service", "projector"], cwd=REPO_ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(count)]


async def applied_rate(settings: Settings, total: int, members: int) -> tuple[float, float]:
    """Runs `members` projector processes until all `total` events are applied; returns (events/s between 10% and
    90% applied, peak RSS of a member in MiB)."""
    conn = await asyncpg.connect(settings.postgres.dsn.get_secret_value())
    procs = start_members(settings, members)
    marks: dict[float, float] = {}
    rss = 0.0
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            done = await conn.fetchval("SELECT count(*) FROM projection.processed_events")
            now = time.monotonic()
            for share in (0.1, 0.9):
                if share not in marks and done >= share * total:
                    marks[share] = now
            if done >= total:
                break
            if any(p.poll() is not None for p in procs):
                raise SystemExit("a projector member exited")
            rss = max([rss, *(peak_rss_mib(p.pid) for p in procs)])
            await asyncio.sleep(0.25)  # sampling the applied count
        else:
            raise SystemExit(f"{members} member(s) did not apply {total} events in time")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
        await conn.close()
    rate = 0.8 * total / max(1e-6, marks[0.9] - marks[0.1])
    say(f"{members} member(s): {rate:,.0f} events/s")
    return rate, rss


async def run_once(envelopes: list[Envelope], members: int, label: str) -> tuple[float, float]:
    settings = await bench_settings(platform(), DATABASE)  # a fresh database and fresh topics for each run
    settings = settings.model_copy(update={"kafka": settings.kafka.model_copy(
        update={"projector_group": f"bench-scaling-{uuid.uuid4().hex[:8]}"})})
    await fill_topic(settings, envelopes)
    say(f"{label}: {len(envelopes):,} events on 6 partitions, {members} member(s)")
    return await applied_rate(settings, len({(e.tenant_id, e.event_id) for e in envelopes}), members)


def spread(envelopes: list[Envelope], tenants: int) -> list[Envelope]:
    """The same events as `tenants` tenants' (each object stays with one tenant, so every history stays whole)."""
    return [dataclasses.replace(e, tenant_id=f"bench_spread_{zlib.crc32(e.object_id.encode()) % tenants:04d}") for e in envelopes]


async def main(count: int) -> None:
    envelopes = await make_events(count)
    one_tenant = [dataclasses.replace(e, tenant_id="bench_one_tenant") for e in envelopes]
    rates: dict[int, float] = {}
    rss: dict[str, float] = {}
    for members in MEMBER_COUNTS:
        rates[members], rss[f"member ({members} in the group)"] = await run_once(envelopes, members, "members")
    single, _ = await run_once(one_tenant, 1, "1 tenant")
    many, _ = await run_once(spread(one_tenant, SPREAD_TENANTS), 1, f"{SPREAD_TENANTS} tenants")
    figures = [Figure(f"projector events/s, {m} member(s) on 6 partitions", rates[m], "events/s",
                      "1 member (same run)", rates[1]) for m in MEMBER_COUNTS]
    figures.append(Figure(f"projector events/s, the events of 1 tenant spread over {SPREAD_TENANTS:,} tenants", many,
                          "events/s", "the same events as 1 tenant's (same run)", single,
                          Target(ratio_at_least=0.8, ratio_at_most=1.2)))
    write_result(BenchResult(
        name="projector_scaling", figures=figures, peak_rss_mib=rss,
        notes=f"{len(envelopes):,} distinct events of simulated 12-month accounts; each run into a freshly migrated "
              f"database and a new topic; members are `ingestor projector` processes. {os.cpu_count()} cores shared "
              "with Kafka, Postgres and this sampler: Postgres's commit work, not the members, bounds the total here.",
    ))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=150_000)
    args = parser.parse_args()
    asyncio.run(main(args.events))
