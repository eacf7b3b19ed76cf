"""The web process, composed: the write path's app (receiver, control API) plus the read path's API.

The one place that sees both `ingestor` and `projections` (which never import each other).
"""

from __future__ import annotations

from aiohttp import web

from ingestor import control_api
from ingestor.app import create_web_app, load_keyring
from ingestor.page import add_page_routes
from plumbing.settings import Settings
from projections.http_api import add_read_routes


def build_web_app(settings: Settings) -> web.Application:
    """Returns the web process's application, not yet started."""
    app = create_web_app(settings, load_keyring(settings.vault))

    async def authenticate(request: web.Request) -> str | None:
        who = await request.app[control_api.CONTROL].actor(request)
        if who is None:
            return None
        return "*" if who[1] is None else who[1]

    add_read_routes(app, settings, authenticate)
    add_page_routes(app)
    return app
