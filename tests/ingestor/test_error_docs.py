"""A connection's health links its last error to its section of docs/operating.md (`docs_link`): a code without
one sends an operator to a page that says nothing of it."""

from __future__ import annotations

from pathlib import Path

import ingestor.errors as errors
from ingestor.errors import IngestError

OPERATING = Path(__file__).resolve().parents[2] / "docs" / "operating.md"


def _subclasses(cls: type[IngestError]) -> set[type[IngestError]]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _subclasses(sub)
    return found


def test_every_stripe_error_a_connection_can_show_has_its_section_in_the_operating_guide() -> None:
    headings = {name.strip() for line in OPERATING.read_text().splitlines() if line.startswith("### ")
                for name in line[4:].split(" / ")}
    # What reading Stripe raises (and `KeySession` records in the connection's health): the errors module's, but
    # for a webhook's own (answered to Stripe, never a connection's).
    codes = {cls.code for cls in _subclasses(IngestError)
             if cls.__module__ == errors.__name__ and cls is not errors.BadEventError}
    assert {"stripe_unavailable", "rate_limited", "stripe_cursor_gone", "stripe_empty_page",
            "stripe_cursor_ignored"} <= codes
    assert codes - headings == set()
