"""Card-data and secret reduction for Stripe event payloads (design invariant 6).

Place in the flow: the webhook receiver, the poller and the importer parse a Stripe event and build
its envelope, whose payload is `redacted_json(event)` (snapshots use `redacted_sorted_json`), and only then
publish it to Kafka. Nothing upstream of this module may store or publish a payload, so no full card
number and no client secret ever reaches Kafka or Postgres. The rules assume a determined payload:
any tenant signs its own webhooks, so anything a JSON value can hold, it may hold.

Three rules, each applied anywhere in the tree:

1. **Card objects are reduced to an allow-list.** A card object is a dict stored under one of the keys
   in `CARD_KEYS` (``payment_method_details.card``, ``payment_method.card``, ...) or a dict whose
   ``"object"`` is in `CARD_OBJECT_TYPES` (``source``, ``sources.data[]``, ``default_source``, ...).
   It keeps only the keys in `CARD_ALLOWED_KEYS`, in their original order: ``brand``, ``last4``,
   ``exp_month``, ``exp_year``, ``funding``, ``country`` (not cardholder data under PCI DSS, and what the
   revenue tables show at the *full* level), plus ``id`` and ``object`` so references and the shape
   stay intact. Everything else is dropped: ``number``, ``cvc``, ``iin``, ``issuer``, ``description``,
   ``fingerprint``, ``name`` and the address fields, ``wallet``, ``checks``, ``networks``,
   ``three_d_secure*``, ``cardholder_name`` and the rest.
   Exception: a ``card`` dict directly under ``payment_method_options`` holds settings for *how* to
   charge (``request_three_d_secure``, ``installments``...), not a card, so it is left alone (rules 2
   and 3 still apply inside it).
2. **Secret-bearing fields are dropped**: every key in `SECRET_KEYS` (a PaymentIntent's or legacy
   Source's ``client_secret``, which lets a browser confirm the payment, and any ``secret``), at any
   depth. Nothing downstream needs them.
3. **PAN-like digit runs are masked** in every string (values and keys alike) and in every JSON number:

   - a *digit* is any Unicode decimal digit (ASCII, full-width ``４``, Arabic-Indic, ...);
   - a *chain* is digits joined by runs of *separators* (`SEPARATORS`: spaces of any width, line
     breaks, zero-width characters, dots, dashes of any kind, underscores, slashes, backslashes),
     any mix and any number of them between two digits;
   - every *window* of 13–19 consecutive digits of a chain that does not start with 0 (no card number
     does: its first digit names the industry) is Luhn-checked, wherever it starts and ends (a card
     number inside a longer run is found too); the digits of every valid window but its
     last four are replaced by ``*``, separators and other digits kept in place:
     ``"4111.1111.1111.1111"`` → ``"****.****.****.1111"``, ``"378282246310005"`` → ``"***********0005"``;
   - a JSON integer (or float) of 13 digits or more that holds such a window becomes the masked string
     of its digits: a number is not a safe place for a card number either.

   No valid window survives unmasked (each loses all but four of its digits), so redacting twice gives
   the same result as redacting once. By chance about one window in ten is Luhn-valid, so long digit
   runs in free text (reference numbers) are often partly masked: a deliberate trade, since a missed
   card number costs far more than a masked reference.

Everything else is unchanged: ids, amounts, structure and key order. If two keys of one dict mask to
the same text, the later one wins, exactly as for duplicate keys in JSON.

Speed: the receiver's hot path. One pass over the serialised event decides whether anything may need
work (a run of 13 bytes that could hold 13 digits, a card key or type, a secret key); a clean event
is returned without walking its tree. The importer's snapshots go further (`redacted_sorted_json`):
when every marker in the object's text lies inside the few top-level members where Stripe keeps
cards, card options and secrets, only those are walked, since one `payment_method_options.card`
would otherwise send every invoice through a walk of its ~45 containers. Masking a string checks all
its windows with a few dozen whole-text operations in C (`_mask_chains`), never a Python step per digit
or window, since any tenant may send a megabyte of digits: some 30 ms a megabyte, linear in its length.
"""

from __future__ import annotations

import json
import re
import sys
import unicodedata
from collections.abc import Callable
from itertools import islice
from typing import Any, Final

import orjson

