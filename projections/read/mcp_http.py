"""The MCP server over streamable HTTP, mounted in the web process at `/mcp`.

Stateless and JSON-only: every POST carries its own bearer token, checked by the SDK's auth
middleware against the tenant reader tokens, so no MCP session outlives a request and nothing is
shared between callers. The SDK also serves the OAuth protected-resource metadata (RFC 9728) that
tells a client the endpoint wants a bearer token. The Starlette app is bridged into aiohttp by
aiohttp-asgi, matched on exactly these two paths so every other route keeps aiohttp's handling.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp_asgi import ASGIResource
from mcp.server.auth.settings import AuthSettings
from mcp.server.transport_security import TransportSecuritySettings

from plumbing.settings import Settings
from projections.read.client import RevenueReader
from projections.read.mcp_server import ReaderTokenVerifier, build_mcp_server, grant_of_access_token

MCP_PATH = "/mcp"
METADATA_PATH = "/.well-known/oauth-protected-resource" + MCP_PATH
# A tool call is small (run_sql takes at most 20,000 characters): anything larger is refused (413) while
# it is read, before it is held.
MAX_BODY_BYTES = 64 * 1024


class _ExactPaths(ASGIResource):
    """An ASGI app answering only the given paths (the library's resource takes a whole prefix)."""

    def __init__(self, app: Any, paths: frozenset[str]):
        super().__init__(app, root_path="")
        self._paths = paths

    def raw_match(self, path: str) -> bool:
        """Returns whether the path is one of this app's."""
        return path in self._paths


def add_mcp_routes(app: web.Application, settings: Settings, reader: RevenueReader,
                   reader_for_token: Callable[[str], Awaitable[tuple[str, str, str] | None]]) -> None:
    """Mounts the MCP endpoint; its session manager starts and stops with the web application."""
    base = settings.http.public_base_url.rstrip("/")
    public = urlsplit(base)
    server = build_mcp_server(
        reader, grant_of_access_token, sql_max_rows=settings.reader.sql_max_rows,
        sql_max_bytes=settings.reader.sql_max_bytes,
        token_verifier=ReaderTokenVerifier(reader_for_token),
        # Reader tokens are ours, not an OAuth server's: the verifier looks them up, there is no audience to check.
        auth=AuthSettings(issuer_url=base, resource_server_url=base + MCP_PATH,  # type: ignore[arg-type]
                          validate_token_resource=False),
    )
    asgi = server.streamable_http_app(
        streamable_http_path=MCP_PATH, stateless_http=True, json_response=True,
        max_request_body_size=MAX_BODY_BYTES,
        transport_security=TransportSecuritySettings(
            allowed_hosts=[public.netloc, "127.0.0.1:*", "localhost:*", "[::1]:*"],
            allowed_origins=[f"{public.scheme}://{public.netloc}", "http://127.0.0.1:*", "http://localhost:*"],
        ),
    )
    resource = _ExactPaths(asgi, frozenset({MCP_PATH, METADATA_PATH}))
    app.router.register_resource(resource)
    resource.lifespan_mount(app)
