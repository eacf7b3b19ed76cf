"""The reader's raw list pages against the simulator: same objects as the library's, same errors, same retries."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from ingestor.errors import KeyInvalidError, PermissionMissingError, StripeUnavailableError
from ingestor.stripe_api.client import RetryPolicy, StripeReader, page_body, raw_page
from ingestor.stripe_api.request_budget import Rate, RateBudgets
from stripe_sim import SimServer

pytestmark = pytest.mark.integration

QUICK = RetryPolicy(attempts=4, initial_wait_s=0.01, max_wait_s=0.05)
MakeReader = Callable[[str], StripeReader]


@pytest.fixture
async def make_reader(sim: SimServer) -> AsyncIterator[MakeReader]:
    readers: list[StripeReader] = []

    def make(key: str) -> StripeReader:
        readers.append(StripeReader(key, RateBudgets(Rate(1000, 1000)).for_account(key, False), api_base=sim.base_url, retry=QUICK))
        return readers[-1]

    yield make
    for reader in readers:
        await reader.close()


async def test_raw_pages_hold_what_the_library_pages_hold(sim: SimServer, make_reader: MakeReader) -> None:
    account = sim.create_account(customers=12)
    sim.set_rate_limit(account.id, 1000)
    reader = make_reader(sim.create_restricted_key(account.id))
    for resource, params in (("customers", {}), ("subscriptions", {"status": "all"}), ("events", {})):
        library = await reader.list_page(resource, {"limit": 7, **params})
        raw = await reader.list_raw_page(resource, {"limit": 7, **params})
        assert raw.objects == library.last_response.data["data"]  # type: ignore[union-attr, index]
        assert raw.has_more == library.has_more
    walked = [o["id"] async for page in reader.pages("charges", {"limit": 5}) for o in page.objects]
    assert len(walked) == len(set(walked)) == len(sim_ids(sim, account.id, "charge"))


def sim_ids(sim: SimServer, account: str, object_type: str) -> set[str]:
    return {o["id"] for o in sim.state.accounts[account].store(False).all(object_type)}


async def test_raw_pages_translate_401_and_403_without_the_key(sim: SimServer, make_reader: MakeReader) -> None:
    account = sim.create_account(customers=2)
    sim.set_rate_limit(account.id, 1000)
    limited = sim.create_restricted_key(account.id, permissions={"customers"})
    with pytest.raises(PermissionMissingError) as missing:
        await make_reader(limited).list_raw_page("charges", {"limit": 1})
    assert missing.value.permission == "rak_charge_read" and limited not in str(missing.value)
    revoked = sim.create_restricted_key(account.id)
    sim.revoke_key(revoked)
    reader = make_reader(revoked)
    with pytest.raises(KeyInvalidError) as invalid:
        await reader.list_raw_page("customers", {"limit": 1})
    assert "rotated or revoked" in str(invalid.value) and revoked not in str(invalid.value)
    assert reader.requests_made == 1 and revoked not in repr(reader)  # a 401 is not retried


async def test_raw_pages_retry_429_and_5xx_then_give_up(sim: SimServer, make_reader: MakeReader) -> None:
    account = sim.create_account(customers=2)
    sim.set_rate_limit(account.id, 1000)
    reader = make_reader(sim.create_restricted_key(account.id))
    sim.set_faults({"kind": "status", "status": 429, "count": 1}, {"kind": "status", "status": 503, "count": 1})
    try:
        page = await reader.list_raw_page("customers", {"limit": 1})
    finally:
        sim.set_faults()
    assert len(page.objects) == 1 and reader.requests_made == 3
    sim.set_faults({"kind": "drop"})
    try:
        with pytest.raises(StripeUnavailableError):
            await reader.list_raw_page("customers", {"limit": 1})
    finally:
        sim.set_faults()
    assert reader.requests_made == 3 + QUICK.attempts


def test_a_body_that_is_not_a_list_is_a_retriable_error() -> None:
    assert raw_page(b'{"object": "list", "data": [{"id": "cus_1"}], "has_more": true}').objects == [{"id": "cus_1"}]
    for body in (b"<html>", b'{"object": "customer"}', b"[]"):
        with pytest.raises(StripeUnavailableError) as err:
            raw_page(body)
        assert err.value.retriable


def test_a_list_body_that_is_not_a_whole_json_object_is_retried_before_the_page_pool_sees_it() -> None:
    assert page_body(b' {"object": "list", "data": [], "has_more": false}\n', 0.1).body.startswith(b" {")
    for body in (b"<html>bad gateway</html>", b'{"object": "list", "data": [{"id": "cus_', b"", b"[]"):
        with pytest.raises(StripeUnavailableError) as err:
            page_body(body, 0.1)
        assert err.value.retriable  # retried within the request, and counted in the connection's health
