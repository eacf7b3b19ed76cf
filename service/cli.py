"""The `ingestor` console command: one subcommand per process and operator job of the product.

Where the local stack is installed (a development checkout), its commands (`up`, `down`, `status`,
`demo`) are added too; a production image ships without it.
"""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Stripe revenue ingestor: webhooks, polling and history import into Kafka, projected into Postgres."""


@main.command()
def migrate() -> None:
    """Apply database migrations and create the Kafka topics named in the settings."""
    from service.admin import migrate as run_migrate

    click.echo(run_migrate())


@main.command()
def web() -> None:
    """Serve the webhook receiver, the control API, the read API and the connector page."""
    from service.web import serve

    serve()


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
    from service.ask import ask as answer

    try:
        output = answer(tenant_id, question, level, mode, dict(p.split("=", 1) for p in params), as_json)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(output)


@main.command()
def mcp() -> None:
    """Serve the AI query layer over MCP on stdio, as the reader token in INGESTOR_READER_TOKEN."""
    from service.mcp_stdio import main as serve_stdio

    serve_stdio()


@main.command()
@click.option("--poll/--no-poll", default=True, help="Run the events poller.")
@click.option("--import/--no-import", "imports", default=True, help="Run pending history imports.")
def worker(poll: bool, imports: bool) -> None:
    """Run the Stripe events poller and the history importer."""
    from service.worker import serve

    serve(poll, imports)


@main.command()
def poll() -> None:
    """Run one poll cycle for every connection (burst mode) and exit."""
    from service.worker import poll_once

    for line in poll_once():
        click.echo(line)


@main.command(name="import")
@click.argument("connection_id")
@click.option("--months", type=click.IntRange(1, 120), default=None, help="History to import (default: setting).")
@click.option("--restart", is_flag=True, help="Start a new import instead of resuming the checkpoint.")
@click.option("--no-progress", is_flag=True, help="Do not draw progress bars.")
def import_(connection_id: str, months: int | None, restart: bool, no_progress: bool) -> None:
    """Import (or resume importing) one connection's history, with progress."""
    from service.worker import import_connection

    click.echo(import_connection(connection_id, months, restart, progress=not no_progress))


@main.command()
def projector() -> None:
    """Run one projector: raw events topic → revenue tables in Postgres (exactly-once)."""
    from service.projector import serve

    serve()


@main.command()
@click.option("--tenant", "tenant_id", default=None, help="Rebuild only this tenant (default: every tenant).")
@click.option("--timeout", "timeout_s", type=float, default=3600.0, show_default=True, help="Give up after this many seconds.")
def replay(tenant_id: str | None, timeout_s: float) -> None:
    """Rebuild projections from offset zero into fresh tables and swap them in (the old ones serve meanwhile)."""
    from service.projector import replay_projections

    report = replay_projections(tenant_id, timeout_s)
    click.echo(f"replayed {report.events_applied} events in {report.seconds:.1f}s into {report.schema}; swapped in"
               + (f" (previous tables kept in schema {report.old_schema})" if report.old_schema else ""))


@main.command()
@click.argument("connection_id")
@click.option("--months", type=click.IntRange(1, 120), default=None, help="Range to check (default: the import's).")
def reconcile(connection_id: str, months: int | None) -> None:
    """Check one connection against Stripe: counts per resource and charge money per currency, ids that differ."""
    from service.worker import reconcile_connection

    click.echo(reconcile_connection(connection_id, months))


@main.group()
def fx() -> None:
    """Exchange rates for revenue in one reporting currency."""


@fx.command(name="load")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
def fx_load(path: str) -> None:
    """Load rates from a CSV file with the header date,currency,reporting_currency,rate (1 currency = rate
    reporting_currency on that day). The whole file is checked first; a bad line loads nothing."""
    from projections.read.fx_rates import RatesFileError
    from service.admin import load_fx_rates

    try:
        click.echo(load_fx_rates(path))
    except (RatesFileError, UnicodeDecodeError) as exc:
        raise click.ClickException(str(exc)) from exc


@main.group(name="read-alone")
def read_alone() -> None:
    """Tenants whose import pages are read alone, one at a time (a page of theirs killed a page-pool process)."""


@read_alone.command(name="list")
def read_alone_list() -> None:
    """List the tenants whose import pages every worker reads alone, and since when."""
    from service.admin import read_alone as report

    click.echo(report(None))


@read_alone.command(name="clear")
@click.argument("tenant_id")
def read_alone_clear(tenant_id: str) -> None:
    """Let the tenant's import pages share the page pool again, once a release reads the page to blame safely."""
    from service.admin import NotReadAloneError
    from service.admin import read_alone as report

    try:
        click.echo(report(tenant_id))
    except NotReadAloneError as exc:
        raise click.ClickException(str(exc)) from exc


@main.command(name="rotate-master-key")
def rotate_master_key() -> None:
    """Re-encrypt every Stripe key and webhook secret with the current (first) master key."""
    from service.admin import rotate_master_key as rotate

    click.echo(rotate())


def _add_local_stack_commands() -> None:
    try:
        from stack.commands import add_local_stack_commands
    except ImportError:  # a production install: no local stack
        return
    add_local_stack_commands(main)


_add_local_stack_commands()

if __name__ == "__main__":
    main()
