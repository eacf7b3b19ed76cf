"""docker-compose.yml cannot run here (no Docker engine); this keeps it consistent with the local
launcher and the settings: same Kafka release, same services, every variable a real setting."""

from __future__ import annotations

from typing import Any

import yaml

from plumbing.settings import load_settings, unknown_setting_names
from service.cli import main as cli
from stack import REPO_ROOT
from stack.kafka import KAFKA_VERSION

COMPOSE = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
PRODUCT = ("migrate", "web", "worker", "projector")


def test_the_same_services_as_the_local_stack() -> None:
    assert set(SERVICES) == {"kafka", "postgres", "stripe-simulator", *PRODUCT}


def test_kafka_is_the_release_the_launcher_fetches_in_kraft_mode() -> None:
    kafka = SERVICES["kafka"]
    assert kafka["image"] == f"apache/kafka:{KAFKA_VERSION}"
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "-Xmx512m" in kafka["environment"]["KAFKA_HEAP_OPTS"]


def test_every_ingestor_variable_is_a_setting_that_parses() -> None:
    for name in PRODUCT:
        env = {k: str(v) for k, v in SERVICES[name]["environment"].items()}
        assert unknown_setting_names(env) == [], name
        settings = load_settings(env)
        assert settings.kafka.bootstrap_servers == "kafka:9092"
        assert settings.postgres.dsn.get_secret_value().endswith("@postgres:5432/ingestor")


def test_each_service_runs_a_real_subcommand() -> None:
    for name in PRODUCT:
        command = SERVICES[name]["command"]
        assert command[0] == "ingestor" and command[1] in cli.commands, name  # type: ignore[attr-defined]


def test_postgres_gets_the_superuser_setup_the_launcher_applies() -> None:
    volumes = SERVICES["postgres"]["volumes"]
    assert any(v.startswith("./service/sql/database_setup.sql:/docker-entrypoint-initdb.d/") for v in volumes)
    assert "ALTER ROLE ingestor CREATEROLE" in (REPO_ROOT / "stack" / "postgres-init.sql").read_text()
    assert SERVICES["postgres"]["image"].startswith("postgres:15")


PRODUCT_PACKAGES = ("ingestor", "projections", "schemas", "plumbing", "service")


def _stage(dockerfile: str, name: str) -> str:
    """Returns the text of one build stage of the Dockerfile."""
    return dockerfile.split(" AS ")[[n.split()[0] for n in dockerfile.split(" AS ")[1:]].index(name) + 1]


def test_the_product_image_carries_the_product_and_its_docs_but_not_the_local_stack() -> None:
    product = _stage((REPO_ROOT / "Dockerfile").read_text(), "product")
    for package in (*PRODUCT_PACKAGES, "docs"):
        assert f"COPY {package} {package}" in product
    for local_only in ("stack", "stripe_sim", "tests", "bench"):
        assert f"COPY {local_only} " not in product
    assert "pip install --no-cache-dir -e ." in product  # docs/ stays beside the packages


def test_the_simulator_image_pins_what_the_project_pins() -> None:
    simulator = _stage((REPO_ROOT / "Dockerfile").read_text(), "simulator")
    pins = dict(line.strip().strip('",').split("==") for line in (REPO_ROOT / "pyproject.toml").read_text().splitlines()
                if line.strip().startswith('"') and "==" in line)
    installed = [word for word in simulator.split() if "==" in word]
    assert installed and all(pins[name] == version for name, version in (w.split("==") for w in installed))
    assert SERVICES["stripe-simulator"]["build"]["target"] == "simulator"
    assert all(SERVICES[name]["build"]["target"] == "product" for name in PRODUCT)


def test_every_port_compose_publishes_is_served_beyond_loopback_in_its_container() -> None:
    for name in PRODUCT:
        settings = load_settings({k: str(v) for k, v in SERVICES[name]["environment"].items()})
        listening = {"web": {settings.http.port: settings.http.host},
                     "projector": {settings.projector.metrics_port: settings.projector.metrics_host}}.get(name, {})
        for mapping in SERVICES[name].get("ports", []):
            assert listening.get(int(str(mapping).split(":")[-1])) == "0.0.0.0", (name, mapping)


def test_the_cluster_override_is_the_local_three_node_cluster() -> None:
    """docker-compose.cluster.yml: three KRaft nodes of one static quorum, the product pointed at all three with
    three replicas per topic — what `ingestor up --brokers 3` starts (stack/kafka_cluster.py)."""
    cluster = yaml.safe_load((REPO_ROOT / "docker-compose.cluster.yml").read_text())["services"]
    nodes = {name: service for name, service in cluster.items() if name.startswith("kafka")}
    assert set(nodes) == {"kafka", "kafka-2", "kafka-3"}
    voters = {n["environment"]["KAFKA_CONTROLLER_QUORUM_VOTERS"] for n in nodes.values()}
    assert voters == {"1@kafka:9093,2@kafka-2:9093,3@kafka-3:9093"}
    assert len({n["environment"]["CLUSTER_ID"] for n in nodes.values()}) == 1
    assert sorted(n["environment"]["KAFKA_NODE_ID"] for n in nodes.values()) == ["1", "2", "3"]
    for node in nodes.values():
        assert node["image"] == f"apache/kafka:{KAFKA_VERSION}"
        assert node["environment"]["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        assert node["environment"]["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3"
    for name in PRODUCT:
        env = {**{k: str(v) for k, v in SERVICES[name]["environment"].items()},
               **{k: str(v) for k, v in cluster[name]["environment"].items()}}
        assert unknown_setting_names(env) == [], name
        settings = load_settings(env)
        assert settings.kafka.bootstrap_servers == "kafka:9092,kafka-2:9092,kafka-3:9092"
        assert settings.kafka.replication_factor == 3
