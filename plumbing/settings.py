"""Typed settings, read once from the environment at start-up and passed down explicitly.

Every field maps onto one environment variable: `INGESTOR_<GROUP>__<FIELD>` for grouped settings
(e.g. `INGESTOR_KAFKA__BOOTSTRAP_SERVERS`) and `INGESTOR_<FIELD>` for top-level ones. An
`INGESTOR_…` variable that names no field is an error, not silently ignored: a typo in a setting
should stop the process, not run it with a default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "INGESTOR_"
# The least burst of a request budget's bucket (ingestor/stripe_api/request_budget.py): room for the interactive
# reserve, one bulk lease and the lag of asking for the next. A budget leaves at least this much below its limit.
STRIPE_BUCKET_MIN_CAPACITY = 3.0
# How late a loaded process may send a token within Stripe's limit: an account's budget leaves this much of itself.
STRIPE_LATE_SEND_S = 0.05
NESTED_DELIMITER = "__"


class SettingsError(ValueError):
    """The environment holds a setting that does not exist or does not parse."""

    retriable = False


class KafkaSettings(BaseModel):
    """Where the broker is and how the raw and dead-letter topics are laid out."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bootstrap_servers: str = "127.0.0.1:9092"
    raw_topic: str = "stripe.events.raw"
    raw_partitions: int = Field(default=6, ge=1)
    dead_letter_topic: str = "stripe.events.dead-letter"
    dead_letter_partitions: int = Field(default=1, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    # Upper bound for one publish, from send() to the broker's acknowledgement (or failure).
    send_timeout_s: float = Field(default=10.0, gt=0)
    linger_ms: int = Field(default=5, ge=0)
    max_batch_size: int = Field(default=256 * 1024, ge=1024)
    compression: str = "zstd"
    projector_group: str = "revenue-projector"
    # How long the group waits for a silent member before handing its partitions to others.
    session_timeout_ms: int = Field(default=10_000, ge=1000)
    # A consumer starting while the cluster is away (restarting, not yet up) waits this long for it.
    startup_wait_s: float = Field(default=60.0, ge=0)


class PostgresSettings(BaseModel):
    """The one database holding the control plane and the revenue tables."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dsn: SecretStr = SecretStr("postgresql://ingestor:ingestor@127.0.0.1:5432/ingestor")
    pool_min_size: int = Field(default=1, ge=0)
    pool_max_size: int = Field(default=10, ge=1)
    command_timeout_s: float = Field(default=30.0, gt=0)
    # A process starting while Postgres is restarting or not yet up waits this long for it, then fails.
    startup_wait_s: float = Field(default=60.0, ge=0)


class HttpSettings(BaseModel):
    """Where the web process (webhook receiver, control API, connector page, metrics) listens."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    # The address Stripe (and people) reach this process at; webhook URLs are built from it.
    public_base_url: str = "http://127.0.0.1:8080"
    shutdown_timeout_s: float = Field(default=10.0, gt=0)
    # Several web processes on one port (SO_REUSEPORT): the kernel spreads new connections over them. Every web
    # process is stateless, so N of them on one machine need no proxy; give each its own metrics_port (or 0).
    reuse_port: bool = False
    # Prometheus metrics: on their own address (loopback by default; 0 turns it off), and on the main
    # port only for a request bearing this token (unset: not served there at all).
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9465, ge=0, le=65535)
    metrics_token: SecretStr | None = None


