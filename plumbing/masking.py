"""Masking of Stripe secrets for display and for logs: prefix, an ellipsis and at most the last four.

Used by the logging layer (every line passes through `mask_secrets_in_text`) and by the control
API and stores (`mask_key` is the only form in which a key or secret is ever shown).
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["SECRET_PATTERN", "mask_key", "mask_secrets_in_text"]

# Show the last four characters only when at least eight others stay hidden.
_MIN_BODY_FOR_TAIL: Final = 12
_TAIL: Final = 4

# A body stops where another secret's prefix begins, so "whsec_rk_live_…" or two keys glued together
# cannot hide the second one inside the first one's (short, tail-less) mask.
_NOT_A_PREFIX: Final = r"(?!(?:sk|rk)_(?:live|test)_|whsec_)"
SECRET_PATTERN: Final = re.compile(
    rf"(?:sk|rk)_(?:live|test)_(?:{_NOT_A_PREFIX}[A-Za-z0-9])+|whsec_(?:{_NOT_A_PREFIX}[A-Za-z0-9+/=])+"
)

_PREFIX: Final = re.compile(r"(?:sk|rk|pk)_(?:live|test)_|whsec_")
_KEY_CHARS: Final = re.compile(r"[A-Za-z0-9+/=]+")


def mask_key(key: str) -> str:
    """Return the displayable form of a key or secret: its prefix, "…" and at most its last four."""
    stripped = key.strip()
    prefix_match = _PREFIX.match(stripped)
    prefix = prefix_match.group() if prefix_match else ""
    body = stripped[len(prefix) :]
    # Only a tail of key characters is shown: anything else is not from a key (and may not even be
    # storable, like NUL in a jsonb audit entry).
    tail = body[-_TAIL:] if len(body) >= _MIN_BODY_FOR_TAIL and _KEY_CHARS.fullmatch(body[-_TAIL:]) else ""
    return f"{prefix}…{tail}"


def mask_secrets_in_text(text: str) -> str:
    """Return `text` with everything shaped like a Stripe secret replaced by its masked form."""
    return SECRET_PATTERN.sub(_mask_match, text)


def _mask_match(match: re.Match[str]) -> str:
    """Mask one SECRET_PATTERN match."""
    return mask_key(match.group())
