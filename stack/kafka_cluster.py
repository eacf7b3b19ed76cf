"""A local Kafka cluster of three KRaft nodes (each broker and controller, a static quorum), from the same Maven
jars as the single broker: what `ingestor up --brokers 3` starts, and what the cluster fault tests break.

Topics on it keep three replicas with min.insync.replicas=2, and our producers already wait for every in-sync
replica (acks=all, idempotent): one node down loses nothing and stops nothing; two down stops writes (the
receiver answers 503 and Stripe delivers again), never loses an acknowledged one.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from stack import STATE_DIR, StackError
from stack.kafka import KafkaBroker, _alive, _port, new_cluster_id
from stack.progress import say


@dataclass(frozen=True)
class KafkaCluster:
    """`size` nodes on consecutive loopback ports from `base_port` (broker, controller, broker, controller…)."""

    size: int = 3
    base_port: int = field(default_factory=lambda: _port("STACK_KAFKA_CLUSTER_PORT", 9192))
    heap: str = "384m"
    state_dir: Path = STATE_DIR / "kafka-cluster"

    @property
    def cluster_id(self) -> str:
        """The cluster's id, made once and kept beside the nodes (every node is formatted with it)."""
        path = self.state_dir / "cluster-id"
        if not path.exists():
            self.state_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(new_cluster_id())
        return path.read_text().strip()

    @property
    def nodes(self) -> list[KafkaBroker]:
        voters = tuple((i + 1, self.base_port + 2 * i + 1) for i in range(self.size))
        return [KafkaBroker(port=self.base_port + 2 * i, controller_port=self.base_port + 2 * i + 1, heap=self.heap,
                            state_dir=self.state_dir / f"node-{i + 1}", node_id=i + 1, voters=voters,
                            cluster_id=self.cluster_id)
                for i in range(self.size)]

    def node(self, node_id: int) -> KafkaBroker:
        return self.nodes[node_id - 1]

    @property
    def bootstrap_servers(self) -> str:
        """Every node's address: a client finds the cluster through any one alive."""
        return ",".join(n.bootstrap_servers for n in self.nodes)

    @property
    def log_file(self) -> Path:
        return self.state_dir

    def start(self, timeout_s: float = 180.0) -> None:
        """Starts every node not running (all launched before any is awaited: none is ready without a quorum)."""
        say(f"starting a {self.size}-node Kafka cluster on {self.bootstrap_servers}")
        launched = [(node, node.launch()) for node in self.nodes]
        for node, (offset, proc) in launched:
            node.wait_ready(timeout_s, offset, proc)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def kill(self, node_id: int) -> None:
        """SIGKILLs one node: no flush, no controlled shutdown."""
        node = self.node(node_id)
        pid = node.running_pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGKILL)
        while _alive(pid):
            time.sleep(0.05)
        node.pid_file.unlink(missing_ok=True)
        say(f"Kafka node {node_id} killed")

    def restart(self, node_id: int, empty_data: bool = False, timeout_s: float = 180.0) -> None:
        """Starts a stopped node again; with `empty_data` its partition data is gone first (a lost disk), and it
        refills its replicas from the others."""
        node = self.node(node_id)
        if empty_data:
            if node.running_pid() is not None:
                raise StackError(f"node {node_id} is running: its data directory is emptied only while it is down")
            shutil.rmtree(node.data_dir, ignore_errors=True)
            say(f"Kafka node {node_id}'s data directory emptied")
        node.start(timeout_s)

    def active_controller(self) -> int | None:
        """The quorum's leader as the nodes last recorded it (the highest epoch any node wrote), or None."""
        best: tuple[int, int] | None = None
        for node in self.nodes:
            try:
                state = json.loads((node.metadata_dir / "__cluster_metadata-0" / "quorum-state").read_text())
            except (OSError, ValueError):
                continue
            leader, epoch = state.get("leaderId", -1), state.get("leaderEpoch", -1)
            if leader > 0 and (best is None or epoch > best[1]):
                best = (leader, epoch)
        return best[0] if best else None

    def running(self) -> list[int]:
        return [n.node_id for n in self.nodes if n.running_pid() is not None]