class ReceiverSettings(BaseModel):
    """Limits of the webhook receiver."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # Digits (of any script) a body may hold: Stripe's events hold a few hundred. Masking card numbers costs CPU
    # per digit, and per number or string that holds 13 of them, so a body of far more is refused (413).
    max_body_digits: int = Field(default=32 * 1024, ge=1024)
    # The whole body must arrive within this time: a body dripped byte by byte does not hold a connection.
    body_read_timeout_s: float = Field(default=10.0, gt=0)
    # How long a delivery may wait for Kafka's acknowledgement before we answer 503 (Stripe retries).
    publish_timeout_s: float = Field(default=5.0, gt=0)
    retry_after_s: int = Field(default=10, ge=1)
    signature_tolerance_s: int = Field(default=300, ge=1)
    # How long a looked-up webhook token (known or unknown) is cached; a disabled connection
    # stops accepting within this time.
    target_cache_ttl_s: float = Field(default=5.0, ge=0)
    # A subscription event naming its discounts by id waits for them to be fetched from Stripe at most this long,
    # and at most this many such fetches wait per connection; beyond either, 503 (Stripe delivers again later).
    discount_fetch_timeout_s: float = Field(default=5.0, gt=0)
    discount_fetches_per_connection: int = Field(default=16, ge=1)
    # Objects and arrays (`{` and `[` outside strings) a body may hold: Stripe's events hold a few hundred. Parsing,
    # checking and masking walk them one by one, so a body of far more is refused (413) before any of that.
    max_body_containers: int = Field(default=16 * 1024, ge=256)
    # Each connection's share of this process's delivery work (ingestor/receiver/shares.py): a delivery to its URL
    # costs 1 unit, plus 1 per `share_bytes_per_unit` bytes of body and 1 per `share_containers_per_unit` objects
    # and arrays; past the share, 429 (Stripe delivers again later). 200 a second is some 110 typical deliveries,
    # ~3% of a core; a burst of 2,000 absorbs a busy account's spikes and must pay for the largest body allowed.
    share_units_per_s: float = Field(default=200.0, gt=0)
    share_burst_units: float = Field(default=2000.0, ge=1)
    share_bytes_per_unit: int = Field(default=4096, ge=256)
    share_containers_per_unit: int = Field(default=256, ge=1)

    @model_validator(mode="after")
    def _burst_pays_for_the_largest_body(self) -> ReceiverSettings:
        largest = (1 + self.max_body_bytes / self.share_bytes_per_unit
                   + self.max_body_containers / self.share_containers_per_unit)
        if self.share_burst_units < largest:
            raise ValueError(
                f"receiver.share_burst_units ({self.share_burst_units:g}) must pay for the largest body allowed "
                f"({largest:g} units: max_body_bytes and max_body_containers at their share's prices), or such "
                "bodies would cost less than their work")
        return self


class VaultSettings(BaseModel):
    """The master key(s) that encrypt Stripe keys and webhook secrets; never stored in the database."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # "kid:base64url-32-bytes[,kid:…]", first one current; or a file with one entry per line.
    master_keys: SecretStr | None = None
    master_keys_file: str | None = None


class ControlSettings(BaseModel):
    """The control API: who may call it and how long a rolled webhook secret keeps working."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Operators' bearer token (creates tenants, may act for any tenant); None disables admin calls.
    admin_token: SecretStr | None = None
    # How long the previous webhook signing secret stays valid after a new one is stored.
    webhook_secret_grace_s: int = Field(default=86400, ge=0)
    # Where API errors point for the recovery steps (anchors are the connection statuses).
    docs_url: str = "docs/operating.md"


class StripeSettings(BaseModel):
    """How we reach Stripe: address (the simulator in tests), request budget per account, retries."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="after")
    def _budgets_under_limits(self) -> StripeSettings:
        for budget, limit, late_s in (("test_requests_per_second", "test_limit_per_second", STRIPE_LATE_SEND_S),
                                      ("live_requests_per_second", "live_limit_per_second", STRIPE_LATE_SEND_S),
                                      ("endpoint_requests_per_second", "endpoint_limit_per_second", 0.0)):
            per_second, most = getattr(self, budget), getattr(self, limit)
            if per_second * (1 + late_s) > most - STRIPE_BUCKET_MIN_CAPACITY:
                room = f" and {late_s * 1000:g} ms of itself" if late_s else ""
                raise ValueError(
                    f"stripe.{budget} ({per_second:g}) must stay at least {STRIPE_BUCKET_MIN_CAPACITY:g}{room} below "
                    f"stripe.{limit} ({most:g}): its bucket's burst (the poller's requests and the next lease) and "
                    "sends a little late would otherwise make more than the limit in a second, and every request past "
                    "it is a 429")
        return self

    api_base: str | None = None
    # Our request budgets per Stripe account, shared by every process, and Stripe's limits they stay under
    # (docs.stripe.com/rate-limits: 100/s live, 25/s test, 25/s per endpoint). The difference, less 50 ms of
    # the budget for sends a little late, is the most we ever send at once (a token bucket's burst, at least 3):
    # no one-second window sees more than Stripe's limit.
    test_requests_per_second: float = Field(default=20.0, gt=0)
    live_requests_per_second: float = Field(default=90.0, gt=0)
    endpoint_requests_per_second: float = Field(default=22.0, gt=0)
    test_limit_per_second: float = Field(default=25.0, gt=0)
    live_limit_per_second: float = Field(default=100.0, gt=0)
    endpoint_limit_per_second: float = Field(default=25.0, gt=0)
    timeout_s: float = Field(default=30.0, gt=0)
    retry_attempts: int = Field(default=8, ge=1)
    retry_initial_wait_s: float = Field(default=0.5, ge=0)
    retry_max_wait_s: float = Field(default=30.0, ge=0)


