"""Run the simulator standalone: `python -m stripe_sim --port 12111 --seed 7 --customers 300`."""

from __future__ import annotations

import argparse
import asyncio
import json

from stripe_sim.render import CURRENT_VERSION
from stripe_sim.server import SimServer


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(prog="python -m stripe_sim", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=12111)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--customers", type=int, default=300)
    p.add_argument("--months", type=int, default=12)
    p.add_argument("--currencies", default="usd,eur,jpy")
    p.add_argument("--api-version", default=CURRENT_VERSION)
    p.add_argument("--live-rate", type=float, default=0.0,
                   help="live activity steps per second (0: off)")
    p.add_argument("--customer-coupons", action="store_true",
                   help="give some customers a customer-level coupon for a while")
    return p.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    """Start the server, create the demo account, print it as JSON and run until cancelled."""
    async with SimServer(args.host, args.port, seed=args.seed, freeze_accounts=True) as sim:
        info = sim.create_account(args.api_version, args.customers, args.months,
                                  args.currencies.split(","), seed=args.seed,
                                  customer_coupons=args.customer_coupons)
        if args.live_rate > 0:
            sim.start_live_activity(args.live_rate)
        print(json.dumps({"base_url": sim.base_url, "account": info.to_dict()}), flush=True)
        await asyncio.Event().wait()


def main() -> None:
    """Entry point."""
    try:
        asyncio.run(serve(parse_args()))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
