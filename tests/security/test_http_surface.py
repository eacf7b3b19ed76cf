"""The web process's surface against a hostile internet client: no path outside the page's files, no
markup from Stripe strings, JSON errors everywhere, nothing cacheable under /api/."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from ingestor.control.page import STATIC_DIR
from tests.projections.test_read_api import served  # noqa: F401 - fixture

pytestmark = pytest.mark.integration


@pytest.fixture
async def client(served: dict[str, Any]) -> AsyncIterator[tuple[aiohttp.ClientSession, TestServer]]:  # noqa: F811
    yield served["http"], served["server"]


@pytest.mark.parametrize("path", [
    "/static/..%2f..%2fpyproject.toml", "/static/../../pyproject.toml", "/static/%2e%2e/app.py",
    "/static/app.js%00.png", "/static/.env", "/docs/../README.md",
])
async def test_no_path_reaches_a_file_outside_the_pages_own(client: Any, path: str) -> None:
    http, server = client
    async with http.get(server.make_url(path)) as resp:
        assert resp.status == 404 and resp.content_type == "application/json"
        assert "[project]" not in await resp.text()


def test_the_page_never_writes_stripe_or_user_strings_as_markup() -> None:
    """Strings from Stripe (names, descriptions, verdicts) reach the page: it must set them as text."""
    script = (STATIC_DIR / "app.js").read_text()
    for match in re.finditer(r"(innerHTML|outerHTML)\s*=\s*([^;]+);", script):
        assert match.group(2).strip() == '""', f"markup written from data: {match.group(0)}"
    assert "insertAdjacentHTML" not in script and "document.write" not in script


async def test_the_control_api_refuses_bad_tenant_names_without_storing_them(served: dict[str, Any]) -> None:  # noqa: F811
    http, server = served["http"], served["server"]
    admin = served.get("admin_token")
    if admin is None:
        pytest.skip("the served fixture has no admin token")
    for name in ("", "   ", "x" * 201, "bad\x00name", "tab\tname"):
        async with http.post(server.make_url("/api/tenants"), json={"name": name},
                             headers={"Authorization": f"Bearer {admin}"}) as resp:
            body = await resp.json()
            assert resp.status in (400, 422) and body["error"]["code"] in ("invalid_tenant_name", "invalid_request")
            assert resp.headers["Cache-Control"] == "no-store"
