"""The AI query layer's interface: tenant isolation and permission levels enforced by the database,
self-describing views, and common questions that agree with the simulator's ground truth."""

from __future__ import annotations

import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import date, datetime, timezone
from typing import Any

import asyncpg
import pytest

from plumbing.settings import ReaderSettings
from projections.errors import ProjectionError
from projections.projector.store import PostgresProjectionStore
from projections.read.client import QUESTIONS, Level, QuestionRefusedError, RevenueReader, UnknownQuestionError
from projections.read.sql_guard import check_select
from stack import postgres
from stack.up import Platform
from stripe_sim import CURRENT_VERSION, OLD_VERSION, SimServer
from tests.conftest import TEST_DATABASE
from tests.helpers import month_of, pinned_sim_clock
from tests.projections.support import apply_all, history_envelopes, reader_credentials

pytestmark = pytest.mark.integration
LEVELS = list(Level)


class World:
    """Two tenants projected from two simulated accounts, and a reader."""

    def __init__(self, reader: RevenueReader, truth: dict[str, Any], customers: dict[str, list[str]],
                 charges_by_customer: dict[str, int], sim_charges: list[dict[str, Any]]):
        self.reader = reader
        self.truth = truth
        self.customers = customers
        self.charges_by_customer = charges_by_customer
        self.sim_charges = sim_charges


@pytest.fixture(scope="module")
async def world(platform: Platform, clean_database: str) -> AsyncIterator[World]:
    pool = await asyncpg.create_pool(clean_database, min_size=1, max_size=3)
    store = PostgresProjectionStore(pool, "read-layer-test")
    customers: dict[str, list[str]] = {}
    async with SimServer(seed=808, clock=pinned_sim_clock()) as sim:
        for tenant, version in (("tenant_a", CURRENT_VERSION), ("tenant_b", OLD_VERSION)):
            account = sim.create_account(api_version=version, customers=30, months=12)
            envelopes = history_envelopes(sim, account.id, tenant)
            await apply_all(store, envelopes)
            store_a = sim.state.accounts[account.id].store(False)
            customers[tenant] = [c["id"] for c in store_a.all("customer")]
            if tenant == "tenant_a":
                truth = sim.ground_truth(account.id)
                sim_charges = list(store_a.all("charge"))
    by_customer: dict[str, int] = {}
    for charge in sim_charges:
        by_customer[charge["customer"]] = by_customer.get(charge["customer"], 0) + 1
    settings = ReaderSettings(dsn=postgres.reader_dsn(platform.cluster, TEST_DATABASE))  # type: ignore[arg-type]
    reader = RevenueReader(settings, reader_credentials(pool))
    yield World(reader, truth, customers, by_customer, sim_charges)
    await reader.close()
    await pool.close()


async def raw(world: World, level: Level, sql: str, tenant: str = "tenant_a", *args: Any) -> list[dict[str, Any]]:
    """Runs hostile SQL as `tenant`'s reader role of `level`."""
    return await world.reader.run_sql(tenant, level, sql, *args)


@pytest.mark.parametrize("level", LEVELS, ids=lambda lv: lv.name.lower())
async def test_the_level_roles_cannot_log_in_only_a_tenants_own_role_can(platform: Platform, clean_database: str,
                                                                         level: Level) -> None:
    """Even with a password (a role created by an old version, or set by mistake), a level role is NOLOGIN."""
    role = f"revenue_reader_{level.name.lower()}"
    owner = await asyncpg.connect(clean_database)
    try:
        await owner.execute(f"ALTER ROLE {role} PASSWORD 'reader'")
        with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError, match="not permitted to log in"):
            await asyncpg.connect(postgres.reader_dsn(platform.cluster, TEST_DATABASE), user=role, password="reader")
    finally:
        await owner.execute(f"ALTER ROLE {role} PASSWORD NULL")
        await owner.close()


@pytest.mark.parametrize("level", LEVELS, ids=lambda lv: lv.name.lower())
async def test_set_config_games_cannot_switch_tenant(world: World, level: Level) -> None:
    own = await raw(world, level, "SELECT count(*) AS n FROM analytics.daily_revenue")
    assert own[0]["n"] > 0
    # The session's login role is tenant_a's: a context set by the reader itself counts for nothing.
    hijack = ("SELECT set_config('app.tenant_id', 'tenant_b', true) AS t, "
              "(SELECT count(*) FROM analytics.daily_revenue) AS n")
    assert (await raw(world, level, hijack))[0]["n"] == own[0]["n"]
    # The reader's own signature does not fit another tenant's id; a guessed one fails as well.
    guess = ("SELECT set_config('app.tenant_id', 'tenant_b', true), set_config('app.tenant_expires', '9999999999', true), "
             "set_config('app.tenant_sig', md5('x'), true), (SELECT count(*) FROM analytics.mrr_by_month) AS n")
    assert (await raw(world, level, guess))[0]["n"] == (await raw(world, level, "SELECT count(*) AS n FROM analytics.mrr_by_month"))[0]["n"]
    assert (await raw(world, level, "SELECT analytics.current_tenant() AS t"))[0]["t"] == "tenant_a"