__all__ = [
    "CARD_ALLOWED_KEYS",
    "CARD_KEYS",
    "CARD_OBJECT_TYPES",
    "SECRET_KEYS",
    "SEPARATORS",
    "holds_more_digits",
    "luhn_valid",
    "mask_pans",
    "redact_event",
    "redacted_json",
    "redacted_sorted_json",
]

CARD_ALLOWED_KEYS: Final = frozenset(
    {"id", "object", "brand", "last4", "exp_month", "exp_year", "funding", "country"}
)
CARD_KEYS: Final = frozenset({"card", "card_present", "interac_present"})
CARD_OBJECT_TYPES: Final = frozenset({"card", "issuing.card"})
SECRET_KEYS: Final = frozenset({"client_secret", "secret"})
# What may stand between two digits of a card number (a regular-expression character class body).
SEPARATORS: Final = (
    " \t\n\r\f\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000"  # spaces of every width, line breaks
    "\u200b-\u200d\u2060\ufeff"  # zero-width characters
    "._/\\\\\\-\u2010-\u2015\u2212\ufe58\ufe63\uff0d\uff0e\uff0f\uff3f"  # dots, slashes, dashes, underscores
)

_OPTIONS_KEY: Final = "payment_method_options"
_MIN_PAN_DIGITS: Final = 13
_MAX_PAN_DIGITS: Final = 19
_VISIBLE_DIGITS: Final = 4
_SMALLEST_PAN_NUMBER: Final = 10 ** (_MIN_PAN_DIGITS - 1)
# A run of 13 characters or more that starts with a digit and holds only digits and separators: every
# chain of 13 digits lies in one (a run's trailing separators change nothing). One character class, so
# the regular-expression engine scans it in a tight loop, whatever the run's length.
_CHAIN: Final = re.compile(rf"(\d[\d{SEPARATORS}]{{{_MIN_PAN_DIGITS - 1},}})")
# The same for ASCII text (most of it), two to four times faster than the Unicode classes.
_ASCII_SEPARATORS: Final = " \t\n\r\f._/\\\\-"
_ASCII_CHAIN: Final = re.compile(rf"([0-9][0-9{_ASCII_SEPARATORS}]{{{_MIN_PAN_DIGITS - 1},}})")
_ASCII_SEPARATOR_BYTES: Final = b" \t\n\r\f._/\\-"

# The serialised event's first look, with bytes: a chain of 13 digits is a run of 13 bytes or more
# that are ASCII digits, ASCII separators, the letters of JSON's escapes (\n, \t, \r, \f, \\) or
# non-ASCII (a Unicode digit or separator is 2–4 bytes). Such bytes are marked "#", the rest ".".
_MARKED: Final = b"0123456789 ._/-\\ntrf"
_RUN_MARKS: Final = bytes(35 if (code >= 128 or bytes([code]) in _MARKED) else 46 for code in range(256))
_RUN: Final = b"#" * _MIN_PAN_DIGITS
_NON_ASCII: Final = bytes(range(128, 256))
_ASCII_DIGITS: Final = b"0123456789"
# Where a card object or a secret may be, as JSON writes it.
_CARD_MARKERS: Final = tuple(
    [f'"{key}":'.encode() for key in sorted(CARD_KEYS)] + [f'"object":"{kind}"'.encode() for kind in sorted(CARD_OBJECT_TYPES)]
)
_SECRET_MARKERS: Final = tuple(f'"{key}":'.encode() for key in sorted(SECRET_KEYS))
# The top-level members where Stripe's objects keep card objects, card options and secrets (a charge's
# payment_method_details and legacy source, its expanded refunds, a PaymentIntent's client_secret, options,
# last error and older versions' charges, an invoice's or subscription's payment_settings, a customer's
# sources): looked at first by `redacted_sorted_json`.
_LIKELY_MEMBERS: Final = (
    "charges", "client_secret", "default_source", "last_payment_error", "payment_method", "payment_method_details",
    "payment_method_options", "payment_settings", "refunds", "source", "sources",
)
_DROPPED: Final = object()
# Sum of the digits of 2*d, for the doubled positions of the Luhn check.
_DOUBLED: Final = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)

