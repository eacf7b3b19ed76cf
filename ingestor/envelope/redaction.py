"""Card-data reduction for Stripe event payloads (design invariant 6).

Place in the flow: the webhook receiver, the poller and the importer parse a Stripe event and build
its envelope, whose payload is `redacted_json(event)` (snapshots use `redact_event`), and only then
publish it to Kafka. Nothing upstream of this module may store or publish a payload, so no full card
number ever reaches Kafka or Postgres.

Two rules, both applied anywhere in the tree:

1. **Card objects are reduced to an allow-list.** A card object is a dict stored under one of the keys
   in `CARD_KEYS` (``payment_method_details.card``, ``payment_method.card``, ...) or a dict whose
   ``"object"`` is in `CARD_OBJECT_TYPES` (``source``, ``sources.data[]``, ``default_source``, ...).
   It keeps only the keys in `CARD_ALLOWED_KEYS`, in their original order: ``brand``, ``last4``,
   ``exp_month``, ``exp_year``, ``funding``, ``country`` (not cardholder data under PCI DSS, and what the
   revenue tables show at the *full* level), plus ``id`` and ``object`` so references and the shape
   stay intact. Everything else is dropped: ``number``, ``cvc``, ``iin``, ``issuer``, ``description``,
   ``fingerprint`` (a stable per-card identifier we have no use for), ``name`` and the address fields,
   ``wallet`` (may carry billing and shipping addresses), ``checks``, ``networks``,
   ``three_d_secure*``, ``cardholder_name`` and the rest.
   Exception: a ``card`` dict directly under ``payment_method_options`` holds settings for *how* to
   charge (``request_three_d_secure``, ``installments``...), not a card, so it is left alone (rule 2
   still applies inside it).
2. **PAN-like digit runs are masked in every string**, values and keys alike (metadata keys included).
   Definitions (ASCII digits only):

   - a *group* is a maximal run of digits; groups separated by exactly one space or one dash form a
     *chain* (``"4242 4242 4242 4242"`` is one chain of four groups);
   - a *candidate* is one or more consecutive groups of a chain holding 13–19 digits in total, so a
     card number is assumed to start and end on a group boundary;
   - a Luhn-valid candidate is replaced, separators included, by ``"*"`` for every digit but the last
     four followed by those four digits: ``"4242-4242-4242-4242"`` → ``"************4242"``,
     ``"378282246310005"`` → ``"***********0005"``.

   A single unbroken run of 20 or more digits is never a candidate: no card scheme issues numbers
   longer than 19 digits, and testing every 13–19 digit window of a long reference number would mask
   about one window in ten by chance. Masking repeats until nothing changes, so the four visible
   digits can never combine with a following group into a new candidate, and redacting twice gives
   the same result as redacting once. Integers, floats, booleans and ``None`` are never touched.

Everything else is unchanged: ids, amounts, structure and key order. If two keys of one dict mask to
the same text, the later one wins, exactly as for duplicate keys in JSON.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

import orjson

__all__ = [
    "CARD_ALLOWED_KEYS",
    "CARD_KEYS",
    "CARD_OBJECT_TYPES",
    "luhn_valid",
    "mask_pans",
    "redact_event",
    "redacted_json",
]

Spans = tuple[str, ...]  # every 13-character span a card number in the tree could contain

CARD_ALLOWED_KEYS: Final = frozenset(
    {"id", "object", "brand", "last4", "exp_month", "exp_year", "funding", "country"}
)
CARD_KEYS: Final = frozenset({"card", "card_present", "interac_present"})
CARD_OBJECT_TYPES: Final = frozenset({"card", "issuing.card"})

_OPTIONS_KEY: Final = "payment_method_options"
_MIN_PAN_DIGITS: Final = 13
_MAX_PAN_DIGITS: Final = 19
_VISIBLE_DIGITS: Final = 4
_SCALAR_TYPES: Final = frozenset({int, float, bool, type(None)})

# Cheap pre-check: 13 characters of digits, spaces and dashes starting and ending with a digit. Every
# candidate contains such a span, almost no Stripe string (ids, urls, statuses) does, and this form is
# about twice as fast to search as an exact "13 digits" pattern.
_HINT: Final = re.compile(r"[0-9][0-9 -]{11}[0-9]")
_CHAIN: Final = re.compile(r"[0-9]+(?:[ -][0-9]+)*")
_SEPARATOR: Final = re.compile(r"([ -])")
# Where a card object may be, as JSON writes it: a card key, or a card "object" type.
_CARD_MARKERS: Final = tuple(
    [f'"{key}":'.encode() for key in sorted(CARD_KEYS)] + [f'"object":"{kind}"'.encode() for kind in sorted(CARD_OBJECT_TYPES)]
)
# Digits, spaces and dashes marked "#", everything else ".", to find runs of 13 with bytes.find.
_RUN_MARKS: Final = bytes(35 if chr(code) in "0123456789 -" else 46 for code in range(256))
_RUN: Final = b"#" * _MIN_PAN_DIGITS
# Sum of the digits of 2*d, for the doubled positions of the Luhn check.
_DOUBLED: Final = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


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


def mask_pans(text: str) -> str:
    """Return `text` with every Luhn-valid 13–19 digit candidate masked down to its last four digits."""
    if len(text) < _MIN_PAN_DIGITS or _HINT.search(text) is None:
        return text
    while True:
        masked = _CHAIN.sub(_mask_chain, text)
        if masked == text:
            return text
        text = masked


def redact_event(event: dict[str, Any]) -> dict[str, Any]:
    """Return the redacted event (parsed JSON); the input is never mutated.

    Copy on write: containers holding nothing to redact are shared with the input rather than
    copied, so the result must be treated as read-only.
    """
    return _redact_dict(event, False, _pan_spans(_json_text(event)))


def redacted_json(event: dict[str, Any]) -> str:
    """Return the compact JSON text of the redacted event: what an envelope carries as its payload.

    The webhook receiver's hot path. The serialisation shows everything that could need redacting,
    because JSON writes strings verbatim (digits, spaces and dashes are never escaped): with no
    PAN-like span and no card object in the text, the text is the answer and no tree is walked;
    otherwise only strings holding one of the spans found are examined.
    """
    text = _json_text(event)
    spans = _pan_spans(text)
    if spans or _may_hold_card(text):
        redacted = _redact_dict(event, False, spans)
        if redacted is not event:
            text = _json_text(redacted)
    return text.decode("utf-8", "surrogatepass")


def _json_text(value: object) -> bytes:
    """Return `value` as compact JSON, strings written verbatim (orjson; json for what orjson refuses)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except (TypeError, orjson.JSONEncodeError):  # e.g. lone surrogates, integers beyond 64 bits
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")


