"""`ingestor mcp`: the MCP server over stdio, for an assistant on the operator's machine.

The tenant reader token comes from the environment (INGESTOR_READER_TOKEN), never an argument, so it
stays out of process lists and shell history. It is checked at start (a bad one stops the process with
a clear line) and again on every call, so a revoked token stops working at once; its tenant and level
are the only ones any tool reads. stdout carries the protocol only; logs go to stderr.
"""

from __future__ import annotations

import asyncio
import os
import sys

from mcp.server.mcpserver.exceptions import ToolError

from ingestor.connections.tenant_store import PostgresTenantStore
from plumbing.logs import configure_logging
from plumbing.postgres import create_pool
from plumbing.settings import load_settings
from projections.read.client import Grant, Level, RevenueReader
from projections.read.mcp_server import build_mcp_server
from service.web import load_keyring

TOKEN_VARIABLE = "INGESTOR_READER_TOKEN"


class McpStartError(Exception):
    """The server cannot start: no token, or not a live reader token."""


async def serve_stdio(token: str) -> None:
    """Serves MCP on stdin/stdout until the client closes them."""
    if not token:
        raise McpStartError(f"set {TOKEN_VARIABLE} to a tenant reader token (the connector page issues them)")
    settings = load_settings()
    owner = await create_pool(settings.postgres)
    try:
        tenants = PostgresTenantStore(owner, load_keyring(settings.vault), settings.reader)
        found = await tenants.reader_for_token(token)
        if found is None:
            raise McpStartError(f"{TOKEN_VARIABLE} is not a live reader token (revoked, or of a deleted tenant)")
        reader = RevenueReader(settings.reader, tenants.reader_credentials)

        async def grant_of() -> Grant:
            """The token's grant, looked up again for every call: a revoked token stops working at once."""
            now = await tenants.reader_for_token(token)
            if now is None:
                raise ToolError(f"{TOKEN_VARIABLE} was revoked (or its tenant deleted); ask for a new reader token")
            return Grant(now[0], Level[now[1].upper()], now[2])

        try:
            server = build_mcp_server(reader, grant_of, sql_max_rows=settings.reader.sql_max_rows,
                                      sql_max_bytes=settings.reader.sql_max_bytes)
            await server.run_stdio_async()
        finally:
            await reader.close()
    finally:
        await owner.close()


def main() -> None:
    """Runs the stdio server; a start failure is one clear line on stderr and exit status 2."""
    token = os.environ.pop(TOKEN_VARIABLE, "").strip()  # not a setting: taken out before settings are read
    configure_logging(load_settings().log, stream=sys.stderr)
    try:
        asyncio.run(serve_stdio(token))
    except McpStartError as exc:
        print(f"ingestor mcp: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