# Masking, on the digits of all chains at once (see `_hidden_digits`): one ASCII digit per digit, and
# between two chains a gap of 18 non-digits, so that no window of 19 reaches from one chain to the next.
_GAP: Final = "x" * (_MAX_PAN_DIGITS - 1)
_HOLDS_PAN_LENGTH: Final = re.compile(rb"[0-9]{%d}" % _MIN_PAN_DIGITS)
_DIGIT: Final = re.compile(r"\d")
# Unicode digits become ASCII digits, separators go (the ASCII ones are deleted with bytes.translate).
# Decimal digits come in runs of ten from 0 to 9, so looking at every tenth code point finds every run.
_TO_ASCII_DIGITS: Final[dict[int, int | None]] = {
    zero + value: 48 + value
    for zero in {code - unicodedata.decimal(chr(code)) for code in range(0, sys.maxunicode + 1, 10)
                 if chr(code).isdecimal()}
    for value in range(10)
} | {ord(char): None for char in re.findall(f"[{SEPARATORS}]", "".join(map(chr, range(0x10000))))}
_WITHOUT_SEPARATORS: Final = {code: None for code, digit in _TO_ASCII_DIGITS.items() if digit is None}
# Each digit and gap becomes a NUL (made "%c" to put the masked digits back in place), separators stay.
_TO_PLACEHOLDER: Final = {code: 0 for code, digit in _TO_ASCII_DIGITS.items() if digit is not None} | {ord(_GAP[0]): 0}


def _byte_table(value_of: Callable[[int], int]) -> bytes:
    """A bytes.translate table: `value_of` each byte."""
    return bytes(value_of(code) for code in range(256))


def _digit_table(value_of: Callable[[int], int]) -> bytes:
    """A bytes.translate table: `value_of` each ASCII digit's value, 0 for every other byte."""
    return _byte_table(lambda code: value_of(code - 48) if 48 <= code <= 57 else 0)