class PollerSettings(BaseModel):
    """The events poller: cadence, overlap window and page size."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    interval_s: float = Field(default=60.0, gt=0)
    # Used while no webhook test delivery has verified the connection.
    unverified_interval_s: float = Field(default=15.0, gt=0)
    # Stripe's events list is eventually consistent: each poll re-reads this margin before the cursor.
    overlap_s: int = Field(default=300, ge=0)
    page_limit: int = Field(default=100, ge=1, le=100)
    # Connections one worker polls at once: a poll mostly waits on Stripe and holds no Postgres session.
    max_concurrent_connections: int = Field(default=64, ge=1)
    # A poll's claim on its connection, renewed while it runs; a crashed poller's lapses after this.
    claim_lease_s: float = Field(default=15.0, ge=1)


class ImporterSettings(BaseModel):
    """The history import: how far back, page size, how often pending imports are looked for."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    history_months: int = Field(default=12, ge=1, le=120)
    page_limit: int = Field(default=100, ge=1, le=100)
    scan_interval_s: float = Field(default=5.0, gt=0)
    # Connections one worker imports at once; each pass over a connection lasts at most `pass_s`, and the
    # connections whose last pass is oldest go first, so a thousand imports all advance.
    max_concurrent_imports: int = Field(default=16, ge=1)
    # The most requests one connection's import keeps in flight, each paging its own time slice; it keeps
    # as many as fill the budget (requests/s × the time a page takes: 90/s × 0.6 s = 54), up to this.
    slices_in_flight: int = Field(default=96, ge=1, le=512)
    # The most pages one worker process has in flight across all the connections it imports; each connection
    # importing at the same time holds its share at most (this over their number), so a rate-limited one cannot
    # hold them all.
    pages_in_flight: int = Field(default=128, ge=1)
    # Processes that turn listed pages into records (parsing, redacting, hashing, encoding: most of the import's
    # CPU), shared by every import of the worker; 0 does it in the worker's own process. Default: one per CPU.
    page_processes: int | None = Field(default=None, ge=0, le=256)
    # A page that has used this much CPU time ends its pool process and counts as a page that killed it (one that
    # loops for good would otherwise hold that process from every tenant); a page takes milliseconds. At most a few
    # minutes: a tenant is paused for a second such page within the hour of its first.
    page_cpu_limit_s: float = Field(default=10.0, ge=1, le=300)
    # Slices each resource's range starts as at least (more are split off while they pay; a process that has timed
    # Stripe's pages starts each resource of a new import as what its endpoint's budget keeps busy over one round trip,
    # `initial_slice_count`), and the shortest range: Stripe's `created` filter is in seconds, and a bulk migration
    # creates thousands of objects within a minute.
    initial_slices: int = Field(default=2, ge=1, le=256)
    min_slice_s: int = Field(default=1, ge=1)
    # A slice's claim by one process lasts this long unless renewed: how soon another process (or this one,
    # restarted) takes over the slices of a worker that died. A worker held up longer loses its slices to another
    # process and the pages it had out are published twice (warned: docs/operating.md).
    slice_lease_s: float = Field(default=15.0, gt=0)
    pass_s: float = Field(default=30.0, gt=0)
    # A page still waiting for Stripe this long after its pass's time (429s retried with backoff, a block's wait) is
    # given up: its slice is let go unsaved and the pass ends, its place free for other imports; the next pass asks
    # for the page again.
    page_overrun_s: float = Field(default=30.0, gt=0)
    # A check against Stripe follows every import (off: only on demand); it waits at most this long for
    # the projector to apply what was published.
    reconcile_after_import: bool = True
    reconcile_projected_wait_s: float = Field(default=300.0, ge=0)
    # On SIGTERM a worker finishes its pages and polls in flight for at most this long, then stops anyway
    # (checkpoints are only saved after Kafka acknowledged, so nothing is lost either way).
    stop_grace_s: float = Field(default=10.0, ge=0)


