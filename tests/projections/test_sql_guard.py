"""The guard in front of run_sql, on its own: what a hostile or careless model might send, refused with the
reason before anything reaches Postgres; what a revenue question needs, allowed and printed back as checked."""

from __future__ import annotations

import re

import pytest

from projections.read.catalog import load_catalog
from projections.read.sql_guard import MAX_SQL_CHARS, SqlRefusedError, check_select


def _values(n: int) -> str:
    return "(values " + ", ".join(f"({i})" for i in range(n)) + ")"


def _doubling(levels: int, fan: int = 10) -> str:
    """A CTE chain where each level repeats the one below `fan` times: fan**levels times 10 characters."""
    ctes = ["l0 as (select 'xxxxxxxxxx' as v)"]
    ctes += [f"l{i} as (select {' || '.join(['v'] * fan)} as v from l{i - 1})" for i in range(1, levels + 1)]
    return f"with {', '.join(ctes)} select length(v) from l{levels}"


# From a hostile review: each of these passed the guard and, from a few kilobytes of SQL, built tens or hundreds of
# megabytes for one row in Postgres (up to its 1 GB a value), which the web process then read whole.
ARRAY_OF_ROWS = (f"select array(select '{'x' * 10_000}' from {_values(100)} a, {_values(100)} b, "
                 f"{_values(5)} c)::text")  # 500 MB, 11 kB of SQL
NESTED_ROWS = "select length(" + "row(" * 40 + "'\"'" + ")" * 40 + "::text)"  # each level doubles the quotes
NESTED_ARRAYS = "select " + "array[" * 30 + "'\"'" + "]::text" * 30  # …as each array of text does
# A number read from text may have 131,072 digits: 200 of them are 30 MB for one row.
BIG_NUMBERS = "select " + ", ".join(["('1e131' || '071')::numeric"] * 200)
POWERS = "select " + ", ".join(["power(10::numeric, 131071)"] * 200)
# Each value small, but many alive at once while one row is computed.
MANY_PIECES = (f"with a as (select '{'x' * 200}' as v), b as (select {' || '.join(['v'] * 10)} as v from a), "
               f"c as (select {' || '.join(['v'] * 10)} as v from b) select " + ", ".join(["length(v || v)"] * 900)
               + " from c")  # 900 values of 40 kB

