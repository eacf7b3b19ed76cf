"""What is kept of an item Stripe listed that the import or the poller leaves out: a label naming it without its
content (an id holding a card number, a secret or a NUL byte is hashed), and a stable key so it counts once."""

from __future__ import annotations

import pytest

from ingestor.envelope.discounts import unexpanded_discounts, with_discounts
from ingestor.errors import BadEventError
from ingestor.sources.refusals import label_of, last_usable_id, refusal_of


@pytest.mark.parametrize("item,label", [
    ({"id": "ch_3MmlLrLkdIwHu7ix0snN0B15", "created": 5}, "ch_3MmlLrLkdIwHu7ix0snN0B15"),
    ({"id": {"card": "4242424242424242"}, "created": 1767225600}, "created 1767225600 #"),
    ({"object": "charge"}, "no id or created time #"),
    (7, "not an object (int) #"),
    (["ch_1"], "not an object (list) #"),
])
def test_an_item_is_named_by_its_id_else_its_created_time(item: object, label: str) -> None:
    assert label_of(item) == label if not label.endswith("#") else label_of(item).startswith(label)


def test_items_without_an_id_listed_in_the_same_second_are_told_apart_and_each_counted_once() -> None:
    """Named by created time alone, two broken charges of one second were one row in health: one went uncounted."""
    first = {"id": None, "object": "charge", "created": 1767225600, "amount": 1000}
    second = {"id": None, "object": "charge", "created": 1767225600, "amount": 2500}
    assert label_of(first) != label_of(second)
    assert label_of(first) == label_of(dict(first))  # listed again: the same row
    assert label_of([1, 2]) != label_of([1, 3]) and label_of(7) != label_of(8)


def test_an_items_digest_tells_nothing_redaction_drops() -> None:
    """The digest is of the redacted item: a card number in it is masked before hashing, so two items that differ
    only in the masked digits share it (nothing can be learned of the number by trying candidates)."""
    with_number = {"created": 5, "note": "4242424242424242", "client_secret": "pi_1_secret_a"}
    other_number = {"created": 5, "note": "4000056655665556", "client_secret": "pi_1_secret_b"}
    assert "4242" not in label_of(with_number) and "secret" not in label_of(with_number)
    assert label_of(with_number) == label_of({"created": 5, "note": "************4242"})
    assert label_of(with_number) != label_of(other_number)  # the last four stay, as everywhere


@pytest.mark.parametrize("item_id", [
    "ch_4242424242424242",  # a card number
    "pi_1_secret_abcdef",  # a client secret
    "sk_live_abcdef", "rk_live_abcdef", "whsec_abcdef",  # keys
    "ch_\x00", "ch 1", "ch_1\n",  # what Postgres text cannot hold, or no Stripe id has
])
def test_an_id_that_does_not_look_like_stripes_is_shown_as_a_hash(item_id: str) -> None:
    label = label_of({"id": item_id, "object": "charge", "created": 5})
    assert label.startswith("id #") and len(label) == len("id #") + 16
    assert "\x00" not in label and "4242" not in label and "secret" not in label and "live" not in label
    assert label_of({"id": item_id}) == label  # the same item, the same label: counted once


def test_the_same_item_refused_twice_is_one_row_and_tenants_never_share_one() -> None:
    refused = BadEventError("Stripe listed an object without a string id", "malformed_object")
    first = refusal_of("tenant_a", "import", "charges", {"id": "ch_1"}, refused)
    assert first.offset() == refusal_of("tenant_a", "import", "charges", {"id": "ch_1"}, refused).offset()
    assert first.offset() != refusal_of("tenant_a", "import", "invoices", {"id": "ch_1"}, refused).offset()
    assert first.offset() != refusal_of("tenant_a", "poll", "charges", {"id": "ch_1"}, refused).offset()
    assert 0 <= first.offset() < 2**63  # a Postgres bigint
    assert first.message == "Stripe listed an object without a string id; left out of the import of charges"


@pytest.mark.parametrize("discounts", [5, "di_1", {"id": "di_1"}, ["di_1", 7, None, {"id": 8}]])
def test_discounts_of_a_shape_no_version_has_are_left_for_the_projector_to_judge_not_a_crash(discounts: object) -> None:
    """The poller fills in discounts named by id before publishing; a list of another shape must not stop its
    cycle (the projector reads the subscription, or refuses it with a reason in health)."""
    event = {"id": "evt_1", "data": {"object": {"id": "sub_1", "object": "subscription", "discounts": discounts}}}
    missing = unexpanded_discounts(event)
    assert missing == (["di_1"] if isinstance(discounts, list) else [])
    filled = with_discounts(event, {"di_1": {"id": "di_1", "coupon": {"id": "co_1"}}})
    if isinstance(discounts, list):
        assert filled["data"]["object"]["discounts"][0] == {"id": "di_1", "coupon": {"id": "co_1"}}
        assert filled["data"]["object"]["discounts"][1:] == discounts[1:]
    else:
        assert filled == event


def test_a_page_is_gone_on_from_its_last_item_with_an_id_never_from_a_refused_one() -> None:
    """`starting_after` must name an item Stripe knows: one without an id (or not an object) cannot be it."""
    assert last_usable_id([{"id": "ch_1"}, {"id": "ch_2"}, {"id": {"x": 1}}, 7, {"object": "charge"}]) == "ch_2"
    assert last_usable_id([{"id": ""}, ["ch_1"], None]) is None
    assert last_usable_id([]) is None
