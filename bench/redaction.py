"""Card-number masking on what a hostile tenant may sign and send: a megabyte of digits in one string, as
digit groups, as single digits between dashes, as full-width digits, as card numbers back to back, and a body
of card-number strings just within the receiver's digit bound. Each against the masking this replaced
(`previous_mask_pans`, kept here only as the baseline: a Python step per digit and window), measured on the
same text in the same run, and against parsing the same body (orjson), the work every delivery costs anyway.

No broker or database: pure CPU on the event loop's thread. Run: `.venv/bin/python -m bench.redaction`.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable

import orjson

from bench.results import BenchResult, Figure, Target, own_peak_rss_mib, write_result
from ingestor.envelope import redaction
from ingestor.envelope.card_numbers import SEPARATORS, mask_pans
from ingestor.envelope.redaction import redacted_json
from plumbing.settings import ReceiverSettings
from stack.progress import say

MIB = 1024 * 1024
TARGET_MS_PER_MIB = 100.0  # a megabyte body must not hold the shared event loop longer than this

# --- the previous masking, verbatim but for names: the baseline ----------------------------------------------

_PREVIOUS_CHAIN = re.compile(rf"\d(?:[{SEPARATORS}]*\d)+")
_PREVIOUS_CANDIDATE = re.compile(rf"\d(?:[{SEPARATORS}]*\d){{12}}")
_PREVIOUS_ASCII_CANDIDATE = re.compile(r"[0-9](?:[ \t\n\r\f._/\\\-]*[0-9]){12}")
_PREVIOUS_DIGIT = re.compile(r"\d")
_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


def previous_mask_pans(text: str) -> str:
    """The masking before this change: the same result, a Python step per digit and per window."""
    if len(text) < 13 or (_PREVIOUS_ASCII_CANDIDATE if text.isascii() else _PREVIOUS_CANDIDATE).search(text) is None:
        return text
    return _PREVIOUS_CHAIN.sub(_previous_mask_chain, text)


def _previous_mask_chain(match: re.Match[str]) -> str:
    chain = match.group()
    positions = [m.start() for m in _PREVIOUS_DIGIT.finditer(chain)]
    if len(positions) < 13:
        return chain
    values = [int(chain[i]) for i in positions]
    masked = _previous_masked_digits(values)
    if not any(masked):
        return chain
    out = list(chain)
    for index, hide in zip(positions, masked):
        if hide:
            out[index] = "*"
    return "".join(out)


def _previous_masked_digits(values: list[int]) -> list[bool]:
    count = len(values)
    plain = [[0] * (count + 1), [0] * (count + 1)]
    doubled = [[0] * (count + 1), [0] * (count + 1)]
    for p, value in enumerate(values):
        for parity in (0, 1):
            plain[parity][p + 1] = plain[parity][p] + (value if p % 2 == parity else 0)
            doubled[parity][p + 1] = doubled[parity][p] + (_DOUBLED[value] if p % 2 == parity else 0)
    hidden = [0] * (count + 1)
    for end in range(13, count + 1):
        last = (end - 1) % 2
        for length in range(13, min(19, end) + 1):
            start = end - length
            if values[start] == 0:
                continue
            total = (plain[last][end] - plain[last][start]) + (doubled[1 - last][end] - doubled[1 - last][start])
            if total % 10 == 0:
                hidden[start] += 1
                hidden[end - 4] -= 1
    out, depth = [], 0
    for p in range(count):
        depth += hidden[p]
        out.append(depth > 0)
    return out


# --- the texts ------------------------------------------------------------------------------------------------

def texts() -> dict[str, str]:
    """Returns each shape of a hostile megabyte (1 MiB of UTF-8 in a JSON string)."""
    rng = random.Random(20240115)
    digits = "".join(rng.choices("0123456789", k=MIB))
    return {
        "1 MiB of digits": digits,
        "1 MiB of 4-digit groups between spaces": " ".join(digits[i : i + 4] for i in range(0, MIB * 4 // 5, 4)),
        "1 MiB of single digits between dashes": "-".join(digits[: MIB // 2]),
        "1 MiB of full-width digits": "".join(chr(0xFF10 + int(d)) for d in digits[: MIB // 3]),
        "1 MiB of card numbers, one x between": "x".join(["4242424242424242"] * (MIB // 17)),
    }


def best_ms(function: Callable[[], object], runs: int) -> float:
    """Returns the fastest of `runs` calls, in ms."""
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best * 1000


def event(metadata: object) -> dict[str, object]:
    return {"id": "evt_bench", "object": "event", "type": "charge.succeeded", "livemode": False,
            "data": {"object": {"id": "ch_bench", "object": "charge", "metadata": metadata}}}


def main() -> None:
    """Measures every shape with both maskings, checks they agree, and writes bench/results/redaction.json."""
    figures = []
    target = Target(at_most=TARGET_MS_PER_MIB)
    for name, text in texts().items():
        new = mask_pans(text)
        started = time.perf_counter()
        old = previous_mask_pans(text)
        old_ms = (time.perf_counter() - started) * 1000
        if new != old:
            raise SystemExit(f"{name}: the two maskings disagree")
        new_ms = best_ms(lambda: mask_pans(text), 5)
        say(f"{name}: {new_ms:.1f} ms (previous {old_ms:,.0f} ms)")
        figures.append(Figure(f"mask_pans, {name}", new_ms, "ms", "previous masking, same text", old_ms, target))

    digits = texts()["1 MiB of digits"]
    body = orjson.dumps(event({"n": digits}))
    kib = len(body) / 1024
    parse_us = best_ms(lambda: orjson.loads(body), 5) * 1000 / kib
    redact_us = best_ms(lambda: redacted_json(event({"n": digits})), 5) * 1000 / kib
    figures.append(Figure("redacted_json of a 1 MiB event whose metadata is digits, per KiB", redact_us, "µs",
                           "orjson.loads of the same body, per KiB", parse_us))

    # Many short values, each masked on its own: as many as the receiver's digit bound lets through.
    bound = ReceiverSettings().max_body_digits
    many = {f"{bound // 16:,} card-number strings": event({"cards": ["4242424242424242"] * (bound // 16)}),
            f"{bound // 3:,} numbers written 1e15 (3 digits in the body, 17 in the number)":
                event({"numbers": [1e15 + i for i in range(bound // 3)], "card": "4242424242424242"})}
    for name, values in many.items():
        new_ms = best_ms(lambda: redacted_json(values), 5)
        saved = getattr(redaction, "mask_pans")
        setattr(redaction, "mask_pans", previous_mask_pans)  # the walk calls it by its module-level name
        try:
            old_ms = best_ms(lambda: redacted_json(values), 1)
        finally:
            setattr(redaction, "mask_pans", saved)
        say(f"{name}: {new_ms:.1f} ms (previous {old_ms:,.0f} ms)")
        figures.append(Figure(f"redacted_json of {name}", new_ms, "ms", "previous masking", old_ms,
                              target))
    write_result(BenchResult(
        "redaction", figures, {"bench": own_peak_rss_mib()},
        notes="mask_pans on 1 MiB texts (UTF-8 size), best of 5; the previous masking once. Bodies holding more "
              f"than {bound:,} digits are refused by the receiver (413 too_many_digits) before redaction."))


if __name__ == "__main__":
    main()
