"""The baseline for the receiver benchmark: an aiohttp app whose webhook handler does nothing."""

import sys

from aiohttp import web


async def noop(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response({"received": True})


if __name__ == "__main__":
    app = web.Application()
    app.router.add_post("/webhooks/stripe/{token}", noop)
    app.router.add_get("/healthz", lambda r: noop(r))
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