class ProjectorSettings(BaseModel):
    """The projector consumer group's members."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_batch_records: int = Field(default=2000, ge=1)
    # Port of the Prometheus endpoint (lag, apply latency, dead letters); 0 turns it off.
    metrics_port: int = Field(default=9464, ge=0, le=65535)
    # Address it binds: loopback by default; 0.0.0.0 in a container whose port is published to a scraper.
    metrics_host: str = "127.0.0.1"
    # How long an applied event's id is kept to skip its redeliveries (processed_events); older rows are pruned.
    # Longer than the events API's 30 days and Stripe's 3 days of webhook retries; a redelivery after it is
    # applied again and changes nothing (every write is idempotent), so this bounds storage, not correctness.
    dedupe_retention_days: int = Field(default=45, ge=31)
    # How often a projector member prunes (one at a time across the group).
    dedupe_prune_interval_s: float = Field(default=3600.0, gt=0)


class ReaderSettings(BaseModel):
    """The AI query layer's connections: each tenant's own login role per permission level, on this server.

    The DSN names the server and database only (a read replica works); the role and its password come
    from the key vault, per tenant and level. The limits are set on each tenant's roles, in Postgres.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    dsn: SecretStr = SecretStr("postgresql://127.0.0.1:5432/ingestor")
    statement_timeout_ms: int = Field(default=5000, ge=100)
    idle_in_transaction_timeout_ms: int = Field(default=10_000, ge=100)
    temp_file_limit_kb: int = Field(default=64 * 1024, ge=0)
    # Connections one tenant's readers of one level may hold, server-wide (the role's CONNECTION LIMIT).
    tenant_connection_limit: int = Field(default=4, ge=1)
    # Connections the read API keeps per tenant and level, and how many such pools stay open at once.
    pool_size: int = Field(default=2, ge=1)
    max_open_pools: int = Field(default=200, ge=1)
    # How long a question waits for one of its tenant's connections before a 503 with Retry-After.
    acquire_timeout_s: float = Field(default=2.0, gt=0)
    # The most rows the AI layer's run_sql returns (fetched through a cursor; the answer says it was cut).
    sql_max_rows: int = Field(default=1000, ge=1, le=100_000)
    # …and the most it returns, whatever the rows: cut there, and said so; a row past it is refused on the size
    # Postgres announces, before it is read (projections/read/row_budget.py).
    sql_max_bytes: int = Field(default=2 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024)


class LogSettings(BaseModel):
    """How log lines are written (always with secrets masked)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    level: str = "INFO"
    json_lines: bool = True


class Settings(BaseSettings):
    """All settings of one process, grouped by dependency."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=NESTED_DELIMITER,
        frozen=True,
        extra="forbid",
    )

    kafka: KafkaSettings = KafkaSettings()
    postgres: PostgresSettings = PostgresSettings()
    log: LogSettings = LogSettings()
    projector: ProjectorSettings = ProjectorSettings()
    reader: ReaderSettings = ReaderSettings()
    http: HttpSettings = HttpSettings()
    receiver: ReceiverSettings = ReceiverSettings()
    vault: VaultSettings = VaultSettings()
    control: ControlSettings = ControlSettings()
    stripe: StripeSettings = StripeSettings()
    poller: PollerSettings = PollerSettings()
    importer: ImporterSettings = ImporterSettings()


def unknown_setting_names(environ: Mapping[str, str]) -> list[str]:
    """Returns the `INGESTOR_…` variables in `environ` that name no setting."""
    known_groups = {
        name: model.annotation
        for name, model in Settings.model_fields.items()
    }
    unknown: list[str] = []
    for var in environ:
        if not var.startswith(ENV_PREFIX):
            continue
        group, _, field = var[len(ENV_PREFIX):].lower().partition(NESTED_DELIMITER)
        annotation: Any = known_groups.get(group)
        if annotation is None:
            unknown.append(var)
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if field not in annotation.model_fields:
                unknown.append(var)
        elif field:
            unknown.append(var)
    return sorted(unknown)


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Reads the settings from the environment once; raises SettingsError on unknown or bad values."""
    env = os.environ if environ is None else environ
    unknown = unknown_setting_names(env)
    if unknown:
        raise SettingsError(f"unknown settings in the environment: {', '.join(unknown)}")
    try:
        if environ is None:
            return Settings(**overrides)
        return Settings.model_validate(_nest(env) | overrides)
    except ValueError as exc:
        raise SettingsError(f"invalid settings: {exc}") from exc


def _nest(environ: Mapping[str, str]) -> dict[str, Any]:
    """Turns `INGESTOR_GROUP__FIELD=value` pairs into {"group": {"field": value}}."""
    nested: dict[str, Any] = {}
    for var, value in environ.items():
        if not var.startswith(ENV_PREFIX):
            continue
        group, _, field = var[len(ENV_PREFIX):].lower().partition(NESTED_DELIMITER)
        if field:
            nested.setdefault(group, {})[field] = value
        else:
            nested[group] = value
    return nested