def _pan_spans(text: bytes) -> Spans:
    """Return the last 13 characters of every run of 13+ digits, spaces and dashes in a JSON text.

    A string holding a card-number candidate holds such a run, so it contains one of these spans:
    a substring test per string instead of a regular expression. A run cannot cross a quote; it can
    start with the hex digits of an escape (a control character written as \\u0007), which is why
    the span is taken at the run's end.
    """
    marks = text.translate(_RUN_MARKS)
    spans = set()
    start = marks.find(_RUN)
    while start >= 0:
        end = marks.find(b".", start)
        if end < 0:
            end = len(text)
        spans.add(text[end - _MIN_PAN_DIGITS:end].decode("ascii"))
        start = marks.find(_RUN, end)
    return tuple(spans)


def _may_hold_card(text: bytes) -> bool:
    """Tell whether a JSON text may hold a card object (by key or by "object" type)."""
    if b'card"' not in text and b'_present"' not in text:  # in every marker: one quick scan rules most texts out
        return False
    return any(marker in text for marker in _CARD_MARKERS)


def _holds_span(text: str, spans: Spans) -> bool:
    """Tell whether `text` contains one of `spans` (so may hold a card number)."""
    for span in spans:
        if span in text:
            return True
    return False


def _mask_chain(match: re.Match[str]) -> str:
    """Mask the Luhn-valid candidates of one chain of digit groups, keeping other separators."""
    chain = match.group()
    if len(chain) < _MIN_PAN_DIGITS:
        return chain
    parts = _SEPARATOR.split(chain)
    groups = parts[0::2]
    separators = parts[1::2]
    out: list[str] = []
    changed = False
    start = 0
    while start < len(groups):
        if start:
            out.append(separators[start - 1])
        end = _longest_pan_end(groups, start)
        if end is None:
            out.append(groups[start])
            start += 1
            continue
        digits = "".join(groups[start:end])
        out.append("*" * (len(digits) - _VISIBLE_DIGITS) + digits[-_VISIBLE_DIGITS:])
        changed = True
        start = end
    return "".join(out) if changed else chain


