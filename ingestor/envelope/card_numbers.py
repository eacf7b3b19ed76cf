"""Card numbers in free text and numbers: found and masked (design invariant 6, rule 3 of `redaction`).

PAN-like digit runs are masked in every string and every JSON number given:

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

Speed: masking a string checks all its windows with a few dozen whole-text operations in C (`_mask_chains`),
never a Python step per digit or window, since any tenant may send a megabyte of digits: some 30 ms a megabyte,
linear in its length. `may_hold_pan` is the receiver's first look at a serialised event: one pass over its bytes.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from collections.abc import Callable
from itertools import islice
from typing import Final

__all__ = [
    "MIN_PAN_DIGITS", "SEPARATORS", "holds_more_digits", "luhn_valid", "mask_number", "mask_pans", "may_hold_pan",
]

# What may stand between two digits of a card number (a regular-expression character class body).
SEPARATORS: Final = (
    " \t\n\r\f\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000"  # spaces of every width, line breaks
    "\u200b-\u200d\u2060\ufeff"  # zero-width characters
    "._/\\\\\\-\u2010-\u2015\u2212\ufe58\ufe63\uff0d\uff0e\uff0f\uff3f"  # dots, slashes, dashes, underscores
)

MIN_PAN_DIGITS: Final = 13
_MAX_PAN_DIGITS: Final = 19
_VISIBLE_DIGITS: Final = 4
_SMALLEST_PAN_NUMBER: Final = 10 ** (MIN_PAN_DIGITS - 1)
# A run of 13 characters or more that starts with a digit and holds only digits and separators: every
# chain of 13 digits lies in one (a run's trailing separators change nothing). One character class, so
# the regular-expression engine scans it in a tight loop, whatever the run's length.
_CHAIN: Final = re.compile(rf"(\d[\d{SEPARATORS}]{{{MIN_PAN_DIGITS - 1},}})")
# The same for ASCII text (most of it), two to four times faster than the Unicode classes.
_ASCII_SEPARATORS: Final = " \t\n\r\f._/\\\\-"
_ASCII_CHAIN: Final = re.compile(rf"([0-9][0-9{_ASCII_SEPARATORS}]{{{MIN_PAN_DIGITS - 1},}})")
_ASCII_SEPARATOR_BYTES: Final = b" \t\n\r\f._/\\-"

# The serialised event's first look, with bytes: a chain of 13 digits is a run of 13 bytes or more
# that are ASCII digits, ASCII separators, the letters of JSON's escapes (\n, \t, \r, \f, \\) or
# non-ASCII (a Unicode digit or separator is 2–4 bytes). Such bytes are marked "#", the rest ".".
_MARKED: Final = b"0123456789 ._/-\\ntrf"
_RUN_MARKS: Final = bytes(35 if (code >= 128 or bytes([code]) in _MARKED) else 46 for code in range(256))
_RUN: Final = b"#" * MIN_PAN_DIGITS
_NON_ASCII: Final = bytes(range(128, 256))
_ASCII_DIGITS: Final = b"0123456789"
# Sum of the digits of 2*d, for the doubled positions of the Luhn check.
_DOUBLED: Final = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)

# Masking, on the digits of all chains at once (see `_hidden_digits`): one ASCII digit per digit, and
# between two chains a gap of 18 non-digits, so that no window of 19 reaches from one chain to the next.
_GAP: Final = "x" * (_MAX_PAN_DIGITS - 1)
_HOLDS_PAN_LENGTH: Final = re.compile(rb"[0-9]{%d}" % MIN_PAN_DIGITS)
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
_PLAIN_KERNEL: Final = int.from_bytes(b"\x01\x00" * (MIN_PAN_DIGITS // 2) + b"\x01", "little")
_DOUBLED_KERNEL: Final = int.from_bytes(b"\x00\x01" * (MIN_PAN_DIGITS // 2), "little")


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
    if len(text) < MIN_PAN_DIGITS:
        return text
    parts = (_ASCII_CHAIN if text.isascii() else _CHAIN).split(text)
    if len(parts) == 1:
        return text
    masked = _mask_chains(parts[1::2])
    if masked is None:
        return text
    parts[1::2] = masked
    return "".join(parts)


def may_hold_pan(text: bytes) -> bool:
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
        if ascii_digits + non_ascii // 2 >= MIN_PAN_DIGITS:
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
    for length in range(MIN_PAN_DIGITS, min(_MAX_PAN_DIGITS, size) + 1):
        if length > MIN_PAN_DIGITS:  # one digit more, at distance length - 1 from the window's end
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


def mask_number(value: int | float) -> object:
    """Return a JSON number holding a card-number window as the masked string of its digits, else itself.

    An integer needs 13 digits to hold one; a float's digits are in its shortest repr (a card number can
    hide in the mantissa of 4.242424242424242e-05 as well).
    """
    if type(value) is int and -_SMALLEST_PAN_NUMBER < value < _SMALLEST_PAN_NUMBER:
        return value
    text = repr(value)
    masked = mask_pans(text)
    return value if masked == text else masked
