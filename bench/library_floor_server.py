"""A second baseline for the receiver benchmark: what the design card's libraries cost per delivery.

aiohttp reads the body, the stripe library checks the signature, orjson parses the event, fastavro
encodes an envelope (the body as payload) and aiokafka publishes it with our producer settings,
answering only after acks=all. Nothing of ours runs: no token lookup, shape checks, redaction,
metrics or time bound. The receiver cannot be cheaper than this, so the gap between the two is what
our own code costs, and this server's ratio to the no-op handler is the best any receiver built on
these libraries could reach on this machine.

Run: `python -m bench.library_floor_server PORT BOOTSTRAP TOPIC` with the signing secret in
BENCH_WEBHOOK_SECRET.
"""

import os
import sys
from collections.abc import AsyncIterator
from datetime import datetime, timezone

import orjson
import stripe
import uvloop
from aiohttp import web
from aiokafka import AIOKafkaProducer

from plumbing.kafka import producer_config
from plumbing.runtime import tune_gc
from plumbing.settings import KafkaSettings
from schemas import Envelope, EnvelopeCodec, Source, envelope_key

PRODUCER = web.AppKey("producer", AIOKafkaProducer)


def build_app(bootstrap_servers: str, topic: str, secret: str) -> web.Application:
    """Returns the floor server's application: one webhook route doing only library work."""
    codec = EnvelopeCodec()
    app = web.Application()

    async def producer(app: web.Application) -> AsyncIterator[None]:
        app[PRODUCER] = AIOKafkaProducer(**producer_config(KafkaSettings(bootstrap_servers=bootstrap_servers),
                                                           "library-floor"))
        await app[PRODUCER].start()
        yield
        await app[PRODUCER].stop()

    async def deliver(request: web.Request) -> web.Response:
        body = await request.read()
        payload = body.decode()
        stripe.WebhookSignature.verify_header(payload, request.headers["Stripe-Signature"], secret, 300)
        event = orjson.loads(body)
        obj = event["data"]["object"]
        now = datetime.now(timezone.utc)
        envelope = Envelope(
            tenant_id="floor", event_id=event["id"], event_type=event["type"], object_type=obj["object"],
            object_id=obj["id"], event_time=now, received_time=now, source=Source.WEBHOOK,
            livemode=event["livemode"], api_version=event.get("api_version"), connected_account=None,
            payload=payload,
        )
        acked = await request.app[PRODUCER].send(topic, key=envelope_key("floor", obj["id"]),
                                                 value=codec.encode(envelope))
        await acked
        return web.json_response({"received": True})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app.cleanup_ctx.append(producer)
    app.router.add_post("/webhooks/stripe/{token}", deliver)
    app.router.add_get("/healthz", healthz)
    return app


if __name__ == "__main__":
    uvloop.install()
    tune_gc()
    port, bootstrap, topic = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    web.run_app(build_app(bootstrap, topic, os.environ["BENCH_WEBHOOK_SECRET"]), host="127.0.0.1", port=port,
                print=None, access_log=None)
