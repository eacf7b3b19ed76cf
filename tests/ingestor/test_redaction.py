"""Tests for ingestor.envelope.redaction: card objects reduced, PAN-like runs masked, nothing else changed."""

from __future__ import annotations

import copy
import json
import random
import sys
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import orjson
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ingestor.envelope import card_numbers, redaction
from ingestor.envelope.card_numbers import luhn_valid, mask_pans
from ingestor.envelope.redaction import CARD_ALLOWED_KEYS, redact_event, redacted_json, redacted_sorted_json

TEST_CARDS = {
    "4242424242424242": "************4242",  # Visa
    "5555555555554444": "************4444",  # Mastercard
    "378282246310005": "***********0005",  # Amex, 15 digits
    "6011111111111117": "************1117",  # Discover
    "4242424242422": "*********2422",  # 13 digits
    "4242424242424242428": "***************2428",  # 19 digits
}


def reference_luhn(digits: str) -> bool:
    """Textbook Luhn check, written independently of the module under test."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


# Separators as the module documents them, listed here independently of its regular expression.
REFERENCE_SEPARATORS = frozenset(
    " \t\n\r\f\u00a0\u1680\u202f\u205f\u3000\u200b\u200c\u200d\u2060\ufeff._/\\-\u2212\ufe58\ufe63\uff0d\uff0e\uff0f\uff3f"
    + "".join(chr(c) for c in range(0x2000, 0x200B)) + "".join(chr(c) for c in range(0x2010, 0x2016))
)


def chains(text: str) -> Iterator[list[tuple[int, str]]]:
    """Yield each chain of the text as (index, digit value) pairs: digits joined by separators only."""
    current: list[tuple[int, str]] = []
    for index, char in enumerate(text):
        value = unicodedata.decimal(char, None)
        if value is not None:
            current.append((index, str(value)))
        elif char in REFERENCE_SEPARATORS and current:
            continue  # a separator inside a chain joins the digits either side
        else:
            if current:
                yield current
            current = []
    if current:
        yield current


def pan_candidates(text: str) -> Iterator[str]:
    """Yield every Luhn-valid 13–19 digit window of visible digits, as the module docstring defines."""
    for chain in chains(text):
        digits = "".join(d for _, d in chain)
        for start in range(len(digits)):
            for end in range(start + 13, min(start + 19, len(digits)) + 1):
                if digits[start] != "0" and reference_luhn(digits[start:end]):
                    yield digits[start:end]



def reference_mask(text: str) -> str:
    """Mask `text` as the module docstring defines it, window by window (slow, but plainly right)."""
    out = list(text)
    for chain in chains(text):
        digits = "".join(d for _, d in chain)
        for start in range(len(digits)):
            for end in range(start + 13, min(start + 19, len(digits)) + 1):
                if digits[start] != "0" and reference_luhn(digits[start:end]):
                    for index, _ in chain[start : end - 4]:
                        out[index] = "*"
    return "".join(out)


# --- luhn_valid ---------------------------------------------------------------------------------


@pytest.mark.parametrize("digits", [*TEST_CARDS, "0", "18", "42424242424242424242"])
def test_luhn_accepts_valid_numbers(digits: str) -> None:
    assert luhn_valid(digits)


@pytest.mark.parametrize("digits", ["", "1", "4242424242424241", "4242 4242", "42a2", "４２"])
def test_luhn_refuses_invalid_or_non_digit_input(digits: str) -> None:
    assert not luhn_valid(digits)


@given(st.text(alphabet="0123456789", min_size=1, max_size=30))
def test_luhn_matches_reference(digits: str) -> None:
    assert luhn_valid(digits) == reference_luhn(digits)


# --- mask_pans ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("pan", "masked"), TEST_CARDS.items())
def test_test_cards_are_masked_to_last_four(pan: str, masked: str) -> None:
    assert mask_pans(pan) == masked


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("4242 4242 4242 4242", "**** **** **** 4242"),
        ("4242-4242-4242-4242", "****-****-****-4242"),
        ("4242 4242-42424242", "**** ****-****4242"),
        # What got past the previous rule: dots, repeated and mixed separators, underscores, slashes.
        ("4111.1111.1111.1111", "****.****.****.1111"),
        ("4111  1111   1111 1111", "****  ****   **** 1111"),
        ("4111 - 1111 - 1111 - 1111", "**** - **** - **** - 1111"),
        ("4111_1111_1111_1111", "****_****_****_1111"),
        ("4111/1111/1111/1111", "****/****/****/1111"),
        ("4111.1111-1111_1111", "****.****-****_1111"),
        ("4111\n1111\t1111\r\n1111", "****\n****\t****\r\n1111"),
        ("4111\u200b1111\u00a01111\u20131111", "****\u200b****\u00a0****\u20131111"),
    ],
)
def test_separators_of_any_kind_stay_and_the_digits_are_masked(text: str, masked: str) -> None:
    assert mask_pans(text) == masked


def test_unicode_digits_are_card_digits_too() -> None:
    full_width = "４１１１１１１１１１１１１１１１"
    assert mask_pans(full_width) == "************１１１１"
    arabic_indic = "".join(chr(0x0660 + int(d)) for d in "4242424242424242")
    assert mask_pans(arabic_indic).startswith("*" * 12) and list(pan_candidates(mask_pans(arabic_indic))) == []


def test_amex_grouping_is_masked() -> None:
    assert mask_pans("3782 822463 10005") == "**** ****** *0005"


def test_pan_embedded_in_text() -> None:
    assert mask_pans("card 4242424242424242 ok") == "card ************4242 ok"
    assert mask_pans("cards: 5555555555554444,6011111111111117.") == (
        "cards: ************4444,************1117."
    )
    assert mask_pans("x4242424242424242y") == "x************4242y"


def test_a_card_number_inside_a_longer_digit_run_is_found() -> None:
    for run in ("99" + "4111111111111111" + "99", "7" + "4111111111111111", "4111111111111111" + "0000"):
        masked = mask_pans(run)
        assert "4111111111111111" not in masked and list(pan_candidates(masked)) == []
        assert sum(c.isdigit() for c in masked) <= 4 + (len(run) - 16)


@pytest.mark.parametrize(
    "text",
    [
        "4242 4242 4241",  # 12 digits: too short for a card number
        "+1 415-555-0100",
        "1680064028",
        "2024-01-15 12:30:00",  # the colon is not a separator: no chain of 13 digits
        "123456789015",  # Luhn-valid but only 12 digits
        "ch_3MtwBwLkdIwHu7ix28a3tqPa",
        "a1b2c3d4-e5f6-7890-abcd-ef1234567890",
        "",
    ],
)
def test_non_pans_are_untouched(text: str) -> None:
    assert mask_pans(text) == text


def test_a_reference_number_may_be_masked_by_chance() -> None:
    # One window in ten is Luhn-valid by chance: a 14-digit reference holds three windows. This one is
    # partly masked, the documented price of finding a card number wherever it hides.
    assert mask_pans("order 20240115-000123") == "order ********-*00123"


def test_visible_digits_cannot_form_a_new_candidate() -> None:
    text = "4242424242424242 4242424242422"
    masked = mask_pans(text)
    assert list(pan_candidates(masked)) == []
    assert mask_pans(masked) == masked


pan_formats = st.builds(
    lambda pan, sep, cut: sep.join(pan[i : i + cut] for i in range(0, len(pan), cut)),
    st.sampled_from(sorted(TEST_CARDS)),
    st.sampled_from(["", " ", "-", ".", "_", "/", "  ", " - ", "\u00a0", "\u200b", "\n", "\uff0d"]),
    st.integers(min_value=1, max_value=19),
)
unicode_digits = st.builds(
    lambda pan, zero: "".join(chr(zero + int(d)) for d in pan), st.sampled_from(sorted(TEST_CARDS)),
    st.sampled_from([0x30, 0xFF10, 0x0660, 0x06F0, 0x0966, 0x1D7CE]),
)
embedded = st.builds(lambda head, pan, tail: head + pan + tail, st.text(alphabet="0123456789", max_size=4),
                     st.sampled_from(sorted(TEST_CARDS)), st.text(alphabet="0123456789", max_size=4))
digitish = st.text(alphabet="0123456789 -._/", max_size=60)
noisy_text = st.lists(
    st.one_of(st.text(max_size=8), pan_formats, unicode_digits, embedded, digitish), max_size=6
).map("".join)


@given(noisy_text)
@settings(max_examples=500)
def test_mask_pans_leaves_no_candidate_and_is_idempotent(text: str) -> None:
    masked = mask_pans(text)
    assert list(pan_candidates(masked)) == []
    assert mask_pans(masked) == masked


@given(noisy_text)
def test_mask_pans_only_turns_digits_into_stars(text: str) -> None:
    masked = mask_pans(text)
    assert len(masked) == len(text)
    assert all(new == old or (new == "*" and unicodedata.decimal(old, None) is not None)
               for old, new in zip(text, masked))



# --- mask_pans: what a determined sender may put in a string ------------------------------------------

ZEROS = sorted({ord(c) - unicodedata.decimal(c) for c in map(chr, range(0x110000)) if c.isdecimal()})


def adversarial_text(seed: int, size: int) -> str:
    """Return `size` characters of long digit runs in any script, card numbers and separator soup."""
    rng = random.Random(seed)
    pieces: list[str] = []
    while sum(map(len, pieces)) < size:
        zero = rng.choice([0x30, 0x30, 0x30, *ZEROS])
        shape = rng.randrange(5)
        if shape == 0:  # a long run of one script's digits
            pieces.append("".join(chr(zero + rng.randrange(10)) for _ in range(rng.randrange(13, 400))))
        elif shape == 1:  # digits of mixed scripts behind separators of every kind
            pieces.append("".join(chr(rng.choice(ZEROS) + rng.randrange(10)) + rng.choice(["", "", "-", " ", "\u2009",
                                  "\uff0d", ".", "\n", " - ", "\u200b"]) for _ in range(rng.randrange(13, 200))))
        elif shape == 2:  # card numbers back to back, some grouped
            pan = rng.choice(sorted(TEST_CARDS))
            pieces.append(rng.choice(["", " ", "-"]).join(pan[i : i + 4] for i in range(0, len(pan), 4)))
        elif shape == 3:  # one digit and a separator, over and over
            pieces.append(rng.choice(["-", " ", "./"]).join(rng.choice("0123456789") for _ in range(rng.randrange(40))))
        else:  # something that ends a chain
            pieces.append(rng.choice(["x", ":", "\"", "é", " x ", "12345678901x", "\x00"]))
    return "".join(pieces)


@pytest.mark.parametrize("seed", range(12))
def test_adversarial_text_is_masked_exactly_as_defined(seed: int) -> None:
    text = adversarial_text(seed, 3_000)
    assert mask_pans(text) == reference_mask(text)


@pytest.mark.parametrize("digits", [2_000, 5_000])
def test_every_window_of_a_long_run_is_found(digits: int) -> None:
    # Each card-number window of a long run is masked, wherever the run holds it, ending and starting anywhere.
    rng = random.Random(digits)
    run = "".join(rng.choice("0123456789") for _ in range(digits))
    masked = mask_pans(run)
    assert masked == reference_mask(run) and list(pan_candidates(masked)) == []
    dashed = "-".join(run)
    assert mask_pans(dashed) == "-".join(masked)


@given(st.lists(st.one_of(noisy_text, embedded, st.text(alphabet="0123456789 -", min_size=20, max_size=120)),
                max_size=4).map("x".join))
@settings(max_examples=300)
def test_mask_pans_matches_the_definition(text: str) -> None:
    assert mask_pans(text) == reference_mask(text)


@pytest.mark.parametrize("zero", ZEROS)
def test_a_card_number_in_any_script_is_masked(zero: int) -> None:
    pan = "".join(chr(zero + int(d)) for d in "4242424242424242")
    assert mask_pans(f"card {pan}.") == f"card {'*' * 12}{pan[-4:]}."


def python_lines(function: Callable[[str], object], text: str) -> int:
    """Return how many lines of the redaction modules' Python code `function(text)` executes."""
    count = 0
    module_files = {redaction.__file__, card_numbers.__file__}

    def trace(frame: FrameType, event: str, arg: object) -> Any:
        nonlocal count
        if frame.f_code.co_filename not in module_files:
            return None
        if event == "line":
            count += 1
        return trace

    previous = sys.gettrace()
    sys.settrace(trace)
    try:
        function(text)
    finally:
        sys.settrace(previous)
    return count


