"""The connector page: static HTML, CSS and plain JS served by the web process, over the control API.

No external CDN (nothing outside loopback is reachable here, and a page handling keys should not
load code from elsewhere): a strict Content-Security-Policy allows this origin only. The
operating guide is served too, so the health panel's "how to fix it" links work.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web
from markdown_it import MarkdownIt
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict

STATIC_DIR = Path(__file__).resolve().parent / "static"
OPERATING_GUIDE = Path(__file__).resolve().parents[2] / "docs" / "operating.md"
STATIC_FILES = {"app.js": "application/javascript", "app.css": "text/css", "revenue.js": "application/javascript"}
# Front-end packages installed by the project's set-up (`npm ci` from package-lock.json, run by ./dev and the
# Docker build), served from where npm put them: nothing third-party is copied into the repository.
NODE_MODULES = Path(__file__).resolve().parents[2] / "node_modules"
VENDOR_FILES = {"echarts.min.js": NODE_MODULES / "echarts" / "dist" / "echarts.min.js"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


async def _index(request: web.Request) -> web.Response:
    return web.Response(text=(STATIC_DIR / "index.html").read_text(), content_type="text/html", headers=SECURITY_HEADERS)


async def _revenue_page(request: web.Request) -> web.Response:
    return web.Response(text=(STATIC_DIR / "revenue.html").read_text(), content_type="text/html", headers=SECURITY_HEADERS)


async def _vendor(request: web.Request) -> web.StreamResponse:
    path = VENDOR_FILES.get(request.match_info["name"])
    if path is None:
        raise web.HTTPNotFound()
    if not path.exists():
        raise web.HTTPNotFound(text=f"{path.name} is not installed: run ./dev (it runs npm ci) or npm ci")
    return web.FileResponse(path, headers={**SECURITY_HEADERS, "Cache-Control": "public, max-age=3600",
                                           "Content-Type": "application/javascript"})


async def _static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in STATIC_FILES:
        raise web.HTTPNotFound()
    return web.Response(text=(STATIC_DIR / name).read_text(), content_type=STATIC_FILES[name], headers=SECURITY_HEADERS)


def _heading_anchors(renderer: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict,
                     env: EnvType) -> str:
    """Gives each heading the id the API's `docs` links use: its text as a slug, and one anchor per
    code when a heading names several ("unauthorized / forbidden")."""
    title = tokens[idx + 1].content.replace("`", "")
    tokens[idx].attrSet("id", re.sub(r"[^a-z0-9_]+", "-", title.lower()).strip("-"))
    codes = [c.strip() for c in title.split(" / ")] if " / " in title else []
    extra = "".join(f'<span id="{code}"></span>' for code in codes if re.fullmatch(r"[a-z0-9_]+", code))
    return extra + str(renderer.renderToken(tokens, idx, options, env))


# CommonMark with tables; raw HTML in the Markdown is escaped, not passed through.
_MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable("table")
_MARKDOWN.add_render_rule("heading_open", _heading_anchors)


def markdown_to_html(text: str) -> str:
    """Renders the operating guide (CommonMark and tables, with markdown-it-py) with the anchors the API links to."""
    return str(_MARKDOWN.render(text))


async def _operating_guide(request: web.Request) -> web.Response:
    body = markdown_to_html(OPERATING_GUIDE.read_text()) if OPERATING_GUIDE.exists() else "<p>Guide not found.</p>"
    page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
            f'content="width=device-width, initial-scale=1"><title>Keeping your connectors healthy</title>'
            f'<link rel="stylesheet" href="/static/app.css"></head><body><main><section>{body}</section></main></body></html>')
    return web.Response(text=page, content_type="text/html", headers=SECURITY_HEADERS)


def add_page_routes(app: web.Application) -> None:
    """Serves the connector page at /, the Revenue page at /revenue and the operating guide at /docs/operating."""
    app.router.add_get("/", _index)
    app.router.add_get("/revenue", _revenue_page)
    app.router.add_get("/static/vendor/{name}", _vendor)
    app.router.add_get("/static/{name}", _static)
    app.router.add_get("/docs/operating", _operating_guide)