ALLOWED = [
    "select day, sum(net) from analytics.daily_revenue where livemode and day >= '2026-01-01' group by day order by 1",
    "with m as (select * from analytics.mrr_by_month) select month, round(mrr) from m where currency = 'eur'",
    "with a as (select 1 as x), b as (select x from a) select * from b",
    "select now() - interval '30 days', date '2026-01-01', current_date, extract(epoch from now())",
    "select day from analytics.daily_revenue group by rollup (day)",
    "select extract(year from day), date_trunc('month', day)::date, coalesce(net, 0), greatest(1, 2), nullif(net, 0) "
    "from analytics.daily_revenue",
    "select a.month from analytics.mrr_by_month a join analytics.mrr_movements b using (month, currency) "
    "where a.month in (select month from analytics.subscriber_churn)",
    "select customer_id, rank() over (order by net desc) from analytics.customer_revenue limit 5",
    "select count(*) filter (where movement = 'churn') from analytics.mrr_changes",
    # What an assistant writes for a revenue question: casts, text joined for display, percentiles, CTE levels.
    "select to_char(day, 'YYYY-MM') as month, currency, round(sum(net)::numeric / 100, 2) as net "
    "from analytics.daily_revenue where livemode group by 1, 2 order by 1, 2",
    "select customer_id, coalesce(name, email) || ' <' || email || '>' as who, concat(currency, ' ', net) as net "
    "from analytics.customer_revenue order by net desc limit 10",
    "select currency, percentile_cont(0.5) within group (order by amount), mode() within group (order by status) "
    "from analytics.charges group by currency",
    "select * from analytics.charges where currency = any (array['usd', 'eur']) and status in ('succeeded', 'failed')",
    "with m as (select month, currency, mrr, lag(mrr) over (partition by currency order by month) as prev "
    "from analytics.mrr_by_month where livemode), c as (select *, mrr - prev as change from m) "
    "select month, currency, mrr::numeric, change, round(change::numeric / nullif(prev, 0) * 100, 1) as pct, "
    "upper(currency) || ' ' || to_char(month, 'Mon YYYY') as label from c order by month",
    "select a.month, a.mrr, b.mrr from (select month, sum(mrr) as mrr from analytics.mrr_by_month group by 1) a "
    "left join lateral (select sum(mrr) as mrr from analytics.mrr_by_month m where m.month < a.month) b on true",
    "select c.charge_id, (select max(r.amount) from analytics.charges r where r.customer_id = c.customer_id) "
    "from analytics.charges c union all select 'total', sum(amount) from analytics.charges",
    "select extract(epoch from created)::bigint, created::date, interval '1 day' * 3, '2026-01-01'::timestamptz, "
    "(amount / 100.0)::float8, amount::text, currencies::text[] from analytics.charges, analytics.mrr_reporting",
    _doubling(3),  # 10 kB: a CTE may build on another within bounds
]
REFUSED = [
    ("", "empty query"),
    ("select 1; select 2", "one statement only"),
    ("drop view analytics.daily_revenue", "only SELECT is allowed; this is DROP"),
    ("insert into analytics.daily_revenue values (1)", "only SELECT is allowed; this is INSERT"),
    ("set role revenue_reader_full", "only SELECT is allowed"),
    ("copy (select 1) to '/tmp/x'", "only SELECT is allowed"),
    ("explain analyze select 1", "only SELECT is allowed"),
    ("with d as (delete from analytics.daily_revenue returning *) select * from d", "DELETE"),
    ("with u as (update analytics.daily_revenue set net = 0 returning *) select * from u", "UPDATE"),
    ("select * into scratch from analytics.charges", "SELECT INTO"),
    ("select * from analytics.charges for update", "FOR UPDATE/SHARE"),
    ("select * from analytics.charges where charge_id = $1", "parameters"),
    ("select pg_sleep(10)", "function pg_sleep() is not allowed"),
    ("select pg_catalog.pg_sleep(10)", "function pg_catalog.pg_sleep() is not allowed"),
    ("select set_config('app.tenant_id', 'ten_other', false)", "function set_config() is not allowed"),
    ("select current_setting('app.tenant_sig')", "function current_setting() is not allowed"),
    ("select pg_read_file('/etc/passwd')", "function pg_read_file() is not allowed"),
    ("select * from generate_series(1, 1000000000)", "function generate_series() is not allowed"),
    ("select analytics.current_tenant()", "function analytics.current_tenant() is not allowed"),
    ("select max(x) from (select lo_import('/etc/passwd') as x) s", "function lo_import() is not allowed"),
    ("select * from projection.charges", "projection.charges is not one"),
    ("select * from pg_catalog.pg_authid", "pg_catalog.pg_authid is not one"),
    ("select * from charges", "charges is not one"),
    ("select * from otherdb.analytics.daily_revenue", "otherdb.analytics.daily_revenue is not one"),
    # A CTE's name counts only where it is defined: outside, `charges` would resolve through the search path.
    ("select * from (with charges as (select 1) select * from charges) a, charges", "charges is not one"),
    ("select 'pg_authid'::regclass", "casts to regclass"),
    # From a hostile review: each of these passed the first version of the guard.
    ("with pg_settings as (select name, setting from pg_settings) select * from pg_settings", "pg_ names are the catalogs'"),
    ("with x as (select * from pg_stat_activity), pg_stat_activity as (select 1) select * from x",
     "pg_stat_activity is not one"),  # a CTE is not visible to the CTEs before it
    ("with recursive r(s) as (select 'x' union all select s || s from r) select max(length(s)) from r", "WITH RECURSIVE"),
    ("select format('%500000000s', '')", "function format() is not allowed"),  # a 500 MB value from 30 characters
    ("select replace('aaaa', 'a', 'bbbb')", "function replace() is not allowed"),
    ("select string_agg('x', '') from (values (1), (2)) a, (values (1), (2)) b", "function string_agg() is not allowed"),
    ("select ''::char(10485760)", "type modifiers"),
    ("select current_user", "not the role's name"),
    ("select xmlelement(name a)", "XmlExpr"),
    ("select json_value(jsonb '\"pg_authid\"', '$' returning regclass)", "not allowed in a read-only query"),
    ("select " + "+".join(["1"] * 400), "nested too deeply"),
    ("select 'pg_sleep'::regproc", "casts to regproc"),
    ("selec * from analytics.daily_revenue", "not valid PostgreSQL"),
    (ARRAY_OF_ROWS, "ARRAY(SELECT …) is not allowed"),
    ("select array(select customer_id from analytics.customers)", "ARRAY(SELECT …) is not allowed"),
    (_doubling(9), "come to more than 16 MiB (past it at the || operator"),
    (NESTED_ROWS, "come to more than 16 MiB (past it at ROW(…)"),
    (NESTED_ARRAYS, "come to more than 16 MiB (past it at a cast to text"),
    (BIG_NUMBERS, "come to more than 16 MiB (past it at a cast to numeric"),
    (POWERS, "come to more than 16 MiB (past it at power()"),
    # 2,000 numbers of 131,072 digits from 18 kB of text: a 262 MB value once cast back to text
    ("select ('{" + ",".join(["1e131071"] * 2000) + "}'::numeric[])::text", "come to more than 16 MiB (past it at a cast"),
    (MANY_PIECES, "come to more than 16 MiB (past it at the || operator, which alone could make 251.1 kB"),
    ("select '[(0,0)]'::path + '[(1,1)]'::path", "casts to path are not allowed"),
    ("select '{}'::jsonb", "casts to jsonb are not allowed"),
    ("select 1 " + " " * MAX_SQL_CHARS, "longer than"),
]