@pytest.mark.parametrize("shape", [
    lambda n: "".join(random.Random(n).choices("0123456789", k=n)),  # one long run of digits
    lambda n: "4242424242424242" * (n // 16),  # card numbers back to back
    lambda n: " ".join(["4242"] * (n // 4)),  # digit groups
    lambda n: "-".join("31415926535897932384626433832795"[i % 32] for i in range(n)),  # one digit, one dash
    lambda n: "\uff14\uff12" * (n // 2),  # full-width digits
    lambda n: "4111111111111111 x " * (n // 16),  # many chains
])
def test_masking_work_in_python_does_not_grow_with_the_text(shape: Callable[[int], str]) -> None:
    # Any tenant may send a megabyte of digits. Masking walks it with whole-text operations (regular
    # expressions, bytes.translate, integer arithmetic), never a Python step per digit or per window, so
    # a longer text runs no more lines of Python: the event loop stays with the cost of reading it.
    short, long = shape(2_000), shape(20_000)
    assert mask_pans(long) != long
    assert python_lines(mask_pans, long) == python_lines(mask_pans, short)


@given(st.sampled_from(sorted(TEST_CARDS)), st.text(alphabet="0123456789", max_size=5),
       st.text(alphabet="0123456789", max_size=5))
def test_a_card_number_as_a_json_number_is_masked(pan: str, head: str, tail: str) -> None:
    number = int((head + pan + tail).lstrip("0") or "0")
    payload = redacted_json({"object": "event", "data": {"object": {"metadata": {"n": number}}}})
    assert pan not in payload
    assert list(pan_candidates(payload)) == []


def test_client_secrets_are_dropped_wherever_they_are() -> None:
    event = {"object": "event", "data": {"object": {
        "object": "payment_intent", "id": "pi_1", "client_secret": "pi_1_secret_abc",
        "source": {"object": "source", "client_secret": "src_client_secret_x", "id": "src_1"},
        "next_action": {"use_stripe_sdk": {"secret": "x"}}, "amount": 1000}}}
    payload = redacted_json(event)
    assert "secret_" not in payload and '"secret"' not in payload and '"client_secret"' not in payload
    assert orjson.loads(payload)["data"]["object"] == {
        "object": "payment_intent", "id": "pi_1", "source": {"object": "source", "id": "src_1"},
        "next_action": {"use_stripe_sdk": {}}, "amount": 1000}


# --- redact_event: card objects ------------------------------------------------------------------


def test_charge_card_details_are_reduced_to_the_allow_list() -> None:
    event = charge_succeeded_event()
    redacted = redact_event(event)
    card = redacted["data"]["object"]["payment_method_details"]["card"]
    assert card == {
        "brand": "visa",
        "country": "US",
        "exp_month": 3,
        "exp_year": 2030,
        "funding": "credit",
        "last4": "4242",
    }
    assert list(card) == ["brand", "country", "exp_month", "exp_year", "funding", "last4"]


def test_source_card_object_keeps_id_and_object() -> None:
    redacted = redact_event(charge_succeeded_event())
    assert redacted["data"]["object"]["source"] == {
        "id": "card_1MtwBwLkdIwHu7ixAbCdEfGh",
        "object": "card",
        "brand": "Visa",
        "country": "US",
        "exp_month": 3,
        "exp_year": 2030,
        "funding": "credit",
        "last4": "4242",
    }


def full_card(**extra: Any) -> dict[str, Any]:
    """A card dict carrying cardholder data that must not survive."""
    return {
        "number": "4242424242424242",
        "cvc": "123",
        "iin": "424242",
        "issuer": "Stripe Test Bank",
        "description": "Visa Classic",
        "fingerprint": "Xt5EWLLDS7FJjR1c",
        "name": "Jenny Rosen",
        "wallet": {"type": "masterpass", "masterpass": {"email": "jenny@example.com"}},
        "brand": "visa",
        "last4": "4242",
        "exp_month": 12,
        "exp_year": 2031,
        "funding": "debit",
        "country": "GB",
        **extra,
    }


REDUCED = {
    "brand": "visa",
    "last4": "4242",
    "exp_month": 12,
    "exp_year": 2031,
    "funding": "debit",
    "country": "GB",
}


@pytest.mark.parametrize(
    ("event", "path"),
    [
        ({"payment_method": {"id": "pm_1", "card": full_card()}}, ["payment_method", "card"]),
        (
            {"charges": {"data": [{"payment_method_details": {"card": full_card()}}]}},
            ["charges", "data", 0, "payment_method_details", "card"],
        ),
        ({"sources": {"data": [full_card(object="card")]}}, ["sources", "data", 0]),
        ({"default_source": full_card(object="card")}, ["default_source"]),
        ({"payment_method_details": {"card_present": full_card()}}, ["payment_method_details", "card_present"]),
        ({"deeply": [[{"nested": {"card": full_card()}}]]}, ["deeply", 0, 0, "nested", "card"]),
    ],
)
def test_card_objects_are_found_anywhere(event: dict[str, Any], path: list[Any]) -> None:
    node: Any = redact_event(event)
    for step in path:
        node = node[step]
    expected = dict(REDUCED)
    if node.get("object") == "card":
        expected = {**expected, "object": "card"}
    assert node == expected
    assert set(node) <= CARD_ALLOWED_KEYS


def test_issuing_card_object_is_reduced() -> None:
    card = full_card(object="issuing.card", id="ic_1", cardholder={"name": "Jenny Rosen"})
    assert redact_event({"card": card})["card"] == {**REDUCED, "object": "issuing.card", "id": "ic_1"}


def test_payment_method_options_card_is_not_a_card() -> None:
    options = {
        "card": {"installments": None, "request_three_d_secure": "automatic", "network": None},
    }
    event = {"payment_method_options": options, "payment_method_types": ["card"]}
    assert redact_event(event) == event


def test_card_id_string_is_left_alone() -> None:
    assert redact_event({"card": "card_1MtwBwLkdIwHu7ixAbCdEfGh"}) == {
        "card": "card_1MtwBwLkdIwHu7ixAbCdEfGh"
    }


# --- redact_event: PANs in fields ------------------------------------------------------------------


def test_pans_in_any_string_field_are_masked() -> None:
    event = {
        "id": "ch_1",
        "description": "paid with 4242 4242 4242 4242",
        "metadata": {"note": "5555-5555-5555-4444", "4242424242424242": "key holds a PAN"},
        "lines": {"data": [{"name": "378282246310005"}, "6011111111111117"]},
        "amount": 4242424242424242,
        "created": 1680064028,
    }
    assert redact_event(event) == {
        "id": "ch_1",
        "description": "paid with **** **** **** 4242",
        "metadata": {"note": "****-****-****-4444", "************4242": "key holds a PAN"},
        "lines": {"data": [{"name": "***********0005"}, "************1117"]},
        "amount": "************4242",
        "created": 1680064028,
    }


def test_key_order_is_preserved_when_keys_are_masked() -> None:
    event = {"metadata": {"a": "1", "4242424242424242": "2", "z": "3"}}
    assert list(redact_event(event)["metadata"]) == ["a", "************4242", "z"]


def test_everything_else_is_unchanged() -> None:
    event = charge_succeeded_event()
    redacted = redact_event(event)
    charge, original = redacted["data"]["object"], event["data"]["object"]
    for key in original:
        if key not in ("payment_method_details", "source"):
            assert charge[key] == original[key], key
    assert list(charge) == list(original)
    assert list(redacted) == list(event)


def test_input_is_not_mutated_and_changed_containers_are_new_objects() -> None:
    event = charge_succeeded_event()
    event["data"]["object"]["description"] = "card 4242424242424242"
    before = copy.deepcopy(event)
    redacted = redact_event(event)
    assert event == before
    assert redacted is not event
    assert redacted["data"] is not event["data"]
    assert redacted["data"]["object"]["description"] == "card ************4242"
    # Copy on write: what held nothing to redact is shared, not copied.
    assert redacted["data"]["object"]["metadata"] is event["data"]["object"]["metadata"]


def test_event_with_nothing_to_redact_is_returned_as_is() -> None:
    event = charge_succeeded_event()
    del event["data"]["object"]["payment_method_details"], event["data"]["object"]["source"]
    assert redact_event(event) is event
    assert redacted_json(event) == orjson.dumps(event).decode()


@pytest.mark.parametrize("text", ["4242 4242 4242 4242", "x 4242-4242-4242-4242 y", "378282246310005"])
def test_redacted_json_masks_a_card_number_that_is_a_key_or_inside_a_list(text: str) -> None:
    event = {"object": "event", "data": {"object": {"metadata": {text: "1"}, "tags": ["a", text]}}}
    payload = orjson.loads(redacted_json(event))
    assert all(not list(pan_candidates(value)) for value in strings_in(payload))
    assert payload == redact_event(event)


def test_redaction_is_idempotent_on_a_real_event() -> None:
    once = redact_event(charge_succeeded_event())
    assert redact_event(once) == once


# --- redact_event: properties ------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**12, max_value=10**19),
    st.floats(allow_nan=False, allow_infinity=False),
    noisy_text,
)
plain_keys = st.text(max_size=12).filter(
    lambda key: key not in ("card", "card_present", "interac_present", "object", "secret", "client_secret")
)
plain_trees = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(plain_keys, children, max_size=4),
    max_leaves=30,
)
card_keys = st.sampled_from(
    ["card", "object", "payment_method_options", "number", "last4", "brand", "metadata", "id"]
)
card_values = st.one_of(st.sampled_from(["card", "issuing.card"]), scalars)
card_trees = st.recursive(
    card_values,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.one_of(card_keys, noisy_text), children, max_size=5),
    max_leaves=30,
)


def strings_in(node: object) -> Iterator[str]:
    """Yield every string in a tree, dict keys included."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from strings_in(key)
            yield from strings_in(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings_in(item)


def assert_same_shape(original: object, redacted: object) -> None:
    """Assert non-string leaves are equal and containers keep their length and order."""
    if isinstance(original, str):
        assert isinstance(redacted, str)
    elif isinstance(original, dict):
        assert isinstance(redacted, dict) and len(redacted) == len(original)
        for (key, value), (new_key, new_value) in zip(original.items(), redacted.items()):
            assert new_key == mask_pans(key)
            assert_same_shape(value, new_value)
    elif isinstance(original, list):
        assert isinstance(redacted, list) and len(redacted) == len(original)
        for value, new_value in zip(original, redacted):
            assert_same_shape(value, new_value)
    elif isinstance(original, (int, float)) and not isinstance(original, bool) and mask_pans(repr(original)) != repr(original):
        assert redacted == mask_pans(repr(original))  # a number holding a card number becomes its masked digits
    else:
        assert type(redacted) is type(original) and redacted == original


def keys_collide(node: object) -> bool:
    """Return whether two keys of one dict in the tree mask to the same text."""
    if isinstance(node, dict):
        if len({mask_pans(key) for key in node}) != len(node):
            return True
        return any(keys_collide(value) for value in node.values())
    if isinstance(node, list):
        return any(keys_collide(item) for item in node)
    return False


@given(st.dictionaries(plain_keys, plain_trees, max_size=6))
@settings(max_examples=300)
def test_no_candidate_left_and_non_string_leaves_unchanged(event: dict[str, Any]) -> None:
    assume(not keys_collide(event))
    before = copy.deepcopy(event)
    redacted = redact_event(event)
    assert event == before
    assert all(not list(pan_candidates(text)) for text in strings_in(redacted))
    assert_same_shape(event, redacted)
    assert json.loads(redacted_json(event)) == json.loads(json.dumps(redacted))


@given(st.dictionaries(st.one_of(card_keys, noisy_text), card_trees, max_size=6))
@settings(max_examples=300)
def test_redaction_with_card_objects_is_idempotent_and_leaves_no_candidate(
    event: dict[str, Any],
) -> None:
    once = redact_event(event)
    assert all(not list(pan_candidates(text)) for text in strings_in(once))
    assert redact_event(once) == once
    assert json.loads(redacted_json(event)) == json.loads(json.dumps(once))


# --- redacted_sorted_json: the snapshots' shortcut gives exactly what the whole walk gives -------------


def sorted_redaction(obj: dict[str, Any]) -> bytes:
    """What `redacted_sorted_json` must equal: the whole object walked, then written with sorted keys."""
    return orjson.dumps(redact_event(obj), option=orjson.OPT_SORT_KEYS)


def writable(obj: object) -> bool:
    try:
        orjson.dumps(obj)
        return True
    except TypeError:  # integers beyond 64 bits: both ways raise alike
        return False


@given(st.dictionaries(plain_keys, plain_trees, max_size=6))
@settings(max_examples=300)
def test_sorted_redaction_of_plain_trees_equals_the_whole_walk(event: dict[str, Any]) -> None:
    assume(writable(event))
    assert redacted_sorted_json(event) == sorted_redaction(event)


likely_members = st.sampled_from(["payment_method_details", "payment_settings", "source", "refunds", "client_secret",
                                  "payment_method_options", "charges", "sources", "shipping", "lines", "card"])


@given(st.dictionaries(st.one_of(likely_members, card_keys, noisy_text), card_trees, max_size=6))
@settings(max_examples=500)
def test_sorted_redaction_of_card_trees_equals_the_whole_walk(event: dict[str, Any]) -> None:
    assume(writable(event))
    assert redacted_sorted_json(event) == sorted_redaction(event)


def test_sorted_redaction_of_every_stripe_fixture_equals_the_whole_walk() -> None:
    fixtures = json.loads((Path(__file__).parents[2] / "stripe_sim" / "data" / "fixtures.json").read_text())
    for name, obj in fixtures.items():
        assert redacted_sorted_json(obj) == sorted_redaction(obj), name
    charge = charge_succeeded_event()["data"]["object"]
    assert redacted_sorted_json(charge) == sorted_redaction(charge)
    assert b"4242424242424242" not in redacted_sorted_json(charge)


@pytest.mark.parametrize("hidden", [
    {"shipping": {"card": {"number": "4000056655665556", "last4": "5556"}}},  # a card key outside the usual members
    {"lines": {"data": [{"object": "card", "number": "4000056655665556"}]}},  # a card object deep in a list
    {"client_secret": {"card": {"number": "4000056655665556"}}},  # a secret whose value holds a card
    {"card": {"number": "4000056655665556", "brand": "visa"}},  # the object's own card key
])
def test_a_card_outside_the_usual_members_is_still_reduced(hidden: dict[str, Any]) -> None:
    invoice = {"id": "in_1", "object": "invoice", "payment_settings": {"payment_method_options": {
        "card": {"request_three_d_secure": "automatic"}}}, **hidden}
    text = redacted_sorted_json(invoice)
    assert text == sorted_redaction(invoice)
    assert b"4000056655665556" not in text and b'"number"' not in text


def test_a_key_whose_escaped_quote_writes_a_marker_takes_the_whole_walk() -> None:
    invoice = {"id": "in_1", "object": "invoice", 'x"card': {"number": "4000056655665556"}}
    text = redacted_sorted_json(invoice)
    assert text == sorted_redaction(invoice)
    assert b"4000056655665556" not in text  # not a card key: its digits are masked instead


def test_a_payment_intents_client_secret_is_dropped_and_its_options_kept() -> None:
    intent = {"id": "pi_1", "object": "payment_intent", "client_secret": "pi_1_secret_abc",
              "payment_method_options": {"card": {"request_three_d_secure": "automatic", "installments": None}}}
    assert json.loads(redacted_sorted_json(intent)) == {
        "id": "pi_1", "object": "payment_intent",
        "payment_method_options": {"card": {"request_three_d_secure": "automatic", "installments": None}}}


def charge_succeeded_event() -> dict[str, Any]:
    """A charge.succeeded event shaped like Stripe's, about 3.7 KB as compact JSON."""
    return {
        "id": "evt_3MtwBwLkdIwHu7ix28a3tqPa",
        "object": "event",
        "api_version": "2024-06-20",
        "created": 1680064028,
        "data": {
            "object": {
                "id": "ch_3MtwBwLkdIwHu7ix28a3tqPa",
                "object": "charge",
                "amount": 1099,
                "amount_captured": 1099,
                "amount_refunded": 0,
                "application": None,
                "application_fee": None,
                "application_fee_amount": None,
                "balance_transaction": "txn_3MtwBwLkdIwHu7ix2Ebh0ZWJ",
                "billing_details": {
                    "address": {
                        "city": "San Francisco",
                        "country": "US",
                        "line1": "510 Townsend St",
                        "line2": None,
                        "postal_code": "94103",
                        "state": "CA",
                    },
                    "email": "jenny.rosen@example.com",
                    "name": "Jenny Rosen",
                    "phone": "+1 415-555-0100",
                },
                "calculated_statement_descriptor": "ACME REVENUE",
                "captured": True,
                "created": 1680064028,
                "currency": "usd",
                "customer": "cus_NffrFeUfNV2Hib",
                "description": "Subscription update for order A-2024-0115",
                "destination": None,
                "dispute": None,
                "disputed": False,
                "failure_balance_transaction": None,
                "failure_code": None,
                "failure_message": None,
                "fraud_details": {},
                "invoice": "in_1MtwBvLkdIwHu7ixqNUbu1Yx",
                "livemode": False,
                "metadata": {
                    "order_id": "6735",
                    "plan": "pro-annual",
                    "internal_ref": "A-2024-0001",
                    "crm_account": "0015g00000XyZabAAB",
                    "campaign": "spring-launch-2024",
                    "sales_rep": "alex.morgan@example.com",
                    "region": "emea-north",
                    "notes": "Customer asked for an annual invoice; paid by card on file, "
                    "reference A-2024-0115, renewal handled by the billing team.",
                },
                "on_behalf_of": None,
                "outcome": {
                    "network_status": "approved_by_network",
                    "reason": None,
                    "risk_level": "normal",
                    "risk_score": 32,
                    "seller_message": "Payment complete.",
                    "type": "authorized",
                },
                "paid": True,
                "payment_intent": "pi_3MtwBwLkdIwHu7ix2bNXyUpI",
                "payment_method": "pm_1MtwBwLkdIwHu7ixMRHvPoOc",
                "payment_method_details": {
                    "card": {
                        "amount_authorized": 1099,
                        "brand": "visa",
                        "checks": {
                            "address_line1_check": "pass",
                            "address_postal_code_check": "pass",
                            "cvc_check": "pass",
                        },
                        "country": "US",
                        "exp_month": 3,
                        "exp_year": 2030,
                        "extended_authorization": {"status": "disabled"},
                        "fingerprint": "Xt5EWLLDS7FJjR1c",
                        "funding": "credit",
                        "incremental_authorization": {"status": "unavailable"},
                        "installments": None,
                        "last4": "4242",
                        "mandate": None,
                        "multicapture": {"status": "unavailable"},
                        "network": "visa",
                        "network_token": {"used": False},
                        "overcapture": {"maximum_amount_capturable": 1099, "status": "unavailable"},
                        "three_d_secure": None,
                        "wallet": None,
                    },
                    "type": "card",
                },
                "radar_options": {},
                "receipt_email": "jenny.rosen@example.com",
                "receipt_number": None,
                "receipt_url": "https://pay.stripe.com/receipts/payment/CAcaFwoVYWNjdF8xTTJKVGtM"
                "a2RJd0h1N2l4KOvG06AGMgZfBXyr1aw6LBa9vaaSRWU96d8qBwz9z2J_CObiV_H2-e8RezSK_sw0KI"
                "Sesp4czsOUlVKY",
                "refunded": False,
                "refunds": {
                    "object": "list",
                    "data": [],
                    "has_more": False,
                    "total_count": 0,
                    "url": "/v1/charges/ch_3MtwBwLkdIwHu7ix28a3tqPa/refunds",
                },
                "review": None,
                "shipping": {
                    "address": {
                        "city": "San Francisco",
                        "country": "US",
                        "line1": "510 Townsend St",
                        "line2": "Floor 3",
                        "postal_code": "94103",
                        "state": "CA",
                    },
                    "carrier": None,
                    "name": "Jenny Rosen",
                    "phone": None,
                    "tracking_number": None,
                },
                "source": {
                    "id": "card_1MtwBwLkdIwHu7ixAbCdEfGh",
                    "object": "card",
                    "address_city": "San Francisco",
                    "address_country": "US",
                    "address_line1": "510 Townsend St",
                    "address_line1_check": "pass",
                    "address_line2": None,
                    "address_state": "CA",
                    "address_zip": "94103",
                    "address_zip_check": "pass",
                    "brand": "Visa",
                    "country": "US",
                    "customer": "cus_NffrFeUfNV2Hib",
                    "cvc_check": "pass",
                    "dynamic_last4": None,
                    "exp_month": 3,
                    "exp_year": 2030,
                    "fingerprint": "Xt5EWLLDS7FJjR1c",
                    "funding": "credit",
                    "last4": "4242",
                    "metadata": {},
                    "name": "Jenny Rosen",
                    "tokenization_method": None,
                    "wallet": None,
                },
                "source_transfer": None,
                "statement_descriptor": None,
                "statement_descriptor_suffix": None,
                "status": "succeeded",
                "transfer_data": None,
                "transfer_group": None,
            },
            "previous_attributes": None,
        },
        "livemode": False,
        "pending_webhooks": 1,
        "request": {
            "id": "req_8Ag4kP4rqgFe3E",
            "idempotency_key": "a1b2c3d4-e5f6-7890-abcd-ef1234567890",
        },
        "type": "charge.succeeded",
    }


def test_card_number_after_an_escaped_control_character_is_masked() -> None:
    # JSON writes the control character as \u0007, whose hex digits run into the card number.
    event = {"object": "event", "data": {"object": {"description": "\x074242424242424242"}}}
    assert orjson.loads(redacted_json(event))["data"]["object"]["description"] == "\x07************4242"


def test_text_orjson_refuses_is_still_redacted() -> None:
    # A lone surrogate (stdlib json accepts "\ud800") and an integer beyond 64 bits: orjson refuses both.
    event = {"object": "event", "note": "\ud800 4242424242424242", "big": 2**70, "bigger": 10**30}
    payload = redacted_json(event)
    assert "************4242" in payload and "4242424242424242" not in payload
    assert json.loads(payload)["bigger"] == 10**30  # no Luhn-valid window: a number stays a number
    assert json.loads(payload)["big"] == mask_pans(str(2**70))  # 22 digits holding valid windows
