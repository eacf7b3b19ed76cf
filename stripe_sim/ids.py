"""Stripe-looking identifiers drawn from a seeded random source, so generated accounts repeat."""

from __future__ import annotations

import random

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

# Length of the random part after the prefix, roughly as Stripe issues them.
_LENGTHS = {"cus": 14, "acct": 16, "evt": 24, "req": 14, "whsec": 32, "we": 24, "sk": 25, "rk": 25}


def random_token(rng: random.Random, length: int) -> str:
    """Return `length` base-62 characters from `rng`."""
    n = rng.getrandbits(6 * length)
    chars = []
    for _ in range(length):
        n, r = divmod(n, 62)
        chars.append(_ALPHABET[r])
    return "".join(chars)


def new_id(rng: random.Random, prefix: str) -> str:
    """Return a new id such as `cus_Qx...` for the given prefix."""
    length = _LENGTHS.get(prefix.split("_")[0], 24)
    return f"{prefix}_{random_token(rng, length)}"
