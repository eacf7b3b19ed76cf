"""The `ingestor` console command: the local stack and the processes of the product, one subcommand each."""

from __future__ import annotations

import asyncio

import click

from plumbing.settings import load_settings
from stack import StackError, postgres
from stack.kafka import KafkaBroker
from stack.up import bring_up, prepare


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Stripe revenue ingestor: webhooks, polling and history import into Kafka, projected into Postgres."""


@main.command()
def up() -> None:
    """Start (or reuse) Kafka and Postgres, apply migrations, create topics."""
    try:
        platform = bring_up()
    except StackError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"kafka:    {platform.kafka.bootstrap_servers}  (log: {platform.kafka.log_file})")
    click.echo(f"postgres: {platform.postgres_dsn().replace(f':{postgres.PASSWORD}@', ':***@')}")


@main.command()
@click.option("--postgres/--no-postgres", "with_postgres", default=False, help="Also stop the PostgreSQL cluster.")
def down(with_postgres: bool) -> None:
    """Stop the local Kafka broker (and optionally Postgres)."""
    KafkaBroker().stop()
    if with_postgres:
        postgres.stop()


@main.command()
def status() -> None:
    """Show whether the local Kafka and Postgres are running."""
    broker = KafkaBroker()
    pid = broker.running_pid()
    click.echo(f"kafka:    {'running pid ' + str(pid) if pid else 'stopped'} ({broker.bootstrap_servers})")
    for cluster in postgres.clusters():
        click.echo(f"postgres: {cluster.version}/{cluster.name} port {cluster.port} {'online' if cluster.online else 'down'}")


@main.command()
def migrate() -> None:
    """Apply database migrations and create the Kafka topics named in the settings."""
    settings = load_settings()
    asyncio.run(prepare(settings.kafka, settings.postgres))


@main.command()
def web() -> None:
    """Serve the webhook receiver, the control API, the read API and the connector page."""
    from aiohttp import web as aiohttp_web

    from plumbing.logs import configure_logging
    from stack.web import build_web_app

    import uvloop

    from plumbing.runtime import tune_gc

    settings = load_settings()
    configure_logging(settings.log)
    uvloop.install()  # the receiver's hot path is the event loop: uvloop makes it markedly cheaper
    tune_gc()
    aiohttp_web.run_app(build_web_app(settings), host=settings.http.host, port=settings.http.port,
                        shutdown_timeout=settings.http.shutdown_timeout_s, print=None, access_log=None)


@main.command()
@click.argument("tenant_id")
@click.argument("question")
@click.option("--level", type=click.Choice(["summary", "standard", "full"]), default="summary", show_default=True)
@click.option("--mode", type=click.Choice(["live", "test"]), default="live", show_default=True,
              help="Stripe live-mode data (real money) or test-mode data.")
@click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE",
              help="A parameter of the question, e.g. -p from=2026-10-01 -p to=2026-10-31.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def ask(tenant_id: str, question: str, level: str, mode: str, params: tuple[str, ...], as_json: bool) -> None:
    """Answer a common revenue question for a tenant through the read layer (questions: see `ingestor ask t list`)."""
    from projections import commands

    try:
        output = commands.ask(tenant_id, question, level, mode, dict(p.split("=", 1) for p in params), as_json)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(output)


@main.command()
@click.option("--poll/--no-poll", default=True, help="Run the events poller.")
@click.option("--import/--no-import", "imports", default=True, help="Run pending history imports.")
def worker(poll: bool, imports: bool) -> None:
    """Run the Stripe events poller and the history importer."""
    from ingestor import commands

    commands.worker(poll, imports)


@main.command()
def poll() -> None:
    """Run one poll cycle for every connection (burst mode) and exit."""
    from ingestor import commands

    for line in commands.poll_once():
        click.echo(line)


@main.command(name="import")
@click.argument("connection_id")
@click.option("--months", type=click.IntRange(1, 120), default=None, help="History to import (default: setting).")
@click.option("--restart", is_flag=True, help="Start a new import instead of resuming the checkpoint.")
@click.option("--no-progress", is_flag=True, help="Do not draw progress bars.")
def import_(connection_id: str, months: int | None, restart: bool, no_progress: bool) -> None:
    """Import (or resume importing) one connection's history, with progress."""
    from ingestor import commands

    click.echo(commands.import_connection(connection_id, months, restart, progress=not no_progress))


@main.command()
@click.option("--customers", type=click.IntRange(1, 5000), default=300, show_default=True, help="Size of the demo account.")
@click.option("--live-rate", type=float, default=1.0, show_default=True, help="New simulated Stripe activity per second.")
def demo(customers: int, live_rate: float) -> None:
    """The main job: the whole local stack against the Stripe simulator with demo data, until Ctrl-C."""
    from stack.demo import run_demo

    try:
        asyncio.run(run_demo(customers, live_rate))
    except (StackError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from exc


@main.command()
def projector() -> None:
    """Run one projector: raw events topic → revenue tables in Postgres (exactly-once)."""
    from projections import commands

    commands.projector()


@main.command()
@click.option("--tenant", "tenant_id", default=None, help="Rebuild only this tenant (default: every tenant).")
@click.option("--timeout", "timeout_s", type=float, default=3600.0, show_default=True, help="Give up after this many seconds.")
def replay(tenant_id: str | None, timeout_s: float) -> None:
    """Rebuild projections from offset zero into fresh tables and swap them in (the old ones serve meanwhile)."""
    from projections import commands

    report = commands.replay_projections(tenant_id, timeout_s)
    click.echo(f"replayed {report.events_applied} events in {report.seconds:.1f}s into {report.schema}; swapped in"
               + (f" (previous tables kept in schema {report.old_schema})" if report.old_schema else ""))


@main.command(name="rotate-master-key")
def rotate_master_key() -> None:
    """Re-encrypt every Stripe key and webhook secret with the current (first) master key."""
    from ingestor import commands

    click.echo(commands.rotate_master_key())


if __name__ == "__main__":
    main()
