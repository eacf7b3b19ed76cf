"""The operating guide the health panel and every API error link to: rendered with a Markdown library,
with an anchor for every status and error code a link can name."""

from __future__ import annotations

import re

from ingestor.connections.status import STATUSES
from ingestor.control.page import OPERATING_GUIDE, markdown_to_html

GUIDE = OPERATING_GUIDE.read_text()


def test_every_connection_status_has_its_section_in_the_rendered_guide() -> None:
    ids = set(re.findall(r'id="([^"]+)"', markdown_to_html(GUIDE)))
    assert set(STATUSES) <= ids


def test_every_error_code_heading_gets_an_anchor_per_code() -> None:
    rendered = markdown_to_html(GUIDE)
    for codes in re.findall(r"^### (.+)$", GUIDE, re.MULTILINE):
        for code in codes.replace("`", "").split(" / "):
            assert f'id="{code.strip()}"' in rendered


def test_tables_and_links_render_and_raw_html_is_escaped() -> None:
    rendered = markdown_to_html("| a | b |\n|---|---|\n| 1 | [docs](https://stripe.com/docs) |\n\n<img src=x onerror=alert(1)>")
    assert "<table>" in rendered and '<a href="https://stripe.com/docs">docs</a>' in rendered
    assert "<img" not in rendered and "&lt;img" in rendered
