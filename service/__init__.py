"""The product's processes: the `ingestor` command, one entry point per process (web, worker, projector), migrate."""
