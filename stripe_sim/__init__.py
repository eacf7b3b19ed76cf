"""A local Stripe simulator: read API, keys, rate limits, faults, signed webhooks, ground truth.

The product reaches it only through the official `stripe` library with its API base pointed at
`SimServer.base_url`; tests and the local-stack launcher drive it through `SimServer`'s methods
or the `/_sim/` admin API.
"""

from stripe_sim.billing import Book
from stripe_sim.clock import SimClock
from stripe_sim.faults import Fault
from stripe_sim.ground_truth import ground_truth
from stripe_sim.render import BASIL_VERSION, CURRENT_VERSION, LEGACY_VERSION, OLD_VERSION, V2022, VERSIONS
from stripe_sim.server import AccountInfo, SimServer
from stripe_sim.webhooks import sign

__all__ = ["AccountInfo", "BASIL_VERSION", "Book", "CURRENT_VERSION", "Fault", "LEGACY_VERSION", "OLD_VERSION",
           "SimClock", "V2022", "VERSIONS",
           "SimServer", "ground_truth", "sign"]