_PLAIN_BYTES: Final = _digit_table(lambda value: value)
_DOUBLED_BYTES: Final = _digit_table(lambda value: _DOUBLED[value])
_MAY_START: Final = _digit_table(lambda value: 1 if value else 0)  # no card number starts with 0
_MAY_END: Final = _digit_table(lambda value: 1)
_LUHN_VALID: Final = _byte_table(lambda total: 1 if total % 10 == 0 else 0)
_HIGH_BIT: Final = _byte_table(lambda count: 0x80 if count else 0)
_ONE_IF_ANY: Final = _byte_table(lambda count: 1 if count else 0)
_STAR_IF_HIGH: Final = _byte_table(lambda code: 42 if code >= 0x80 else code)
# _ONES[n] holds n bytes of 1: a product with it sums n neighbouring bytes. The two kernels sum, for the
# shortest window, the digits its last digit's Luhn check counts plain (at even distances) and doubled (odd).
_ONES: Final = tuple(int.from_bytes(b"\x01" * n, "little") for n in range(_MAX_PAN_DIGITS + 1))
_PLAIN_KERNEL: Final = int.from_bytes(b"\x01\x00" * (_MIN_PAN_DIGITS // 2) + b"\x01", "little")
_DOUBLED_KERNEL: Final = int.from_bytes(b"\x00\x01" * (_MIN_PAN_DIGITS // 2), "little")


def luhn_valid(digits: str) -> bool:
    """Return whether a string of ASCII digits passes the Luhn check (False if empty or not digits)."""
    if not digits or not digits.isascii() or not digits.isdigit():
        return False
    total = 0
    double = False
    for char in reversed(digits):
        value = ord(char) - 48
        total += _DOUBLED[value] if double else value
        double = not double
    return total % 10 == 0


def holds_more_digits(text: str, limit: int) -> bool:
    """Return whether `text` holds more than `limit` decimal digits of any script (what masking works on).

    Counts no further than the digit past `limit`, so a text of a million digits costs as little as one of
    `limit`.
    """
    return len(text) > limit and next(islice(_DIGIT.finditer(text), limit, None), None) is not None


def mask_pans(text: str) -> str:
    """Return `text` with the digits of every Luhn-valid 13–19 digit window masked but its last four."""
    if len(text) < _MIN_PAN_DIGITS:
        return text
    parts = (_ASCII_CHAIN if text.isascii() else _CHAIN).split(text)
    if len(parts) == 1:
        return text
    masked = _mask_chains(parts[1::2])
    if masked is None:
        return text
    parts[1::2] = masked
    return "".join(parts)


def redact_event(event: dict[str, Any]) -> dict[str, Any]:
    """Return the redacted event (parsed JSON); the input is never mutated.

    Copy on write: containers holding nothing to redact are shared with the input rather than
    copied, so the result must be treated as read-only. As in `redacted_json`, an event whose text
    shows nothing that could need work is returned without walking its tree (the importer's hot path).
    """
    text = _json_text(event)
    pans = _may_hold_pan(text)
    if not pans and not _may_hold_card_or_secret(text):
        return event
    return _redact_dict(event, False, pans)


def redacted_json(event: dict[str, Any]) -> str:
    """Return the compact JSON text of the redacted event: what an envelope carries as its payload.

    The webhook receiver's hot path: when the serialisation shows nothing that could need work (see
    `_needs_work`), the text is the answer and no tree is walked.
    """
    text = _json_text(event)
    pans = _may_hold_pan(text)
    if pans or _may_hold_card_or_secret(text):
        redacted = _redact_dict(event, False, pans)
        if redacted is not event:
            text = _json_text(redacted)
    return text.decode("utf-8", "surrogatepass")


def redacted_sorted_json(obj: dict[str, Any]) -> bytes:
    """Return the compact JSON of the redacted object with its keys sorted at every level.

    Exactly `orjson.dumps(redact_event(obj), option=orjson.OPT_SORT_KEYS)` (the snapshot's payload and the
    text its id hashes), without walking the whole object when it can be avoided. Every card key, card
    type and secret key in a tree writes its marker into the tree's JSON, so when the markers in the
    object's text are all found inside the few top-level members where Stripe keeps cards, card options
    and secrets (`_LIKELY_MEMBERS`), only those members are redacted and nothing else can need it; any
    marker elsewhere, a possible card number or a card as the object itself sends the object through
    `redact_event` whole. Raises what orjson raises for a value it cannot write, as the plain call would.
    """
    try:
        text = _sorted_json(obj)
    except (TypeError, orjson.JSONEncodeError):  # e.g. nested past orjson's depth in a part redaction drops
        return _sorted_json(redact_event(obj))
    pans = _may_hold_pan(text)
    markers = _marker_count(text)
    if not pans and not markers:
        return text
    object_type = obj.get("object")
    if pans or (type(object_type) is str and object_type in CARD_OBJECT_TYPES):
        return _sorted_json(redact_event(obj))
    explained = 0
    changes: dict[str, Any] = {}
    for key in _LIKELY_MEMBERS:
        if key not in obj:
            continue
        value = obj[key]
        if key in SECRET_KEYS:
            explained += 1  # the key's own marker; its value is dropped with it
            changes[key] = _DROPPED
            value_text = _sorted_json(value)
            explained += _marker_count(value_text)
            continue
        if type(value) is not dict and type(value) is not list:
            continue  # a scalar holds no marker (quotes inside strings are escaped)
        value_text = _sorted_json(value)
        found = _marker_count(value_text)
        if not found:
            continue
        explained += found
        redacted = _redact_value(value, False, key)
        if redacted is not value:
            changes[key] = orjson.Fragment(_sorted_json(redacted))
    if explained != markers:  # a marker outside those members: walk the whole object
        return _sorted_json(redact_event(obj))
    if not changes:
        return text
    members = dict(obj)
    for key, change in changes.items():
        if change is _DROPPED:
            del members[key]
        else:
            members[key] = change
    return _sorted_json(members)


def _sorted_json(value: object) -> bytes:
    """Compact JSON with keys sorted at every level: the snapshots' canonical form."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def _marker_count(text: bytes) -> int:
    """How many card or secret markers a JSON text holds (at least one per card key, card type and secret key).

    `find`, not `in`: `bytes.__contains__` first tries its argument as an integer, which costs more than
    scanning a short text.
    """
    count = 0
    if text.find(b'card"') >= 0 or text.find(b'_present"') >= 0:
        for marker in _CARD_MARKERS:
            count += text.count(marker)
    if text.find(b'secret":') >= 0:
        for marker in _SECRET_MARKERS:
            count += text.count(marker)
    return count


def _json_text(value: object) -> bytes:
    """Return `value` as compact JSON, strings written verbatim (orjson; json for what orjson refuses)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except (TypeError, orjson.JSONEncodeError):  # e.g. lone surrogates, integers beyond 64 bits
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")


def _may_hold_card_or_secret(text: bytes) -> bool:
    """Tell whether a JSON text may hold a card object or a secret-bearing key (never wrong the other way)."""
    return _marker_count(text) > 0


def _may_hold_pan(text: bytes) -> bool:
    """Tell whether some run of the JSON text could hold 13 digits (a necessary condition for a card number)."""
    marks = text.translate(_RUN_MARKS)
    start = marks.find(_RUN)
    while start >= 0:
        end = marks.find(b".", start)
        if end < 0:
            end = len(text)
        run = text[start:end]
        ascii_digits = len(run) - len(run.translate(None, _ASCII_DIGITS))
        non_ascii = len(run) - len(run.translate(None, _NON_ASCII))
        if ascii_digits + non_ascii // 2 >= _MIN_PAN_DIGITS:
            return True
        start = marks.find(_RUN, end)
    return False


def _mask_chains(chains: list[str]) -> list[str] | None:
    """Return the chains with their card-number digits masked, or None if none holds a card number.

    Every step works on the text of all chains at once, in C (a regular-expression split, str.join and
    str.translate, arithmetic on big integers, %-formatting): a megabyte of digits costs a few dozen passes
    over it, and no Python statement runs per chain, per digit or per window.
    """
    joined = _GAP.join(chains)
    ascii_only = joined.isascii()
    if ascii_only:
        digits = joined.encode("ascii").translate(None, _ASCII_SEPARATOR_BYTES)
    else:
        digits = joined.translate(_TO_ASCII_DIGITS).encode("ascii")
    if _HOLDS_PAN_LENGTH.search(digits) is None:
        return None
    hidden = _hidden_digits(digits)
    if not hidden:
        return None
    marks = hidden.to_bytes(len(digits), "little")
    if len(digits) == len(joined):  # no separators
        return _starred(joined, marks).split(_GAP)
    originals = digits.decode("ascii") if ascii_only else joined.translate(_WITHOUT_SEPARATORS)
    # Put the separators back: in the chains' text a "%c" stands for each digit and gap.
    template = joined.translate(_TO_PLACEHOLDER).replace("\x00", "%c")
    return (template % tuple(_starred(originals, marks))).split(_GAP)


def _hidden_digits(digits: bytes) -> int:
    """Return, as the bytes of an integer (little-endian), how many valid windows hide each digit (0: none).

    `digits` holds ASCII digits and gaps. A byte array read as an integer adds, shifts and sums
    neighbourhoods (a product with `_ONES[n]`) in every byte at once, and no byte carries into the next
    while each stays below 256: a window's Luhn sum is at most 19 × 9 = 171, and at most 84 windows hide one
    digit. For each window length, byte q of `sums` is the Luhn sum of the window of that length ending at
    digit q; a valid one (sum divisible by 10, first digit not 0, last digit a digit) hides all but its last four.
    """
    size = len(digits)
    plain = int.from_bytes(digits.translate(_PLAIN_BYTES), "little")
    doubled = int.from_bytes(digits.translate(_DOUBLED_BYTES), "little")
    may_start = int.from_bytes(digits.translate(_MAY_START), "little")
    may_end = int.from_bytes(digits.translate(_MAY_END), "little")
    sums = plain * _PLAIN_KERNEL + doubled * _DOUBLED_KERNEL
    hidden = 0
    for length in range(_MIN_PAN_DIGITS, min(_MAX_PAN_DIGITS, size) + 1):
        if length > _MIN_PAN_DIGITS:  # one digit more, at distance length - 1 from the window's end
            sums += (doubled if length % 2 == 0 else plain) << (8 * (length - 1))
        sum_bytes = sums.to_bytes(size + _MAX_PAN_DIGITS, "little")
        ends = int.from_bytes(sum_bytes.translate(_LUHN_VALID), "little") & may_end
        starts = (ends >> (8 * (length - 1))) & may_start
        hidden += starts * _ONES[length - _VISIBLE_DIGITS]
    return hidden


def _starred(chars: str, marks: bytes) -> str:
    """Return `chars` (digits and gaps) with a `*` for each character whose mark is not 0."""
    size = len(chars)
    if chars.isascii():
        merged = int.from_bytes(chars.encode("ascii"), "little") | int.from_bytes(marks.translate(_HIGH_BIT), "little")
        return merged.to_bytes(size, "little").translate(_STAR_IF_HIGH).decode("ascii")
    # Four bytes a character: each marked one's bytes become those of "*", the others' stay.
    original = int.from_bytes(chars.encode("utf-32-le"), "little")
    stars = int.from_bytes(("*" * size).encode("utf-32-le"), "little")
    selected = int.from_bytes(marks.translate(_ONE_IF_ANY).decode("latin-1").encode("utf-32-le"), "little") * 0xFFFFFFFF
    return (original ^ ((original ^ stars) & selected)).to_bytes(4 * size, "little").decode("utf-32-le")


def _mask_number(value: int | float) -> object:
    """Return a JSON number holding a card-number window as the masked string of its digits, else itself.

    An integer needs 13 digits to hold one; a float's digits are in its shortest repr (a card number can
    hide in the mantissa of 4.242424242424242e-05 as well).
    """
    if type(value) is int and -_SMALLEST_PAN_NUMBER < value < _SMALLEST_PAN_NUMBER:
        return value
    text = repr(value)
    masked = mask_pans(text)
    return value if masked == text else masked


def _redact_dict(obj: dict[Any, Any], in_options: bool, pans: bool) -> dict[Any, Any]:
    """Return `obj` itself if nothing in it needs redacting, else a redacted copy (a card object reduced).

    `pans` says whether the event's text may hold a card number at all; without, strings and numbers
    are not examined (only card objects and secret keys are looked for).
    """
    object_type = obj.get("object")
    if type(object_type) is str and object_type in CARD_OBJECT_TYPES:
        return _reduce_card(obj, pans)
    copy: dict[Any, Any] | None = None
    # The common types are dispatched inline: this loop is the hot path of the webhook receiver.
    for key, value in obj.items():
        if type(key) is str and (key in SECRET_KEYS or (pans and len(key) >= _MIN_PAN_DIGITS and mask_pans(key) != key)):
            return _rebuild_dict(obj, in_options, pans)  # a key to drop or mask: rebuild in key order
        kind = type(value)
        if kind is str:
            if not pans or len(value) < _MIN_PAN_DIGITS:
                continue
            redacted: object = mask_pans(value)
        elif kind is dict:
            if key in CARD_KEYS and not in_options:
                redacted = _reduce_card(value, pans)
            else:
                redacted = _redact_dict(value, key == _OPTIONS_KEY, pans)
        elif kind is list:
            redacted = _redact_list(value, pans)
        elif kind is int or kind is float:
            if not pans:
                continue
            redacted = _mask_number(value)
        elif kind is bool or value is None:
            continue
        else:
            redacted = _redact_value(value, pans, key, in_options)
        if redacted is not value and redacted != value:
            if copy is None:
                copy = dict(obj)
            copy[key] = redacted
    return obj if copy is None else copy


def _rebuild_dict(obj: dict[Any, Any], in_options: bool, pans: bool) -> dict[Any, Any]:
    """Return a redacted copy of a dict with keys to drop or mask, in the original key order."""
    out: dict[Any, Any] = {}
    for key, value in obj.items():
        if key in SECRET_KEYS:
            continue
        value = _redact_value(value, pans, key, in_options)
        if pans and type(key) is str:
            key = mask_pans(key)
        out[key] = value
    return out


def _redact_list(items: list[Any], pans: bool) -> list[Any]:
    """Return `items` itself if nothing in it needs redacting, else a redacted copy."""
    copy: list[Any] | None = None
    for index, item in enumerate(items):
        redacted = _redact_value(item, pans)
        if redacted is not item:
            if copy is None:
                copy = list(items)
            copy[index] = redacted
    return items if copy is None else copy


def _redact_value(value: object, pans: bool, parent_key: object = None, in_options: bool = False) -> object:
    """Return `value` (any JSON value found under `parent_key`) itself, or a redacted copy."""
    if isinstance(value, str):
        masked = mask_pans(value) if pans else value
        return value if masked == value else masked
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return _mask_number(value) if pans else value
    if isinstance(value, dict):
        if parent_key in CARD_KEYS and not in_options:
            return _reduce_card(value, pans)
        return _redact_dict(value, parent_key == _OPTIONS_KEY, pans)
    if isinstance(value, list):
        return _redact_list(value, pans)
    if isinstance(value, tuple):
        return tuple(_redact_value(item, pans) for item in value)
    return value


def _reduce_card(card: dict[Any, Any], pans: bool) -> dict[Any, Any]:
    """Keep only the allow-listed fields of a card object, in their original order."""
    return {key: _redact_value(value, pans) for key, value in card.items() if key in CARD_ALLOWED_KEYS}
