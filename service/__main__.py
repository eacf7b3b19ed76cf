"""`python -m service`: the `ingestor` command."""

from service.cli import main

main()
