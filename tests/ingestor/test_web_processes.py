"""Two web processes on one port (http.reuse_port): the kernel spreads connections over both, each answers
signed deliveries itself — every one acknowledged is on the topic — and neither needs the other."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time

import aiohttp
import pytest
import stripe

from bench.receiver_throughput import SECRET, connected_tenant
from ingestor.connections.vault import generate_master_key
from plumbing.kafka import ensure_topics, topic_end_offsets
from plumbing.settings import Settings
from stack import REPO_ROOT
from tests.faults.harness import free_port
from tests.helpers import POLL_INTERVAL_S

pytestmark = pytest.mark.integration
DELIVERIES = 120


def signed(number: int) -> tuple[str, dict[str, str]]:
    now = int(time.time())
    body = json.dumps({"id": f"evt_two_webs_{number:04d}", "object": "event", "api_version": "2025-03-31.basil",
                       "created": now, "livemode": False, "type": "customer.updated",
                       "data": {"object": {"id": f"cus_two_webs_{number:04d}", "object": "customer", "livemode": False,
                                           "created": now, "email": None, "name": None}}})
    return body, {"Content-Type": "application/json",
                  "Stripe-Signature": stripe.WebhookSignature.generate_signature_header(body, SECRET, now)}


def listeners(port: int) -> int:
    """Sockets listening on `port` (TCP state 0A in /proc/net/tcp): one per process sharing it."""
    with open("/proc/net/tcp") as table:
        return sum(1 for line in table.readlines()[1:]
                   if line.split()[1].endswith(f":{port:04X}") and line.split()[3] == "0A")


async def served_by(http: aiohttp.ClientSession, metrics_port: int) -> float:
    async with http.get(f"http://127.0.0.1:{metrics_port}/metrics") as resp:
        text = await resp.text()
    return sum(float(m) for m in re.findall(r'^webhook_requests_total\{outcome="published"\} (\S+)$', text, re.MULTILINE))


async def test_two_web_processes_share_one_port_and_each_acknowledges_only_what_is_stored(
    settings: Settings
) -> None:
    await ensure_topics(settings.kafka)
    master = generate_master_key("webs")
    token = await connected_tenant(settings, master)  # signed with the bench's SECRET
    port, metrics_ports = free_port(), [free_port(), free_port()]
    before = sum((await topic_end_offsets(settings.kafka, settings.kafka.raw_topic)).values())
    procs = [subprocess.Popen([sys.executable, "-m", "service", "web"], cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env=dict(
                                  os.environ, INGESTOR_KAFKA__BOOTSTRAP_SERVERS=settings.kafka.bootstrap_servers,
                                  INGESTOR_KAFKA__RAW_TOPIC=settings.kafka.raw_topic,
                                  INGESTOR_KAFKA__DEAD_LETTER_TOPIC=settings.kafka.dead_letter_topic,
                                  INGESTOR_POSTGRES__DSN=settings.postgres.dsn.get_secret_value(),
                                  INGESTOR_VAULT__MASTER_KEYS=master, INGESTOR_HTTP__PORT=str(port),
                                  INGESTOR_HTTP__REUSE_PORT="true", INGESTOR_HTTP__METRICS_PORT=str(metrics),
                                  INGESTOR_LOG__LEVEL="WARNING"))
             for metrics in metrics_ports]
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:  # a connection each
            deadline = time.monotonic() + 60
            while listeners(port) < 2:  # both processes bound the port (each readies its metrics port first)
                assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "the web processes did not start"
                await asyncio.sleep(POLL_INTERVAL_S)
            while True:
                try:
                    async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "the web processes did not start"
                await asyncio.sleep(POLL_INTERVAL_S)
            answers = []
            for number in range(DELIVERIES):
                body, headers = signed(number)
                async with http.post(f"http://127.0.0.1:{port}/webhooks/stripe/{token}", data=body, headers=headers) as resp:
                    answers.append(resp.status)
            counts = [await served_by(http, m) for m in metrics_ports]
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=30)
    assert answers == [200] * DELIVERIES
    assert sum(counts) == DELIVERIES and min(counts) > 0, f"both processes served deliveries: {counts}"
    after = sum((await topic_end_offsets(settings.kafka, settings.kafka.raw_topic)).values())
    assert after - before == DELIVERIES, "every acknowledged delivery is on the topic"
