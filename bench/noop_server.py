"""The baseline for the receiver benchmark: an aiohttp app whose webhook handler does nothing.

It runs on the same runtime as the web process (uvloop, the same GC tuning), so the ratio
compares what the handlers do, not two event loops.
"""

import sys

import uvloop
from aiohttp import web

from plumbing.runtime import tune_gc


async def noop(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response({"received": True})


if __name__ == "__main__":
    uvloop.install()
    tune_gc()
    app = web.Application()
    app.router.add_post("/webhooks/stripe/{token}", noop)
    app.router.add_get("/healthz", noop)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
