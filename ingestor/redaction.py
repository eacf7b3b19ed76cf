"""Card-data reduction for Stripe event payloads (design invariant 6).

Place in the flow: the webhook receiver, the poller and the importer parse a Stripe event, call
`redact_event` on it, and only then build the envelope and publish it to Kafka. Nothing upstream of
this module may store or publish a payload, so no full card number ever reaches Kafka or Postgres.

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

import re
from typing import Any, Final

__all__ = [
    "CARD_ALLOWED_KEYS",
    "CARD_KEYS",
    "CARD_OBJECT_TYPES",
    "luhn_valid",
    "mask_pans",
    "redact_event",
]

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
    """Return a redacted copy of a parsed Stripe event; the input is never mutated."""
    return _redact_dict(event, False)


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


def _redact_dict(obj: dict[Any, Any], in_options: bool) -> dict[Any, Any]:
    """Redact every key and value of a dict, reducing it instead if it is a card object."""
    object_type = obj.get("object")
    if type(object_type) is str and object_type in CARD_OBJECT_TYPES:
        return _reduce_card(obj)
    out: dict[Any, Any] = {}
    # The common types are dispatched inline: this loop is the hot path of the webhook receiver.
    for key, value in obj.items():
        kind = type(value)
        if kind is str:
            if len(value) >= _MIN_PAN_DIGITS and _HINT.search(value) is not None:
                value = mask_pans(value)
        elif kind is dict:
            if key in CARD_KEYS and not in_options:
                value = _reduce_card(value)
            else:
                value = _redact_dict(value, key == _OPTIONS_KEY)
        elif kind is list:
            value = [_redact_value(item) for item in value]
        elif kind not in _SCALAR_TYPES:
            value = _redact_value(value, key, in_options)
        if type(key) is str and len(key) >= _MIN_PAN_DIGITS and _HINT.search(key) is not None:
            key = mask_pans(key)
        out[key] = value
    return out


def _redact_value(value: object, parent_key: object = None, in_options: bool = False) -> object:
    """Redact one JSON value of any type found under `parent_key`."""
    if isinstance(value, str):
        return mask_pans(value)
    if isinstance(value, dict):
        if parent_key in CARD_KEYS and not in_options:
            return _reduce_card(value)
        return _redact_dict(value, parent_key == _OPTIONS_KEY)
    if isinstance(value, list):
        return [_redact_value(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_redact_value(item) for item in value)
    return value


def _reduce_card(card: dict[Any, Any]) -> dict[Any, Any]:
    """Keep only the allow-listed fields of a card object, in their original order."""
    return {key: _redact_value(value) for key, value in card.items() if key in CARD_ALLOWED_KEYS}
