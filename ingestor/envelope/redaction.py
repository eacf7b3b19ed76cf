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
3. **PAN-like digit runs are masked** in every string (values and keys alike) and in every JSON number, by
   `card_numbers.mask_pans` (its rules: Unicode digits, any separators, every Luhn-valid 13–19 digit window
   hidden but its last four).

Everything else is unchanged: ids, amounts, structure and key order. If two keys of one dict mask to
the same text, the later one wins, exactly as for duplicate keys in JSON.

Speed: the receiver's hot path. One pass over the serialised event decides whether anything may need
work (a run of 13 bytes that could hold 13 digits, a card key or type, a secret key); a clean event
is returned without walking its tree. The importer's snapshots go further (`redacted_sorted_json`):
when every marker in the object's text lies inside the few top-level members where Stripe keeps
cards, card options and secrets, only those are walked, since one `payment_method_options.card`
would otherwise send every invoice through a walk of its ~45 containers.
"""

from __future__ import annotations

import json
from typing import Any, Final

import orjson

from ingestor.envelope.card_numbers import MIN_PAN_DIGITS, mask_number, mask_pans, may_hold_pan

__all__ = [
    "CARD_ALLOWED_KEYS",
    "CARD_KEYS",
    "CARD_OBJECT_TYPES",
    "SECRET_KEYS",
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
_OPTIONS_KEY: Final = "payment_method_options"
# Where a card object or a secret may be, as JSON writes it.
_CARD_MARKERS: Final = tuple(
    [f'"{key}":'.encode() for key in sorted(CARD_KEYS)]
    + [f'"object":"{kind}"'.encode() for kind in sorted(CARD_OBJECT_TYPES)]
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


def redact_event(event: dict[str, Any]) -> dict[str, Any]:
    """Return the redacted event (parsed JSON); the input is never mutated.

    Copy on write: containers holding nothing to redact are shared with the input rather than
    copied, so the result must be treated as read-only. As in `redacted_json`, an event whose text
    shows nothing that could need work is returned without walking its tree (the importer's hot path).
    """
    text = _json_text(event)
    pans = may_hold_pan(text)
    if not pans and not _may_hold_card_or_secret(text):
        return event
    return _redact_dict(event, False, pans)


def redacted_json(event: dict[str, Any]) -> str:
    """Return the compact JSON text of the redacted event: what an envelope carries as its payload.

    The webhook receiver's hot path: when the serialisation shows nothing that could need work (see
    `_needs_work`), the text is the answer and no tree is walked.
    """
    text = _json_text(event)
    pans = may_hold_pan(text)
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
    pans = may_hold_pan(text)
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
        if type(key) is str and (key in SECRET_KEYS or (pans and len(key) >= MIN_PAN_DIGITS and mask_pans(key) != key)):
            return _rebuild_dict(obj, in_options, pans)  # a key to drop or mask: rebuild in key order
        kind = type(value)
        if kind is str:
            if not pans or len(value) < MIN_PAN_DIGITS:
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
            redacted = mask_number(value)
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
        return mask_number(value) if pans else value
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
