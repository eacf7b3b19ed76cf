"""Reading one field of a Stripe object, by the rules every object shares: integer minor units, ISO currencies, Unix
times, known statuses; a field that breaks them raises UnreadableObjectError naming the object and the field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timezone
from decimal import Decimal
from fractions import Fraction
from typing import Any

from schemas.stripe_objects.records import UnreadableObjectError

CURRENCY = re.compile(r"^[a-z]{3}$")
MAX_UNIX_S = 253_402_300_799  # 9999-12-31T23:59:59Z, the last second a datetime can hold
MAX_MINOR_UNITS = 10**15  # far beyond any Stripe amount; keeps every amount inside a bigint with room
# A `*_decimal` amount as Stripe writes it: plain digits, at most 12 decimal places. Checked on the text, before it
# becomes a number: Decimal takes any exponent ("1e-1000000000" is 14 bytes) and making that a Fraction builds
# 10**1_000_000_000 first, hours of CPU on the event loop.
DECIMAL_TEXT = re.compile(r"-?[0-9]{1,16}(\.[0-9]{1,12})?")


class FieldReader:
    """Field access with the object's kind and id for error messages."""

    def __init__(self, obj: Mapping[str, Any]):
        if not isinstance(obj, Mapping):
            raise UnreadableObjectError("object", "?", "the object", "is not a JSON object")
        self.obj = obj
        self.kind = str(obj.get("object") or "object")
        object_id = obj.get("id")
        if not isinstance(object_id, str) or not object_id:
            raise UnreadableObjectError(self.kind, "?", "id", "is missing")
        self.id = object_id

    def fail(self, field: str, problem: str) -> UnreadableObjectError:
        return UnreadableObjectError(self.kind, self.id, field, problem)

    def money(self, value: Any, field: str) -> int:
        """An amount in minor units: an integer (never a bool, a float or a string)."""
        if type(value) is not int:
            raise self.fail(field, f"must be an integer amount in minor units, got {shown(value)}")
        if not -MAX_MINOR_UNITS <= value <= MAX_MINOR_UNITS:
            raise self.fail(field, "is beyond any amount Stripe allows")
        return value

    def amount(self, value: Any, field: str) -> int:
        """An amount Stripe never makes negative (a charge's, a refund's, a payment's, a price's, an amount due):
        an integer in minor units, 0 or more."""
        amount = self.money(value, field)
        if amount < 0:
            raise self.fail(field, f"must not be negative, got {amount}")
        return amount

    def decimal(self, value: Any, field: str) -> Fraction:
        """A price's amount in minor units, which may be fractional and is never negative: an integer, or a decimal
        string (`*_decimal`)."""
        if type(value) is int:
            return Fraction(self.amount(value, field))
        if isinstance(value, str) and DECIMAL_TEXT.fullmatch(value):  # bounded digits, no exponent: cheap to convert
            amount = Fraction(Decimal(value))
            if 0 <= amount <= MAX_MINOR_UNITS:
                return amount
        raise self.fail(field, f"must be a decimal amount in minor units, 0 or more (digits, at most 12 places), "
                               f"got {shown(value)}")

    def currency(self, value: Any, field: str = "currency") -> str:
        if not isinstance(value, str) or not CURRENCY.match(value.lower()):
            raise self.fail(field, f"must be a three-letter ISO currency code, got {shown(value)}")
        return value.lower()

    def time(self, value: Any, field: str) -> datetime | None:
        """An optional time: None, or Unix seconds."""
        return None if value is None else self.when(value, field)

    def when(self, value: Any, field: str) -> datetime:
        """A required time in Unix seconds (year 1970 to 9999)."""
        if type(value) is not int or not 0 <= value <= MAX_UNIX_S:
            raise self.fail(field, f"must be a Unix time in seconds, got {shown(value)}")
        return datetime.fromtimestamp(value, tz=timezone.utc)

    def text(self, value: Any, field: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.fail(field, f"must be text, got {shown(value)}")
        return value

    def status(self, value: Any, allowed: frozenset[str], aliases: Mapping[str, str] | None = None) -> str:
        status = (aliases or {}).get(value, value) if isinstance(value, str) else value
        if not isinstance(status, str) or status not in allowed:  # a list or an object is unhashable: no lookup
            raise self.fail("status", f"must be one of {', '.join(sorted(allowed))}, got {shown(value)}")
        return str(status)



def shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def ref(value: Any) -> str | None:
    """Returns the id of an expandable field: an id string, an expanded object's id, or None."""
    if isinstance(value, Mapping):
        object_id = value.get("id")
        return object_id if isinstance(object_id, str) else None
    return value if isinstance(value, str) and value else None
