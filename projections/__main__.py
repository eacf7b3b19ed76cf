"""`python -m projections`: one projector process, configured from the environment."""

import asyncio

from plumbing.logs import configure_logging
from plumbing.runtime import tune_gc
from plumbing.settings import load_settings
from projections.app import run_projector


def main() -> None:
    """Reads settings, configures logs and runs the projector until SIGTERM."""
    settings = load_settings()
    configure_logging(settings.log)
    tune_gc()
    asyncio.run(run_projector(settings))


if __name__ == "__main__":
    main()
