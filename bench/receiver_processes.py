"""Webhook receivers as processes are added: 1, 2 and 4 web processes on one port (SO_REUSEPORT, the kernel
spreads connections), the same signed mixed deliveries at 64 in flight, each 2xx durable in Kafka (acks=all).
Figures: acked events/s per process count (ratio to one process, measured in the same run) and the receivers'
CPU per delivery — what a machine's cores buy.

Run: `.venv/bin/python -m bench.receiver_processes`.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from bench.common import UNBOUNDED_SHARE_ENV, bench_settings, platform
from bench.load import closed_loop
from bench.receiver_throughput import (
    connected_tenant,
    cpu_seconds,
    describe,
    free_port,
    mixed_deliveries,
    wait_ready,
)
from bench.results import BenchResult, Figure, peak_rss_mib, write_result
from ingestor.connections.vault import generate_master_key
from plumbing.kafka import ensure_topics
from plumbing.settings import Settings
from stack import REPO_ROOT
from stack.progress import say

PROCESS_COUNTS = (1, 2, 4)
SECONDS = 8.0


def start_receivers(settings: Settings, master: str, port: int, count: int) -> list[subprocess.Popen[bytes]]:
    env = dict(os.environ,
               INGESTOR_KAFKA__BOOTSTRAP_SERVERS=settings.kafka.bootstrap_servers,
               INGESTOR_KAFKA__RAW_TOPIC=settings.kafka.raw_topic,
               INGESTOR_KAFKA__DEAD_LETTER_TOPIC=settings.kafka.dead_letter_topic,
               INGESTOR_POSTGRES__DSN=settings.postgres.dsn.get_secret_value(),
               INGESTOR_VAULT__MASTER_KEYS=master, INGESTOR_HTTP__PORT=str(port), INGESTOR_HTTP__REUSE_PORT="true",
               INGESTOR_HTTP__METRICS_PORT="0", INGESTOR_LOG__LEVEL="WARNING", INGESTOR_RECEIVER__TARGET_CACHE_TTL_S="30",
               **UNBOUNDED_SHARE_ENV)
    return [subprocess.Popen([sys.executable, "-m", "service", "web"], cwd=REPO_ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(count)]


async def main() -> None:
    settings = await bench_settings(platform())
    await ensure_topics(settings.kafka)
    master = generate_master_key("bench")
    token = await connected_tenant(settings, master)
    deliveries = mixed_deliveries(5000)
    achieved: dict[int, float] = {}
    cpu_us: dict[int, float] = {}
    rss: dict[str, float] = {}
    for count in PROCESS_COUNTS:
        port = free_port()
        receivers = start_receivers(settings, master, port, count)
        try:
            await wait_ready(f"http://127.0.0.1:{port}/readyz")
            url = f"http://127.0.0.1:{port}/webhooks/stripe/{token}"
            await closed_loop(url, deliveries, 16, 2.0)  # warm-up: every process gets connections and caches
            before = sum(cpu_seconds(p.pid) for p in receivers)
            result = await closed_loop(url, deliveries, 64, SECONDS)
            cpu_us[count] = (sum(cpu_seconds(p.pid) for p in receivers) - before) / max(1, result.ok) * 1e6
            achieved[count] = result.achieved_per_s
            describe(f"{count} receiver process(es)", result)
            say(f"{count} receiver process(es): {cpu_us[count]:,.0f} µs of receiver CPU per delivery")
            rss[f"{count} receivers (each, max)"] = max(peak_rss_mib(p.pid) for p in receivers)
        finally:
            for proc in receivers:
                proc.terminate()
            for proc in receivers:
                proc.wait(timeout=30)
    one = "one receiver process (same run)"
    figures = []
    for count in PROCESS_COUNTS:
        figures.append(Figure(f"acked events/s with {count} receiver process(es) on one port", achieved[count],
                              "events/s", one, achieved[1],
                              notes=f"{cpu_us[count]:,.0f} µs of receiver CPU per delivery"))
        figures.append(Figure(f"receiver CPU per delivery, {count} process(es)", cpu_us[count], "µs",
                              "one process", cpu_us[1]))
    write_result(BenchResult(
        name="receiver_processes", figures=figures, peak_rss_mib=rss,
        notes=f"{os.cpu_count()} cores shared by the receivers, the load generator (this process: aiohttp client, "
              "64 connections), Kafka and Postgres. SO_REUSEPORT spreads connections over the processes. On this "
              "machine the cores, not the receiver, bound the total: more processes than cores add no throughput; "
              "the CPU per delivery is what sizes a deployment (docs/scaling.md).",
    ))


if __name__ == "__main__":
    asyncio.run(main())
