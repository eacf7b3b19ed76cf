"""The connector page: static HTML, CSS and plain JS served by the web process, over the control API.

No external CDN (nothing outside loopback is reachable here, and a page handling keys should not
load code from elsewhere): a strict Content-Security-Policy allows this origin only. The
operating guide is served too, so the health panel's "how to fix it" links work.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from aiohttp import web

STATIC_DIR = Path(__file__).resolve().parent / "static"
OPERATING_GUIDE = Path(__file__).resolve().parents[2] / "docs" / "operating.md"
STATIC_FILES = {"app.js": "application/javascript", "app.css": "text/css"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


async def _index(request: web.Request) -> web.Response:
    return web.Response(text=(STATIC_DIR / "index.html").read_text(), content_type="text/html", headers=SECURITY_HEADERS)


async def _static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in STATIC_FILES:
        raise web.HTTPNotFound()
    return web.Response(text=(STATIC_DIR / name).read_text(), content_type=STATIC_FILES[name], headers=SECURITY_HEADERS)


def markdown_to_html(text: str) -> str:
    """Renders the small Markdown subset the guide uses (headings with anchors, lists, paragraphs, code)."""
    out: list[str] = []
    in_list = False
    for line in text.splitlines():
        heading = re.match(r"^(#{1,4})\s+(.*?)(?:\s+\{#([\w-]+)\})?$", line)
        item = re.match(r"^\s*(?:[-*]|\d+\.)\s+(.*)$", line)
        if in_list and not item:
            out.append("</ul>")
            in_list = False
        if heading:
            level, title, anchor = len(heading[1]), heading[2], heading[3]
            anchor = anchor or re.sub(r"[^a-z0-9_]+", "-", re.sub(r"`", "", title.lower())).strip("-")
            out.append(f'<h{level} id="{html.escape(anchor)}">{_inline(title)}</h{level}>')
        elif item:
            if not in_list:
                out.append("<ul>")
                in_list = True
            out.append(f"<li>{_inline(item[1])}</li>")
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
    if in_list:
        out.append("</ul>")
    return "\n".join(out)


def _inline(text: str) -> str:
    escaped = html.escape(text)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", escaped)


async def _operating_guide(request: web.Request) -> web.Response:
    body = markdown_to_html(OPERATING_GUIDE.read_text()) if OPERATING_GUIDE.exists() else "<p>Guide not found.</p>"
    page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
            f'content="width=device-width, initial-scale=1"><title>Keeping your connectors healthy</title>'
            f'<link rel="stylesheet" href="/static/app.css"></head><body><main><section>{body}</section></main></body></html>')
    return web.Response(text=page, content_type="text/html", headers=SECURITY_HEADERS)


def add_page_routes(app: web.Application) -> None:
    """Serves the connector page at / and the operating guide at /docs/operating."""
    app.router.add_get("/", _index)
    app.router.add_get("/static/{name}", _static)
    app.router.add_get("/docs/operating", _operating_guide)