@pytest.mark.parametrize("level", LEVELS, ids=lambda lv: lv.name.lower())
@pytest.mark.parametrize("sql", [
    "SELECT * FROM projection.charges",
    "SELECT * FROM projection.daily_revenue",
    "SELECT * FROM public.stripe_connections",
    "SELECT * FROM public.tenants",
    "SELECT * FROM analytics_private.context_key",
    "SELECT analytics_private.tenant_signature('tenant_b', 9999999999)",
    "SET ROLE analytics_owner",
    "SET ROLE ingestor",
    "SET SESSION AUTHORIZATION ingestor",
], ids=["projection-table", "projection-view", "control-plane", "tenants", "context-key", "sign-other-tenant",
        "become-owner", "become-projector", "session-authorization"])
async def test_everything_outside_the_analytics_views_is_refused(world: World, level: Level, sql: str) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await raw(world, level, sql)


@pytest.mark.parametrize("level", LEVELS, ids=lambda lv: lv.name.lower())
@pytest.mark.parametrize("sql", [
    "INSERT INTO public.tenants (tenant_id, name, token_sha256) VALUES ('x', 'x', 'x')",
    "CREATE TABLE public.mine (id int)",
    "CREATE FUNCTION public.leak(text) RETURNS boolean LANGUAGE sql AS 'SELECT true'",
    "DELETE FROM analytics.customers",
    "UPDATE analytics.charges SET amount = 0",
], ids=["insert", "create-table", "create-function", "delete-through-view", "update-through-view"])
async def test_readers_cannot_write_anything(world: World, level: Level, sql: str) -> None:
    with pytest.raises((asyncpg.InsufficientPrivilegeError, asyncpg.ReadOnlySQLTransactionError)):
        await raw(world, level, sql)


@pytest.mark.parametrize("level", LEVELS, ids=lambda lv: lv.name.lower())
async def test_tenant_b_rows_are_invisible_by_id_and_by_join(world: World, level: Level) -> None:
    b_customer = world.customers["tenant_b"][0]
    if level >= Level.STANDARD:
        by_id = await raw(world, level, "SELECT * FROM analytics.charges WHERE customer_id = $1", "tenant_a", b_customer)
        assert by_id == []
        joined = await raw(world, level, "SELECT count(*) AS n FROM analytics.charges c JOIN analytics.customers u "
                                         "ON u.customer_id = c.customer_id WHERE u.customer_id = ANY($1)",
                           "tenant_a", world.customers["tenant_b"])
        assert joined[0]["n"] == 0
        total = await raw(world, level, "SELECT count(*) AS n FROM analytics.customers")
        assert total[0]["n"] == len(world.customers["tenant_a"])
    months = await raw(world, level, "SELECT count(DISTINCT month) AS n FROM analytics.mrr_by_month")
    assert months[0]["n"] >= 12


@pytest.mark.parametrize("level", [Level.SUMMARY, Level.STANDARD], ids=["summary", "standard"])
async def test_a_lower_level_cannot_become_a_higher_one(world: World, level: Level) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await raw(world, level, "SET ROLE revenue_reader_full")


async def test_levels_are_enforced_by_the_database(world: World) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await raw(world, Level.SUMMARY, "SELECT * FROM analytics.charges")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await raw(world, Level.STANDARD, "SELECT * FROM analytics.charge_cards")
    with pytest.raises(asyncpg.UndefinedColumnError):
        await raw(world, Level.STANDARD, "SELECT card_last4 FROM analytics.charges")
    cards = await raw(world, Level.FULL, "SELECT card_brand, card_last4 FROM analytics.charge_cards WHERE card_last4 IS NOT NULL")
    assert cards and all(len(c["card_last4"]) == 4 for c in cards)


