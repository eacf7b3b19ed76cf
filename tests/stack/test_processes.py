"""A service of the local stack that died says why in the error that reports it: a CI run keeps no log files."""

from __future__ import annotations

import uuid

import pytest

from stack.processes import Services, log_file

DIES = """
import json, sys
for n in range(3000):  # what a broker that is away makes the Kafka client write, while the service runs on
    print(json.dumps({"event": f"Unable connect to node {n}", "logger": "aiokafka", "level": "error"}), flush=True)
print(json.dumps({"event": "projector started", "logger": "service.projector", "level": "info"}), flush=True)
raise SystemExit("the stored positions could not be read: the database system is shutting down")
"""


def test_a_service_that_exited_is_reported_with_the_end_of_its_log_without_the_kafka_clients_retries() -> None:
    name = f"dies-{uuid.uuid4().hex[:8]}"
    services = Services()
    try:
        services.start(name, ["-c", DIES], {}).wait(timeout=60)
        with pytest.raises(RuntimeError) as raised:
            services.check_alive()
    finally:
        services.stop()
        log_file(name).unlink(missing_ok=True)
    message = str(raised.value)
    assert message.startswith(f"{name} exited with code 1; see ")
    assert message.rstrip().endswith("the stored positions could not be read: the database system is shutting down")
    assert "projector started" in message and "Unable connect" not in message

