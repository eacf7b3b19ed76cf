"""A local Stripe simulator: read API, keys, rate limits, faults, signed webhooks, ground truth.

The product reaches it only through the official `stripe` library with its API base pointed at
`SimServer.base_url`; tests and the local-stack launcher drive it through `SimServer`'s methods
or the `/_sim/` admin API.
"""

from stripe_sim.billing import Book
from stripe_sim.clock import SimClock
from stripe_sim.faults import Fault
from stripe_sim.ground_truth import ground_truth
from stripe_sim.render import CURRENT_VERSION, OLD_VERSION
from stripe_sim.server import AccountInfo, SimServer
from stripe_sim.webhooks import sign

__all__ = ["AccountInfo", "Book", "CURRENT_VERSION", "Fault", "OLD_VERSION", "SimClock",
           "SimServer", "ground_truth", "sign"]
