"""The local stack's subcommands of `ingestor` (`up`, `down`, `status`, `demo`), added by `service.cli` where installed."""

from __future__ import annotations

import asyncio

import click

from stack import StackError, postgres
from stack.kafka import KafkaBroker
from stack.kafka_cluster import KafkaCluster
from stack.up import bring_up
from stripe_sim import CURRENT_VERSION, VERSIONS


def add_local_stack_commands(group: click.Group) -> None:
    """Adds the local stack's commands to the `ingestor` group."""
    for command in (up, down, status, demo):
        group.add_command(command)


@click.command()
@click.option("--brokers", type=click.Choice(["1", "3"]), default="1", show_default=True,
              help="One Kafka node, or a three-node cluster (topics with three replicas, min.insync.replicas=2).")
def up(brokers: str) -> None:
    """Start (or reuse) Kafka and Postgres, apply migrations, create topics."""
    try:
        platform = bring_up(brokers=int(brokers))
    except StackError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"kafka:    {platform.kafka.bootstrap_servers}  (log: {platform.kafka.log_file})")
    if brokers == "3":
        click.echo("          a three-node cluster: run the services with INGESTOR_KAFKA__BOOTSTRAP_SERVERS set to the "
                   "addresses above and INGESTOR_KAFKA__REPLICATION_FACTOR=3")
    click.echo(f"postgres: {platform.postgres_dsn().replace(f':{postgres.PASSWORD}@', ':***@')}")


@click.command()
@click.option("--postgres/--no-postgres", "with_postgres", default=False, help="Also stop the PostgreSQL cluster.")
def down(with_postgres: bool) -> None:
    """Stop the local Kafka broker or cluster (and optionally Postgres)."""
    KafkaBroker().stop()
    KafkaCluster().stop()
    if with_postgres:
        postgres.stop()


@click.command()
def status() -> None:
    """Show whether the local Kafka and Postgres are running."""
    broker = KafkaBroker()
    pid = broker.running_pid()
    click.echo(f"kafka:    {'running pid ' + str(pid) if pid else 'stopped'} ({broker.bootstrap_servers})")
    nodes = KafkaCluster()
    if nodes.running():
        click.echo(f"cluster:  nodes {nodes.running()} of {nodes.size} running ({nodes.bootstrap_servers}), "
                   f"controller {nodes.active_controller()}")
    for cluster in postgres.clusters():
        click.echo(f"postgres: {cluster.version}/{cluster.name} port {cluster.port} {'online' if cluster.online else 'down'}")


@click.command()
@click.option("--customers", type=click.IntRange(1, 5000), default=300, show_default=True, help="Size of the demo account.")
@click.option("--live-rate", type=float, default=1.0, show_default=True, help="New simulated Stripe activity per second.")
@click.option("--api-version", type=click.Choice(VERSIONS), default=CURRENT_VERSION, show_default=True,
              help="The API version the demo Stripe account is pinned to (its events come in that shape).")
def demo(customers: int, live_rate: float, api_version: str) -> None:
    """The main job: the whole local stack against the Stripe simulator with demo data, until Ctrl-C."""
    from stack.demo import run_demo

    try:
        asyncio.run(run_demo(customers, live_rate, api_version))
    except (StackError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from exc


