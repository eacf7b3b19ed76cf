"""The whole product (web, worker, projector as processes) on a three-node Kafka cluster — topics with three
replicas and min.insync.replicas=2, producers unchanged (acks=all, idempotent) — while nodes die: one node
SIGKILLed during webhook load and the import, then the active controller's node, then a node back with an
empty data directory, then two nodes at once. Each time: 0 lost, 0 double-applied, tables equal the simulator's
ground truth; the receiver answers 503 only while fewer than two replicas can be in sync (two nodes down).

The cluster is the local stack's (`ingestor up --brokers 3`, stack/kafka_cluster.py), with its own state directory
and ports (9292–9297, `STACK_KAFKA_TEST_CLUSTER_PORT`).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from plumbing.kafka import ensure_topics
from plumbing.settings import KafkaSettings, PostgresSettings, Settings
from stack import REPO_ROOT, STATE_DIR
from stack.kafka_cluster import KafkaCluster
from stack.up import Platform
from tests.faults.harness import Product, Tenant, running_product, scale
from tests.faults.test_fault_suite import failed_deliveries

pytestmark = [pytest.mark.integration, pytest.mark.faults]
CUSTOMERS, _ = scale()
RESULTS: list[dict[str, Any]] = []


@pytest.fixture(scope="module")
def cluster() -> Iterator[KafkaCluster]:
    # Its own state and ports, never the cluster a developer started with `ingestor up --brokers 3`.
    nodes = KafkaCluster(base_port=int(os.environ.get("STACK_KAFKA_TEST_CLUSTER_PORT", 9292)),
                         state_dir=STATE_DIR / "kafka-cluster-test")
    for node in nodes.running():  # a fresh cluster each run: what an earlier run left is not this test's
        nodes.kill(node)
    shutil.rmtree(nodes.state_dir, ignore_errors=True)
    nodes.start()
    yield nodes
    for node in nodes.running():  # its data goes with it: SIGKILL spares the nodes' controlled shutdown
        nodes.kill(node)


@pytest.fixture(scope="module")
async def product(platform: Platform, clean_database: str, cluster: KafkaCluster) -> AsyncIterator[Product]:
    suffix = uuid.uuid4().hex[:8]
    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers=cluster.bootstrap_servers, raw_topic=f"cluster.raw.{suffix}",
                            dead_letter_topic=f"cluster.dlq.{suffix}", projector_group=f"cluster-{suffix}",
                            raw_partitions=3, replication_factor=3),
        postgres=PostgresSettings(dsn=clean_database),  # type: ignore[arg-type]
    )
    await ensure_topics(settings.kafka)
    # A node's death is noticed within the brokers' 3 s session, then a controller election, fencing and leader
    # moves follow (6 to 8 s here, more on a slower machine): a publish may wait out that failover, with room.
    env = {"INGESTOR_KAFKA__REPLICATION_FACTOR": "3", "INGESTOR_KAFKA__SEND_TIMEOUT_S": "21",
           "INGESTOR_RECEIVER__PUBLISH_TIMEOUT_S": "20"}
    async with running_product(settings, clean_database, seed=6060, delivery_timeout_s=25, env=env) as product:
        yield product
    lines = ["| fault | events | lost | double-applied | tables equal ground truth | receiver 503s | time to recover |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['fault']} | {r['events']} | {r['lost']} | {r['double_applied']} | "
              f"{'yes' if not r['mismatched'] else 'NO: ' + str(r['mismatched'])} | {r['answers_503']} | "
              f"{r['recover_s']:.1f} s |" for r in RESULTS]
    (REPO_ROOT / "test-artifacts").mkdir(exist_ok=True)
    (REPO_ROOT / "test-artifacts" / "cluster-faults.md").write_text("\n".join(lines) + "\n")


async def in_sync_replicas(cluster: KafkaCluster, topic: str) -> list[int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=cluster.bootstrap_servers, client_id="cluster-faults")
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
        return [len(p["isr"]) for p in described[0]["partitions"]]
    finally:
        await admin.close()


async def all_in_sync(p: Product, cluster: KafkaCluster) -> None:
    async def three() -> bool:
        return all(n == 3 for n in await in_sync_replicas(cluster, p.settings.kafka.raw_topic))
    await p.wait("every partition back to three in-sync replicas", three, 120)


async def one_node_killed(p: Product, cluster: KafkaCluster) -> None:
    await asyncio.sleep(1.0)  # a moment into the load, not a synchronisation
    victim = next(n for n in cluster.running() if n != cluster.active_controller())
    await asyncio.to_thread(cluster.kill, victim)
    await asyncio.sleep(6)  # the load goes on with one node down
    await asyncio.to_thread(cluster.restart, victim)


async def controller_killed(p: Product, cluster: KafkaCluster) -> None:
    await asyncio.sleep(1.0)  # a moment into the load, not a synchronisation
    leader = cluster.active_controller()
    assert leader is not None
    await asyncio.to_thread(cluster.kill, leader)
    await asyncio.sleep(6)  # the load goes on without the controller's node
    await asyncio.to_thread(cluster.restart, leader)


async def empty_data_directory(p: Product, cluster: KafkaCluster) -> None:
    await asyncio.sleep(1.0)  # a moment into the load, not a synchronisation
    victim = cluster.running()[-1]
    await asyncio.to_thread(cluster.kill, victim)
    await asyncio.sleep(3)  # the node stays down this long before its disk is replaced
    await asyncio.to_thread(cluster.restart, victim, True)


async def two_nodes_killed(p: Product, cluster: KafkaCluster) -> None:
    await asyncio.sleep(1.0)  # a moment into the load, not a synchronisation
    victims = cluster.running()[:2]
    killed_at = time.time()
    for node in victims:
        await asyncio.to_thread(cluster.kill, node)

    async def a_delivery_refused() -> bool:  # writes cannot reach two in-sync replicas: the receiver answers 503
        return any(a.status == 503 and a.at >= killed_at for d in p.sim.deliveries() for a in d.attempts)

    await p.wait("a delivery refused while two nodes are down", a_delivery_refused, 120)
    for node in victims:
        await asyncio.to_thread(cluster.restart, node)


FAULTS: list[tuple[str, Callable[[Product, KafkaCluster], Awaitable[None]], bool]] = [
    ("one node SIGKILLed during webhook load and import", one_node_killed, False),
    ("the active controller's node SIGKILLed", controller_killed, False),
    ("a node back with an empty data directory", empty_data_directory, False),
    ("two nodes SIGKILLed (fewer than two replicas can be in sync)", two_nodes_killed, True),
]


def answers_503(p: Product, tenant: Tenant, since: float) -> int:
    return sum(1 for d in p.sim.deliveries() if d.endpoint_id == tenant.endpoint_id
               for a in d.attempts if a.status == 503 and a.at >= since)


@pytest.mark.parametrize("index", range(len(FAULTS)), ids=[f[1].__name__ for f in FAULTS])
async def test_nothing_lost_nothing_doubled_when_nodes_fail(product: Product, cluster: KafkaCluster, index: int) -> None:
    name, inject, writes_stop = FAULTS[index]
    tenant = await product.connect(CUSTOMERS, seed=7000 + index)
    since = time.time()
    product.sim.start_live_activity(2.0)
    await inject(product, cluster)
    await product.sim.stop_live_activity()
    recover_s = await product.idle(tenant)
    await all_in_sync(product, cluster)
    result = await product.check(tenant)
    lost_ids = result.pop("lost_ids")
    refused = answers_503(product, tenant, since)
    RESULTS.append({"fault": name, "recover_s": recover_s, "answers_503": refused, **result})
    assert result["events"] > 100
    assert result["lost"] == 0, f"{failed_deliveries(product)}\n{product.what_became_of(lost_ids)}"
    assert result["double_applied"] == 0
    assert result["mismatched"] == {}
    if writes_stop:
        assert refused > 0, "with one node left no write is acknowledged: deliveries are refused, then retried"
    else:
        assert refused == 0, "two replicas stay in sync: every delivery is stored (after a failover wait at most)"