async def test_questions_above_the_level_are_refused_with_a_clear_message(world: World) -> None:
    with pytest.raises(QuestionRefusedError, match="'top_customers' needs the standard permission level; this reader has summary"):
        await world.reader.ask("tenant_a", Level.SUMMARY, "top_customers", livemode=False, currency="usd", limit=5)
    with pytest.raises(QuestionRefusedError, match="needs the full permission level"):
        await world.reader.ask("tenant_a", Level.STANDARD, "payment_history_with_cards", livemode=False, customer="cus_x")
    with pytest.raises(UnknownQuestionError, match="unknown question"):
        await world.reader.ask("tenant_a", Level.FULL, "drop_tables", livemode=False)
    with pytest.raises(UnknownQuestionError, match="needs: from, to"):
        await world.reader.ask("tenant_a", Level.FULL, "revenue", livemode=False)


async def test_common_questions_match_the_ground_truth(world: World) -> None:
    truth, ask = world.truth, world.reader.ask
    days = sorted({*truth["daily"], *truth["failed"]})  # every day with money moving, failed or not
    first, last = date.fromisoformat(days[0]), date.fromisoformat(days[-1])
    revenue = {r["currency"]: r for r in await ask("tenant_a", Level.SUMMARY, "revenue", livemode=False,
                                                     **{"from": first, "to": last})}
    for currency in ("usd", "eur", "jpy"):
        expected = [d[currency] for d in truth["daily"].values() if currency in d]
        assert revenue[currency]["gross"] == sum(e["gross"] for e in expected)
        assert revenue[currency]["net"] == sum(e["net"] for e in expected)

    mrr = await ask("tenant_a", Level.SUMMARY, "mrr", livemode=False)
    # Months after the simulator's pinned "now" carry its last state on to today's month: not in the truth.
    by_month = {(r["month"][:7], r["currency"]): float(round(float(r["mrr"]), 2))
                for r in mrr if float(r["mrr"]) > 0 and r["month"][:7] <= month_of(truth["as_of"])}
    assert by_month == {(m, c): v for m, cur in truth["mrr"].items() for c, v in cur.items() if v > 0}

    month = sorted(truth["subscribers"])[-2]
    churn = await ask("tenant_a", Level.SUMMARY, "churn", livemode=False, month=month + "-01")
    assert churn[0]["churned_subscribers"] == truth["subscribers"][month]["churned"]
    assert churn[0]["new_subscribers"] == truth["subscribers"][month]["new"]
    movements = await ask("tenant_a", Level.SUMMARY, "movements", livemode=False, month=month + "-01")
    for row in movements:
        parts = ("opening_mrr", "new_mrr", "expansion_mrr", "contraction_mrr", "churned_mrr", "reactivation_mrr")
        assert sum(float(row[p]) for p in parts) == pytest.approx(float(row["closing_mrr"]))

    failed = await ask("tenant_a", Level.SUMMARY, "failed_payments", livemode=False, **{"from": first, "to": last})
    assert sum(r["failed_count"] for r in failed) == sum(c["count"] for d in truth["failed"].values() for c in d.values())

    top = await ask("tenant_a", Level.STANDARD, "top_customers", livemode=False, currency="usd", limit=3)
    expected_net: dict[str, int] = {}
    for ch in world.sim_charges:
        if ch["status"] == "succeeded" and ch["currency"] == "usd":
            expected_net[ch["customer"]] = expected_net.get(ch["customer"], 0) + ch["amount"] - ch["amount_refunded"]
    assert [r["net"] for r in top] == sorted(expected_net.values(), reverse=True)[:3]

    customer = max(world.charges_by_customer, key=lambda c: world.charges_by_customer[c])
    history = await ask("tenant_a", Level.STANDARD, "payment_history", livemode=False, customer=customer)
    assert len(history) == world.charges_by_customer[customer]
    assert "card_last4" not in history[0]
    carded = await ask("tenant_a", Level.FULL, "payment_history_with_cards", livemode=False, customer=customer)
    assert len(carded) == len(history) and all(r["card_last4"] for r in carded)


async def test_every_analytics_view_and_column_has_a_comment(clean_database: str) -> None:
    conn = await asyncpg.connect(clean_database)
    try:
        missing = await conn.fetch(
            """SELECT c.relname, a.attname
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                WHERE n.nspname = 'analytics' AND c.relkind = 'v'
                  AND (coalesce(obj_description(c.oid, 'pg_class'), '') = ''
                       OR coalesce(col_description(c.oid, a.attnum), '') = '')""")
        assert [f"{r['relname']}.{r['attname']}" for r in missing] == []
        views = await conn.fetchval("SELECT count(*) FROM pg_views WHERE schemaname = 'analytics'")
        assert views >= 14
    finally:
        await conn.close()