def _longest_pan_end(groups: list[str], start: int) -> int | None:
    """Return the end index of the longest Luhn-valid candidate starting at `start`, if any."""
    digit_count = 0
    best: int | None = None
    for end in range(start + 1, len(groups) + 1):
        digit_count += len(groups[end - 1])
        if digit_count > _MAX_PAN_DIGITS:
            break
        if digit_count >= _MIN_PAN_DIGITS and luhn_valid("".join(groups[start:end])):
            best = end
    return best


def _redact_dict(obj: dict[Any, Any], in_options: bool, spans: Spans) -> dict[Any, Any]:
    """Return `obj` itself if nothing in it needs redacting, else a redacted copy (a card object reduced)."""
    object_type = obj.get("object")
    if type(object_type) is str and object_type in CARD_OBJECT_TYPES:
        return _reduce_card(obj, spans)
    copy: dict[Any, Any] | None = None
    # The common types are dispatched inline: this loop is the hot path of the webhook receiver.
    for key, value in obj.items():
        if spans and type(key) is str and len(key) >= _MIN_PAN_DIGITS and _holds_span(key, spans):
            return _rebuild_dict(obj, in_options, spans)  # a key to mask: rebuild in key order
        kind = type(value)
        if kind is str:
            if not spans or len(value) < _MIN_PAN_DIGITS or not _holds_span(value, spans):
                continue
            redacted: object = mask_pans(value)
        elif kind is dict:
            if key in CARD_KEYS and not in_options:
                redacted = _reduce_card(value, spans)
            else:
                redacted = _redact_dict(value, key == _OPTIONS_KEY, spans)
        elif kind is list:
            redacted = _redact_list(value, spans)
        elif kind in _SCALAR_TYPES:
            continue
        else:
            redacted = _redact_value(value, spans, key, in_options)
        if redacted is not value:
            if copy is None:
                copy = dict(obj)
            copy[key] = redacted
    return obj if copy is None else copy


def _rebuild_dict(obj: dict[Any, Any], in_options: bool, spans: Spans) -> dict[Any, Any]:
    """Return a redacted copy of a dict whose keys may need masking, in the original key order."""
    out: dict[Any, Any] = {}
    for key, value in obj.items():
        value = _redact_value(value, spans, key, in_options)
        if type(key) is str:
            key = mask_pans(key)
        out[key] = value
    return out


def _redact_list(items: list[Any], spans: Spans) -> list[Any]:
    """Return `items` itself if nothing in it needs redacting, else a redacted copy."""
    copy: list[Any] | None = None
    for index, item in enumerate(items):
        redacted = _redact_value(item, spans)
        if redacted is not item:
            if copy is None:
                copy = list(items)
            copy[index] = redacted
    return items if copy is None else copy


def _redact_value(value: object, spans: Spans, parent_key: object = None, in_options: bool = False) -> object:
    """Return `value` (any JSON value found under `parent_key`) itself, or a redacted copy."""
    if isinstance(value, str):
        return mask_pans(value) if spans and _holds_span(value, spans) else value
    if isinstance(value, dict):
        if parent_key in CARD_KEYS and not in_options:
            return _reduce_card(value, spans)
        return _redact_dict(value, parent_key == _OPTIONS_KEY, spans)
    if isinstance(value, list):
        return _redact_list(value, spans)
    if isinstance(value, tuple):
        return tuple(_redact_value(item, spans) for item in value)
    return value


def _reduce_card(card: dict[Any, Any], spans: Spans) -> dict[Any, Any]:
    """Keep only the allow-listed fields of a card object, in their original order."""
    return {key: _redact_value(value, spans) for key, value in card.items() if key in CARD_ALLOWED_KEYS}
