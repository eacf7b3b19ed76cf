"""A flood of deliveries from a process of its own, so the benchmark's timed client does not share its event loop:
`python -m bench.flood_client URL IN_FLIGHT SECONDS FILE`, FILE a pickle of (body, headers) pairs. Keeps IN_FLIGHT
deliveries in flight for SECONDS, then prints one JSON object: each status (0: no answer, the connection reset)
with the wall-clock times of its answers, so the caller counts those of its own timed window."""

from __future__ import annotations

import asyncio
import json
import pickle
import sys
import time

import aiohttp


async def flood(url: str, in_flight: int, seconds: float,
                deliveries: list[tuple[bytes, dict[str, str]]]) -> dict[int, list[float]]:
    """Returns, per status, when each answer came (time.time())."""
    answered: dict[int, list[float]] = {}
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=in_flight)) as session:
        async def worker(offset: int) -> None:
            i = offset
            while time.monotonic() < deadline:
                body, headers = deliveries[i % len(deliveries)]
                status = 0
                try:
                    async with session.post(url, data=body, headers=headers) as resp:
                        await resp.read()
                        status = resp.status
                except aiohttp.ClientError:
                    pass
                answered.setdefault(status, []).append(time.time())
                i += in_flight
        await asyncio.gather(*(worker(k) for k in range(in_flight)))
    return answered


if __name__ == "__main__":
    target, in_flight_arg, seconds_arg, path = sys.argv[1:5]
    with open(path, "rb") as file:
        loaded = pickle.load(file)
    print(json.dumps(asyncio.run(flood(target, int(in_flight_arg), float(seconds_arg), loaded))))
