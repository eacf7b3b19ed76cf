"""Settings come from the environment with documented defaults; logs never carry a Stripe secret."""

from __future__ import annotations

import io
import json
import logging

import pytest

from plumbing.logs import configure_logging, get_logger
from plumbing.masking import mask_secrets_in_text
from plumbing.settings import LogSettings, SettingsError, load_settings


def test_defaults_without_environment() -> None:
    settings = load_settings({})
    assert settings.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert settings.kafka.raw_topic == "stripe.events.raw"
    assert settings.kafka.send_timeout_s == 10.0


def test_each_setting_maps_onto_one_variable() -> None:
    settings = load_settings(
        {"INGESTOR_KAFKA__RAW_PARTITIONS": "12", "INGESTOR_KAFKA__SEND_TIMEOUT_S": "2.5", "INGESTOR_LOG__LEVEL": "DEBUG"}
    )
    assert settings.kafka.raw_partitions == 12
    assert settings.kafka.send_timeout_s == 2.5
    assert settings.log.level == "DEBUG"


def test_unknown_setting_is_refused_by_name() -> None:
    with pytest.raises(SettingsError, match="INGESTOR_KAFKA__BOOTSTRAP_SERVER\\b"):
        load_settings({"INGESTOR_KAFKA__BOOTSTRAP_SERVER": "x:1"})
    with pytest.raises(SettingsError, match="INGESTOR_KAFK__RAW_TOPIC"):
        load_settings({"INGESTOR_KAFK__RAW_TOPIC": "x"})


def test_bad_value_is_refused() -> None:
    with pytest.raises(SettingsError, match="raw_partitions"):
        load_settings({"INGESTOR_KAFKA__RAW_PARTITIONS": "zero"})


def test_a_request_budget_too_close_to_stripes_limit_is_refused() -> None:
    """A budget's bucket holds 3 requests for the poller and the next lease, and an account's leaves 50 ms of itself
    for sends a little late: a budget of 97/s against Stripe's 100 would send up to 104.85 in a second. Refused by
    name, with the limit, before anything runs."""
    with pytest.raises(SettingsError, match=r"live_requests_per_second \(97\) must stay at least 3 and 50 ms"):
        load_settings({"INGESTOR_STRIPE__LIVE_REQUESTS_PER_SECOND": "97"})
    with pytest.raises(SettingsError, match=r"endpoint_requests_per_second \(30\).*endpoint_limit_per_second \(25\)"):
        load_settings({"INGESTOR_STRIPE__ENDPOINT_REQUESTS_PER_SECOND": "30"})
    assert load_settings({"INGESTOR_STRIPE__LIVE_REQUESTS_PER_SECOND": "92"}).stripe.live_requests_per_second == 92
    assert load_settings({}).stripe.endpoint_requests_per_second == 22  # 3 below Stripe's 25 per endpoint


def test_postgres_dsn_is_not_shown_in_repr() -> None:
    settings = load_settings({"INGESTOR_POSTGRES__DSN": "postgresql://u:hunter2@db/x"})
    assert "hunter2" not in repr(settings)
    assert settings.postgres.dsn.get_secret_value().endswith("@db/x")


SECRETS = [
    "rk_live_51H8aZ2eZvKYlo2C0123456789abcdefWXYZ",
    "sk_test_4eC39HqLyjWDarjtT1zdp7dcABCD",
    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "rk_test_51H8aZ2eZvKYlo2C99887766wxyz",
    "%3Dsk_live_51H8aZ2eZvKYlo2C0123456789glued",
]


@pytest.mark.parametrize("secret", SECRETS)
def test_log_lines_mask_stripe_secrets(secret: str) -> None:
    stream = io.StringIO()
    configure_logging(LogSettings(level="INFO", json_lines=True), stream)
    get_logger("test").info("connecting with key", key=secret, detail=f"using {secret} now", nested={"k": [secret]})
    logging.getLogger("aiokafka.third_party").warning("stdlib line mentions %s", secret)
    try:
        raise ValueError(f"Invalid API Key provided: {secret}")
    except ValueError:
        get_logger("test").exception("stripe call failed")
    out = stream.getvalue()
    body = secret.split("_")[-1]
    assert secret not in out
    assert body[:-4] not in out
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[0]["key"].endswith("…" + secret[-4:])
    assert len(lines) == 3


def test_masking_leaves_other_text_alone() -> None:
    text = "charge ch_3MmlLrLkdIwHu7ix0snN0B15 for cus_NffrFeUfNV2Hib, sk_ not a key, rk_live_ too short"
    assert mask_secrets_in_text(text) == text


def test_the_settings_doc_lists_every_setting() -> None:
    from plumbing.settings_doc import DOC, render

    assert DOC.read_text() == render(), "run: python -m plumbing.settings_doc"
