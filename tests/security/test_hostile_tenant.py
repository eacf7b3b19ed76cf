"""A hostile tenant signs its own webhooks: what it can send, and what must never come of it.

Card numbers in every form a determined payload can take never reach the topic; secret-bearing fields
are dropped; and a tenant exhausting its reader connections gets 503s while another tenant's questions
are answered. (Poison records: tests/projections/test_dead_letters.py; database attacks through the
reader roles: test_reader_isolation.py.)
"""

from __future__ import annotations

import json
import unicodedata
from typing import Any

import asyncpg
import pytest

from ingestor.connections.tenant_store import reader_password_aad
from ingestor.connections.vault import MasterKeyring
from schemas import EnvelopeCodec
from tests.helpers import consume_all
from tests.ingestor.test_webhook_receiver import Receiver, charge_event, receiver, sign  # noqa: F401 - fixture
from tests.projections.test_read_api import get, served  # noqa: F401 - fixture

pytestmark = pytest.mark.integration
PAN = "4111111111111111"
FORMS = {
    "dots": "4111.1111.1111.1111",
    "double-spaces": "4111  1111  1111  1111",
    "underscores": "4111_1111_1111_1111",
    "slashes": "4111/1111/1111/1111",
    "mixed": "4111 -_1111./1111\u00a01111",
    "line-breaks": "4111\n1111\r\n1111\t1111",
    "zero-width": "4111\u200b1111\u200b1111\u200b1111",
    "full-width": "".join(chr(0xFF10 + int(d)) for d in PAN),
    "arabic-indic": "".join(chr(0x0660 + int(d)) for d in PAN),
    "inside-a-20-digit-run": "99" + PAN + "99",
    "after-one-digit": "7" + PAN,
}


def digits_of(text: str) -> str:
    """Every decimal digit of a text, as ASCII, in order (separators of any kind dropped)."""
    return "".join(str(unicodedata.decimal(c)) for c in text if unicodedata.decimal(c, None) is not None)


def strings_in(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in (*strings_in(k), *strings_in(v))]
    if isinstance(node, list):
        return [s for item in node for s in strings_in(item)]
    return [str(node)] if isinstance(node, int) and not isinstance(node, bool) else []


async def test_card_numbers_in_every_form_never_reach_the_topic(receiver: Receiver) -> None:  # noqa: F811
    tenant = receiver.tenants["a"]
    event = charge_event()
    charge = event["data"]["object"]
    charge["description"] = "paid with " + FORMS["dots"]
    charge["metadata"] = {f"note_{name}": form for name, form in FORMS.items()}
    charge["metadata"]["as_number"] = int(PAN)
    charge["metadata"][FORMS["underscores"]] = "a card number as a key"
    charge["client_secret"] = "ch_secret_abc"
    event["data"]["object"]["payment_intent"] = {"id": "pi_1", "object": "payment_intent", "client_secret": "pi_1_secret_x"}
    body = json.dumps(event)
    status, answer, _ = await receiver.post(tenant, body, sign(body, tenant.secret))
    assert status == 200, answer
    [(_, value)] = await consume_all(receiver.settings.kafka, receiver.settings.kafka.raw_topic, 1, timeout_s=30)
    payload = EnvelopeCodec().decode(value).payload
    for text in strings_in(json.loads(payload)):
        assert PAN not in digits_of(text), f"a card number survived in {text!r}"
    assert "secret" not in payload


async def test_a_tenant_exhausting_its_reader_connections_does_not_deny_another(  # noqa: F811
    served: dict[str, Any], platform: Any, clean_database: str,
) -> None:
    tenant_a, api_token_a = served["a"]
    tenant_b, api_token_b = served["b"]
    questions = "/questions/mrr"
    assert (await get(served, f"/api/tenants/{tenant_a}{questions}", api_token_a, mode="test"))[0] == 200
    owner = await asyncpg.connect(clean_database)
    try:
        role = await owner.fetchval("SELECT role_name FROM analytics_private.reader_roles WHERE tenant_id = $1 "
                                    "AND level = 'summary'", tenant_a)
        limit = await owner.fetchval("SELECT rolconnlimit FROM pg_roles WHERE rolname = $1", role)
        # The attack: A's readers hold every connection A's role may have (a pool's idle ones included).
        password = await attackers_password(owner, served["master"], tenant_a)
        dsn = clean_database.rsplit("@", 1)[1]
        held = []
        for _ in range(limit):
            try:
                held.append(await asyncpg.connect(f"postgresql://{dsn}", user=role, password=password))
            except asyncpg.TooManyConnectionsError:
                break
        status, body = await get(served, f"/api/tenants/{tenant_b}{questions}", api_token_b, mode="test")
        assert status == 200, body
        for conn in held:
            await conn.close()
    finally:
        await owner.close()


async def attackers_password(owner: asyncpg.Connection, master: str, tenant_id: str) -> str:
    """The password of A's summary reader role (what a reader of A's could learn at worst: its own)."""
    row = await owner.fetchrow("SELECT role_name, password_ciphertext FROM reader_credentials WHERE tenant_id = $1 "
                               "AND level = 'summary'", tenant_id)
    return MasterKeyring.from_setting(master).decrypt(row["password_ciphertext"],
                                                       reader_password_aad(tenant_id, row["role_name"]))