@pytest.mark.parametrize("sql", ALLOWED)
def test_revenue_questions_pass_and_run_as_printed_back(sql: str) -> None:
    checked = check_select(sql)
    assert checked.sql.startswith(("SELECT", "WITH")) and check_select(checked.sql).sql == checked.sql


@pytest.mark.parametrize("sql, reason", REFUSED, ids=[r[1][:60] for r in REFUSED])
def test_each_guard_refuses_with_its_reason(sql: str, reason: str) -> None:
    with pytest.raises(SqlRefusedError) as refused:
        check_select(sql)
    assert reason in str(refused.value)


@pytest.mark.parametrize("metric", load_catalog(), ids=lambda m: m.name)
def test_every_catalog_example_passes(metric: object) -> None:
    """describe_metric hands these to a model: pasted into run_sql with its parameters written in, each runs."""
    values = {"from": "'2026-01-01'", "to": "'2026-01-31'", "month": "'2026-01-01'", "currency": "'usd'",
              "customer": "'cus_1'", "charge": "'ch_1'", "reporting_currency": "'eur'"}
    sql = re.sub(r":(\w+)", lambda m: values[m.group(1)], metric.sql)  # type: ignore[attr-defined]
    check_select(sql)


def test_what_passes_is_told_how_much_it_may_build() -> None:
    small = check_select("select currency, sum(net) from analytics.daily_revenue group by 1")
    doubled = check_select(_doubling(3))
    assert 0 < small.max_built_bytes < doubled.max_built_bytes
    assert 10_000 <= doubled.max_built_bytes, "the chain's last value alone is 10,000 characters"


def test_the_logged_form_carries_no_literals() -> None:
    checked = check_select("select * from analytics.charges where customer_id = 'cus_SECRET' and amount > 4242")
    assert "cus_SECRET" not in checked.normalized and "4242" not in checked.normalized
    assert checked.fingerprint == check_select("select * from analytics.charges where customer_id = 'x' "
                                               "and amount > 1").fingerprint
