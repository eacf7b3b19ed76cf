"""docker-compose.yml cannot run here (no Docker engine); this keeps it consistent with the local
launcher and the settings: same Kafka release, same services, every variable a real setting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from plumbing.settings import load_settings, unknown_setting_names
from stack import REPO_ROOT
from stack.cli import main as cli
from stack.kafka import KAFKA_VERSION
from stack.postgres import READER_PASSWORD, READER_ROLES

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


def test_postgres_gets_the_reader_roles_the_launcher_creates() -> None:
    init = Path(REPO_ROOT / "stack" / "postgres-init.sql").read_text()
    for role in READER_ROLES:
        assert f"CREATE ROLE {role} LOGIN" in init and f"PASSWORD '{READER_PASSWORD}'" in init
    assert SERVICES["postgres"]["image"].startswith("postgres:15")


def test_the_image_carries_every_package() -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    for package in ("ingestor", "projections", "schemas", "plumbing", "stack", "stripe_sim"):
        assert f"COPY {package} {package}" in dockerfile
