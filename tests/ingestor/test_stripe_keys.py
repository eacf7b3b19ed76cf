"""Tests for ingestor.connections.key_formats: which pasted keys are accepted, the refusals, and masking."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingestor.connections.key_formats import (
    API_KEY_IN_WEBHOOK_SECRET_FIELD,
    MALFORMED_KEY,
    MALFORMED_WEBHOOK_SECRET,
    PUBLISHABLE_KEY_REFUSED,
    RESTRICTED_KEY,
    SECRET_KEY_REFUSED,
    SECRET_PATTERN,
    WEBHOOK_SECRET,
    WEBHOOK_SECRET_IN_KEY_FIELD,
    KeyCheck,
    StripeKeyError,
    classify_key,
    mask_key,
    mask_secrets_in_text,
    validate_webhook_secret,
)
from ingestor.connections.key_test import KEY_INVALID_FIX
from ingestor.connections.status import STATUSES
from ingestor.errors import IngestError
from ingestor.stripe_api.catalog import TESTED

# What every instruction to create a key says to set to "Read": each permission the key test requires.
READ_ACCESS = "Customers, Charges, Subscriptions, Invoices, PaymentIntents, Events and Coupons"
REPO = Path(__file__).resolve().parents[2]

BODY = "51HxYzAbCdEfGhIjKlMnOpQrStUvWxYz0123456789wxyz"
RK_LIVE = "rk_live_" + BODY
RK_TEST = "rk_test_" + BODY
SK_LIVE = "sk_live_" + BODY
SK_TEST = "sk_test_" + BODY
PK_LIVE = "pk_live_" + BODY
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
WHSEC_CLI = "whsec_" + "0123456789abcdef" * 4


def assert_key_hidden(check: KeyCheck, key: str) -> None:
    """Assert no part of the key body beyond its last four characters shows in the verdict."""
    body = re.sub(r"^\W*(?:(?:sk|rk|pk)_(?:live|test)_|whsec_)?", "", key.strip())
    shown = " ".join([check.code, check.message, check.masked, repr(check), str(check)])
    assert not leaks(body, shown), (body, shown)


def leaks(body: str, shown: str) -> bool:
    """Return whether more than the last four characters of `body` appear in `shown`."""
    return any(body[start : start + 5] in shown for start in range(len(body) - 4))


# --- classify_key ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "mode"), [(RK_LIVE, "live"), (RK_TEST, "test")])
def test_restricted_keys_are_accepted_with_their_mode(key: str, mode: str) -> None:
    check = classify_key(key)
    assert check.accepted and check.code == RESTRICTED_KEY and check.mode == mode
    assert check.key == key
    assert check.masked == f"rk_{mode}_…wxyz"
    check.raise_if_refused()
    assert_key_hidden(check, key)


def test_surrounding_whitespace_is_stripped() -> None:
    check = classify_key(f"  \t{RK_LIVE}\n ")
    assert check.accepted and check.key == RK_LIVE and check.masked == "rk_live_…wxyz"


@pytest.mark.parametrize(("key", "mode"), [(SK_LIVE, "live"), (SK_TEST, "test"), ("sk_live_x", "live")])
def test_secret_keys_are_refused_with_instructions(key: str, mode: str) -> None:
    check = classify_key(key)
    assert not check.accepted and check.code == SECRET_KEY_REFUSED and check.mode == mode
    assert check.key == ""
    for words in (
        "moving money",
        "Developers → API keys",
        '"Create restricted key"',
        READ_ACCESS,
        '"Read"',
        '"None"',
        f"rk_{mode}_",
    ):
        assert words in check.message
    assert_key_hidden(check, key)


def test_secret_key_without_a_mode_is_still_refused_as_secret() -> None:
    check = classify_key("sk_org_" + BODY)
    assert check.code == SECRET_KEY_REFUSED and check.mode is None
    assert "rk_live_" in check.message


def test_publishable_key_is_refused() -> None:
    check = classify_key(PK_LIVE)
    assert check.code == PUBLISHABLE_KEY_REFUSED and not check.accepted
    assert "cannot read" in check.message and "Create restricted key" in check.message
    assert_key_hidden(check, PK_LIVE)


def test_webhook_secret_in_key_field_is_refused() -> None:
    check = classify_key(WHSEC)
    assert check.code == WEBHOOK_SECRET_IN_KEY_FIELD and not check.accepted
    assert "Webhook signing secret" in check.message
    assert check.masked == "whsec_…LaSw"
    assert_key_hidden(check, WHSEC)


@pytest.mark.parametrize(
    "key",
    [
        "",
        "   ",
        "hello",
        "rk_live_",
        "rk_live_tooShort123",  # 19-character body
        "rk_live_" + "a" * 501,  # body over 500 characters
        "rk_live_51HxYz AbCdEfGhIjKlMnOpQrSt",  # space inside
        "rk_live_51HxYzAbCd…wxy",  # copied from a masked display
        "rk_live_51HxYzAbCdEfGhIjKlMnOpQrSt_x",  # wrong charset
        "rk_live_51HxYzAbCdEfGhIjKlMnOpQré",  # non-ASCII letter
        "rk_prod_" + BODY,
        "RK_LIVE_" + BODY,
        '"' + RK_LIVE + '"',
        "acct_1032D82eZvKYlo2C",
    ],
)
def test_anything_else_is_malformed(key: str) -> None:
    check = classify_key(key)
    assert not check.accepted and check.code == MALFORMED_KEY and check.mode is None
    with pytest.raises(StripeKeyError) as caught:
        check.raise_if_refused()
    assert caught.value.code == MALFORMED_KEY and caught.value.retriable is False
    assert str(caught.value) == check.message
    assert_key_hidden(check, key)


def test_body_length_bounds() -> None:
    assert classify_key("rk_live_" + "a" * 20).accepted
    assert classify_key("rk_live_" + "a" * 500).accepted
    assert not classify_key("rk_live_" + "a" * 19).accepted


def test_empty_key_says_nothing_was_entered() -> None:
    assert "No key was entered" in classify_key(" ").message


def test_refusal_error_carries_code_and_message() -> None:
    with pytest.raises(StripeKeyError) as caught:
        classify_key(SK_LIVE).raise_if_refused()
    assert caught.value.code == SECRET_KEY_REFUSED and isinstance(caught.value, IngestError)
    assert BODY[:-4] not in str(caught.value) and BODY[:-4] not in repr(caught.value)


# --- validate_webhook_secret ------------------------------------------------------------------------


@pytest.mark.parametrize("secret", [WHSEC, WHSEC_CLI, " " + WHSEC + "\n", "whsec_abc+/def=GHIJKLMNOPQRSTUV"])
def test_webhook_secrets_are_accepted(secret: str) -> None:
    check = validate_webhook_secret(secret)
    assert check.accepted and check.code == WEBHOOK_SECRET and check.mode is None
    assert check.key == secret.strip()
    assert check.masked.startswith("whsec_…")
    assert_key_hidden(check, secret)


@pytest.mark.parametrize("secret", [RK_LIVE, SK_LIVE, PK_LIVE])
def test_api_key_in_secret_field_is_refused(secret: str) -> None:
    check = validate_webhook_secret(secret)
    assert check.code == API_KEY_IN_WEBHOOK_SECRET_FIELD and not check.accepted
    assert "whsec_" in check.message
    assert_key_hidden(check, secret)


@pytest.mark.parametrize("secret", ["", "whsec_", "whsec_short", "whsec_" + "a" * 40 + " x", "secret"])
def test_malformed_webhook_secret_is_refused(secret: str) -> None:
    check = validate_webhook_secret(secret)
    assert check.code == MALFORMED_WEBHOOK_SECRET and not check.accepted and check.key == ""


# --- mask_key and mask_secrets_in_text ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "masked"),
    [
        (RK_LIVE, "rk_live_…wxyz"),
        (SK_TEST, "sk_test_…wxyz"),
        (PK_LIVE, "pk_live_…wxyz"),
        (WHSEC, "whsec_…LaSw"),
        ("rk_live_abcdefgh", "rk_live_…"),  # too short to show a tail
        ("", "…"),
        ("some-long-string-1234", "…1234"),
    ],
)
def test_mask_key(key: str, masked: str) -> None:
    assert mask_key(key) == masked


def test_secret_pattern_matches_secrets_only() -> None:
    assert SECRET_PATTERN.fullmatch(RK_LIVE) and SECRET_PATTERN.fullmatch(SK_TEST)
    assert SECRET_PATTERN.fullmatch(WHSEC) and SECRET_PATTERN.fullmatch("whsec_ab+/=")
    assert not SECRET_PATTERN.search(PK_LIVE)  # publishable keys are public
    assert not SECRET_PATTERN.search("rk_live_…wxyz")


def test_mask_secrets_in_text() -> None:
    line = f'auth failed key={RK_LIVE} secret="{WHSEC}" other={SK_TEST}; url=%3D{SK_LIVE}'
    assert mask_secrets_in_text(line) == (
        'auth failed key=rk_live_…wxyz secret="whsec_…LaSw" other=sk_test_…wxyz; '
        "url=%3Dsk_live_…wxyz"
    )
    assert mask_secrets_in_text("nothing to see, pk_live_x") == "nothing to see, pk_live_x"


# --- properties ------------------------------------------------------------------------------------------

prefixes = st.sampled_from(
    ["rk_live_", "rk_test_", "sk_live_", "sk_test_", "pk_live_", "pk_test_", "whsec_", "rk_", "", "x"]
)
# Uppercase letters, digits and punctuation: a 5-character window of such a body cannot occur by
# chance in the (mostly lowercase) English messages, so any hit means the key leaked.
bodies = st.text(alphabet="ABCDEFGHJKLMNPQRSTVWXYZ0123456789+/= _-\t", min_size=0, max_size=80)
pasted = st.tuples(st.sampled_from(["", " ", "\n "]), prefixes, bodies, st.sampled_from(["", " "]))


@given(pasted)
@settings(max_examples=500)
def test_no_verdict_shows_more_than_the_last_four(parts: tuple[str, str, str, str]) -> None:
    lead, prefix, body, trail = parts
    key = lead + prefix + body + trail
    stripped_body = (prefix + body).strip()[len(prefix) :] if prefix else body.strip()
    for check in (classify_key(key), validate_webhook_secret(key)):
        shown = " ".join([check.code, check.message, check.masked, repr(check)])
        assert not leaks(stripped_body, shown)
        assert not leaks(stripped_body, mask_key(key))
        if not check.accepted:
            with pytest.raises(StripeKeyError) as caught:
                check.raise_if_refused()
            assert not leaks(stripped_body, str(caught.value) + repr(caught.value))


secret_prefixes = st.sampled_from(["rk_live_", "rk_test_", "sk_live_", "sk_test_", "whsec_"])
secret_bodies = st.text(alphabet="ABCDEFGHJKLMNPQRSTVWXYZ0123456789", min_size=1, max_size=40)
secrets = st.tuples(secret_prefixes, secret_bodies)
filler = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_ =\"',.:…\n", max_size=12)
log_lines = st.lists(st.tuples(filler, secrets), max_size=5)


@given(log_lines, filler)
@settings(max_examples=500)
def test_masked_text_shows_no_more_than_last_four_and_is_stable(
    pieces: list[tuple[str, tuple[str, str]]], end: str
) -> None:
    text = "".join(before + prefix + body for before, (prefix, body) in pieces) + end
    masked = mask_secrets_in_text(text)
    for _, (_, body) in pieces:
        assert not leaks(body, masked)
    assert mask_secrets_in_text(masked) == masked


def test_glued_secrets_are_each_masked() -> None:
    assert mask_secrets_in_text("whsec_" + RK_LIVE) == "whsec_rk_live_…wxyz"
    assert mask_secrets_in_text("rk_live_ABCD" + SK_LIVE) == "rk_live_…sk_live_…wxyz"


def test_every_instruction_to_create_a_key_names_every_permission_the_key_test_requires() -> None:
    """A user creates the key as an instruction says, then Tests it: an instruction naming fewer permissions than the
    Test reads fails their first Test (Coupons, read since discounts are ids, was left out of every one of them)."""
    assert READ_ACCESS.replace(" and ", ", ").split(", ") == [r.dashboard_label for r in TESTED]
    instructions = {
        "the page": (REPO / "ingestor/control/static/index.html").read_text(),
        "docs, the flow": (REPO / "docs/operating.md").read_text().split("## The flow", 1)[1].split("\n2. ", 1)[0],
        "docs, key_invalid": (REPO / "docs/operating.md").read_text().split("### key_invalid", 1)[1].split("###")[0],
        "a secret key refused": classify_key(SK_LIVE).message,
        "a publishable key refused": classify_key(PK_LIVE).message,
        "the Test of a revoked key": KEY_INVALID_FIX,
        "the key_invalid status": " ".join(STATUSES["key_invalid"].recovery),
    }
    assert {where: READ_ACCESS in " ".join(text.split()) for where, text in instructions.items()} == dict.fromkeys(
        instructions, True)
    # Those that say "leave everything else at None" name the optional one, Prices, too (`test_tiers.py`).
    assert {where: "Prices, if you bill with tiered prices" in " ".join(text.split())
            for where, text in instructions.items() if where != "docs, the flow"} == dict.fromkeys(
        set(instructions) - {"docs, the flow"}, True)
