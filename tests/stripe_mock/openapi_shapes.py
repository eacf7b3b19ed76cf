"""JSON Schemas of the five objects we read, cut from Stripe's OpenAPI spec (the one stripe-mock ships).

Stripe's component schemas are OpenAPI 3.0 (`nullable`, `x-*` keys, recursive `$ref`s through every
expandable field) and far larger than what revenue reads. `object_schema` turns one into plain JSON
Schema: `$ref`s resolved (a schema already on the path becomes its id string,
as an unexpanded field is), `nullable` as a null alternative, and only the properties the canonical
model reads (`READ_FIELDS`) kept — each with Stripe's own type, enum, nullability and requiredness, so
every generated object is one Stripe's spec allows, in the fields that matter. `objects` draws them.

(hypothesis-jsonschema 0.23.1, the last release, fails on this Hypothesis — `'many' object has no
attribute 'more'` — and the schemas here use only type, enum, properties/required, items and anyOf.)
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from hypothesis import strategies as st

from stack.stripe_mock import openapi_spec

# Every property name schemas/stripe_objects/ reads, at any depth (money, currency, interval, ids, times).
READ_FIELDS = frozenset({
    "id", "object", "created", "livemode", "deleted", "amount", "amount_captured", "amount_refunded", "captured",
    "paid", "currency", "status", "failure_code", "description", "customer", "invoice", "payment_intent",
    "payment_method_details", "card", "brand", "last4", "source", "refunds", "data", "has_more", "items",
    "price", "plan", "quantity", "recurring", "interval", "interval_count", "usage_type", "unit_amount",
    "unit_amount_decimal", "billing_scheme", "tiers", "tiers_mode", "up_to", "flat_amount", "flat_amount_decimal",
    "transform_quantity", "divide_by", "round", "discount", "discounts", "coupon", "duration", "percent_off",
    "amount_off", "trial_end", "current_period_start", "current_period_end", "cancel_at_period_end",
    "canceled_at", "ended_at", "start_date", "total", "amount_due", "amount_paid", "amount_remaining",
    "period_start", "period_end", "status_transitions", "paid_at", "number", "billing_reason", "subscription",
    "parent", "subscription_details", "amount_received", "email", "name", "forgiven", "closed", "date",
    "currency_options", "start", "applies_to", "products", "subscription_item", "invoice_item", "checkout_session",
})
CURRENCIES = ["usd", "eur", "jpy", "gbp", "USD"]
MAX_ITEMS = 3
MAX_STRING = 12


@cache
def _schemas() -> dict[str, Any]:
    with open(openapi_spec(), encoding="utf-8") as f:
        schemas: dict[str, Any] = json.load(f)["components"]["schemas"]
    return schemas


def object_schema(name: str) -> dict[str, Any]:
    """The JSON Schema of Stripe's `name` object (e.g. "charge"), cut to what the model reads."""
    converted = _convert(_schemas()[name], (name,))
    assert converted is not None
    return converted


def _convert(node: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any] | None:
    """One OpenAPI node as JSON Schema; None for a node that cannot occur here (a recursion cut off)."""
    if "$ref" in node:
        target = node["$ref"].rsplit("/", 1)[1]
        if target in path:
            return None  # expanded within itself: Stripe sends the id string there, an alternative beside it
        return _convert(_schemas()[target], path + (target,))
    out: dict[str, Any]
    if "anyOf" in node:
        options = [o for o in (_convert(option, path) for option in node["anyOf"]) if o is not None]
        if not options:
            return None
        out = {"anyOf": options}
    elif node.get("type") == "object" or "properties" in node:
        properties = {}
        for key, value in node.get("properties", {}).items():
            if key in READ_FIELDS and (converted := _convert(value, path)) is not None:
                properties[key] = converted
        values = node.get("additionalProperties")
        out = {"type": "object", "properties": properties,
               "required": [k for k in node.get("required", []) if k in properties],
               "additionalProperties": (isinstance(values, dict) and _convert(values, path)) or False}
    elif node.get("type") == "array":
        items = _convert(node.get("items", {}), path)
        out = {"type": "array", "maxItems": MAX_ITEMS, **({"items": items} if items is not None else {"maxItems": 0})}
    else:
        out = {k: v for k, v in node.items() if k in ("type", "enum", "format")}
        if out.get("type") == "string" and "enum" not in out:
            out["maxLength"] = MAX_STRING
    if node.get("nullable"):
        out = {"anyOf": [out, {"type": "null"}]}
    return out


def objects(name: str) -> st.SearchStrategy[dict[str, Any]]:
    """Draws Stripe `name` objects as the spec allows them (in the fields the model reads)."""
    return _strategy(object_schema(name))  # type: ignore[return-value]


def _strategy(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    if "anyOf" in schema:
        return st.one_of([_strategy(option) for option in schema["anyOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "object":
        properties, required = schema["properties"], set(schema["required"])
        if schema["additionalProperties"]:  # a map keyed by currency (a price's currency_options)
            return st.dictionaries(st.sampled_from(CURRENCIES), _strategy(schema["additionalProperties"]), max_size=3)
        return st.fixed_dictionaries(
            {k: _strategy(v) for k, v in properties.items() if k in required},
            optional={k: _strategy(v) for k, v in properties.items() if k not in required})
    if kind == "array":
        items = schema.get("items")
        return st.lists(_strategy(items), max_size=schema["maxItems"]) if items else st.just([])
    if kind == "string":
        text = st.text(max_size=schema.get("maxLength", MAX_STRING))
        if schema.get("format") == "currency":  # mostly real codes (so money gets derived), any text at times
            return st.one_of(st.sampled_from(CURRENCIES), text)
        if schema.get("format") == "decimal":
            return st.one_of(st.decimals(-10**6, 10**9, places=4, allow_nan=False).map(str), text)
        return text
    if kind == "integer":
        if schema.get("format") == "unix-time":
            return st.one_of(st.integers(1_400_000_000, 2_000_000_000), st.integers())
        return st.one_of(st.integers(0, 10**6), st.integers())
    if kind == "number":
        return st.floats(allow_nan=False, allow_infinity=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    raise AssertionError(f"a schema this module does not draw: {schema}")