async def test_the_catalog_view_matches_the_catalog_file_and_the_docs(world: World) -> None:
    from projections.read.catalog import DOC_FILE, load_catalog, render_doc

    rows = await world.reader.run_sql("tenant_a", Level.SUMMARY, "SELECT * FROM analytics.metrics_catalog ORDER BY name")
    assert sorted(m.name for m in load_catalog()) == [r["name"] for r in rows]
    assert all(r["definition"] and r["sql"] and r["min_level"] in ("summary", "standard", "full") for r in rows)
    assert DOC_FILE.read_text() == render_doc(load_catalog()), "run: python -m projections.read.catalog"


async def peak_bytes(run: Callable[[], Awaitable[Any]]) -> int:
    """How many bytes more than before this process held at its peak while `run` ran (tracemalloc's count)."""
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        await run()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


async def test_a_row_larger_than_the_answer_is_refused_on_its_header_and_never_read(world: World) -> None:
    """Postgres announces each row's size before sending it: a row that alone would pass the answer's byte cap ends
    the connection there, so the process never holds it (the guard keeps such SQL out of run_sql; this bound holds
    whatever SQL reaches the reader). The tenant's next question gets a fresh connection."""
    async def run() -> None:
        with pytest.raises(ProjectionError, match=r"a row of the answer is 20,000,0\d\d bytes.*at most 65,536 bytes"):
            await world.reader.run_sql_capped("tenant_a", Level.SUMMARY, "SELECT 1 AS n, repeat('x', 20000000) AS x",
                                              max_rows=10, max_bytes=64 * 1024)

    assert await peak_bytes(run) < 4 * 1024 * 1024, "the 20 MB row was not read into the process"
    assert await raw(world, Level.SUMMARY, "SELECT 1 AS one") == [{"one": 1}]


async def test_rows_past_the_byte_cap_end_the_answer_without_being_read(world: World) -> None:
    sql = ("SELECT i, CASE WHEN i <= 3 THEN 'small' ELSE repeat('x', 10000000) END AS x "
           "FROM generate_series(1, 10) i")
    answers: list[tuple[list[dict[str, Any]], bool]] = []

    async def run() -> None:
        answers.append(await world.reader.run_sql_capped("tenant_a", Level.SUMMARY, sql, max_rows=10,
                                                         max_bytes=64 * 1024))

    assert await peak_bytes(run) < 4 * 1024 * 1024, "no 10 MB row was read into the process"
    rows, cut = answers[0]
    assert cut and rows and [r["i"] for r in rows] == list(range(1, len(rows) + 1)) and len(rows) <= 3
    assert all(r["x"] == "small" for r in rows)


@pytest.mark.parametrize("sql", [
    "with l0 as (select 'xxxxxxxxxx' as v), l1 as (select v || v || v || v || v as v from l0), "
    "l2 as (select v || v || v || v || v as v from l1), l3 as (select concat(v, v, v, v, v) as v from l2) "
    "select v from l3",
    "select " + "row(" * 8 + "'\"a\\'" + ")" * 8 + "::text as v",
    "select " + "array[" * 8 + "'\"a\\'" + "]::text" * 8 + " as v",
    "select ('1e131' || '071')::numeric as v",
    "select power(10::numeric, 131071) as v",
    "select 1::numeric / 3e-900 as v",
    "select round(1::numeric, 100000) as v",
    "select to_char(now(), 'FMJ" + "J" * 200 + "') as v",
    "select upper('" + "\u0250" * 1000 + "') as v",
    "select v || v as v from (select concat_ws(v::text, v, v, v) as v from (select '{\"a,b\"}'::text[] as v) a) b",
], ids=["doubling", "nested-rows", "nested-arrays", "number-from-text", "power", "division", "round", "to-char",
        "upper", "array-text"])
async def test_what_the_guard_lets_through_stays_within_its_bound_in_postgres(world: World, sql: str) -> None:
    """The guard's bound is an upper bound: the largest such values, built by Postgres, are no larger."""
    checked = check_select(sql)
    rows = await raw(world, Level.SUMMARY, f"SELECT octet_length(q.v::text) AS n FROM ({checked.sql}) q")
    assert 0 < rows[0]["n"] <= checked.max_built_bytes


def test_every_question_names_its_level() -> None:
    assert {q.min_level for q in QUESTIONS.values()} == set(Level)
    assert datetime.now(timezone.utc)  # the read layer uses UTC days throughout
