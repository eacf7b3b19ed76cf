"""Apache Kafka in KRaft mode on loopback, fetched with Maven and run with a small heap: one broker+controller
node (what tests and `./dev run` use), or a node of a cluster (`stack/kafka_cluster.py`)."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from stack import CACHE_DIR, STATE_DIR, StackError
from stack.progress import say

KAFKA_VERSION = "4.1.1"
POM = Path(__file__).resolve().parent / "maven" / "kafka-pom.xml"
READY_LINE = "Kafka Server started"


def _port(variable: str, default: int) -> int:
    """The launcher's own knob (not a product setting): run a second local stack beside the first."""
    return int(os.environ.get(variable, default))


@dataclass(frozen=True)
class KafkaBroker:
    """One local broker+controller: where its jars, config, data, log and pid live, and its ports.

    Alone (no `voters`) it is a standalone quorum of itself. As a cluster node it names every voter
    (node id → controller port) and the cluster's id; its partition data then lives apart from its
    metadata log, so the data directory can be lost and refilled from the other replicas.
    """

    port: int = field(default_factory=lambda: _port("STACK_KAFKA_PORT", 9092))
    controller_port: int = field(default_factory=lambda: _port("STACK_KAFKA_CONTROLLER_PORT", 9093))
    heap: str = "512m"
    state_dir: Path = STATE_DIR / "kafka"
    lib_dir: Path = CACHE_DIR / f"kafka-{KAFKA_VERSION}" / "lib"
    node_id: int = 1
    voters: tuple[tuple[int, int], ...] = ()
    cluster_id: str | None = None

    @property
    def replicas(self) -> int:
        """How many copies internal topics keep: every node, up to three."""
        return min(3, len(self.voters) or 1)

    @property
    def bootstrap_servers(self) -> str:
        """Returns the address clients connect to."""
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "kafka.log"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "kafka.pid"

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "data"

    @property
    def metadata_dir(self) -> Path:
        """The KRaft metadata log: inside the data directory alone, apart from it in a cluster."""
        return self.state_dir / "metadata" if self.voters else self.data_dir

    def ensure_jars(self) -> None:
        """Fetches the pinned Kafka release and its runtime jars from Maven Central, once."""
        marker = self.lib_dir / ".complete"
        if marker.exists():
            return
        say(f"fetching Apache Kafka {KAFKA_VERSION} jars from Maven Central (first run only)…")
        self.lib_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            "mvn", "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
            f"-DoutputDirectory={self.lib_dir}", "-DincludeScope=runtime",
        ]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise StackError(f"Maven could not fetch the Kafka jars:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
        marker.write_text(KAFKA_VERSION)
        say(f"Kafka jars ready in {self.lib_dir}")

    def _java(self, main_class: str, *args: str) -> list[str]:
        return [
            "java", f"-Xmx{self.heap}", f"-Xms{min_heap(self.heap)}", "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.state_dir / 'log4j2.yaml'}",
            "-cp", f"{self.lib_dir}/*", main_class, *args,
        ]

    def write_config(self) -> Path:
        """Writes server.properties and the log config; returns the properties file."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        props = self.state_dir / "server.properties"
        quorum = ([f"controller.quorum.voters={','.join(f'{n}@127.0.0.1:{p}' for n, p in self.voters)}",
                   f"metadata.log.dir={self.metadata_dir}",
                   # A SIGKILLed node is fenced and its partitions led elsewhere within seconds, not nine.
                   "broker.session.timeout.ms=3000", "broker.heartbeat.interval.ms=500",
                   f"default.replication.factor={self.replicas}", f"min.insync.replicas={min(2, self.replicas)}"]
                  if self.voters else [f"controller.quorum.bootstrap.servers=127.0.0.1:{self.controller_port}"])
        props.write_text(
            "\n".join([
                "process.roles=broker,controller",
                f"node.id={self.node_id}",
                f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                *quorum,
                f"log.dirs={self.data_dir}",
                "num.partitions=1",
                "auto.create.topics.enable=false",
                f"offsets.topic.replication.factor={self.replicas}",
                "offsets.topic.num.partitions=4",
                f"transaction.state.log.replication.factor={self.replicas}",
                f"transaction.state.log.min.isr={min(2, self.replicas)}",
                f"share.coordinator.state.topic.replication.factor={self.replicas}",
                "group.initial.rebalance.delay.ms=0",
                # Lets tests use short consumer sessions, so a SIGKILLed member is replaced quickly.
                "group.min.session.timeout.ms=1000",
                "message.max.bytes=2097152",
                "log.retention.hours=-1",
                "",
            ])
        )
        (self.state_dir / "log4j2.yaml").write_text(
            "Configuration:\n"
            "  Appenders:\n"
            "    Console:\n"
            "      name: STDOUT\n"
            "      PatternLayout:\n"
            "        pattern: \"[%d] %p %m (%c)%n\"\n"
            "  Loggers:\n"
            "    Logger:\n"
            "      - name: kafka\n"
            "        level: INFO\n"
            "      - name: org.apache.kafka\n"
            "        level: WARN\n"
            "    Root:\n"
            "      level: WARN\n"
            "      AppenderRef:\n"
            "        - ref: STDOUT\n"
        )
        return props

    def format_storage(self, props: Path) -> None:
        """Formats the KRaft storage once: a standalone controller quorum of this one node, or this node's part
        of the cluster's static quorum. A cluster node whose data directory was lost gets an empty one again
        (its metadata log is kept: the quorum's votes must not be forgotten)."""
        if all((d / "meta.properties").exists() for d in {self.data_dir, self.metadata_dir}):
            return
        if self.voters and not (self.metadata_dir / "meta.properties").exists() and self.log_file.exists():
            # A voter of a static quorum must not come back with an empty Raft log: it could vote twice in one
            # epoch and let a stale node truncate committed metadata. Only its partition data may be refilled.
            raise StackError(f"node {self.node_id}'s metadata log ({self.metadata_dir}) is gone: a static-quorum "
                             "voter cannot rejoin without it; start the cluster afresh (remove its state directory)")
        if self.voters:
            flags = ["--ignore-formatted", "-t", self.cluster_id or new_cluster_id()]
        else:
            flags = ["--standalone", "-t", new_cluster_id()]
        result = subprocess.run(self._java("kafka.tools.StorageTool", "format", *flags, "-c", str(props)),
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise StackError(f"formatting Kafka storage failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")

    def running_pid(self) -> int | None:
        """Returns the pid of our running broker, removing a stale pid file (with a message).

        A broker of this state directory running without a pid file (its file lost to a crash or a
        concurrent stop) is found by its command line and adopted, so it is reused or stopped, never
        mistaken for "another process" on our ports.
        """
        if self.pid_file.exists():
            pid = int(self.pid_file.read_text().strip() or 0)
            if pid and self._is_ours(pid):
                return pid
            say(f"removing stale Kafka pid file ({self.pid_file}, pid {pid} is not running)")
            self.pid_file.unlink(missing_ok=True)
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and self._is_ours(int(entry.name)):
                say(f"found our Kafka running without a pid file (pid {entry.name}); adopting it")
                self.pid_file.write_text(entry.name)
                return int(entry.name)
        return None

    def _is_ours(self, pid: int) -> bool:
        """Tells whether `pid` is a live broker started with this state directory's configuration."""
        cmdline = _cmdline(pid)
        return "kafka.Kafka" in cmdline and str(self.state_dir / "server.properties") in cmdline and _alive(pid)

    def start(self, timeout_s: float = 120.0) -> None:
        """Starts the broker unless it is already running, and waits until it serves clients."""
        self.wait_ready(timeout_s, *self.launch())

    def launch(self) -> tuple[int, subprocess.Popen[bytes] | None]:
        """Starts the broker's process unless it runs; returns where its log stood and the process (None when it
        was running). A cluster launches every node before waiting for any: none is ready without a quorum."""
        self.ensure_jars()
        if self.running_pid() is not None and _port_open(self.port):
            return 0, None
        if self.running_pid() is None:
            for port in (self.port, self.controller_port):
                if _port_open(port):
                    raise StackError(
                        f"port {port} is in use by another process, not by our Kafka "
                        f"(no live pid in {self.pid_file}); stop it or choose other ports"
                    )
            props = self.write_config()
            self.format_storage(props)
            say(f"starting Kafka {KAFKA_VERSION} on {self.bootstrap_servers} (log: {self.log_file})")
            log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
            with open(self.log_file, "ab") as log:
                proc = subprocess.Popen(
                    self._java("kafka.Kafka", str(props)),
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            self.pid_file.write_text(str(proc.pid))
            return log_offset, proc
        return 0, None

    def wait_ready(self, timeout_s: float, log_offset: int, launched: subprocess.Popen[bytes] | None) -> None:
        """Waits for the ready line; a broker we just launched is watched through its Popen (its
        command line is not yet the broker's for a moment after the launch, while the JVM starts)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            exited = launched.poll() is not None if launched is not None else self.running_pid() is None
            if exited:
                raise StackError(f"Kafka exited during start-up; see {self.log_file}:\n{_tail(self.log_file)}")
            if _port_open(self.port) and READY_LINE in _read_from(self.log_file, log_offset):
                say(f"Kafka ready on {self.bootstrap_servers}")
                return
            time.sleep(0.25)
        raise StackError(f"Kafka not ready after {timeout_s:.0f}s; see {self.log_file}:\n{_tail(self.log_file)}")

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stops the broker (SIGTERM, then SIGKILL after `timeout_s`); a no-op when it is not running."""
        pid = self.running_pid()
        if pid is None:
            return
        say("stopping Kafka…")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)
        # The sockets close with the process; wait for it, so a start right after finds the ports free.
        deadline = time.monotonic() + 10
        while any(_port_open(p) for p in (self.port, self.controller_port)) and time.monotonic() < deadline:
            time.sleep(0.1)
        say("Kafka stopped")


def new_cluster_id() -> str:
    """Returns a random KRaft cluster id (URL-safe base64 of a UUID, never starting with "-")."""
    cluster_id = "-"
    while not cluster_id[0].isalnum():  # a leading "-" would read as an option to the tool
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    return cluster_id


def min_heap(heap: str) -> str:
    """Returns a starting heap of half the maximum (e.g. 512m → 256m)."""
    return f"{int(heap[:-1]) // 2}{heap[-1]}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is not alive for our purposes. The process is
    # alive while any of its threads is: the JVM's main thread exits first on SIGTERM (the leader
    # then reads as a zombie) while the shutdown hooks still run, with the ports still open.
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return False
    for task in tasks:
        try:
            if (task / "stat").read_text().split(") ", 1)[1][0] != "Z":
                return True
        except (OSError, IndexError):
            continue
    return False


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _read_from(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(_read_from(path, 0).splitlines()[-lines:])
