"""What a dead letter says and keeps, as plain functions over one record (the broker tests are in test_dead_letters)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from aiokafka import ConsumerRecord

from projections.errors import PoisonRecordError
from projections.projector import decoding
from projections.projector.dead_letters import LETTER_VALUE_BYTES, letter_for, letter_row, reason_text
from projections.projector.decoding import decode
from schemas import EnvelopeCodec
from schemas.codec import CorruptRecordError
from tests.projections.test_order_and_duplicates import CHARGE, T, event

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def record(value: bytes, key: bytes = b"tenant_a:ch_1", offset: int = 7) -> ConsumerRecord:
    return ConsumerRecord("raw", 3, offset, 0, 0, key, value, None, len(key), len(value), [])


def test_a_record_under_the_bound_is_kept_whole_and_the_message_is_the_reason() -> None:
    letter = letter_for(record(b"v" * 100), PoisonRecordError("cannot project it"), "evt_1", "g", NOW)
    assert letter.value == b"v" * 100 and letter.error_message == "cannot project it"


def test_a_record_over_the_bound_keeps_its_start_and_says_where_the_whole_one_is() -> None:
    value = bytes(range(256)) * (LETTER_VALUE_BYTES // 128)
    letter = letter_for(record(value, key=b"tenant_a:" + b"k" * 2000), PoisonRecordError("bad"), "evt_1", "g", NOW)
    assert letter.value == value[:LETTER_VALUE_BYTES] and letter.key is not None and len(letter.key) == 1024
    assert letter.error_message == (f"bad [value cut to its first {LETTER_VALUE_BYTES} of {len(value)} bytes; key cut "
                                    "to its first 1024 of 2009 bytes; event evt_1, whole on raw partition 3 offset 7]")
    bare = letter_for(record(value), PoisonRecordError("bad"), "", "g", NOW, refused_at=70_000)
    assert bare.value is None and bare.key == b"tenant_a:ch_1"
    assert bare.error_message == ("bad [value left out: the dead-letter topic refused the letter at 70000 bytes; "
                                  "event unknown, whole on raw partition 3 offset 7]")


def test_an_error_that_quotes_the_record_is_named_by_its_site() -> None:
    """A decoder's or a handler's text may quote the record (a UnicodeDecodeError's repr holds the bytes it read)."""
    try:
        try:
            b'{"last4": "4242", "x": "\xff"}'.decode()
        except UnicodeDecodeError as exc:
            raise CorruptRecordError(f"corrupt record: {exc!r}") from exc
    except CorruptRecordError as corrupt:
        assert "4242" in str(corrupt)
        told = reason_text(corrupt)
    assert "4242" not in told and told.startswith("CorruptRecordError from UnicodeDecodeError at ")
    assert "4242" not in letter_row(record(b"v"), ValueError("invalid literal for int(): '4242'")).message


def test_a_handler_bug_is_dead_lettered_with_its_event_and_site_not_its_text(monkeypatch: pytest.MonkeyPatch) -> None:
    envelope = event(CHARGE | {"status": "succeeded"}, "charge.succeeded", "evt_bug", T, "tenant_a")

    def buggy(_: object) -> None:
        raise ValueError("card 4242 is odd")

    monkeypatch.setattr(decoding, "writes_for", buggy)
    with pytest.raises(PoisonRecordError) as raised:
        decode(EnvelopeCodec(), record(EnvelopeCodec().encode(envelope)))
    assert raised.value.event_id == "evt_bug" and "4242" not in str(raised.value)
    assert str(raised.value).startswith("cannot project charge.succeeded evt_bug: ValueError at ")
