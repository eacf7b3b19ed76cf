"""Import throughput as a share of the Stripe rate budget: objects/s ÷ (allowed requests/s × 100).

The simulator runs in its own process (as Stripe would be remote) with its rate limit raised out
of the way; the importer runs here against the real Kafka and Postgres with the default test-mode
budget (20 requests/s). A ratio of 1.0 means every allowed request brought back a full page.
Run: `.venv/bin/python -m bench.import_throughput [--customers 1500]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from datetime import datetime, timezone

import asyncpg

from bench.results import BenchResult, Figure, Target, own_peak_rss_mib, write_result
from ingestor.connections.service import import_window
from ingestor.connections.store import PostgresConnectionStore
from ingestor.connections.tenant_store import PostgresTenantStore
from ingestor.connections.vault import MasterKeyring, generate_master_key
from ingestor.sources.checkpoints import PostgresCheckpoints
from ingestor.stripe_api.catalog import IMPORTED
from plumbing.kafka import ensure_topics
from plumbing.settings import KafkaSettings, PostgresSettings, ReaderSettings, Settings, StripeSettings
from service.admin import migrate_database
from service.worker import open_worker
from stack.up import start_platform


async def main(customers: int, database: str) -> None:
    platform = start_platform()
    sim = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "stripe_sim", "--port", "0", "--seed", "3", "--customers", str(customers),
        stdout=asyncio.subprocess.PIPE)
    assert sim.stdout is not None
    info = json.loads(await sim.stdout.readline())
    base_url, account = info["base_url"], info["account"]
    try:
        import aiohttp

        async with aiohttp.ClientSession() as http:
            await http.post(f"{base_url}/_sim/accounts/{account['id']}/rate_limit", json={"per_second": 10_000})
        settings = Settings(
            kafka=KafkaSettings(bootstrap_servers=platform.kafka.bootstrap_servers,
                                raw_topic=f"bench.import.{uuid.uuid4().hex[:8]}"),
            postgres=PostgresSettings(dsn=platform.postgres_dsn(database)),  # type: ignore[arg-type]
            stripe=StripeSettings(api_base=base_url),
        )
        await ensure_topics(settings.kafka)
        conn = await asyncpg.connect(settings.postgres.dsn.get_secret_value())
        await migrate_database(conn)
        await conn.close()
        keyring = MasterKeyring.from_setting(generate_master_key("bench"))
        async with open_worker(settings, keyring) as worker:
            store = PostgresConnectionStore(worker.pool, keyring)
            tenant_id, _ = await PostgresTenantStore(worker.pool, keyring, ReaderSettings()).create_tenant("bench")
            connection_id, _ = await store.create_connection(tenant_id, False)
            await store.store_key(connection_id, account["restricted_key"], "rk_test_…", _utcnow())
            start, end = import_window(time.time(), 12)
            await PostgresCheckpoints(worker.pool).start_import(connection_id, [r.name for r in IMPORTED], start, end, "bench")
            started = time.perf_counter()
            outcome = await worker.importer.run_connection(connection_id)
            elapsed = time.perf_counter() - started
            checkpoints = await worker.checkpoints.import_checkpoints(connection_id)
        objects = sum(c.objects_published for c in checkpoints)
        rate = settings.stripe.test_requests_per_second
        throughput = objects / elapsed
        ratio = throughput / (rate * 100)
        result = BenchResult("import_throughput", notes=(
            f"{customers} simulated customers over 12 months; outcome {outcome.state}; {objects} objects in "
            f"{elapsed:.1f}s; simulator in its own process; Kafka acks=all; checkpoint per page"))
        result.figures.append(Figure("objects per second", throughput, "objects/s",
                                     baseline_name="budget (requests/s × 100)", baseline_value=rate * 100,
                                     target=Target(ratio_at_least=0.9)))
        result.peak_rss_mib["importer"] = own_peak_rss_mib()
        write_result(result)
    finally:
        sim.terminate()
        await sim.wait()


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=1500)
    parser.add_argument("--database", default="ingestor", help="a migrated database of the local Postgres")
    args = parser.parse_args()
    asyncio.run(main(args.customers, args.database))
